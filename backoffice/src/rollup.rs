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
            "INSERT INTO {table} (site, start_ms, universal, randomized, visitors, passers_by, occupancy_avg, \
               occupancy_low_avg, occupancy_high_avg) \
             SELECT site, start_ms, CAST(SUM(u) AS BIGINT), CAST(SUM(r) AS BIGINT), CAST(SUM(v) AS BIGINT), \
                    CAST(SUM(p) AS BIGINT), CAST(MAX(o) AS DOUBLE PRECISION), CAST(MAX(lo) AS DOUBLE PRECISION), \
                    CAST(MAX(hi) AS DOUBLE PRECISION) FROM ( \
               SELECT site, (interval_start_ms / {len}) * {len} AS start_ms, COALESCE(universal, 0) AS u, \
                      COALESCE(randomized, 0) AS r, 0 AS v, 0 AS p, CAST(NULL AS DOUBLE PRECISION) AS o, \
                      CAST(NULL AS DOUBLE PRECISION) AS lo, CAST(NULL AS DOUBLE PRECISION) AS hi \
                 FROM counts WHERE interval_start_ms >= $1 \
               UNION ALL \
               SELECT site, (interval_start_ms / {len}) * {len}, 0, 0, COALESCE(visitors, 0), COALESCE(passers_by, 0), \
                      CAST(NULL AS DOUBLE PRECISION), CAST(NULL AS DOUBLE PRECISION), CAST(NULL AS DOUBLE PRECISION) \
                 FROM visits WHERE interval_start_ms >= $1 \
               UNION ALL \
               SELECT site, start_ms, 0, 0, 0, 0, AVG(estimate), \
                      CASE WHEN COUNT(low) = COUNT(*) THEN AVG(low) END, CASE WHEN COUNT(high) = COUNT(*) THEN AVG(high) END \
                 FROM ( \
                 SELECT site, (window_start_ms / {len}) * {len} AS start_ms, estimate, low, high FROM occupancy WHERE window_start_ms >= $1 \
               ) o GROUP BY site, start_ms \
             ) parts GROUP BY site, start_ms \
             ON CONFLICT (site, start_ms) DO UPDATE SET universal = excluded.universal, randomized = excluded.randomized, \
               visitors = excluded.visitors, passers_by = excluded.passers_by, occupancy_avg = excluded.occupancy_avg, \
               occupancy_low_avg = excluded.occupancy_low_avg, occupancy_high_avg = excluded.occupancy_high_avg"
        );
        db.execute(&sql, &[V::from(from)]).await?;
    }
    Ok(())
}

/// Deletes raw rows and hourly rollups past their retention, counted back from `data_ms`
/// (the newest data's time) for data and from `wall_ms` for the message log, whose pipeline
/// times can be 0 (plugin statuses before the first frame).
pub async fn retain(db: &Db, retention: &Retention, data_ms: i64, wall_ms: i64) -> Result<u64> {
    let raw_before = data_ms - i64::from(retention.raw_days) * DAY;
    let hour_before = data_ms - i64::from(retention.hourly_days) * DAY;
    let log_before = wall_ms - i64::from(retention.raw_days) * DAY;
    let mut deleted = 0;
    for (sql, before) in [
        ("DELETE FROM messages WHERE received_ms < $1", log_before),
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
        ("DELETE FROM metrics WHERE wall_ms < $1", log_before),
        ("DELETE FROM gaps WHERE received_ms < $1", log_before),
        ("DELETE FROM rollup_hour WHERE start_ms < $1", hour_before),
    ] {
        deleted += db.execute(sql, &[V::from(before)]).await?;
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn count(db: &Db, sql: &str) -> Vec<Vec<i64>> {
        db.query(sql, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.iter().map(V::int).collect())
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn rollups_sum_by_hour_and_day_and_retention_keeps_the_recent_and_the_daily() {
        let db = Db::open("sqlite::memory:").await.unwrap();
        let day = 19_804 * DAY;
        // (start, universal, randomized): two in hour 10, one in hour 11, one 40 days before.
        let rows = [
            (day + 10 * HOUR, 2, 5),
            (day + 10 * HOUR + 300_000, 3, 1),
            (day + 11 * HOUR, 4, 0),
            (day - 40 * DAY, 9, 9),
        ];
        for (i, (t, u, r)) in rows.iter().enumerate() {
            db.execute(
                "INSERT INTO counts VALUES ('s', 'g', 'b', $1, $2, $3, $4, $5, 0, 0)",
                &[
                    V::from(i as i64),
                    V::from(*t),
                    V::from(*t + 300_000),
                    V::from(*u as i64),
                    V::from(*r as i64),
                ],
            )
            .await
            .unwrap();
        }
        // Occupancy: two windows in hour 10 with an interval, one in hour 11 of which only
        // one of two windows has one (an older plugin version beside a newer).
        for (i, (t, e, l, h)) in [
            (day + 10 * HOUR, 4.0, Some(3.0), Some(6.0)),
            (day + 10 * HOUR + 900_000, 6.0, Some(5.0), Some(9.0)),
            (day + 11 * HOUR, 2.0, Some(1.0), Some(3.0)),
            (day + 11 * HOUR + 900_000, 2.0, None, None),
        ]
        .into_iter()
        .enumerate()
        {
            db.execute(
                "INSERT INTO occupancy (site, gateway, boot_id, seq, window_start_ms, window_end_ms, estimate, partial, low, high) \
                 VALUES ('s', 'g', 'b', $1, $2, $3, $4, 0, $5, $6)",
                &[
                    V::from(100 + i as i64),
                    V::from(t),
                    V::from(t + 900_000),
                    V::from(e),
                    V::from(l),
                    V::from(h),
                ],
            )
            .await
            .unwrap();
        }
        roll_up(&db, day - 41 * DAY).await.unwrap();
        let occupancy = db
            .query(
                "SELECT occupancy_avg, occupancy_low_avg, occupancy_high_avg FROM rollup_hour \
                 WHERE occupancy_avg IS NOT NULL ORDER BY start_ms",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.iter().map(V::float).collect::<Vec<_>>())
            .collect::<Vec<_>>();
        assert_eq!(
            occupancy,
            vec![
                vec![Some(5.0), Some(4.0), Some(7.5)],
                vec![Some(2.0), None, None],
            ],
            "an hour's interval is the mean of its windows', and none where one lacks it"
        );
        assert_eq!(
            count(
                &db,
                "SELECT start_ms, universal, randomized FROM rollup_hour ORDER BY start_ms"
            )
            .await,
            vec![
                vec![day - 40 * DAY, 9, 9],
                vec![day + 10 * HOUR, 5, 6],
                vec![day + 11 * HOUR, 4, 0]
            ]
        );
        assert_eq!(
            count(
                &db,
                "SELECT start_ms, universal FROM rollup_day ORDER BY start_ms"
            )
            .await,
            vec![vec![day - 40 * DAY, 9], vec![day, 9]]
        );
        // Rolling up again (a late message) replaces, never adds twice.
        roll_up(&db, day).await.unwrap();
        assert_eq!(
            count(
                &db,
                "SELECT universal FROM rollup_day WHERE start_ms = 19804 * 86400000"
            )
            .await,
            vec![vec![9]]
        );
        let retention = Retention {
            raw_days: 35,
            hourly_days: 30,
        };
        retain(&db, &retention, day + 12 * HOUR, day + 12 * HOUR)
            .await
            .unwrap();
        assert_eq!(
            count(&db, "SELECT COUNT(*) FROM counts").await,
            vec![vec![3]]
        );
        assert_eq!(
            count(&db, "SELECT COUNT(*) FROM rollup_hour").await,
            vec![vec![2]]
        );
        assert_eq!(
            count(&db, "SELECT COUNT(*) FROM rollup_day").await,
            vec![vec![2]],
            "daily rollups are kept"
        );
    }
}
