//! The consent registry: who opted out (dropped before hashing) and who opted in (with an
//! opaque token, e.g. a loyalty id), keyed by a hash of the MAC that only holders of the
//! site's consent key can compute. Raw MACs never travel: the back office computes the ids
//! (`probegate consent id`) and publishes them; the registry persists only those ids.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The per-site secret shared by the back office and the store's gateways.
pub struct ConsentKey(Zeroizing<Vec<u8>>);

impl fmt::Debug for ConsentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConsentKey(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConsentError {
    #[error("{path}: cannot read the consent key: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("{path}: cannot {action} the consent registry: {reason}")]
    Store {
        path: PathBuf,
        action: &'static str,
        reason: String,
    },
    #[error("consent command refused: {0}")]
    Command(String),
    #[error(
        "consent registry not saved ({reason}): its {opt_outs} opt-out(s) apply until the \
         daemon restarts, nothing else changed; send the command again once there is room"
    )]
    NotSaved { opt_outs: usize, reason: String },
}

impl ConsentKey {
    /// Reads a key file: 64 hex digits (32 bytes), as `probegate consent keygen` writes.
    pub fn load(path: &Path) -> Result<ConsentKey, ConsentError> {
        let err = |reason: String| ConsentError::Key {
            path: path.to_owned(),
            reason,
        };
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?);
        ConsentKey::from_hex(text.trim()).ok_or_else(|| err("expected 64 hex digits".into()))
    }

    pub fn from_hex(hex: &str) -> Option<ConsentKey> {
        (hex.len() == 64).then_some(())?;
        let bytes: Option<Vec<u8>> = (0..32)
            .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
            .collect();
        Some(ConsentKey(Zeroizing::new(bytes?)))
    }

    /// A fresh key from the OS CSPRNG, as hex.
    pub fn generate_hex() -> Zeroizing<String> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut()).expect("the OS random number generator failed");
        Zeroizing::new(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The consent id of a MAC: HMAC-SHA256 under the site key, first 16 bytes, as hex.
    /// HMAC-SHA256 because every back-office language has it.
    pub fn id(&self, mac: &[u8; 6]) -> ConsentId {
        // Computed by the contract crate, which the back office uses too.
        ConsentId(probegate_contract::consent::id(&self.0, mac))
    }
}

/// A keyed hash of one MAC address: what the registry stores and the wire carries.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ConsentId(pub [u8; 16]);

impl ConsentId {
    pub fn to_hex(self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(hex: &str) -> Option<ConsentId> {
        (hex.len() == 32).then_some(())?;
        let mut id = [0u8; 16];
        for (i, b) in id.iter_mut().enumerate() {
            *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(ConsentId(id))
    }
}

/// What a device's owner chose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Choice {
    /// Never process this device: dropped before hashing, seen by no plugin.
    OptOut,
    /// Per-device outputs (e.g. coupons) allowed, tied to this opaque token.
    OptIn { token: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    OptOut,
    OptIn,
}

/// One entry as the back office publishes it and as the registry file stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireEntry {
    /// 32 hex digits: `probegate consent id` of the device's MAC.
    pub id: String,
    pub status: Status,
    /// Opt-in only: the opaque token plugins with the consent capability receive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// When the entry lapses (ms since the Unix epoch); none = until removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
}

/// A command on `probegate/v1/{site}/cmd/consent` or `.../{site}/{gateway}/cmd/consent`.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Command {
    Add {
        entries: Vec<WireEntry>,
    },
    Remove {
        ids: Vec<String>,
    },
    /// The back office's whole list: everything else is dropped.
    Replace {
        entries: Vec<WireEntry>,
    },
}

#[derive(Clone, Debug)]
struct Entry {
    choice: Choice,
    expires_ms: Option<u64>,
}

/// The registry's summary, published retained after every change.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub version: u64,
    pub opt_out: usize,
    pub opt_in: usize,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    version: u64,
    entries: Vec<WireEntry>,
    /// The sequence of the last signed command applied (absent: none yet).
    #[serde(default, skip_serializing_if = "is_zero")]
    sequence: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Whose consent commands this gateway applies: with no keys, any command (broker ACLs are
/// the only guard); with keys, only those signed by one of them for `site`.
pub struct CommandTrust {
    pub site: String,
    pub keys: Vec<crate::bundle::signing::PublicKey>,
}

/// Opt-outs and opt-ins by consent id; persisted as a JSON file of ids only.
#[derive(Default)]
pub struct Registry {
    entries: HashMap<ConsentId, Entry>,
    version: u64,
    path: Option<PathBuf>,
    /// The sequence of the last signed command applied; a signed command must be above it.
    sequence: u64,
    /// Grows whenever a command adds an opt-out: the plugin stage then restarts every plugin,
    /// so nothing a plugin held about a newly opted-out device survives (RAM only).
    opt_outs_added: u64,
}

impl Registry {
    /// Loads the registry kept at `path` (an absent file is an empty registry).
    pub fn open(path: PathBuf) -> Result<Registry, ConsentError> {
        let mut registry = Registry {
            path: Some(path.clone()),
            ..Registry::default()
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let stored: Stored =
                    serde_json::from_str(&text).map_err(|e| ConsentError::Store {
                        path: path.clone(),
                        action: "parse",
                        reason: e.to_string(),
                    })?;
                registry
                    .insert_all(stored.entries)
                    .map_err(|e| ConsentError::Store {
                        path,
                        action: "load",
                        reason: e.to_string(),
                    })?;
                registry.version = stored.version;
                registry.sequence = stored.sequence;
                registry.expire(crate::clock::wall_ms());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ConsentError::Store {
                    path,
                    action: "read",
                    reason: e.to_string(),
                });
            }
        }
        Ok(registry)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The owner's choice for `id` at `now_ms`, if one is registered and not expired.
    pub fn choice(&self, id: &ConsentId, now_ms: u64) -> Option<&Choice> {
        let entry = self.entries.get(id)?;
        match entry.expires_ms {
            Some(t) if now_ms >= t => None,
            _ => Some(&entry.choice),
        }
    }

    /// Applies a command and persists the result; a refused command changes nothing.
    pub fn apply(&mut self, command: Command) -> Result<Summary, ConsentError> {
        let before = self.entries.clone();
        self.expire(crate::clock::wall_ms());
        let result = match command {
            Command::Add { entries } => self.insert_all(entries),
            Command::Remove { ids } => ids.iter().try_for_each(|hex| {
                let id = parse_id(hex)?;
                self.entries.remove(&id);
                Ok(())
            }),
            Command::Replace { entries } => {
                self.entries.clear();
                self.insert_all(entries)
            }
        };
        if let Err(e) = result {
            self.entries = before;
            return Err(e);
        }
        self.version += 1;
        let saved = self.save();
        let opt_outs =
            |entries: &HashMap<ConsentId, Entry>| -> std::collections::HashSet<ConsentId> {
                entries
                    .iter()
                    .filter(|(_, e)| e.choice == Choice::OptOut)
                    .map(|(id, _)| *id)
                    .collect()
            };
        let outcome = match saved {
            Ok(()) => Ok(()),
            Err(e) => {
                // Not on flash means not applied, as a restart would undo it, with one
                // exception: an opt-out is enforced at once, in RAM, rather than the device
                // tracked on for want of flash. Opt-ins and removals wait until they are saved.
                let new = std::mem::replace(&mut self.entries, before.clone());
                let mut applied = 0;
                for (id, entry) in new.into_iter().filter(|(_, e)| e.choice == Choice::OptOut) {
                    applied += usize::from(
                        self.entries
                            .insert(id, entry)
                            .is_none_or(|old| old.choice != Choice::OptOut),
                    );
                }
                self.version -= 1;
                Err(ConsentError::NotSaved {
                    opt_outs: applied,
                    reason: e.to_string(),
                })
            }
        };
        if !opt_outs(&self.entries).is_subset(&opt_outs(&before)) {
            self.opt_outs_added += 1;
        }
        outcome.map(|()| self.summary())
    }

    /// Applies a command that came with a signature's `sequence`: refused unless above the
    /// last one applied, so a recorded command cannot be played again.
    pub fn apply_sequenced(
        &mut self,
        command: Command,
        sequence: Option<u64>,
    ) -> Result<Summary, ConsentError> {
        let Some(sequence) = sequence else {
            return self.apply(command);
        };
        if sequence <= self.sequence {
            return Err(ConsentError::Command(format!(
                "replayed: sequence {sequence} is not above {}, the last applied",
                self.sequence
            )));
        }
        let before = std::mem::replace(&mut self.sequence, sequence);
        let result = self.apply(command);
        if result.is_err() {
            self.sequence = before;
        }
        result
    }

    /// How many applied commands added an opt-out since start.
    pub fn opt_outs_added(&self) -> u64 {
        self.opt_outs_added
    }

    /// Drops entries that expired by `now_ms`; true if any did.
    pub fn expire(&mut self, now_ms: u64) -> bool {
        let before = self.entries.len();
        self.entries
            .retain(|_, e| e.expires_ms.is_none_or(|t| now_ms < t));
        before != self.entries.len()
    }

    pub fn summary(&self) -> Summary {
        let opt_out = self
            .entries
            .values()
            .filter(|e| e.choice == Choice::OptOut)
            .count();
        Summary {
            version: self.version,
            opt_out,
            opt_in: self.entries.len() - opt_out,
        }
    }

    fn insert_all(&mut self, entries: Vec<WireEntry>) -> Result<(), ConsentError> {
        for e in entries {
            let id = parse_id(&e.id)?;
            let choice = match (e.status, e.token) {
                (Status::OptOut, None) => Choice::OptOut,
                (Status::OptIn, Some(token)) if (1..=128).contains(&token.len()) => {
                    Choice::OptIn { token }
                }
                _ => {
                    return Err(ConsentError::Command(
                        "an opt-in needs a token of 1-128 bytes; an opt-out has none".into(),
                    ));
                }
            };
            self.entries.insert(
                id,
                Entry {
                    choice,
                    expires_ms: e.expires_ms,
                },
            );
        }
        Ok(())
    }

    /// Writes the registry beside itself and renames it into place: a power cut leaves the
    /// old file or the new one, never half of one.
    fn save(&self) -> Result<(), ConsentError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let err = |action: &'static str, e: std::io::Error| ConsentError::Store {
            path: path.clone(),
            action,
            reason: e.to_string(),
        };
        let stored = Stored {
            version: self.version,
            sequence: self.sequence,
            entries: self
                .entries
                .iter()
                .map(|(id, e)| {
                    let (status, token) = match &e.choice {
                        Choice::OptOut => (Status::OptOut, None),
                        Choice::OptIn { token } => (Status::OptIn, Some(token.clone())),
                    };
                    WireEntry {
                        id: id.to_hex(),
                        status,
                        token,
                        expires_ms: e.expires_ms,
                    }
                })
                .collect(),
        };
        let text = serde_json::to_vec(&stored).expect("registry serialises");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err("create the directory of", e))?;
        }
        crate::flash::replace(path, &text).map_err(|e| err("write", e))
    }
}

/// The retained report after a command: the registry as it now is, and why the last
/// command was refused, if it was.
#[derive(Debug, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub summary: Summary,
    pub last_error: Option<String>,
}

/// Applies one command message from the back office to the shared registry.
pub fn handle_command(
    registry: &std::sync::RwLock<Registry>,
    payload: &[u8],
    trust: &CommandTrust,
) -> Report {
    let outcome = decode(payload, trust).and_then(|(command, sequence)| match registry.write() {
        Ok(mut r) => r.apply_sequenced(command, sequence),
        Err(_) => Err(ConsentError::Command("registry unavailable".into())),
    });
    let summary = registry.read().map(|r| r.summary()).unwrap_or_default();
    match outcome {
        Ok(_) => {
            tracing::info!(
                version = summary.version,
                opt_out = summary.opt_out,
                opt_in = summary.opt_in,
                "consent registry updated"
            );
            Report {
                summary,
                last_error: None,
            }
        }
        Err(e) => {
            tracing::warn!("{e}");
            Report {
                summary,
                last_error: Some(e.to_string()),
            }
        }
    }
}

/// The command in `payload`, plain or signed, and the signature's sequence when the gateway
/// trusts keys (and so checked it).
fn decode(payload: &[u8], trust: &CommandTrust) -> Result<(Command, Option<u64>), ConsentError> {
    use crate::bundle::signing::{SignatureProblem, verify};
    use probegate_contract::payload::SignedConsentCommand;
    let refuse = |why: String| ConsentError::Command(why);
    let value: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|e| refuse(format!("not a consent command: {e}")))?;
    if value.get("signature").is_none() {
        if !trust.keys.is_empty() {
            return Err(refuse(
                "unsigned, and this gateway applies only commands signed by a key in \
                 privacy.consent_trusted_keys"
                    .into(),
            ));
        }
        let command = serde_json::from_value(value)
            .map_err(|e| refuse(format!("not a consent command: {e}")))?;
        return Ok((command, None));
    }
    let signed: SignedConsentCommand = serde_json::from_value(value)
        .map_err(|e| refuse(format!("not a signed consent command: {e}")))?;
    if trust.keys.is_empty() {
        // Nothing to check it against: taken as a plain command, as an unsigned one would be.
        let command = serde_json::from_str(&signed.command)
            .map_err(|e| refuse(format!("not a consent command: {e}")))?;
        return Ok((command, None));
    }
    let bytes =
        probegate_contract::consent::signed_bytes(&signed.site, signed.sequence, &signed.command);
    verify(&bytes, &signed.signature, &trust.keys).map_err(|p| {
        refuse(
            match p {
                SignatureProblem::Malformed => "the signature is not a minisign signature",
                SignatureProblem::UnknownKey => {
                    "signed by a key not in privacy.consent_trusted_keys"
                }
                SignatureProblem::Invalid => "the signature does not match the command",
            }
            .into(),
        )
    })?;
    if signed.site != trust.site {
        return Err(refuse("signed for another site".into()));
    }
    let command = serde_json::from_str(&signed.command)
        .map_err(|e| refuse(format!("not a consent command: {e}")))?;
    Ok((command, Some(signed.sequence)))
}

fn parse_id(hex: &str) -> Result<ConsentId, ConsentError> {
    ConsentId::from_hex(hex).ok_or_else(|| {
        ConsentError::Command("a consent id is 32 hex digits (probegate consent id)".into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn id(mac: [u8; 6]) -> String {
        ConsentKey::from_hex(KEY).unwrap().id(&mac).to_hex()
    }

    fn add(json: &str) -> Command {
        serde_json::from_str(json).unwrap()
    }

    #[cfg(feature = "authoring")]
    #[test]
    fn signed_commands_apply_only_from_a_trusted_key_for_this_site_with_a_rising_sequence() {
        use crate::bundle::signing::{keygen, public_key, sign};
        use probegate_contract::consent::signed_bytes;
        use probegate_contract::payload::SignedConsentCommand;
        let (pk, sk) = keygen("back office").unwrap();
        let (_, other_sk) = keygen("someone else").unwrap();
        let trust = CommandTrust {
            site: "s".into(),
            keys: vec![public_key(&pk).unwrap()],
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("consent.json");
        let registry = std::sync::RwLock::new(Registry::open(path.clone()).unwrap());
        let command = |n: u8| {
            format!(
                r#"{{"op":"add","entries":[{{"id":"{}","status":"opt-out"}}]}}"#,
                id([2, 0, 0, 0, 0, n])
            )
        };
        let signed = |site: &str, sequence: u64, command: &str, key: &str| {
            let signature = sign(&signed_bytes(site, sequence, command), key, "consent").unwrap();
            serde_json::to_vec(&SignedConsentCommand {
                command: command.into(),
                site: site.into(),
                sequence,
                signature,
            })
            .unwrap()
        };
        let error = |payload: &[u8], registry: &std::sync::RwLock<Registry>| {
            handle_command(registry, payload, &trust)
                .last_error
                .unwrap_or_default()
        };
        assert!(error(command(1).as_bytes(), &registry).contains("unsigned"));
        let ok = handle_command(&registry, &signed("s", 5, &command(1), &sk), &trust);
        assert_eq!(
            (ok.last_error, ok.summary.version, ok.summary.opt_out),
            (None, 1, 1)
        );
        assert!(error(&signed("s", 5, &command(2), &sk), &registry).contains("replayed"));
        assert!(error(&signed("t", 6, &command(2), &sk), &registry).contains("another site"));
        assert!(error(&signed("s", 6, &command(2), &other_sk), &registry).contains("not in"));
        let tampered = String::from_utf8(signed("s", 6, &command(2), &sk))
            .unwrap()
            .replace(&id([2, 0, 0, 0, 0, 2]), &id([2, 0, 0, 0, 0, 3]));
        assert!(error(tampered.as_bytes(), &registry).contains("does not match"));
        assert_eq!(
            registry.read().unwrap().summary().version,
            1,
            "nothing refused applied"
        );
        // The sequence survives a restart: a recorded command stays refused.
        let reopened = std::sync::RwLock::new(Registry::open(path).unwrap());
        assert!(error(&signed("s", 5, &command(2), &sk), &reopened).contains("replayed"));
        let next = handle_command(&reopened, &signed("s", 6, &command(2), &sk), &trust);
        assert_eq!((next.last_error, next.summary.opt_out), (None, 2));
        // A gateway that trusts no key takes plain and signed commands alike, as before.
        let open = CommandTrust {
            site: "s".into(),
            keys: vec![],
        };
        let plain = std::sync::RwLock::new(Registry::default());
        assert_eq!(
            handle_command(&plain, command(1).as_bytes(), &open).last_error,
            None
        );
        let r = handle_command(&plain, &signed("s", 1, &command(2), &other_sk), &open);
        assert_eq!((r.last_error, r.summary.opt_out), (None, 2));
    }

    #[test]
    fn the_consent_id_is_hmac_sha256_of_the_mac_under_the_site_key() {
        // The same value any back office gets from HMAC-SHA256(key, mac)[..16], e.g. Python's
        // hmac.new(bytes.fromhex(KEY), bytes.fromhex("dcfb4868bee4"), "sha256").hexdigest()[:32]
        assert_eq!(
            id([0xdc, 0xfb, 0x48, 0x68, 0xbe, 0xe4]),
            "aea0594d8c826d8258b019d83b71a62d"
        );
    }

    #[test]
    fn add_remove_and_replace_change_the_registry_and_its_version() {
        let mut r = Registry::default();
        let a = id([2, 0, 0, 0, 0, 1]);
        let b = id([2, 0, 0, 0, 0, 2]);
        let s = r
            .apply(add(&format!(
                r#"{{"op":"add","entries":[{{"id":"{a}","status":"opt-out"}},{{"id":"{b}","status":"opt-in","token":"loyal-7"}}]}}"#
            )))
            .unwrap();
        assert_eq!((s.version, s.opt_out, s.opt_in), (1, 1, 1));
        let s = r
            .apply(add(&format!(r#"{{"op":"remove","ids":["{a}"]}}"#)))
            .unwrap();
        assert_eq!((s.version, s.opt_out, s.opt_in), (2, 0, 1));
        let s = r.apply(add(r#"{"op":"replace","entries":[]}"#)).unwrap();
        assert_eq!((s.version, s.opt_out, s.opt_in), (3, 0, 0));
    }

    #[test]
    fn only_a_new_opt_out_asks_for_plugins_to_forget() {
        let mut r = Registry::default();
        let a = id([2, 0, 0, 0, 0, 1]);
        let b = id([2, 0, 0, 0, 0, 2]);
        let opt_out =
            |x: &str| format!(r#"{{"op":"add","entries":[{{"id":"{x}","status":"opt-out"}}]}}"#);
        r.apply(add(&opt_out(&a))).unwrap();
        assert_eq!(r.opt_outs_added(), 1);
        r.apply(add(&opt_out(&a))).unwrap();
        assert_eq!(r.opt_outs_added(), 1, "already opted out");
        r.apply(add(&format!(
            r#"{{"op":"add","entries":[{{"id":"{b}","status":"opt-in","token":"t"}}]}}"#
        )))
        .unwrap();
        r.apply(add(&format!(r#"{{"op":"remove","ids":["{a}"]}}"#)))
            .unwrap();
        assert_eq!(r.opt_outs_added(), 1);
        r.apply(add(&format!(
            r#"{{"op":"replace","entries":[{{"id":"{b}","status":"opt-out"}}]}}"#
        )))
        .unwrap();
        assert_eq!(r.opt_outs_added(), 2);
    }

    #[test]
    fn a_bad_command_changes_nothing() {
        let mut r = Registry::default();
        let a = id([2, 0, 0, 0, 0, 1]);
        r.apply(add(&format!(
            r#"{{"op":"add","entries":[{{"id":"{a}","status":"opt-out"}}]}}"#
        )))
        .unwrap();
        let bad = add(r#"{"op":"replace","entries":[{"id":"not-hex","status":"opt-out"}]}"#);
        assert!(r.apply(bad).is_err());
        assert_eq!(r.summary().opt_out, 1);
        assert_eq!(r.summary().version, 1);
    }

    #[test]
    fn an_expired_entry_no_longer_applies() {
        let mut r = Registry::default();
        let a = id([2, 0, 0, 0, 0, 1]);
        r.apply(add(&format!(
            r#"{{"op":"add","entries":[{{"id":"{a}","status":"opt-out","expires_ms":1000}}]}}"#
        )))
        .unwrap();
        let a = ConsentId::from_hex(&a).unwrap();
        assert_eq!(r.choice(&a, 999), Some(&Choice::OptOut));
        assert_eq!(r.choice(&a, 1000), None);
        assert!(r.expire(1000));
        assert!(r.is_empty());
    }

    #[test]
    fn the_registry_survives_a_restart_and_stores_no_mac() {
        let dir = std::env::temp_dir().join(format!("probegate-consent-{}", std::process::id()));
        let path = dir.join("consent.json");
        let a = id([0xdc, 0xfb, 0x48, 0x68, 0xbe, 0xe4]);
        let mut r = Registry::open(path.clone()).unwrap();
        r.apply(add(&format!(
            r#"{{"op":"add","entries":[{{"id":"{a}","status":"opt-out"}}]}}"#
        )))
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains("dcfb48") && !text.contains("dc:fb:48"),
            "{text}"
        );
        let again = Registry::open(path).unwrap();
        assert_eq!(again.summary(), r.summary());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn on_a_full_flash_an_opt_out_still_applies_at_once_and_nothing_more_permissive_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("consent.json");
        let (a, b, c) = (
            id([2, 0, 0, 0, 0, 1]),
            id([2, 0, 0, 0, 0, 2]),
            id([2, 0, 0, 0, 0, 3]),
        );
        let mut r = Registry::open(path.clone()).unwrap();
        r.apply(add(&format!(
            r#"{{"op":"add","entries":[{{"id":"{a}","status":"opt-in","token":"t-1"}}]}}"#
        )))
        .unwrap();
        // The flash is full: the registry's new copy is the kernel's always-full device.
        std::os::unix::fs::symlink("/dev/full", crate::flash::temporary(&path)).unwrap();
        let planned = format!(
            r#"{{"op":"replace","entries":[{{"id":"{a}","status":"opt-out"}},{{"id":"{b}","status":"opt-out"}},{{"id":"{c}","status":"opt-in","token":"t-3"}}]}}"#
        );
        let e = r.apply(add(&planned)).unwrap_err().to_string();
        assert!(e.contains("No space left on device"), "{e}");
        assert!(e.contains("its 2 opt-out(s) apply"), "{e}");
        let opt_out = |x: &str| r.choice(&ConsentId::from_hex(x).unwrap(), 0).cloned();
        assert_eq!(
            opt_out(&a),
            Some(Choice::OptOut),
            "the opt-in became an opt-out"
        );
        assert_eq!(opt_out(&b), Some(Choice::OptOut));
        assert_eq!(opt_out(&c), None, "a new opt-in waits until it is saved");
        assert_eq!(
            r.opt_outs_added(),
            1,
            "plugins forget the opted-out devices"
        );
        assert_eq!(r.summary().version, 1, "the version counts saved commands");
        // Nothing half-written is left; the file still holds the last saved registry.
        assert!(!crate::flash::temporary(&path).exists());
        let on_flash = Registry::open(path).unwrap();
        assert_eq!(on_flash.summary().opt_in, 1);
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let key = ConsentKey::from_hex(KEY).unwrap();
        assert_eq!(format!("{key:?}"), "ConsentKey(<redacted>)");
    }
}
