//! Plugin bundles: how a retailer's plugin reaches a router it can trust.
//!
//! A bundle is a tar of a signed manifest and the artifacts it pins by SHA-256 ([`format`]).
//! The router accepts one only if a key its site config trusts signed it, every artifact
//! matches its hash, it targets this site and gateway, it speaks this host's interface, and its
//! sequence is higher than the installed one ([`check`]). Then it stages, switches, watches the
//! new version for a health window, and commits or rolls back ([`install`]).

pub mod chunks;
pub mod cli;
pub mod format;
pub mod install;
pub mod signing;

use crate::plugins::manifest::{INTERFACE, Manifest};
use format::{Bundle, COMPONENT, PLUGIN_MANIFEST};
use signing::PublicKey;
use signing::SignatureProblem;

/// The keys a site trusts, from its config.
#[derive(Clone, Default)]
pub struct Trust {
    pub keys: Vec<PublicKey>,
    /// Keys also trusted to vouch for precompiled code, which skips wasm validation.
    pub precompiled: Vec<PublicKey>,
}

/// Why a router refused a bundle: the `reason` of its result message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("malformed: {0}")]
    Malformed(String),
    #[error("unsigned: the bundle carries no signature")]
    Unsigned,
    #[error("unknown key: signed by a key this site does not trust")]
    UnknownKey,
    #[error("bad signature: the manifest changed after it was signed")]
    BadSignature,
    #[error("tampered: {0} does not match the hash or size in the signed manifest")]
    Tampered(String),
    #[error(
        "wrong interface: built for plugin interface {0:?}; this router implements {INTERFACE:?}"
    )]
    WrongInterface(String),
    #[error("replayed: sequence {offered} is not higher than the installed {installed}")]
    Replayed { offered: u64, installed: u64 },
    #[error("not for this gateway: the bundle targets other sites or gateways")]
    NotForThisGateway,
    #[error("precompiled code signed by a key not trusted for precompiled code")]
    PrecompiledUntrusted,
    #[error("manifest mismatch: {0}")]
    ManifestMismatch(String),
    #[error("oversize: {0}")]
    Oversize(String),
    #[error("no plugin_dir in the site config: bundles install there")]
    NoPluginDir,
    /// A drop-in that is a link, FIFO or device: never opened for reading.
    #[error("{0}")]
    NotRegularFile(String),
    /// A drop-in that could not be opened or read (the error kind only, never a path).
    #[error("unreadable: {0}")]
    Unreadable(String),
}

impl Rejection {
    /// A stable word for the back office to switch on.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::Malformed(_) => "malformed",
            Rejection::Unsigned => "unsigned",
            Rejection::UnknownKey => "unknown_key",
            Rejection::BadSignature => "bad_signature",
            Rejection::Tampered(_) => "tampered",
            Rejection::WrongInterface(_) => "wrong_interface",
            Rejection::Replayed { .. } => "replayed",
            Rejection::NotForThisGateway => "not_for_this_gateway",
            Rejection::PrecompiledUntrusted => "precompiled_untrusted",
            Rejection::ManifestMismatch(_) => "manifest_mismatch",
            Rejection::Oversize(_) => "oversize",
            Rejection::NoPluginDir => "no_plugin_dir",
            Rejection::NotRegularFile(_) => "not_regular_file",
            Rejection::Unreadable(_) => "io",
        }
    }
}

/// Everything a router checks before it writes a byte of the bundle to flash. `installed` is
/// the sequence of the plugin of this name installed now (0: none).
pub fn check(
    bundle: &Bundle,
    trust: &Trust,
    site: &str,
    gateway: &str,
    installed: u64,
) -> Result<(), Rejection> {
    check_contents(bundle, trust)?;
    let m = &bundle.manifest;
    if !m.is_for(site, gateway) {
        return Err(Rejection::NotForThisGateway);
    }
    if m.sequence <= installed {
        return Err(Rejection::Replayed {
            offered: m.sequence,
            installed,
        });
    }
    Ok(())
}

/// The checks that need no router: signature, format, interface, every artifact's hash, and
/// the plugin manifest agreeing with the signed one.
pub fn check_contents(bundle: &Bundle, trust: &Trust) -> Result<(), Rejection> {
    let signature = bundle.signature.as_deref().ok_or(Rejection::Unsigned)?;
    match signing::verify(&bundle.manifest_bytes, signature, &trust.keys) {
        Ok(_) => {}
        Err(SignatureProblem::Malformed) => {
            return Err(Rejection::Malformed("the signature does not parse".into()));
        }
        Err(SignatureProblem::UnknownKey) => return Err(Rejection::UnknownKey),
        Err(SignatureProblem::Invalid) => return Err(Rejection::BadSignature),
    }
    let m = &bundle.manifest;
    if m.format != format::FORMAT {
        return Err(Rejection::Malformed(format!("bundle format {}", m.format)));
    }
    if !crate::config::is_valid_name(&m.name) {
        return Err(Rejection::Malformed(format!("plugin name {:?}", m.name)));
    }
    if m.interface != INTERFACE {
        return Err(Rejection::WrongInterface(m.interface.clone()));
    }
    // Every member is pinned by the signed manifest, and nothing else rides along.
    for a in &m.artifacts {
        let bytes = bundle
            .files
            .get(&a.file)
            .ok_or_else(|| Rejection::Malformed(format!("{} is missing", a.file)))?;
        if bytes.len() as u64 != a.size || format::sha256_hex(bytes) != a.sha256 {
            return Err(Rejection::Tampered(a.file.clone()));
        }
    }
    if let Some(extra) = bundle
        .files
        .keys()
        .find(|f| !m.artifacts.iter().any(|a| &a.file == *f))
    {
        return Err(Rejection::Malformed(format!(
            "{extra} is not in the manifest"
        )));
    }
    if m.remove {
        return match m.artifacts.is_empty() {
            true => Ok(()),
            false => Err(Rejection::Malformed(
                "a removal carries no artifacts".into(),
            )),
        };
    }
    let has = |f: &str| m.artifacts.iter().any(|a| a.file == f);
    if !has(COMPONENT) || !has(PLUGIN_MANIFEST) {
        return Err(Rejection::Malformed(format!(
            "a bundle needs {COMPONENT} and {PLUGIN_MANIFEST}"
        )));
    }
    let precompiled = m.artifacts.iter().any(|a| a.file.ends_with(".cwasm"));
    // The same signature must hold under a key trusted for precompiled code.
    if precompiled
        && signing::verify(&bundle.manifest_bytes, signature, &trust.precompiled).is_err()
    {
        return Err(Rejection::PrecompiledUntrusted);
    }
    let text = std::str::from_utf8(&bundle.files[PLUGIN_MANIFEST])
        .map_err(|_| Rejection::Malformed(format!("{PLUGIN_MANIFEST} is not UTF-8")))?;
    let plugin = Manifest::parse(text).map_err(Rejection::ManifestMismatch)?;
    let caps: Vec<&str> = plugin.capabilities.iter().map(|c| c.as_str()).collect();
    let same = plugin.version == m.version
        && plugin.kind.as_str() == m.kind
        && caps
            == m.capabilities
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>();
    if !same {
        return Err(Rejection::ManifestMismatch(
            "version, kind or capabilities differ between bundle.json and plugin.toml".into(),
        ));
    }
    Ok(())
}

#[cfg(all(test, feature = "authoring"))]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const PLUGIN: &str =
        "name = \"counter\"\nversion = \"1.0.0\"\nkind = \"analytics\"\ninterface = \"0.2\"\n";

    struct Fixture {
        trust: Trust,
        secret: String,
        dir: tempfile::TempDir,
    }

    fn fixture() -> Fixture {
        let (pk, sk) = signing::keygen("t").unwrap();
        let key = signing::public_key(&pk).unwrap();
        Fixture {
            trust: Trust {
                keys: vec![key],
                precompiled: vec![],
            },
            secret: sk,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    impl Fixture {
        fn bundle(&self, manifest: &str, precompiled: bool) -> Bundle {
            let wasm = self.dir.path().join("counter.wasm");
            std::fs::write(&wasm, b"\0asm").unwrap();
            std::fs::write(self.dir.path().join("counter.toml"), manifest).unwrap();
            let cwasm = self.dir.path().join("plugin.pulley32.cwasm");
            std::fs::write(&cwasm, b"code").unwrap();
            let extra = if precompiled { vec![cwasm] } else { vec![] };
            let unsigned = cli::build(&wasm, 5, vec![], vec!["gw-1".into()], &extra).unwrap();
            let signed = cli::sign(&unsigned, &self.secret).unwrap();
            format::unpack(&signed, 1 << 20).unwrap()
        }
    }

    #[test]
    fn a_good_bundle_passes_for_its_gateway_only_and_only_once() {
        let f = fixture();
        let b = f.bundle(PLUGIN, false);
        assert_eq!(check(&b, &f.trust, "s", "gw-1", 4), Ok(()));
        assert_eq!(
            check(&b, &f.trust, "s", "gw-2", 4),
            Err(Rejection::NotForThisGateway)
        );
        assert_eq!(
            check(&b, &f.trust, "s", "gw-1", 5),
            Err(Rejection::Replayed {
                offered: 5,
                installed: 5
            })
        );
    }

    #[test]
    fn precompiled_code_needs_a_key_trusted_for_it() {
        let mut f = fixture();
        let b = f.bundle(PLUGIN, true);
        assert_eq!(
            check_contents(&b, &f.trust),
            Err(Rejection::PrecompiledUntrusted)
        );
        f.trust.precompiled = f.trust.keys.clone();
        assert_eq!(check_contents(&b, &f.trust), Ok(()));
    }

    #[test]
    fn unsigned_extra_members_and_a_disagreeing_plugin_manifest_are_refused() {
        let f = fixture();
        let mut b = f.bundle(PLUGIN, false);
        let mut unsigned = b.clone();
        unsigned.signature = None;
        assert_eq!(
            check_contents(&unsigned, &f.trust),
            Err(Rejection::Unsigned)
        );
        b.files.insert("extra.bin".into(), vec![1]);
        assert!(matches!(
            check_contents(&b, &f.trust),
            Err(Rejection::Malformed(_))
        ));

        // plugin.toml swapped for one asking for more, with its hash updated in a re-signed
        // bundle.json: the signature holds, but the two manifests disagree.
        let mut b = f.bundle(PLUGIN, false);
        let greedy = format!("{PLUGIN}capabilities = [\"consent\"]\n").into_bytes();
        let mut m = b.manifest.clone();
        for a in &mut m.artifacts {
            if a.file == format::PLUGIN_MANIFEST {
                *a = format::artifact(format::PLUGIN_MANIFEST, &greedy);
            }
        }
        b.files.insert(format::PLUGIN_MANIFEST.into(), greedy);
        let files: BTreeMap<_, _> = b.files.clone();
        let repacked = format::pack(&m.to_json(), None, &files);
        let resigned = format::unpack(&cli::sign(&repacked, &f.secret).unwrap(), 1 << 20).unwrap();
        assert!(matches!(
            check_contents(&resigned, &f.trust),
            Err(Rejection::ManifestMismatch(_))
        ));
    }

    #[test]
    fn another_interface_version_is_refused_by_name() {
        let f = fixture();
        // `build` already refuses a plugin manifest of another interface; a bundle made by
        // other tooling is refused on the router by its signed manifest.
        let mut m = f.bundle(PLUGIN, false).manifest.clone();
        m.interface = "0.3".into();
        let files = f.bundle(PLUGIN, false).files;
        let signed = cli::sign(&format::pack(&m.to_json(), None, &files), &f.secret).unwrap();
        let b = format::unpack(&signed, 1 << 20).unwrap();
        assert_eq!(
            check_contents(&b, &f.trust),
            Err(Rejection::WrongInterface("0.3".into()))
        );
    }
}
