//! Hourly and daily rollups per site, and retention: what keeps a year of a large fleet
//! queryable. Recent periods are recomputed in full (late and repeated messages land there);
//! older raw rows are deleted once rolled up.

use crate::config::Retention;
use crate::db::{Db, V};
use anyhow::Result;

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

/// Recomputes the rollups of every period that starts at or after `since_ms`.
pub async fn roll_up(db: &Db, since_ms: i64) -> Result<()> {
    for (table, len) in [("rollup_hour", HOUR), ("rollup_day", DAY)] {
        let from = since_ms - since_ms.rem_euclid(len);
        // Integer division buckets the same way in SQLite and PostgreSQL.
        let sql = format!(
            "INSERT INTO {table} (site, start_ms, universal, randomized, visitors, passers_by, occupancy_avg) \
             SELECT site, start_ms, CAST(SUM(u) AS BIGINT), CAST(SUM(r) AS BIGINT), CAST(SUM(v) AS BIGINT), \
                    CAST(SUM(p) AS BIGINT), CAST(MAX(o) AS DOUBLE PRECISION) FROM ( \
               SELECT site, (interval_start_ms / {len}) * {len} AS start_ms, COALESCE(universal, 0) AS u, \
                      COALESCE(randomized, 0) AS r, 0 AS v, 0 AS p, CAST(NULL AS DOUBLE PRECISION) AS o \
                 FROM counts WHERE interval_start_ms >= $1 \
               UNION ALL \
               SELECT site, (interval_start_ms / {len}) * {len}, 0, 0, COALESCE(visitors, 0), COALESCE(passers_by, 0), CAST(NULL AS DOUBLE PRECISION) \
                 FROM visits WHERE interval_start_ms >= $1 \
               UNION ALL \
               SELECT site, start_ms, 0, 0, 0, 0, AVG(estimate) FROM ( \
                 SELECT site, (window_start_ms / {len}) * {len} AS start_ms, estimate FROM occupancy WHERE window_start_ms >= $1 \
               ) o GROUP BY site, start_ms \
             ) parts GROUP BY site, start_ms \
             ON CONFLICT (site, start_ms) DO UPDATE SET universal = excluded.universal, randomized = excluded.randomized, \
               visitors = excluded.visitors, passers_by = excluded.passers_by, occupancy_avg = excluded.occupancy_avg"
        );
        db.execute(&sql, &[V::from(from)]).await?;
    }
    Ok(())
}

/// Deletes raw rows and hourly rollups past their retention, counted back from `now_ms`.
pub async fn retain(db: &Db, retention: &Retention, now_ms: i64) -> Result<u64> {
    let raw_before = now_ms - i64::from(retention.raw_days) * DAY;
    let hour_before = now_ms - i64::from(retention.hourly_days) * DAY;
    let mut deleted = 0;
    for (sql, before) in [
        ("DELETE FROM messages WHERE time_ms < $1", raw_before),
        (
            "DELETE FROM counts WHERE interval_start_ms < $1",
            raw_before,
        ),
        (
            "DELETE FROM visits WHERE interval_start_ms < $1",
            raw_before,
        ),
        (
            "DELETE FROM occupancy WHERE window_start_ms < $1",
            raw_before,
        ),
        ("DELETE FROM metrics WHERE wall_ms < $1", raw_before),
        ("DELETE FROM gaps WHERE received_ms < $1", raw_before),
        ("DELETE FROM rollup_hour WHERE start_ms < $1", hour_before),
    ] {
        deleted += db.execute(sql, &[V::from(before)]).await?;
    }
    Ok(deleted)
}
