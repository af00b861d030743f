//! What the dashboard asks the database, for one site or a group of sites. "The day" is the
//! latest day with data for these sites, in the stores' time zone (UTC unless configured):
//! pipeline time, so a replayed capture shows its own day, and a live fleet today.

use crate::charts::{Band, Chart, Kind};
use crate::db::{Db, Row, V};
use crate::localtime::Day;
use anyhow::Result;
use jiff::tz::TimeZone;

pub const HOUR: i64 = 3_600_000;
pub const DAY: i64 = 24 * HOUR;

/// `$first, $first+1, ...` for an `IN (...)` of `n` sites.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn sites_params(sites: &[String]) -> Vec<V> {
    sites.iter().map(|s| V::from(s.as_str())).collect()
}

/// The latest local day with data, and the latest interval's end.
pub async fn latest(db: &Db, sites: &[String], tz: &TimeZone) -> Result<Option<(Day, i64)>> {
    let p = placeholders(1, sites.len());
    let sql = format!(
        "SELECT MAX(t) FROM (SELECT MAX(interval_end_ms) AS t FROM counts WHERE site IN ({p}) \
         UNION ALL SELECT MAX(interval_end_ms) FROM visits WHERE site IN ({p}) \
         UNION ALL SELECT MAX(window_end_ms) FROM occupancy WHERE site IN ({p})) m"
    );
    let rows = db.query(&sql, &sites_params(sites)).await?;
    Ok(rows
        .first()
        .and_then(|r| r[0].opt_int())
        .map(|end| (Day::containing(end - 1, tz), end)))
}

pub struct Kpis {
    pub universal: i64,
    pub randomized: i64,
    pub visitors: i64,
    pub passers_by: i64,
    pub occupancy_now: Option<f64>,
    /// (low, high) around `occupancy_now`.
    pub occupancy_interval: Option<(f64, f64)>,
}

/// The sum of a column, or NULL when any row lacks it: an interval summed over windows of
/// which some have none would look narrower than it is.
fn sum_if_all(column: &str) -> String {
    format!("CAST(CASE WHEN COUNT({column}) = COUNT(*) THEN SUM({column}) END AS DOUBLE PRECISION)")
}

pub async fn kpis(db: &Db, sites: &[String], day: &Day) -> Result<Kpis> {
    let p = placeholders(3, sites.len());
    let mut params = vec![V::from(day.start), V::from(day.end)];
    params.extend(sites_params(sites));
    let one = |rows: Vec<Row>, i: usize| rows.first().map_or(0, |r| r[i].int());
    let counts = db
        .query(
            &format!(
                "SELECT CAST(SUM(universal) AS BIGINT), CAST(SUM(randomized) AS BIGINT) FROM counts \
                 WHERE interval_start_ms >= $1 AND interval_start_ms < $2 AND site IN ({p})"
            ),
            &params,
        )
        .await?;
    let (universal, randomized) = (one(counts.clone(), 0), one(counts, 1));
    let visits = db
        .query(
            &format!(
                "SELECT CAST(SUM(visitors) AS BIGINT), CAST(SUM(passers_by) AS BIGINT) FROM visits \
                 WHERE interval_start_ms >= $1 AND interval_start_ms < $2 AND site IN ({p})"
            ),
            &params,
        )
        .await?;
    let (visitors, passers_by) = (one(visits.clone(), 0), one(visits, 1));
    // Occupancy now: the latest window of each site, summed over the sites, and its
    // interval where every window has one.
    let occ = db
        .query(
            &format!(
                "SELECT CAST(SUM(estimate) AS DOUBLE PRECISION), {}, {} FROM occupancy o WHERE site IN ({p}) \
                 AND window_start_ms >= $1 AND window_start_ms < $2 AND window_start_ms = \
                 (SELECT MAX(window_start_ms) FROM occupancy i WHERE i.site = o.site AND i.estimate IS NOT NULL)",
                sum_if_all("low"),
                sum_if_all("high")
            ),
            &params,
        )
        .await?;
    let interval = occ
        .first()
        .and_then(|r| Some((r[1].float()?, r[2].float()?)));
    Ok(Kpis {
        universal,
        randomized,
        visitors,
        passers_by,
        occupancy_now: occ.first().and_then(|r| r[0].float()),
        occupancy_interval: interval,
    })
}

/// Distinct addresses per counting interval of the day, universal and randomized apart.
pub async fn devices(db: &Db, sites: &[String], day: &Day) -> Result<Chart> {
    let p = placeholders(3, sites.len());
    let mut params = vec![V::from(day.start), V::from(day.end)];
    params.extend(sites_params(sites));
    let rows = db
        .query(
            &format!(
                "SELECT interval_start_ms, CAST(SUM(universal) AS BIGINT), CAST(SUM(randomized) AS BIGINT), \
                 CAST(SUM(sightings) AS BIGINT) FROM counts WHERE interval_start_ms >= $1 AND interval_start_ms < $2 \
                 AND site IN ({p}) GROUP BY interval_start_ms ORDER BY interval_start_ms"
            ),
            &params,
        )
        .await?;
    Ok(Chart {
        id: "devices",
        title: "Devices per interval".into(),
        note: "Distinct addresses per counting interval (visitor-counter `counts`). Universal addresses are about one per device; randomized ones over-count phones.".into(),
        kind: Kind::Lines,
        columns: vec![format!("interval start ({})", day.zone()), "universal".into(), "randomized".into(), "probe requests".into()],
        rows: rows
            .iter()
            .map(|r| {
                let t = r[0].int();
                (
                    day.minute_label(t),
                    day.hours_in(t),
                    vec![r[1].float(), r[2].float(), r[3].float()],
                )
            })
            .collect(),
        band: None,
    })
}

/// Occupancy (or, without the occupancy plugin, universal addresses) per hour of the day,
/// against the mean of the same hour on the same weekday of the four weeks before.
pub async fn occupancy_vs_baseline(db: &Db, sites: &[String], day: &Day) -> Result<Chart> {
    let p = placeholders(2, sites.len());
    let has_occupancy = {
        let mut params = vec![V::from(day.start)];
        params.extend(sites_params(sites));
        let rows = db
            .query(
                &format!(
                    "SELECT COUNT(*) FROM occupancy WHERE window_start_ms >= $1 AND site IN ({p})"
                ),
                &params,
            )
            .await?;
        rows.first().is_some_and(|r| r[0].int() > 0)
    };
    let column = if has_occupancy {
        "occupancy_avg"
    } else {
        "CAST(universal AS DOUBLE PRECISION)"
    };
    // The day's interval beside its estimate: the hours' mean low and high.
    let interval = if has_occupancy {
        format!(
            "{}, {}",
            sum_if_all("occupancy_low_avg"),
            sum_if_all("occupancy_high_avg")
        )
    } else {
        "CAST(NULL AS DOUBLE PRECISION), CAST(NULL AS DOUBLE PRECISION)".to_owned()
    };
    let mut hours = vec![(None, Vec::new(), (None, None)); 24];
    // The hourly rollups are UTC hours, which are the store's hours in every zone a whole
    // number of hours from UTC; the weeks before are calendar weeks in the store's zone.
    let p = placeholders(3, sites.len());
    for week in 0..=4i64 {
        let d = day.weeks_before(week);
        let mut params = vec![V::from(d.start), V::from(d.end)];
        params.extend(sites_params(sites));
        let rows = db
            .query(
                &format!(
                    "SELECT start_ms, CAST(SUM({column}) AS DOUBLE PRECISION), {interval} FROM rollup_hour \
                     WHERE start_ms >= $1 AND start_ms < $2 AND site IN ({p}) GROUP BY start_ms"
                ),
                &params,
            )
            .await?;
        for r in rows {
            let h = d.hour_of(r[0].int()) as usize;
            if let (Some(slot), Some(v)) = (hours.get_mut(h), r[1].float()) {
                match week {
                    0 => {
                        slot.0 = Some(v);
                        slot.2 = (r[2].float(), r[3].float());
                    }
                    _ => slot.1.push(v),
                }
            }
        }
    }
    let rows = hours
        .into_iter()
        .enumerate()
        .filter(|(_, (today, base, _))| today.is_some() || !base.is_empty())
        .map(|(h, (today, base, (low, high)))| {
            let mean = (!base.is_empty()).then(|| base.iter().sum::<f64>() / base.len() as f64);
            let mut values = vec![today, mean];
            if has_occupancy {
                values.extend([low, high]);
            }
            (format!("{h:02}:00"), h as f64, values)
        })
        .collect();
    let (title, note) = if has_occupancy {
        (
            "Occupancy by hour vs baseline",
            "Mean estimated people present per hour (occupancy plugin), against the same weekday's mean over the four weeks before (hourly rollups). The shaded band is the day's interval: the hour's mean low and high.",
        )
    } else {
        (
            "Universal devices by hour vs baseline",
            "No occupancy plugin reports here: distinct universal addresses per hour, against the same weekday over the four weeks before.",
        )
    };
    let mut columns = vec![
        format!("hour ({})", day.zone()),
        "the day".into(),
        "same weekday, 4-week mean".into(),
    ];
    if has_occupancy {
        columns.extend(["low".into(), "high".into()]);
    }
    Ok(Chart {
        id: "occupancy",
        title: title.into(),
        note: note.into(),
        kind: Kind::Lines,
        columns,
        rows,
        band: has_occupancy.then_some(Band {
            line: 0,
            low: 2,
            high: 3,
        }),
    })
}

/// The occupancy plugin's windows of the day: the estimate and its interval `low`–`high`,
/// summed over the stores. A window a gateway reported twice (a restart inside it: two
/// partial reports) counts once, by its larger estimate.
pub async fn occupancy_windows(db: &Db, sites: &[String], day: &Day) -> Result<Chart> {
    let p = placeholders(3, sites.len());
    let mut params = vec![V::from(day.start), V::from(day.end)];
    params.extend(sites_params(sites));
    let rows = db
        .query(
            &format!(
                "SELECT window_start_ms, CAST(SUM(estimate) AS DOUBLE PRECISION), {}, {} FROM ( \
                   SELECT site, gateway, window_start_ms, MAX(estimate) AS estimate, MAX(low) AS low, MAX(high) AS high \
                   FROM occupancy WHERE window_start_ms >= $1 AND window_start_ms < $2 AND site IN ({p}) \
                   GROUP BY site, gateway, window_start_ms \
                 ) w GROUP BY window_start_ms ORDER BY window_start_ms",
                sum_if_all("low"),
                sum_if_all("high")
            ),
            &params,
        )
        .await?;
    let group = sites.len() > 1;
    Ok(Chart {
        id: "occupancy-windows",
        title: "Occupancy per window, with its interval".into(),
        note: if group {
            "Estimated people present per window (occupancy plugin), summed over the stores. The band is the sum of the stores' intervals (low–high): wider than a joint interval would be, never narrower."
        } else {
            "Estimated people present per window (occupancy plugin). The shaded band is the plugin's interval low–high, calibrated on hand-counted days so that the true count falls inside it in at least four windows of five (see Definitions)."
        }
        .into(),
        kind: Kind::Lines,
        columns: vec![
            format!("window start ({})", day.zone()),
            "estimate".into(),
            "low".into(),
            "high".into(),
        ],
        rows: rows
            .iter()
            .map(|r| {
                let t = r[0].int();
                (
                    day.minute_label(t),
                    day.hours_in(t),
                    vec![r[1].float(), r[2].float(), r[3].float()],
                )
            })
            .collect(),
        band: Some(Band {
            line: 0,
            low: 1,
            high: 2,
        }),
    })
}

/// Visitors against passers-by per hour (universal addresses; visitor-counter `visits`).
pub async fn visitors(db: &Db, sites: &[String], day: &Day) -> Result<Chart> {
    let p = placeholders(3, sites.len());
    let mut params = vec![V::from(day.start), V::from(day.end)];
    params.extend(sites_params(sites));
    let rows = db
        .query(
            &format!(
                "SELECT (interval_start_ms / {HOUR}) * {HOUR} AS h, CAST(SUM(visitors) AS BIGINT), \
                 CAST(SUM(passers_by) AS BIGINT), CAST(SUM(new_visitors) AS BIGINT), CAST(SUM(repeat_visitors) AS BIGINT) \
                 FROM visits WHERE interval_start_ms >= $1 AND interval_start_ms < $2 AND site IN ({p}) \
                 GROUP BY (interval_start_ms / {HOUR}) * {HOUR} ORDER BY h"
            ),
            &params,
        )
        .await?;
    Ok(Chart {
        id: "visitors",
        title: "Visitors vs passers-by".into(),
        note: "Per hour, devices with universal addresses only (randomized ones over-count). New vs repeat: within the gateway's key epoch (a day); beyond it only for opted-in devices.".into(),
        kind: Kind::Bars,
        columns: vec![format!("hour ({})", day.zone()), "visitors".into(), "passers-by".into(), "new".into(), "repeat".into()],
        rows: rows
            .iter()
            .map(|r| {
                let t = r[0].int();
                (day.minute_label(t), day.hours_in(t), r[1..].iter().map(V::float).collect())
            })
            .collect(),
        band: None,
    })
}

/// Visits of the day by dwell tier.
pub async fn dwell(db: &Db, sites: &[String], day: &Day) -> Result<Chart> {
    let p = placeholders(3, sites.len());
    let mut params = vec![V::from(day.start), V::from(day.end)];
    params.extend(sites_params(sites));
    let rows = db
        .query(
            &format!(
                "SELECT dwell_bins_min, dwell FROM visits WHERE interval_start_ms >= $1 AND interval_start_ms < $2 \
                 AND site IN ({p})"
            ),
            &params,
        )
        .await?;
    let mut edges: Vec<u64> = Vec::new();
    let mut tiers: Vec<f64> = Vec::new();
    for r in rows {
        let e: Vec<u64> = serde_json::from_str(&r[0].text()).unwrap_or_default();
        let d: Vec<Option<u64>> = serde_json::from_str(&r[1].text()).unwrap_or_default();
        // Intervals configured with other edges cannot be added up: the first set wins.
        if tiers.is_empty() {
            edges = e.clone();
            tiers = vec![0.0; d.len()];
        }
        if e == edges && d.len() == tiers.len() {
            for (t, v) in tiers.iter_mut().zip(d) {
                *t += v.unwrap_or(0) as f64;
            }
        }
    }
    let label = |i: usize| match (i.checked_sub(1).and_then(|j| edges.get(j)), edges.get(i)) {
        (None, Some(hi)) => format!("< {hi} min"),
        (Some(lo), Some(hi)) => format!("{lo}–{hi} min"),
        (Some(lo), None) => format!("≥ {lo} min"),
        (None, None) => "all".into(),
    };
    Ok(Chart {
        id: "dwell",
        title: "Dwell tiers".into(),
        note: "Visits of the day by time from first to last sighting (universal and randomized addresses).".into(),
        kind: Kind::Bars,
        columns: vec!["dwell".into(), "visits".into()],
        rows: tiers
            .iter()
            .enumerate()
            .map(|(i, v)| (label(i), i as f64, vec![Some(*v)]))
            .collect(),
        band: None,
    })
}

pub struct GatewayHealth {
    pub site: String,
    pub gateway: String,
    pub state: String,
    pub version: String,
    pub last_seen_ms: i64,
    pub gaps: i64,
    pub plugins: Vec<(String, String, String)>,
    pub consent: Option<(i64, Option<String>)>,
    pub bundles: Vec<(String, String)>,
}

pub async fn health(db: &Db, sites: &[String]) -> Result<Vec<GatewayHealth>> {
    let p = placeholders(1, sites.len());
    let params = sites_params(sites);
    let gateways = db
        .query(
            &format!(
                "SELECT g.site, g.gateway, g.state, g.version, g.last_seen_ms, \
                 (SELECT CAST(COALESCE(SUM(count), 0) AS BIGINT) FROM gaps x WHERE x.site = g.site AND x.gateway = g.gateway), \
                 c.version, c.last_error \
                 FROM gateways g LEFT JOIN consent_summaries c ON c.site = g.site AND c.gateway = g.gateway \
                 WHERE g.site IN ({p}) ORDER BY g.site, g.gateway"
            ),
            &params,
        )
        .await?;
    let plugins = db
        .query(
            &format!("SELECT site, gateway, plugin, state, COALESCE(version, '') FROM plugin_status WHERE site IN ({p}) ORDER BY plugin"),
            &params,
        )
        .await?;
    let bundles = db
        .query(
            &format!("SELECT site, gateway, plugin, version FROM installed_plugins WHERE site IN ({p}) AND removed = 0 ORDER BY plugin"),
            &params,
        )
        .await?;
    Ok(gateways
        .into_iter()
        .map(|g| {
            let (site, gateway) = (g[0].text(), g[1].text());
            let mine = |r: &&Row| r[0].text() == site && r[1].text() == gateway;
            GatewayHealth {
                plugins: plugins
                    .iter()
                    .filter(mine)
                    .map(|r| (r[2].text(), r[3].text(), r[4].text()))
                    .collect(),
                bundles: bundles
                    .iter()
                    .filter(mine)
                    .map(|r| (r[2].text(), r[3].text()))
                    .collect(),
                state: g[2].text(),
                version: g[3].text(),
                last_seen_ms: g[4].int(),
                gaps: g[5].int(),
                consent: g[6].opt_int().map(|v| (v, g[7].opt_text())),
                site,
                gateway,
            }
        })
        .collect())
}

/// Every site the database has heard of, with the configured ones.
pub async fn sites(db: &Db) -> Result<Vec<String>> {
    let rows = db
        .query(
            "SELECT site FROM gateways UNION SELECT site FROM counts UNION SELECT site FROM visits ORDER BY 1",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| r[0].text()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_stores_day_and_its_times_are_in_its_own_zone() {
        let db = Db::open("sqlite::memory:").await.unwrap();
        // 2024-03-22 22:30 and 23:30 UTC: 23:30 on Friday and 00:30 on Saturday in Prague.
        let late = 1_711_150_200_000i64;
        for (seq, t) in [(1i64, late - HOUR), (2, late)] {
            db.execute(
                "INSERT INTO counts VALUES ('s', 'g', 'b', $1, $2, $3, 4, 9, 40, 0)",
                &[V::from(seq), V::from(t), V::from(t + 300_000)],
            )
            .await
            .unwrap();
        }
        let sites = vec!["s".to_owned()];
        let labels = |c: &Chart| c.rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>();

        let (day, _) = latest(&db, &sites, &TimeZone::UTC).await.unwrap().unwrap();
        assert_eq!(day.date(), "Friday 2024-03-22");
        let chart = devices(&db, &sites, &day).await.unwrap();
        assert_eq!(labels(&chart), ["22:30", "23:30"]);
        assert_eq!(chart.columns[0], "interval start (UTC)");

        let prague = crate::localtime::zone("Europe/Prague").unwrap();
        let (day, _) = latest(&db, &sites, &prague).await.unwrap().unwrap();
        assert_eq!(day.date(), "Saturday 2024-03-23");
        let chart = devices(&db, &sites, &day).await.unwrap();
        assert_eq!(
            labels(&chart),
            ["00:30"],
            "Friday's interval is not Saturday's"
        );
        assert_eq!(chart.columns[0], "interval start (Europe/Prague)");
        assert!(
            (chart.rows[0].1 - 0.5).abs() < 1e-9,
            "x is the store's clock"
        );
        let k = kpis(&db, &sites, &day).await.unwrap();
        assert_eq!(k.universal, 4);
    }
}
