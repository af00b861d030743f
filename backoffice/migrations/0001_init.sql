-- The back office's tables. One file for SQLite and PostgreSQL: only types both take
-- (BIGINT, DOUBLE PRECISION, TEXT), booleans as 0/1, times as ms since the Unix epoch (UTC).

-- Every enveloped message, once: at-least-once delivery repeats, this key does not.
CREATE TABLE messages (
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    boot_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    time_ms BIGINT NOT NULL,
    plugin TEXT NOT NULL,
    stream TEXT NOT NULL,
    data TEXT NOT NULL,
    received_ms BIGINT NOT NULL,
    PRIMARY KEY (site, gateway, boot_id, seq)
);
CREATE INDEX messages_time ON messages (time_ms);

-- visitor-counter `counts`: distinct addresses per interval.
CREATE TABLE counts (
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    boot_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    interval_start_ms BIGINT NOT NULL,
    interval_end_ms BIGINT NOT NULL,
    universal BIGINT,
    randomized BIGINT,
    sightings BIGINT,
    partial BIGINT NOT NULL,
    PRIMARY KEY (site, gateway, boot_id, seq)
);
CREATE INDEX counts_site_time ON counts (site, interval_start_ms);

-- visitor-counter `visits`: visitors, passers-by, dwell tiers per interval (universal
-- addresses; randomized ones kept apart because they over-count).
CREATE TABLE visits (
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    boot_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    interval_start_ms BIGINT NOT NULL,
    interval_end_ms BIGINT NOT NULL,
    visitors BIGINT,
    passers_by BIGINT,
    new_visitors BIGINT,
    repeat_visitors BIGINT,
    randomized_visitors BIGINT,
    randomized_passers_by BIGINT,
    -- JSON arrays: the histogram's edges (minutes) and its bins (universal + randomized).
    dwell_bins_min TEXT NOT NULL,
    dwell TEXT NOT NULL,
    partial BIGINT NOT NULL,
    PRIMARY KEY (site, gateway, boot_id, seq)
);
CREATE INDEX visits_site_time ON visits (site, interval_start_ms);

-- occupancy `occupancy`: estimated people present per window.
CREATE TABLE occupancy (
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    boot_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    window_start_ms BIGINT NOT NULL,
    window_end_ms BIGINT NOT NULL,
    -- null: the plugin had nothing to estimate from, or the host suppressed it.
    estimate DOUBLE PRECISION,
    partial BIGINT NOT NULL,
    PRIMARY KEY (site, gateway, boot_id, seq)
);
CREATE INDEX occupancy_site_time ON occupancy (site, window_start_ms);

-- The latest status of each gateway (retained on the broker).
CREATE TABLE gateways (
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    state TEXT NOT NULL,
    boot_id TEXT NOT NULL,
    version TEXT NOT NULL,
    clean BIGINT NOT NULL,
    mqtt_version TEXT,
    status_ms BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    PRIMARY KEY (site, gateway)
);

CREATE TABLE plugin_status (
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    plugin TEXT NOT NULL,
    boot_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    state TEXT NOT NULL,
    failures BIGINT NOT NULL,
    traps BIGINT NOT NULL,
    reason TEXT,
    version TEXT,
    received_ms BIGINT NOT NULL,
    PRIMARY KEY (site, gateway, plugin)
);

CREATE TABLE consent_summaries (
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    version BIGINT NOT NULL,
    opt_out BIGINT NOT NULL,
    opt_in BIGINT NOT NULL,
    last_error TEXT,
    received_ms BIGINT NOT NULL,
    PRIMARY KEY (site, gateway)
);

CREATE TABLE installed_plugins (
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    plugin TEXT NOT NULL,
    version TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    removed BIGINT NOT NULL,
    received_ms BIGINT NOT NULL,
    PRIMARY KEY (site, gateway, plugin)
);

CREATE TABLE gaps (
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    boot_id TEXT NOT NULL,
    first_seq BIGINT NOT NULL,
    last_seq BIGINT NOT NULL,
    count BIGINT NOT NULL,
    plugin TEXT,
    received_ms BIGINT NOT NULL,
    PRIMARY KEY (site, gateway, boot_id, first_seq)
);

CREATE TABLE metrics (
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    boot_id TEXT NOT NULL,
    wall_ms BIGINT NOT NULL,
    frames BIGINT NOT NULL,
    sightings BIGINT NOT NULL,
    dropped_opted_out BIGINT NOT NULL,
    outputs BIGINT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (site, gateway, boot_id, wall_ms)
);

-- Rollups per site: an hour or a day (UTC) of the tables above, recomputed for recent
-- periods and kept after the raw rows are deleted.
CREATE TABLE rollup_hour (
    site TEXT NOT NULL,
    start_ms BIGINT NOT NULL,
    universal BIGINT NOT NULL,
    randomized BIGINT NOT NULL,
    visitors BIGINT NOT NULL,
    passers_by BIGINT NOT NULL,
    occupancy_avg DOUBLE PRECISION,
    PRIMARY KEY (site, start_ms)
);
CREATE TABLE rollup_day (
    site TEXT NOT NULL,
    start_ms BIGINT NOT NULL,
    universal BIGINT NOT NULL,
    randomized BIGINT NOT NULL,
    visitors BIGINT NOT NULL,
    passers_by BIGINT NOT NULL,
    occupancy_avg DOUBLE PRECISION,
    PRIMARY KEY (site, start_ms)
);

-- Consent requests: the consent id only (never the MAC), and when it was published.
CREATE TABLE consent_requests (
    id BIGINT NOT NULL PRIMARY KEY,
    site TEXT NOT NULL,
    consent_id TEXT NOT NULL,
    source TEXT NOT NULL,
    requested_ms BIGINT NOT NULL
);
