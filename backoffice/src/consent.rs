//! The consent desk: a MAC comes in (from staff, or from the shopper's public page), its
//! consent id goes out to the store's gateways, and the MAC goes nowhere else: not to the
//! database, not to the log. Confirmation is each gateway's retained consent summary arriving
//! after the request, without an error.

use crate::db::{Db, V};
use crate::store::now_ms;
use crate::web::{App, esc};
use anyhow::{Context, Result, bail};
use probegate_contract::consent;
use probegate_contract::payload::{ConsentCommand, ConsentEntry, ConsentStatus};
use rumqttc::v5::mqttbytes::QoS;
use std::fmt::Write;

/// Publishes an opt-out for `mac` to every gateway of `site`; the request's number.
pub async fn opt_out(app: &App, site: &str, mac: &str, source: &str) -> Result<i64> {
    if !app.config.sites.contains_key(site) {
        bail!("unknown store");
    }
    // The error never quotes the input: it may be a MAC with a typo.
    let Some(mac) = consent::parse_mac(mac) else {
        bail!("that is not a MAC address: six pairs of hex digits, like aa:bb:cc:dd:ee:ff");
    };
    let key = app.config.consent_key(site)?;
    let id = consent::to_hex(&consent::id(&key, &mac));
    let command = ConsentCommand::Add {
        entries: vec![ConsentEntry {
            id: id.clone(),
            status: ConsentStatus::OptOut,
        }],
    };
    let payload = sign(app, site, serde_json::to_string(&command)?)?;
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS random number generator works");
    let request = i64::from_le_bytes(bytes) & i64::MAX;
    let requested = now_ms();
    app.db
        .execute(
            "INSERT INTO consent_requests (id, site, consent_id, source, requested_ms) VALUES ($1, $2, $3, $4, $5)",
            &[request.into(), site.into(), id.as_str().into(), source.into(), requested.into()],
        )
        .await?;
    app.mqtt
        .publish(
            probegate_contract::topic::site_consent_command(site),
            QoS::AtLeastOnce,
            false,
            payload,
        )
        .await
        .context("cannot publish the consent command")?;
    tracing::info!(site, request, source, "opt-out published");
    Ok(request)
}

/// The command as published: signed when the config names a signing key. The sequence is
/// the wall clock in microseconds: it rises across restarts and instances without shared
/// state (two commands for one site within a microsecond would collide; the second is then
/// refused as replayed and shows on the desk as unconfirmed).
fn sign(app: &App, site: &str, command: String) -> Result<Vec<u8>> {
    let Some(key) = app.config.signing_key()? else {
        return Ok(command.into_bytes());
    };
    let sequence = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(1);
    let bytes = consent::signed_bytes(site, sequence, &command);
    let signature = minisign::sign(
        None,
        &key,
        std::io::Cursor::new(bytes),
        Some("probegate consent command"),
        None,
    )
    .map_err(|e| anyhow::anyhow!("cannot sign the consent command: {e}"))?;
    Ok(serde_json::to_vec(
        &probegate_contract::payload::SignedConsentCommand {
            command,
            site: site.to_owned(),
            sequence,
            signature: signature.into_string(),
        },
    )?)
}

/// (gateways that confirmed, gateways of the store) for a request; `None` if there is none.
pub async fn confirmation(db: &Db, site: &str, request: i64) -> Result<Option<(usize, usize)>> {
    let rows = db
        .query(
            "SELECT requested_ms FROM consent_requests WHERE id = $1 AND site = $2",
            &[request.into(), site.into()],
        )
        .await?;
    let Some(requested) = rows.first().map(|r| r[0].int()) else {
        return Ok(None);
    };
    let states = gateway_states(db, site, requested).await?;
    Ok(Some((states.iter().filter(|s| s.1).count(), states.len())))
}

/// Each gateway of the site: whether a consent summary arrived after `requested_ms` without
/// an error and with a registry version above the last one known before the request.
async fn gateway_states(db: &Db, site: &str, requested_ms: i64) -> Result<Vec<(String, bool)>> {
    let rows = db
        .query(
            "SELECT g.gateway, (SELECT COUNT(*) FROM consent_summary_log l WHERE l.site = g.site AND l.gateway = g.gateway \
               AND l.received_ms >= $2 AND l.last_error IS NULL AND l.version > COALESCE( \
                 (SELECT MAX(b.version) FROM consent_summary_log b WHERE b.site = g.site AND b.gateway = g.gateway \
                  AND b.received_ms < $2), -1)) \
             FROM gateways g WHERE g.site = $1 ORDER BY g.gateway",
            &[V::from(site), V::from(requested_ms)],
        )
        .await?;
    Ok(rows.iter().map(|r| (r[0].text(), r[1].int() > 0)).collect())
}

/// The desk's table of recent requests and their confirmations.
pub async fn requests_html(db: &Db) -> Result<String> {
    let rows = db
        .query(
            "SELECT site, consent_id, source, requested_ms FROM consent_requests ORDER BY requested_ms DESC LIMIT 50",
            &[],
        )
        .await?;
    let mut out = String::from(
        "<section><h2>Recent requests</h2><table id=\"requests\"><tr><th>store</th><th>consent id</th><th>from</th><th>gateways confirmed</th></tr>",
    );
    for r in rows {
        let (site, requested) = (r[0].text(), r[3].int());
        let states = gateway_states(db, &site, requested).await?;
        let confirmed: Vec<String> = states
            .iter()
            .map(|(g, ok)| format!("{} {}", esc(g), if *ok { "✔" } else { "…" }))
            .collect();
        let _ = write!(
            out,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td class=\"confirmations\">{}</td></tr>",
            esc(&site),
            esc(&r[1].text()),
            esc(&r[2].text()),
            confirmed.join(", ")
        );
    }
    out += "</table></section>";
    Ok(out)
}
