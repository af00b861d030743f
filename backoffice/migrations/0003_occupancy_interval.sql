-- The occupancy plugin's interval around its estimate (method linked-devices/2): null for
-- windows stored before this migration, from plugin versions without it, or suppressed.
-- ALTER TABLE ... ADD COLUMN, one column per statement: the form SQLite and PostgreSQL share.
ALTER TABLE occupancy ADD COLUMN low DOUBLE PRECISION;
ALTER TABLE occupancy ADD COLUMN high DOUBLE PRECISION;
ALTER TABLE occupancy ADD COLUMN method TEXT;
