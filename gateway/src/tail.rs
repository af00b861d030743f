//! `probegate tail`: the back office's view of the topic tree in one command. It subscribes,
//! validates every payload against its schema (docs/schemas), drops the repeats that
//! at-least-once delivery brings (same site, gateway, boot_id and seq) and prints the rest.

use crate::publish::schemas::Validators;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use std::collections::HashSet;
use std::io::Write;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct TailOptions {
    #[command(flatten)]
    pub broker: crate::broker::BrokerArgs,
    /// Only this store (default: all).
    #[arg(long)]
    pub site: Option<String>,
    /// Only this gateway (default: all).
    #[arg(long)]
    pub gateway: Option<String>,
    /// One JSON object per line instead of "topic payload".
    #[arg(long)]
    pub json: bool,
    /// Stop after this many distinct messages.
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop after this many seconds without a message.
    #[arg(long = "idle-timeout")]
    pub idle_timeout_secs: Option<u64>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct TailReport {
    pub printed: u64,
    pub duplicates: u64,
    pub invalid: u64,
}

/// Runs until `count` or the idle timeout (or forever); reports what it saw.
pub async fn tail(options: TailOptions, out: &mut impl Write) -> Result<TailReport, String> {
    let filter = format!(
        "probegate/v1/{}/{}/#",
        options.site.as_deref().unwrap_or("+"),
        options.gateway.as_deref().unwrap_or("+")
    );
    let mqtt = options.broker.options("tail")?;
    let (client, mut eventloop) = AsyncClient::new(mqtt, 16);
    client
        .subscribe(&filter, QoS::AtLeastOnce)
        .await
        .map_err(|e| e.to_string())?;
    let validators = Validators::new();
    let mut seen: HashSet<(String, String, String, u64)> = HashSet::new();
    let mut report = TailReport::default();
    loop {
        let event = match options.idle_timeout_secs.map(Duration::from_secs) {
            Some(t) => match tokio::time::timeout(t, eventloop.poll()).await {
                Ok(event) => event,
                Err(_) => break,
            },
            None => eventloop.poll().await,
        };
        let publish = match event {
            Ok(Event::Incoming(Packet::Publish(p))) => p,
            Ok(_) => continue,
            Err(e) => return Err(format!("{}: {e}", options.broker.name())),
        };
        // Commands to the gateways (consent, plugin messages, bundle chunks) are the back
        // office's own traffic, some of it binary: not what tail is for.
        if is_command(&publish.topic) {
            continue;
        }
        let verdict = validators.check(&publish.topic, &publish.payload);
        let value: serde_json::Value =
            serde_json::from_slice(&publish.payload).unwrap_or(serde_json::Value::Null);
        if let Some(key) = dedup_key(&value)
            && !seen.insert(key)
        {
            report.duplicates += 1;
            continue;
        }
        if let Err(why) = &verdict {
            report.invalid += 1;
            eprintln!("invalid: {why}");
        }
        let line = if options.json {
            serde_json::json!({
                "topic": publish.topic,
                "retained": publish.retain,
                "valid": verdict.is_ok(),
                "payload": value,
            })
            .to_string()
        } else {
            format!(
                "{} {}",
                publish.topic,
                String::from_utf8_lossy(&publish.payload)
            )
        };
        writeln!(out, "{line}").map_err(|e| e.to_string())?;
        report.printed += 1;
        if options.count.is_some_and(|c| report.printed >= c) {
            break;
        }
    }
    let _ = client.disconnect().await;
    Ok(report)
}

fn is_command(topic: &str) -> bool {
    let levels: Vec<&str> = topic.split('/').collect();
    matches!(levels.get(3), Some(&"cmd")) || matches!(levels.get(4), Some(&"cmd"))
}

/// Enveloped messages carry (site, gateway, boot_id, seq): unique per message.
fn dedup_key(v: &serde_json::Value) -> Option<(String, String, String, u64)> {
    Some((
        v.get("site")?.as_str()?.to_owned(),
        v.get("gateway")?.as_str()?.to_owned(),
        v.get("boot_id")?.as_str()?.to_owned(),
        v.get("seq")?.as_u64()?,
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn commands_to_gateways_are_told_apart_from_what_gateways_publish() {
        assert!(super::is_command("probegate/v1/s/cmd/bundles/p/0/1"));
        assert!(super::is_command("probegate/v1/s/g/cmd/plugins/x/pause"));
        assert!(!super::is_command("probegate/v1/s/g/plugins/x/counts"));
        assert!(!super::is_command("probegate/v1/s/g/status"));
    }
}
