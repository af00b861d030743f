//! Writes what the gateways publish, each message exactly once however often it is
//! delivered: every insert is keyed as docs/mqtt.md says to deduplicate, `ON CONFLICT DO
//! NOTHING`, and the retained state (statuses, summaries) is an upsert.

use crate::db::{Db, V};
use anyhow::{Context, Result};
use probegate_contract::payload::{
    ConsentSummary, Counts, Envelope, Gap, Metrics, Occupancy, PluginStatus, PluginsInstalled,
    Status, Visits,
};
use probegate_contract::topic::Topic;

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Stores one validated message; `Ok(false)` when it was a repeat (or carries nothing to
/// keep).
pub async fn store(db: &Db, topic: &Topic<'_>, payload: &[u8]) -> Result<bool> {
    let now = now_ms();
    let (site, gateway) = match topic {
        Topic::Command { .. } => return Ok(false),
        Topic::Status { site, gateway }
        | Topic::Plugin { site, gateway, .. }
        | Topic::PluginStatus { site, gateway, .. }
        | Topic::ConsentSummary { site, gateway }
        | Topic::Gaps { site, gateway }
        | Topic::Metrics { site, gateway }
        | Topic::BundleResult { site, gateway }
        | Topic::PluginsInstalled { site, gateway } => (*site, *gateway),
    };
    let new = match topic {
        Topic::Status { .. } => {
            let s: Status = serde_json::from_slice(payload).context("status")?;
            db.execute(
                "INSERT INTO gateways (site, gateway, state, boot_id, version, clean, mqtt_version, status_ms, last_seen_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (site, gateway) DO UPDATE SET state = excluded.state, boot_id = excluded.boot_id, \
                 version = excluded.version, clean = excluded.clean, mqtt_version = excluded.mqtt_version, \
                 status_ms = excluded.status_ms, last_seen_ms = excluded.last_seen_ms",
                &[site.into(), gateway.into(), s.state.into(), s.boot_id.into(), s.version.into(),
                  s.clean.into(), s.mqtt_version.into(), now.into(), now.into()],
            )
            .await?;
            return Ok(true);
        }
        Topic::ConsentSummary { .. } => {
            let c: ConsentSummary = serde_json::from_slice(payload).context("consent summary")?;
            db.execute(
                "INSERT INTO consent_summary_log (site, gateway, version, last_error, received_ms) VALUES ($1, $2, $3, $4, $5)",
                &[site.into(), gateway.into(), c.version.into(), c.last_error.clone().into(), now.into()],
            )
            .await?;
            db.execute(
                "INSERT INTO consent_summaries (site, gateway, version, opt_out, opt_in, last_error, received_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (site, gateway) DO UPDATE SET version = excluded.version, opt_out = excluded.opt_out, \
                 opt_in = excluded.opt_in, last_error = excluded.last_error, received_ms = excluded.received_ms",
                &[site.into(), gateway.into(), c.version.into(), c.opt_out.into(), c.opt_in.into(),
                  c.last_error.into(), now.into()],
            )
            .await?;
            true
        }
        Topic::Gaps { .. } => {
            let g: Gap = serde_json::from_slice(payload).context("gap record")?;
            db.execute(
                "INSERT INTO gaps (site, gateway, boot_id, first_seq, last_seq, count, plugin, received_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                &[site.into(), gateway.into(), g.boot_id.into(), g.first_seq.into(), g.last_seq.into(),
                  g.count.into(), g.plugin.into(), now.into()],
            )
            .await?
                == 1
        }
        Topic::Metrics { .. } => {
            let m: Metrics = serde_json::from_slice(payload).context("metrics")?;
            db.execute(
                "INSERT INTO metrics (site, gateway, boot_id, wall_ms, frames, sightings, dropped_opted_out, outputs, data) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
                &[site.into(), gateway.into(), m.boot_id.into(), m.wall_ms.into(), m.frames.into(),
                  m.sightings.into(), m.dropped_opted_out.into(), m.outputs.into(),
                  String::from_utf8_lossy(payload).into_owned().into()],
            )
            .await?
                == 1
        }
        Topic::Plugin { .. }
        | Topic::PluginStatus { .. }
        | Topic::BundleResult { .. }
        | Topic::PluginsInstalled { .. } => {
            let e: Envelope = serde_json::from_slice(payload).context("envelope")?;
            store_envelope(db, topic, &e, now).await?
        }
        Topic::Command { .. } => false,
    };
    seen(db, site, gateway, now).await?;
    Ok(new)
}

/// Any message says the gateway was alive when it sent it. Written at most every few seconds
/// per gateway: "last seen" needs no more, and a write per message would double the load.
async fn seen(db: &Db, site: &str, gateway: &str, now: i64) -> Result<()> {
    static LAST: std::sync::Mutex<Option<std::collections::HashMap<(String, String), i64>>> =
        std::sync::Mutex::new(None);
    {
        let mut last = LAST.lock().expect("no panics while locked");
        let map = last.get_or_insert_with(Default::default);
        let key = (site.to_owned(), gateway.to_owned());
        if map.get(&key).is_some_and(|t| now - t < 5_000) {
            return Ok(());
        }
        map.insert(key, now);
    }
    db.execute(
        "UPDATE gateways SET last_seen_ms = $3 WHERE site = $1 AND gateway = $2 AND last_seen_ms < $3",
        &[site.into(), gateway.into(), now.into()],
    )
    .await?;
    Ok(())
}

async fn store_envelope(db: &Db, topic: &Topic<'_>, e: &Envelope, now: i64) -> Result<bool> {
    let key = || -> Vec<V> {
        vec![
            e.site.as_str().into(),
            e.gateway.as_str().into(),
            e.boot_id.as_str().into(),
            e.seq.into(),
        ]
    };
    let mut params = key();
    params.extend([
        e.time_ms.into(),
        e.plugin.as_str().into(),
        e.stream.as_str().into(),
        e.data.to_string().into(),
        now.into(),
    ]);
    let new = db
        .execute(
            "INSERT INTO messages (site, gateway, boot_id, seq, time_ms, plugin, stream, data, received_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
            &params,
        )
        .await?
        == 1;
    match (topic, e.plugin.as_str(), e.stream.as_str()) {
        (Topic::Plugin { .. }, "visitor-counter", "counts") => {
            let c: Counts = serde_json::from_value(e.data.clone()).context("counts")?;
            let mut p = key();
            p.extend([
                c.interval_start_ms.into(),
                c.interval_end_ms.into(),
                c.universal.into(),
                c.randomized.into(),
                c.sightings.into(),
                c.partial.into(),
            ]);
            db.execute(
                "INSERT INTO counts (site, gateway, boot_id, seq, interval_start_ms, interval_end_ms, universal, randomized, sightings, partial) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
                &p,
            )
            .await?;
        }
        (Topic::Plugin { .. }, "visitor-counter", "visits") => {
            let v: Visits = serde_json::from_value(e.data.clone()).context("visits")?;
            let dwell: Vec<Option<u64>> = v
                .universal
                .dwell
                .iter()
                .zip(&v.randomized.dwell)
                .map(|(u, r)| Some(u.unwrap_or(0) + r.unwrap_or(0)))
                .collect();
            let mut p = key();
            p.extend([
                v.interval_start_ms.into(),
                v.interval_end_ms.into(),
                v.universal.visitors.into(),
                v.universal.passers_by.into(),
                v.universal.new.into(),
                v.universal.repeat.into(),
                v.randomized.visitors.into(),
                v.randomized.passers_by.into(),
                serde_json::to_string(&v.dwell_bins_min)?.into(),
                serde_json::to_string(&dwell)?.into(),
                v.partial.into(),
            ]);
            db.execute(
                "INSERT INTO visits (site, gateway, boot_id, seq, interval_start_ms, interval_end_ms, visitors, passers_by, \
                 new_visitors, repeat_visitors, randomized_visitors, randomized_passers_by, dwell_bins_min, dwell, partial) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) ON CONFLICT DO NOTHING",
                &p,
            )
            .await?;
        }
        (Topic::Plugin { .. }, "occupancy", "occupancy") => {
            let o: Occupancy = serde_json::from_value(e.data.clone()).context("occupancy")?;
            let mut p = key();
            p.extend([
                o.window_start_ms.into(),
                o.window_end_ms.into(),
                o.estimate.into(),
                o.partial.into(),
                o.low.into(),
                o.high.into(),
                o.method.into(),
            ]);
            db.execute(
                "INSERT INTO occupancy (site, gateway, boot_id, seq, window_start_ms, window_end_ms, estimate, partial, low, high, method) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING",
                &p,
            )
            .await?;
        }
        (Topic::PluginStatus { plugin, .. }, _, _) => {
            let s: PluginStatus =
                serde_json::from_value(e.data.clone()).context("plugin status")?;
            // Retained and redelivered: only a later report (boot, then seq) replaces one.
            db.execute(
                "INSERT INTO plugin_status (site, gateway, plugin, boot_id, seq, state, failures, traps, reason, version, received_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                 ON CONFLICT (site, gateway, plugin) DO UPDATE SET boot_id = excluded.boot_id, seq = excluded.seq, \
                 state = excluded.state, failures = excluded.failures, traps = excluded.traps, reason = excluded.reason, \
                 version = excluded.version, received_ms = excluded.received_ms \
                 WHERE plugin_status.boot_id <> excluded.boot_id OR plugin_status.seq < excluded.seq",
                &[e.site.as_str().into(), e.gateway.as_str().into(), (*plugin).into(), e.boot_id.as_str().into(),
                  e.seq.into(), s.state.into(), s.failures.into(), s.traps.into(), s.reason.into(),
                  s.version.into(), now.into()],
            )
            .await?;
        }
        (Topic::PluginsInstalled { .. }, _, _) => {
            let installed: PluginsInstalled =
                serde_json::from_value(e.data.clone()).context("plugins-installed")?;
            for (name, p) in installed.plugins {
                db.execute(
                    "INSERT INTO installed_plugins (site, gateway, plugin, version, sequence, removed, received_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (site, gateway, plugin) DO UPDATE SET version = excluded.version, \
                     sequence = excluded.sequence, removed = excluded.removed, received_ms = excluded.received_ms",
                    &[e.site.as_str().into(), e.gateway.as_str().into(), name.into(), p.version.into(),
                      p.sequence.into(), p.removed.into(), now.into()],
                )
                .await?;
            }
        }
        _ => {}
    }
    Ok(new)
}
