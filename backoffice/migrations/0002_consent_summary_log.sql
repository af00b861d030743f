-- Every consent summary as it arrived: a request is confirmed by a summary after it with a
-- higher registry version and no error, even if a later summary reports a refused command.
CREATE TABLE consent_summary_log (
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    version BIGINT NOT NULL,
    last_error TEXT,
    received_ms BIGINT NOT NULL
);
CREATE INDEX consent_summary_log_gateway ON consent_summary_log (site, gateway, received_ms);
