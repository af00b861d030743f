-- The occupancy plugin's interval around its estimate (method linked-devices/2): null for
-- windows stored before this migration, from plugin versions without it, or suppressed.
-- ALTER TABLE ... ADD COLUMN, one column per statement: the form SQLite and PostgreSQL share.
ALTER TABLE occupancy ADD COLUMN low DOUBLE PRECISION;
ALTER TABLE occupancy ADD COLUMN high DOUBLE PRECISION;
ALTER TABLE occupancy ADD COLUMN method TEXT;
-- The rollups keep the interval too: each hour's (day's) mean low and high, beside the mean
-- estimate, so the hourly chart draws its band after the raw windows are gone.
ALTER TABLE rollup_hour ADD COLUMN occupancy_low_avg DOUBLE PRECISION;
ALTER TABLE rollup_hour ADD COLUMN occupancy_high_avg DOUBLE PRECISION;
ALTER TABLE rollup_day ADD COLUMN occupancy_low_avg DOUBLE PRECISION;
ALTER TABLE rollup_day ADD COLUMN occupancy_high_avg DOUBLE PRECISION;
