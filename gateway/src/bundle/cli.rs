//! `probegate plugin ...`: the retailer's side of bundles. Make a key, build and sign a
//! bundle, check it, push it to one gateway, a site or the fleet and wait for each result,
//! list what gateways run, remove a plugin.

use super::chunks;
use super::format::{self, BundleManifest, COMPONENT, PLUGIN_MANIFEST};
use super::signing;
use crate::plugins::manifest::Manifest;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(clap::Subcommand, Debug)]
pub enum PluginCommand {
    /// Make a signing key pair: NAME.pub (for the routers' config) and NAME.key (keep private).
    #[cfg(feature = "authoring")]
    Keygen {
        /// Path without extension, e.g. keys/retailer.
        name: PathBuf,
    },
    /// Pack a component and its manifest (`<x>.toml` beside `<x>.wasm`) into an unsigned
    /// bundle.
    Build {
        wasm: PathBuf,
        /// Higher than any bundle of this plugin before: routers refuse the rest.
        #[arg(long)]
        sequence: u64,
        /// Only these sites (repeat; default: any).
        #[arg(long = "site")]
        sites: Vec<String>,
        /// Only these gateways (repeat; default: any).
        #[arg(long = "gateway")]
        gateways: Vec<String>,
        /// Code precompiled off the router, e.g. plugin.pulley32.cwasm (needs a key trusted
        /// for precompiled code).
        #[arg(long)]
        precompiled: Vec<PathBuf>,
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Precompile a plugin component for a router built without a compiler: `--target
    /// pulley32` for mipsel and armv7 routers, the target triple (aarch64-unknown-linux-musl)
    /// for 64-bit ones. The router loads the output only if it is the same probegate version
    /// and its config says `trust_precompiled = true` in [limits].
    #[cfg(feature = "compiler")]
    Precompile {
        #[arg(long)]
        target: String,
        /// The plugin component (.wasm).
        input: PathBuf,
        /// Where to write the precompiled plugin (.cwasm by convention).
        #[arg(long, short)]
        output: PathBuf,
    },
    /// Sign a bundle in place with a secret key.
    #[cfg(feature = "authoring")]
    Sign {
        bundle: PathBuf,
        #[arg(long)]
        key: PathBuf,
    },
    /// Check a bundle's signature against a public key and every artifact's hash.
    Verify {
        bundle: PathBuf,
        #[arg(long)]
        pubkey: PathBuf,
    },
    /// Publish a signed bundle and wait for the gateways' results.
    Push {
        bundle: PathBuf,
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        broker: Broker,
        /// Results to wait for: 1 for --to-gateway; for --site and --fleet, the number of
        /// gateways (without it, wait until --timeout and report who answered).
        #[arg(long)]
        expect: Option<usize>,
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        /// Largest MQTT message; bigger bundles go in chunks.
        #[arg(long, default_value_t = 256 * 1024)]
        chunk_bytes: usize,
    },
    /// List the plugins each gateway reports installed.
    List {
        #[arg(long)]
        site: Option<String>,
        #[command(flatten)]
        broker: Broker,
    },
    /// Sign and push a removal: the gateways stop and delete the plugin.
    #[cfg(feature = "authoring")]
    Remove {
        name: String,
        #[arg(long)]
        sequence: u64,
        #[arg(long)]
        key: PathBuf,
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        broker: Broker,
        #[arg(long)]
        expect: Option<usize>,
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
}

#[derive(clap::Args, Debug)]
pub struct Target {
    /// One gateway: SITE/GATEWAY.
    #[arg(long, conflicts_with_all = ["site", "fleet"])]
    pub to_gateway: Option<String>,
    /// Every gateway of a site.
    #[arg(long, conflicts_with = "fleet")]
    pub site: Option<String>,
    /// Every gateway of every site.
    #[arg(long)]
    pub fleet: bool,
}

pub use crate::broker::BrokerArgs as Broker;

type Res<T = ()> = Result<T, String>;

fn read(path: &Path) -> Res<Vec<u8>> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn write(path: &Path, bytes: &[u8]) -> Res {
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// Runs a plugin command; what it prints goes to stdout, errors come back.
pub fn run(command: PluginCommand) -> Res {
    match command {
        #[cfg(feature = "authoring")]
        PluginCommand::Keygen { name } => keygen(&name),
        PluginCommand::Build {
            wasm,
            sequence,
            sites,
            gateways,
            precompiled,
            out,
        } => {
            let bytes = build(&wasm, sequence, sites, gateways, &precompiled)?;
            write(&out, &bytes)?;
            println!("{}: unsigned bundle, {} bytes", out.display(), bytes.len());
            if let Some(w) = crate::devkit::size::warning(&out.display().to_string(), bytes.len()) {
                eprintln!("{w}");
            }
            Ok(())
        }
        #[cfg(feature = "compiler")]
        PluginCommand::Precompile {
            target,
            input,
            output,
        } => {
            let wasm = read(&input)?;
            let cwasm = crate::plugins::artifact::precompile(&wasm, &target)
                .map_err(|e| format!("{}: {e}", input.display()))?;
            // A daemon may be watching the output path for a hot reload: it must never see
            // half a file.
            let mut tmp = output.as_os_str().to_owned();
            tmp.push(".tmp");
            write(Path::new(&tmp), &cwasm)?;
            std::fs::rename(&tmp, &output).map_err(|e| format!("{}: {e}", output.display()))?;
            println!("{}: {} bytes, for {target}", output.display(), cwasm.len());
            Ok(())
        }
        #[cfg(feature = "authoring")]
        PluginCommand::Sign { bundle, key } => {
            let signed = sign(&read(&bundle)?, &String::from_utf8_lossy(&read(&key)?))?;
            write(&bundle, &signed)?;
            println!("{}: signed", bundle.display());
            Ok(())
        }
        PluginCommand::Verify { bundle, pubkey } => {
            let key = signing::public_key(&String::from_utf8_lossy(&read(&pubkey)?))?;
            let b = format::unpack(&read(&bundle)?, usize::MAX)?;
            let trust = super::Trust {
                keys: vec![key.clone()],
                precompiled: vec![key],
            };
            // Targets and sequence are the router's business; check as any gateway would
            // that has nothing installed.
            let mut anywhere = b.clone();
            anywhere.manifest.sites.clear();
            anywhere.manifest.gateways.clear();
            super::check_contents(&anywhere, &trust).map_err(|r| r.to_string())?;
            let m = &b.manifest;
            println!(
                "{}: good signature; {} {} sequence {} ({}), {} artifacts",
                bundle.display(),
                m.name,
                m.version,
                m.sequence,
                m.kind,
                m.artifacts.len()
            );
            Ok(())
        }
        PluginCommand::Push {
            bundle,
            target,
            broker,
            expect,
            timeout,
            chunk_bytes,
        } => push(
            &read(&bundle)?,
            &target,
            &broker,
            expect,
            timeout,
            chunk_bytes,
        ),
        PluginCommand::List { site, broker } => list(site.as_deref(), &broker),
        #[cfg(feature = "authoring")]
        PluginCommand::Remove {
            name,
            sequence,
            key,
            target,
            broker,
            expect,
            timeout,
        } => {
            let manifest = BundleManifest {
                format: format::FORMAT,
                name,
                version: "removed".into(),
                sequence,
                kind: "analytics".into(),
                interface: crate::plugins::manifest::INTERFACE.into(),
                capabilities: Vec::new(),
                remove: true,
                artifacts: Vec::new(),
                sites: target.site.iter().cloned().collect(),
                gateways: Vec::new(),
            };
            let unsigned = format::pack(&manifest.to_json(), None, &BTreeMap::new());
            let signed = sign(&unsigned, &String::from_utf8_lossy(&read(&key)?))?;
            push(&signed, &target, &broker, expect, timeout, 256 * 1024)
        }
    }
}

#[cfg(feature = "authoring")]
fn keygen(name: &Path) -> Res {
    let (pk, sk) = signing::keygen("probegate plugin signing key")?;
    let public = name.with_extension("pub");
    let secret = name.with_extension("key");
    if let Some(dir) = name.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    if secret.exists() {
        return Err(format!(
            "{} exists: not overwriting a key",
            secret.display()
        ));
    }
    write(&public, pk.as_bytes())?;
    write(&secret, sk.as_bytes())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600));
    }
    signing::public_key(&pk)?;
    println!(
        "{} and {}\nfor the routers' config: trusted_keys = [\"{}\"]",
        public.display(),
        secret.display(),
        signing::public_key_line(&pk).unwrap_or_default()
    );
    Ok(())
}

/// An unsigned bundle of `wasm`, its manifest and any precompiled code.
pub fn build(
    wasm: &Path,
    sequence: u64,
    sites: Vec<String>,
    gateways: Vec<String>,
    precompiled: &[PathBuf],
) -> Res<Vec<u8>> {
    if sequence == 0 {
        return Err(
            "--sequence must be 1 or more: routers count a plugin installed by hand as 0".into(),
        );
    }
    let component = read(wasm)?;
    let manifest_path = crate::plugins::manifest::path_for(wasm);
    let plugin_manifest = read(&manifest_path)?;
    let plugin = Manifest::parse(&String::from_utf8_lossy(&plugin_manifest))
        .map_err(|e| format!("{}: {e}", manifest_path.display()))?;
    let mut files = BTreeMap::from([
        (COMPONENT.to_owned(), component),
        (PLUGIN_MANIFEST.to_owned(), plugin_manifest),
    ]);
    for path in precompiled {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| n.ends_with(".cwasm"))
            .ok_or_else(|| format!("{}: precompiled code ends in .cwasm", path.display()))?;
        files.insert(name.to_owned(), read(path)?);
    }
    let manifest = BundleManifest {
        format: format::FORMAT,
        name: plugin.name.clone(),
        version: plugin.version.clone(),
        sequence,
        kind: plugin.kind.as_str().into(),
        interface: plugin.interface.clone(),
        capabilities: plugin
            .capabilities
            .iter()
            .map(|c| c.as_str().to_owned())
            .collect(),
        remove: false,
        artifacts: files.iter().map(|(f, b)| format::artifact(f, b)).collect(),
        sites,
        gateways,
    };
    Ok(format::pack(&manifest.to_json(), None, &files))
}

/// The bundle with a signature over its manifest (replacing any earlier one).
#[cfg(feature = "authoring")]
pub fn sign(bundle: &[u8], secret_key: &str) -> Res<Vec<u8>> {
    let b = format::unpack(bundle, usize::MAX)?;
    let comment = format!(
        "{} {} sequence {}",
        b.manifest.name, b.manifest.version, b.manifest.sequence
    );
    let signature = signing::sign(&b.manifest_bytes, secret_key, &comment)?;
    Ok(format::pack(&b.manifest_bytes, Some(&signature), &b.files))
}

fn runtime() -> Res<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

/// Publishes the chunks, then prints every gateway's result until `expect` came or the time is
/// up. Fails unless every result is a success and (with `expect`) enough arrived.
fn push(
    bundle: &[u8],
    target: &Target,
    broker: &Broker,
    expect: Option<usize>,
    timeout: u64,
    chunk_bytes: usize,
) -> Res {
    let (base, expect) = match (&target.to_gateway, &target.site, target.fleet) {
        (Some(g), _, _) => {
            let (site, gateway) = g.split_once('/').ok_or("--to-gateway takes SITE/GATEWAY")?;
            (
                chunks::gateway_base(site, gateway),
                Some(expect.unwrap_or(1)),
            )
        }
        (None, Some(site), _) => (chunks::site_base(site), expect),
        (None, None, true) => (chunks::FLEET_BASE.to_owned(), expect),
        (None, None, false) => return Err("name a target: --to-gateway, --site or --fleet".into()),
    };
    let mut id = [0u8; 8];
    getrandom::fill(&mut id).map_err(|e| e.to_string())?;
    let push_id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let mqtt = broker.options("push")?;
    runtime()?.block_on(async move {
        let (client, mut eventloop) = AsyncClient::new(mqtt, 64);
        client
            .subscribe("probegate/v1/+/+/bundles/result", QoS::AtLeastOnce)
            .await
            .map_err(|e| e.to_string())?;
        // Published from a task of its own: the client's queue is small, and only polling the
        // event loop (below) drains it, so a bundle of many chunks would otherwise wait forever.
        let chunks: Vec<(String, Vec<u8>)> = chunks::split(&base, &push_id, bundle, chunk_bytes)
            .into_iter()
            .map(|(t, d)| (t, d.to_vec()))
            .collect();
        let count = chunks.len();
        let publisher = client.clone();
        tokio::spawn(async move {
            for (topic, data) in chunks {
                if publisher
                    .publish(topic, QoS::AtLeastOnce, false, data)
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        eprintln!(
            "push {push_id}: {} bytes in {count} chunks to {base}",
            bundle.len()
        );
        let deadline = Instant::now() + Duration::from_secs(timeout);
        let mut results: BTreeMap<String, serde_json::Value> = BTreeMap::new();
        while expect.is_none_or(|n| results.len() < n) {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = match tokio::time::timeout(left, eventloop.poll()).await {
                Ok(event) => event.map_err(|e| format!("{}: {e}", broker.name()))?,
                Err(_) => break,
            };
            let Event::Incoming(Packet::Publish(p)) = event else {
                continue;
            };
            let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&p.payload) else {
                continue;
            };
            let data = &doc["data"];
            if data["push_id"] != push_id.as_str() {
                continue;
            }
            let who = format!(
                "{}/{}",
                doc["site"].as_str().unwrap_or("?"),
                doc["gateway"].as_str().unwrap_or("?")
            );
            println!("{who}: {}", data);
            results.insert(who, data.clone());
        }
        let _ = client.disconnect().await;
        let failed = results
            .values()
            .filter(|d| !matches!(d["outcome"].as_str(), Some("installed" | "removed")))
            .count();
        let missing = expect.map_or(0, |n| n.saturating_sub(results.len()));
        eprintln!(
            "push {push_id}: {} results, {failed} not installed, {missing} missing",
            results.len()
        );
        match (failed, missing) {
            (0, 0) if !results.is_empty() => Ok(()),
            _ => Err(format!("push {push_id} did not install everywhere")),
        }
    })
}

fn list(site: Option<&str>, broker: &Broker) -> Res {
    let mqtt = broker.options("list")?;
    let filter = format!("probegate/v1/{}/+/plugins-installed", site.unwrap_or("+"));
    runtime()?.block_on(async move {
        let (client, mut eventloop) = AsyncClient::new(mqtt, 16);
        client
            .subscribe(&filter, QoS::AtLeastOnce)
            .await
            .map_err(|e| e.to_string())?;
        // Retained messages arrive right after the subscription; a quiet second means done.
        while let Ok(event) = tokio::time::timeout(Duration::from_secs(2), eventloop.poll()).await {
            let event = event.map_err(|e| format!("{}: {e}", broker.name()))?;
            if let Event::Incoming(Packet::Publish(p)) = event {
                let doc: serde_json::Value = serde_json::from_slice(&p.payload).unwrap_or_default();
                println!(
                    "{}/{}: {}",
                    doc["site"].as_str().unwrap_or("?"),
                    doc["gateway"].as_str().unwrap_or("?"),
                    doc["data"]["plugins"]
                );
            }
        }
        let _ = client.disconnect().await;
        Ok(())
    })
}
