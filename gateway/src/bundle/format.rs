//! The bundle file: one tar archive holding a signed manifest and the artifacts it names.
//!
//! ```text
//! bundle.json          what the bundle is: plugin name, version, sequence, kind, interface,
//!                      capabilities, targets, and the SHA-256 and size of every artifact
//! bundle.json.minisig  a minisign signature over bundle.json (absent until signed)
//! plugin.wasm          the component
//! plugin.toml          its plugin manifest
//! plugin.pulley32.cwasm  optional: code precompiled off the router for 32-bit routers
//! ```
//! A plain tar, so `tar tvf` shows what is inside; only bundle.json is signed, and it pins
//! every other member by hash.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;

pub const MANIFEST: &str = "bundle.json";
pub const SIGNATURE: &str = "bundle.json.minisig";
pub const COMPONENT: &str = "plugin.wasm";
pub const PLUGIN_MANIFEST: &str = "plugin.toml";
/// The bundle format this code reads and writes.
pub const FORMAT: u32 = 1;
/// More members than a bundle ever needs is a malformed (or hostile) archive.
const MAX_MEMBERS: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    pub file: String,
    /// Lower-case hex.
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleManifest {
    pub format: u32,
    pub name: String,
    pub version: String,
    /// Only increases, per plugin name: a router refuses a bundle whose sequence is not higher
    /// than the one it has installed, so an old bundle cannot be replayed.
    pub sequence: u64,
    /// "filter" or "analytics", as in the plugin manifest.
    pub kind: String,
    pub interface: String,
    pub capabilities: Vec<String>,
    /// A removal: no artifacts; the router stops and deletes the plugin.
    #[serde(default)]
    pub remove: bool,
    pub artifacts: Vec<Artifact>,
    /// Sites this bundle is for; empty means every site.
    #[serde(default)]
    pub sites: Vec<String>,
    /// Gateways this bundle is for; empty means every gateway of the targeted sites.
    #[serde(default)]
    pub gateways: Vec<String>,
}

impl BundleManifest {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a manifest serialises")
    }

    pub fn is_for(&self, site: &str, gateway: &str) -> bool {
        (self.sites.is_empty() || self.sites.iter().any(|s| s == site))
            && (self.gateways.is_empty() || self.gateways.iter().any(|g| g == gateway))
    }
}

/// A bundle as read from its archive, nothing checked but its shape.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// bundle.json exactly as archived: the signature covers these bytes.
    pub manifest_bytes: Vec<u8>,
    pub manifest: BundleManifest,
    pub signature: Option<String>,
    pub files: BTreeMap<String, Vec<u8>>,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn artifact(file: &str, bytes: &[u8]) -> Artifact {
    Artifact {
        file: file.to_owned(),
        sha256: sha256_hex(bytes),
        size: bytes.len() as u64,
    }
}

/// Writes the archive: manifest, signature if any, then the files.
pub fn pack(
    manifest_bytes: &[u8],
    signature: Option<&str>,
    files: &BTreeMap<String, Vec<u8>>,
) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |name: &str, bytes: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        // A fixed time: the same inputs give the same bytes.
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, name, bytes)
            .expect("writing to memory cannot fail");
    };
    add(MANIFEST, manifest_bytes);
    if let Some(sig) = signature {
        add(SIGNATURE, sig.as_bytes());
    }
    for (name, bytes) in files {
        add(name, bytes);
    }
    tar.into_inner().expect("writing to memory cannot fail")
}

/// Reads an archive of at most `max_bytes`, refusing anything but a flat list of regular
/// files with plain names.
pub fn unpack(bytes: &[u8], max_bytes: usize) -> Result<Bundle, String> {
    if bytes.len() > max_bytes {
        return Err(format!(
            "oversize: {} bytes, the limit is {max_bytes}",
            bytes.len()
        ));
    }
    let mut archive = tar::Archive::new(bytes);
    let mut members: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    // The tar crate's errors quote header fields, which for a file that is not a tar are its
    // first bytes (a dropped-in link to a secret file would publish them): fixed phrases only.
    let entries = archive
        .entries()
        .map_err(|_| "not a bundle: unreadable tar".to_owned())?;
    for entry in entries {
        let mut entry = entry.map_err(|_| "not a bundle: unreadable tar header".to_owned())?;
        if !entry.header().entry_type().is_file() {
            return Err("not a bundle: a member is not a regular file".into());
        }
        let path = entry
            .path()
            .map_err(|_| "not a bundle: unreadable member name".to_owned())?;
        let name = path.to_str().unwrap_or_default().to_owned();
        let plain = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            && !name.starts_with('.');
        if !plain {
            return Err(format!(
                "not a bundle: member name {:?}",
                crate::untrusted::escape(&name, 64)
            ));
        }
        if members.len() >= MAX_MEMBERS || members.contains_key(&name) {
            return Err("not a bundle: too many or repeated members".into());
        }
        let mut data = Vec::new();
        entry
            .read_to_end(&mut data)
            .map_err(|_| "not a bundle: truncated member".to_owned())?;
        members.insert(name, data);
    }
    let manifest_bytes = members
        .remove(MANIFEST)
        .ok_or_else(|| format!("not a bundle: no {MANIFEST}"))?;
    let manifest: BundleManifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| format!("malformed {MANIFEST}: {e}"))?;
    let signature = match members.remove(SIGNATURE) {
        Some(sig) => Some(String::from_utf8(sig).map_err(|_| "malformed signature".to_owned())?),
        None => None,
    };
    Ok(Bundle {
        manifest_bytes,
        manifest,
        signature,
        files: members,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn sample() -> (BundleManifest, BTreeMap<String, Vec<u8>>) {
        let wasm = b"\0asm fake".to_vec();
        let toml = b"name = \"x\"".to_vec();
        let manifest = BundleManifest {
            format: FORMAT,
            name: "x".into(),
            version: "1.0.0".into(),
            sequence: 3,
            kind: "analytics".into(),
            interface: "0.2".into(),
            capabilities: vec![],
            remove: false,
            artifacts: vec![artifact(COMPONENT, &wasm), artifact(PLUGIN_MANIFEST, &toml)],
            sites: vec![],
            gateways: vec!["gw-2".into()],
        };
        let files = BTreeMap::from([(COMPONENT.into(), wasm), (PLUGIN_MANIFEST.into(), toml)]);
        (manifest, files)
    }

    #[test]
    fn a_bundle_reads_back_as_written_and_packs_the_same_bytes_twice() {
        let (manifest, files) = sample();
        let bytes = pack(&manifest.to_json(), Some("sig"), &files);
        assert_eq!(bytes, pack(&manifest.to_json(), Some("sig"), &files));
        let b = unpack(&bytes, 1 << 20).unwrap();
        assert_eq!(b.manifest, manifest);
        assert_eq!(b.signature.as_deref(), Some("sig"));
        assert_eq!(b.files, files);
        assert!(b.manifest.is_for("any-site", "gw-2"));
        assert!(!b.manifest.is_for("any-site", "gw-1"));
    }

    #[test]
    fn oversize_and_garbage_are_refused_with_a_reason() {
        let (manifest, files) = sample();
        let bytes = pack(&manifest.to_json(), None, &files);
        assert!(unpack(&bytes, 100).unwrap_err().starts_with("oversize"));
        assert!(
            unpack(b"hello", 1 << 20)
                .unwrap_err()
                .starts_with("not a bundle")
        );
    }
}
