//! Consent ids: what a back office publishes instead of a MAC, and what the gateway's registry
//! keys on. Both sides compute them here, so they cannot disagree.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The consent id of a MAC under a site key: HMAC-SHA256, the first 16 bytes. HMAC-SHA256
/// because every back-office language has it (docs/mqtt.md shows it in Python).
pub fn id(key: &[u8], mac: &[u8; 6]) -> [u8; 16] {
    let mut hmac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
    hmac.update(mac);
    let digest = hmac.finalize().into_bytes();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    id
}

/// What the signature of a signed consent command covers: the site, the sequence and the
/// command's exact text, so a signature cannot be moved to another site or replayed with
/// another sequence.
pub fn signed_bytes(site: &str, sequence: u64, command: &str) -> Vec<u8> {
    format!("probegate consent command v1\nsite {site}\nsequence {sequence}\n{command}")
        .into_bytes()
}

/// Lowercase hex, as ids and keys travel.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Exactly `N` bytes from `2N` hex digits; `None` for anything else.
pub fn from_hex<const N: usize>(hex: &str) -> Option<[u8; N]> {
    if hex.len() != 2 * N || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// A MAC as people type it: six hex pairs separated by `:` or `-`, or twelve hex digits
/// (dots, as in Cisco's `aabb.ccdd.eeff`, and surrounding blanks are allowed); any case.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let hex: String = text
        .trim()
        .chars()
        .filter(|c| !matches!(c, ':' | '-' | '.'))
        .collect();
    from_hex::<6>(&hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_hmac_sha256_under_the_key_cut_to_16_bytes() {
        // python3: hmac.new(bytes(range(32)), bytes.fromhex("dcfb4868bee4"), "sha256").hexdigest()[:32]
        let key: Vec<u8> = (0..32).collect();
        let mac = parse_mac("DC-FB-48-68-BE-E4").unwrap();
        assert_eq!(to_hex(&id(&key, &mac)), "aea0594d8c826d8258b019d83b71a62d");
        assert_eq!(parse_mac("dcfb.4868.bee4"), Some(mac));
        assert_eq!(parse_mac(" dc:fb:48:68:be:e4 "), Some(mac));
    }

    #[test]
    fn what_is_not_a_mac_is_refused() {
        for bad in [
            "",
            "dc:fb:48:68:be",
            "dc:fb:48:68:be:e4:00",
            "dc:fb:48:68:be:eg",
            "ü1:fb:48:68:be:e4",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }
}
