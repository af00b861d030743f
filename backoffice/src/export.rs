//! `probegate-backoffice export --jsonl`: every stored enveloped message as one JSON line a
//! Kafka producer can send as it is: the Kafka topic, the record key (the dedup key,
//! `site/gateway/boot_id/seq`, unique), the site to partition by, and the envelope as the
//! gateway published it. See docs/backoffice.md, "Kafka and ClickHouse".

use crate::db::{Db, V};
use anyhow::{Context, Result};
use serde_json::{Value, json};
use std::io::Write;

/// Rows read per query: the log is read in key order, a page at a time, so a large
/// database is streamed rather than loaded.
const PAGE: i64 = 5000;

/// The Kafka topic for an envelope: one per schema (docs/schemas), so a consumer of a topic
/// reads one kind of document. Names are `a-z 0-9 - _` and dots: valid Kafka topic names.
pub fn kafka_topic(plugin: &str, stream: &str) -> String {
    match stream {
        "status" => "probegate.plugin-status".into(),
        "bundle-result" => "probegate.bundles.result".into(),
        "plugins-installed" => "probegate.plugins-installed".into(),
        _ => format!("probegate.plugins.{plugin}.{stream}"),
    }
}

/// Writes every stored envelope with `time_ms >= since_ms`, in key order; the number written.
pub async fn jsonl(db: &Db, since_ms: i64, out: &mut impl Write) -> Result<u64> {
    let mut after: Option<(String, String, String, i64)> = None;
    let mut written = 0;
    loop {
        // Keyset paging on the primary key: no OFFSET, each page an index range.
        let (filter, mut params) = match &after {
            None => (String::new(), vec![]),
            Some((s, g, b, q)) => (
                // A row-value comparison: SQLite (3.15+) and PostgreSQL both take it.
                "AND (site, gateway, boot_id, seq) > ($2, $3, $4, $5)".to_owned(),
                vec![
                    V::from(s.as_str()),
                    V::from(g.as_str()),
                    V::from(b.as_str()),
                    V::from(*q),
                ],
            ),
        };
        params.insert(0, V::from(since_ms));
        let rows = db
            .query(
                &format!(
                    "SELECT site, gateway, boot_id, seq, time_ms, plugin, stream, data FROM messages \
                     WHERE time_ms >= $1 {filter} ORDER BY site, gateway, boot_id, seq LIMIT {PAGE}"
                ),
                &params,
            )
            .await?;
        for r in &rows {
            let (site, gateway, boot_id, seq) = (r[0].text(), r[1].text(), r[2].text(), r[3].int());
            let (plugin, stream) = (r[5].text(), r[6].text());
            let data: Value = serde_json::from_str(&r[7].text())
                .with_context(|| format!("stored data of {site}/{gateway}/{boot_id}/{seq}"))?;
            let line = json!({
                "topic": kafka_topic(&plugin, &stream),
                "key": format!("{site}/{gateway}/{boot_id}/{seq}"),
                "partition_key": site,
                "value": {
                    "v": 1, "site": site, "gateway": gateway, "boot_id": boot_id, "seq": seq,
                    "time_ms": r[4].int(), "plugin": plugin, "stream": stream, "data": data,
                },
            });
            serde_json::to_writer(&mut *out, &line)?;
            out.write_all(b"\n")?;
            written += 1;
        }
        match rows.last() {
            Some(r) if rows.len() as i64 == PAGE => {
                after = Some((r[0].text(), r[1].text(), r[2].text(), r[3].int()));
            }
            _ => break,
        }
    }
    out.flush()?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_schema_has_its_own_kafka_topic() {
        assert_eq!(
            kafka_topic("occupancy", "occupancy"),
            "probegate.plugins.occupancy.occupancy"
        );
        assert_eq!(
            kafka_topic("visitor-counter", "status"),
            "probegate.plugin-status"
        );
    }

    /// Paging crosses every page boundary without losing or repeating a row.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn paging_writes_every_row_once_in_key_order() {
        let db = Db::open("sqlite::memory:").await.unwrap();
        let n = PAGE * 2 + 3;
        for i in 0..n {
            // Two gateways, two boots, so the keyset crosses every column of the key.
            let (g, b) = (
                ["a", "b"][(i % 2) as usize],
                ["x", "y"][(i % 4 / 2) as usize],
            );
            db.execute(
                "INSERT INTO messages VALUES ('s', $1, $2, $3, 5, 'p', 'st', '{\"n\":1}', 0)",
                &[V::from(g), V::from(b), V::from(i)],
            )
            .await
            .unwrap();
        }
        let mut out = Vec::new();
        assert_eq!(jsonl(&db, 0, &mut out).await.unwrap(), n as u64);
        let keys: Vec<String> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["key"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        let unique: std::collections::BTreeSet<&String> = keys.iter().collect();
        assert_eq!((keys.len(), unique.len()), (n as usize, n as usize));
        let mut out = Vec::new();
        assert_eq!(
            jsonl(&db, 6, &mut out).await.unwrap(),
            0,
            "since is applied"
        );
    }
}
