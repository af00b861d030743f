//! Installing a bundle on the router: stage, switch, watch, then commit or roll back.
//!
//! The plugin directory always holds a working set: a new version is written beside the old
//! one under a temporary name and the old one is copied aside. The staged version is then
//! loaded, instantiated and initialised exactly as the reloader tries any new version; if it
//! does not run, the staged files go and the old version never stopped (`rolled_back`). If it
//! runs, two renames swap the files and that very instance takes over. For a health window
//! the installer watches it; a trap or a limit breach puts the old files back.
//! A journal on flash records each step, so a daemon killed in the middle comes back to the
//! old set (an install is only final once committed).

use super::format::{self, Bundle, BundleManifest, COMPONENT, PLUGIN_MANIFEST};
use super::{Rejection, Trust};
use crate::plugins::reload::Reloader;
use crate::plugins::{Output, OutputKind, PluginError, PluginRunner};
use crate::untrusted::{Escaped, MAX_FIELD as MAX_REASON, escape};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const JOURNAL: &str = "journal.json";
const INSTALLED: &str = "installed.json";
const PREVIOUS: &str = "previous";

/// What a router was told to trust and where it keeps things.
pub struct Settings {
    pub trust: Trust,
    pub site: String,
    pub gateway: String,
    pub max_bytes: usize,
    pub health: Duration,
    pub plugin_dir: Option<PathBuf>,
    pub state_dir: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    pub version: String,
    pub sequence: u64,
    pub kind: String,
    pub removed: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct Journal {
    name: String,
    sequence: u64,
    /// "staged": new files written beside the old; "switched": the new files are in place.
    phase: String,
}

/// A version in its health window.
struct Pending {
    push_id: String,
    manifest: BundleManifest,
    until: Instant,
    /// The reloader's generation of the plugin once this version was put in place: any
    /// other means another version runs now (or none).
    generation: u64,
}

pub struct Installer {
    settings: Settings,
    installed: BTreeMap<String, Record>,
    queue: VecDeque<(String, Bundle)>,
    pending: Option<Pending>,
    announced: bool,
    /// Drop-ins that could not be consumed (a directory named `*.pgb`): reported once, then
    /// skipped while they stay, or every scan would publish the same refusal again.
    stuck: BTreeSet<PathBuf>,
}

/// The outcome document on `.../bundles/result`.
#[derive(Serialize)]
struct Result<'a> {
    v: u8,
    push_id: &'a str,
    site: &'a str,
    gateway: &'a str,
    name: Option<&'a str>,
    version: Option<&'a str>,
    sequence: Option<u64>,
    /// "installed", "removed", "rejected" or "rolled_back".
    outcome: &'a str,
    /// For rejections: a stable word (see [`Rejection::code`]).
    code: Option<&'a str>,
    reason: Option<String>,
}

impl Installer {
    /// Reads the installed set and finishes what a killed daemon left half done: anything not
    /// committed is undone, so the plugin directory holds the last committed set.
    pub fn start(settings: Settings) -> Installer {
        let state = &settings.state_dir;
        if let Err(e) = std::fs::create_dir_all(state.join(PREVIOUS)) {
            tracing::error!(dir = %state.display(), error = %e, "cannot create the bundle state directory");
        }
        let installed = std::fs::read(state.join(INSTALLED))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let installer = Installer {
            settings,
            installed,
            queue: VecDeque::new(),
            pending: None,
            announced: false,
            stuck: BTreeSet::new(),
        };
        installer.recover();
        installer
    }

    fn recover(&self) {
        let Some(journal) = std::fs::read(self.settings.state_dir.join(JOURNAL))
            .ok()
            .and_then(|b| serde_json::from_slice::<Journal>(&b).ok())
        else {
            return;
        };
        let committed = self
            .installed
            .get(&journal.name)
            .is_some_and(|r| r.sequence == journal.sequence);
        if committed {
            // Killed between recording the install and removing the journal: it stands.
            let _ = std::fs::remove_file(self.settings.state_dir.join(JOURNAL));
            return;
        }
        tracing::warn!(plugin = %journal.name, phase = %journal.phase, "an install was interrupted; restoring the last committed version");
        if let Some(dir) = &self.settings.plugin_dir {
            for ext in ["wasm", "toml"] {
                let _ = std::fs::remove_file(dir.join(format!(".{}.{ext}.new", journal.name)));
            }
            if journal.phase == "switched"
                && let Err(e) = self.restore_previous(&journal.name)
            {
                tracing::error!(plugin = %journal.name, error = %e, "cannot restore the previous version");
            }
        }
        let _ = std::fs::remove_file(self.settings.state_dir.join(JOURNAL));
    }

    /// Whether an install is queued or in its health window (or the set is not announced yet).
    pub fn busy(&self) -> bool {
        self.pending.is_some() || !self.queue.is_empty() || !self.announced
    }

    /// Bundles copied into the plugin directory by hand (`*.pgb`, e.g. over SSH) are taken
    /// like pushed ones: the file is consumed, the result published, also for a file refused
    /// before it was read (its reason names the file's type or size, never its content).
    pub fn take_drop_ins(&mut self, out: &mut Vec<Output>, now_ms: u64) {
        let Some(dir) = self.settings.plugin_dir.clone() else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        let drop_ins: BTreeSet<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "pgb"))
            .collect();
        self.stuck.retain(|p| drop_ins.contains(p));
        for path in drop_ins {
            if self.stuck.contains(&path) {
                continue;
            }
            let bytes = read_drop_in(&path, self.settings.max_bytes);
            // Consumed either way, so a bad file is reported once, not every few seconds.
            if std::fs::remove_file(&path).is_err() {
                self.stuck.insert(path.clone());
            }
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("bundle");
            let push_id = format!("file-{}", crate::untrusted::escape(stem, 64));
            match bytes {
                Ok(bytes) => self.offer(&push_id, &bytes, out, now_ms),
                Err(why) => {
                    tracing::warn!(file = %push_id, error = %why, "refused a dropped-in bundle");
                    let reason = Some(why.to_string());
                    self.report(
                        &push_id,
                        None,
                        "rejected",
                        Some(why.code()),
                        reason,
                        out,
                        now_ms,
                    );
                }
            }
        }
    }

    /// The sequence installed for `name` (0: none, or installed by hand).
    pub fn installed_sequence(&self, name: &str) -> u64 {
        self.installed.get(name).map_or(0, |r| r.sequence)
    }

    /// A whole bundle arrived (over MQTT or in the plugin directory). Checked at once; queued
    /// if good, since one install at a time keeps rollback simple.
    pub fn offer(&mut self, push_id: &str, bytes: &[u8], out: &mut Vec<Output>, now_ms: u64) {
        let bundle = match format::unpack(bytes, self.settings.max_bytes) {
            Ok(b) => b,
            Err(e) if e.starts_with("oversize") => {
                return self.reject(push_id, None, &Rejection::Oversize(e), out, now_ms);
            }
            Err(e) => return self.reject(push_id, None, &Rejection::Malformed(e), out, now_ms),
        };
        let s = &self.settings;
        let installed = self.installed_sequence(&bundle.manifest.name);
        let checked = match &s.plugin_dir {
            None => Err(Rejection::NoPluginDir),
            Some(_) => super::check(&bundle, &s.trust, &s.site, &s.gateway, installed),
        };
        match checked {
            Ok(()) => self.queue.push_back((push_id.to_owned(), bundle)),
            Err(Rejection::NotForThisGateway) => {
                // A site or fleet push names its targets; the others stay quiet.
                tracing::debug!(push_id, "bundle not for this gateway");
            }
            Err(r) => self.reject(push_id, Some(&bundle.manifest), &r, out, now_ms),
        }
    }

    /// A push too large to assemble.
    pub fn refuse_oversize(&self, push_id: &str, out: &mut Vec<Output>, now_ms: u64) {
        let why = Rejection::Oversize(format!(
            "the chunks add up to more than {} bytes",
            self.settings.max_bytes
        ));
        self.reject(push_id, None, &why, out, now_ms);
    }

    fn reject(
        &self,
        push_id: &str,
        m: Option<&BundleManifest>,
        why: &Rejection,
        out: &mut Vec<Output>,
        now_ms: u64,
    ) {
        tracing::warn!(push_id, reason = %why, "bundle rejected");
        self.report(
            push_id,
            m,
            "rejected",
            Some(why.code()),
            Some(why.to_string()),
            out,
            now_ms,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn report(
        &self,
        push_id: &str,
        m: Option<&BundleManifest>,
        outcome: &str,
        code: Option<&str>,
        reason: Option<String>,
        out: &mut Vec<Output>,
        now_ms: u64,
    ) {
        let doc = Result {
            v: 1,
            push_id,
            site: &self.settings.site,
            gateway: &self.settings.gateway,
            name: m.map(|m| m.name.as_str()),
            version: m.map(|m| m.version.as_str()),
            sequence: m.map(|m| m.sequence),
            outcome,
            code,
            reason,
        };
        out.push(host_output(
            m.map_or("bundle", |m| &m.name),
            "bundle-result",
            &doc,
            OutputKind::BundleResult,
            now_ms,
        ));
    }

    /// Advances the install in progress, or starts the next one. Called after every batch.
    pub fn step(
        &mut self,
        runners: &mut Vec<PluginRunner>,
        reloader: &mut Reloader,
        now_ms: u64,
        out: &mut Vec<Output>,
    ) {
        if !self.announced {
            self.announced = true;
            self.announce(out, now_ms);
        }
        if self.pending.is_some() {
            self.watch(runners, reloader, now_ms, out);
            return;
        }
        let Some((push_id, bundle)) = self.queue.pop_front() else {
            return;
        };
        // Checked when offered; a bundle queued behind another of the same plugin may have
        // been overtaken since.
        let installed = self.installed_sequence(&bundle.manifest.name);
        if bundle.manifest.sequence <= installed {
            let why = Rejection::Replayed {
                offered: bundle.manifest.sequence,
                installed,
            };
            return self.reject(&push_id, Some(&bundle.manifest), &why, out, now_ms);
        }
        let name = &bundle.manifest.name;
        let switched = self
            .stage(&bundle)
            .map_err(SwitchFailed::BeforeSwap)
            .and_then(|()| {
                self.try_staged(&bundle, runners, reloader, now_ms)
                    .map_err(SwitchFailed::WontRun)
            })
            .and_then(|trial| {
                self.swap(&bundle)
                    .map(|()| trial)
                    .map_err(SwitchFailed::AfterSwap)
            });
        let trial = match switched {
            Ok(trial) => trial,
            Err(SwitchFailed::WontRun(reason)) => {
                // Nothing the daemon loads was touched: the running version carries on, and
                // the kept copy of it stays in previous/.
                self.discard_new_files(name);
                let _ = std::fs::remove_file(self.settings.state_dir.join(JOURNAL));
                tracing::warn!(plugin = %name, reason = %Escaped::new(&reason), "new version does not run; rolled back before it was put in place");
                self.report(
                    &push_id,
                    Some(&bundle.manifest),
                    "rolled_back",
                    None,
                    Some(reason),
                    out,
                    now_ms,
                );
                return;
            }
            Err(failed) => {
                let e = match failed {
                    // A full flash, most likely: the running version was never touched, so
                    // it stays; only the partial copies go, as they take the room.
                    SwitchFailed::BeforeSwap(e) => {
                        self.discard_staged(name);
                        e
                    }
                    SwitchFailed::AfterSwap(e) => {
                        let _ = self.restore_previous(name);
                        e
                    }
                    SwitchFailed::WontRun(_) => unreachable!("handled above"),
                };
                tracing::error!(plugin = %name, error = %Escaped::new(&e), "cannot write the bundle; the installed version stays");
                let _ = std::fs::remove_file(self.settings.state_dir.join(JOURNAL));
                self.report(
                    &push_id,
                    Some(&bundle.manifest),
                    "rejected",
                    Some("io"),
                    Some(e),
                    out,
                    now_ms,
                );
                return;
            }
        };
        let Some(trial) = trial else {
            // A removal: the reloader stops the plugin whose files went.
            reloader.check(runners, now_ms, out);
            self.commit(&push_id, &bundle.manifest, out, now_ms);
            return;
        };
        let generation = reloader.adopt(trial, runners, now_ms, out);
        self.pending = Some(Pending {
            push_id,
            manifest: bundle.manifest,
            until: Instant::now() + self.settings.health,
            generation,
        });
        self.watch(runners, reloader, now_ms, out);
    }

    /// Loads, instantiates and initialises the staged version as the reloader would once it
    /// is in place (`None` for a removal); the error, bounded and escaped, is the reason of
    /// the rollback.
    fn try_staged(
        &self,
        bundle: &Bundle,
        runners: &[PluginRunner],
        reloader: &Reloader,
        now_ms: u64,
    ) -> std::result::Result<Option<PluginRunner>, String> {
        if bundle.manifest.remove {
            return Ok(None);
        }
        let dir = self.settings.plugin_dir.as_ref().expect("checked at offer");
        let name = &bundle.manifest.name;
        let wasm = dir.join(format!(".{name}.wasm.new"));
        let manifest = dir.join(format!(".{name}.toml.new"));
        reloader
            .trial(name, (&wasm, &manifest), runners, now_ms)
            .map(Some)
            .map_err(|e| {
                let why = match e {
                    // Not the staged file's path: the result leaves the router.
                    PluginError::Load { reason, .. } => format!("cannot load: {reason}"),
                    e => e.to_string(),
                };
                escape(&why, MAX_REASON)
            })
    }

    fn watch(
        &mut self,
        runners: &mut Vec<PluginRunner>,
        reloader: &mut Reloader,
        now_ms: u64,
        out: &mut Vec<Output>,
    ) {
        let p = self
            .pending
            .as_ref()
            .expect("called with a pending install");
        let runner = runners.iter().find(|r| r.name() == p.manifest.name);
        let ours = reloader.generation(&p.manifest.name) == Some(p.generation);
        let failure = match runner {
            // The runner put in place for the new version: its counts start at the switch.
            Some(r) if ours => (r.breaches() > 0 || r.is_failing())
                .then(|| "it trapped or broke a limit during the health window".to_owned()),
            _ => Some(
                "its files were replaced or removed during the health window, or it did not \
                 start"
                    .to_owned(),
            ),
        };
        if let Some(reason) = failure {
            let p = self.pending.take().expect("pending");
            tracing::warn!(plugin = %p.manifest.name, %reason, "new version rolled back");
            if let Err(e) = self.restore_previous(&p.manifest.name) {
                tracing::error!(plugin = %p.manifest.name, error = %e, "cannot restore the previous version");
            }
            let _ = std::fs::remove_file(self.settings.state_dir.join(JOURNAL));
            reloader.check(runners, now_ms, out);
            self.report(
                &p.push_id,
                Some(&p.manifest),
                "rolled_back",
                None,
                Some(reason),
                out,
                now_ms,
            );
            return;
        }
        if Instant::now() >= p.until {
            let p = self.pending.take().expect("pending");
            self.commit(&p.push_id, &p.manifest, out, now_ms);
        }
    }

    fn commit(&mut self, push_id: &str, m: &BundleManifest, out: &mut Vec<Output>, now_ms: u64) {
        // A removal does not know what it removes; the record keeps what was there.
        let kind = match (m.remove, self.installed.get(&m.name)) {
            (true, Some(old)) => old.kind.clone(),
            _ => m.kind.clone(),
        };
        self.installed.insert(
            m.name.clone(),
            Record {
                version: m.version.clone(),
                sequence: m.sequence,
                kind,
                removed: m.remove,
            },
        );
        let state = &self.settings.state_dir;
        if let Err(e) = write_atomic(
            state,
            INSTALLED,
            &serde_json::to_vec_pretty(&self.installed).expect("serialises"),
        ) {
            tracing::error!(error = %e, "cannot record the installed set");
        }
        // The journal goes before the kept copy: recovery with a journal restores the copy.
        let _ = std::fs::remove_file(state.join(JOURNAL));
        for ext in ["wasm", "toml"] {
            let _ = std::fs::remove_file(state.join(PREVIOUS).join(format!("{}.{ext}", m.name)));
        }
        let outcome = if m.remove { "removed" } else { "installed" };
        tracing::info!(plugin = %m.name, version = %m.version, sequence = m.sequence, "{outcome}");
        self.report(push_id, Some(m), outcome, None, None, out, now_ms);
        self.announce(out, now_ms);
    }

    /// Publishes the installed set (retained).
    fn announce(&self, out: &mut Vec<Output>, now_ms: u64) {
        #[derive(Serialize)]
        struct Set<'a> {
            v: u8,
            plugins: &'a BTreeMap<String, Record>,
        }
        out.push(host_output(
            "bundles",
            "plugins-installed",
            &Set {
                v: 1,
                plugins: &self.installed,
            },
            OutputKind::Installed,
            now_ms,
        ));
    }

    /// Stages the new files beside the old, keeps a copy of the old, then renames the new into
    /// place (manifest first: the reloader reads both when the component changes).
    /// Removes what a switch that failed before the swap left: the staged files and the
    /// copies of the running version.
    fn discard_staged(&self, name: &str) {
        let Some(dir) = &self.settings.plugin_dir else {
            return;
        };
        for ext in ["toml", "wasm"] {
            let _ = std::fs::remove_file(dir.join(format!(".{name}.{ext}.new")));
            let kept = self.settings.state_dir.join(PREVIOUS);
            let _ = std::fs::remove_file(kept.join(format!("{name}.{ext}")));
        }
    }

    /// Removes the staged new files of a version that will not run.
    fn discard_new_files(&self, name: &str) {
        let Some(dir) = &self.settings.plugin_dir else {
            return;
        };
        for ext in ["toml", "wasm"] {
            let _ = std::fs::remove_file(dir.join(format!(".{name}.{ext}.new")));
        }
    }

    /// Writes the new version beside the running one and keeps a copy of the running one;
    /// nothing the daemon loads has changed yet. (The journal says "staged": a restart
    /// removes the new files.)
    fn stage(&self, bundle: &Bundle) -> std::result::Result<(), String> {
        let dir = self.settings.plugin_dir.as_ref().expect("checked at offer");
        let name = &bundle.manifest.name;
        let state = &self.settings.state_dir;
        let journal = |phase: &str| {
            let j = Journal {
                name: name.clone(),
                sequence: bundle.manifest.sequence,
                phase: phase.into(),
            };
            write_atomic(state, JOURNAL, &serde_json::to_vec(&j).expect("serialises"))
        };
        let new_files = [(PLUGIN_MANIFEST, "toml"), (COMPONENT, "wasm")];
        // Code precompiled for this router (its signer was checked as trusted for it) stands
        // in for the component; the loader tells the two apart by their contents.
        let precompiled = format!("plugin.{}.cwasm", crate::plugins::artifact::native_target());
        if !bundle.manifest.remove {
            for (member, ext) in new_files {
                let bytes = match bundle.files.get(&precompiled) {
                    Some(code) if member == COMPONENT => code,
                    _ => &bundle.files[member],
                };
                write_synced(&dir.join(format!(".{name}.{ext}.new")), bytes)?;
            }
        }
        journal("staged")?;
        for ext in ["toml", "wasm"] {
            let current = dir.join(format!("{name}.{ext}"));
            let kept = state.join(PREVIOUS).join(format!("{name}.{ext}"));
            match std::fs::read(&current) {
                Ok(bytes) => write_synced(&kept, &bytes)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let _ = std::fs::remove_file(&kept);
                }
                Err(e) => return Err(format!("{}: {e}", current.display())),
            }
        }
        Ok(())
    }

    /// Puts the staged version in place of the running one (renames only: no room needed).
    fn swap(&self, bundle: &Bundle) -> std::result::Result<(), String> {
        let dir = self.settings.plugin_dir.as_ref().expect("checked at offer");
        let name = &bundle.manifest.name;
        let j = Journal {
            name: name.clone(),
            sequence: bundle.manifest.sequence,
            phase: "switched".into(),
        };
        // From here on a restart restores the kept copy (see `recover`).
        write_atomic(
            &self.settings.state_dir,
            JOURNAL,
            &serde_json::to_vec(&j).expect("serialises"),
        )?;
        if bundle.manifest.remove {
            for ext in ["wasm", "toml"] {
                let _ = std::fs::remove_file(dir.join(format!("{name}.{ext}")));
            }
            return Ok(());
        }
        for ext in ["toml", "wasm"] {
            let from = dir.join(format!(".{name}.{ext}.new"));
            std::fs::rename(&from, dir.join(format!("{name}.{ext}")))
                .map_err(|e| format!("{}: {e}", from.display()))?;
        }
        Ok(())
    }

    /// Puts the kept version back, or removes the plugin if there was none.
    fn restore_previous(&self, name: &str) -> std::result::Result<(), String> {
        let dir = self.settings.plugin_dir.as_ref().ok_or("no plugin_dir")?;
        for ext in ["toml", "wasm"] {
            let kept = self
                .settings
                .state_dir
                .join(PREVIOUS)
                .join(format!("{name}.{ext}"));
            let target = dir.join(format!("{name}.{ext}"));
            match std::fs::read(&kept) {
                Ok(bytes) => crate::flash::replace(&target, &bytes)
                    .map_err(|e| format!("{}: {e}", target.display()))?,
                Err(_) => {
                    let _ = std::fs::remove_file(&target);
                }
            }
        }
        Ok(())
    }
}

/// How far a failed switch got.
enum SwitchFailed {
    /// Nothing the daemon loads was touched.
    BeforeSwap(String),
    /// Staged, but the new version does not load, instantiate or initialise; nothing the
    /// daemon loads was touched.
    WontRun(String),
    /// Files were being renamed: the previous version must come back.
    AfterSwap(String),
}

fn host_output(
    plugin: &str,
    stream: &str,
    doc: &impl Serialize,
    kind: OutputKind,
    now_ms: u64,
) -> Output {
    let json = serde_json::to_string(doc).expect("serialises");
    Output {
        plugin: Arc::from(plugin),
        stream: stream.into(),
        payload: serde_json::value::RawValue::from_string(json).expect("valid JSON"),
        time_ms: now_ms,
        kind,
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::result::Result<(), String> {
    crate::flash::write_synced(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::result::Result<(), String> {
    let path = dir.join(name);
    crate::flash::replace(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads a dropped-in bundle: a regular file only, never through a link, never blocking on a
/// FIFO or device, and at most `max_bytes` (+1, to tell an oversized file), so whatever lands
/// in the plugin directory cannot make the daemon read a secret, stall or exhaust memory.
fn read_drop_in(path: &Path, max_bytes: usize) -> std::result::Result<Vec<u8>, Rejection> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => {
                Rejection::NotRegularFile("a symbolic link, not a regular file".into())
            }
            _ => Rejection::Unreadable(format!("cannot open: {}", e.kind())),
        })?;
    let meta = file
        .metadata()
        .map_err(|e| Rejection::Unreadable(format!("cannot stat: {}", e.kind())))?;
    if !meta.file_type().is_file() {
        return Err(Rejection::NotRegularFile("not a regular file".into()));
    }
    if meta.len() > max_bytes as u64 {
        return Err(Rejection::Oversize(format!(
            "{} bytes, the limit is {max_bytes}",
            meta.len()
        )));
    }
    let mut bytes = Vec::new();
    file.take(max_bytes as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Rejection::Unreadable(format!("cannot read: {}", e.kind())))?;
    if bytes.len() > max_bytes {
        return Err(Rejection::Oversize(format!("more than {max_bytes} bytes")));
    }
    Ok(bytes)
}

#[cfg(test)]
mod drop_in_tests {
    use super::read_drop_in;

    #[test]
    fn only_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"root:SECRET-HASH:19000:0:99999:7:::\n").unwrap();
        let link = dir.path().join("evil.pgb");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        let e = read_drop_in(&link, 1 << 20).unwrap_err();
        assert_eq!(e.code(), "not_regular_file");
        let e = e.to_string();
        assert!(e.contains("symbolic link"), "{e}");
        assert!(!e.contains("SECRET"), "{e}");

        let zero = dir.path().join("zero.pgb");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert!(read_drop_in(&zero, 1 << 20).is_err());

        let fifo = dir.path().join("fifo.pgb");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Would block forever without O_NONBLOCK: no writer ever opens it.
        assert_eq!(
            read_drop_in(&fifo, 1 << 20).unwrap_err().to_string(),
            "not a regular file"
        );

        let big = dir.path().join("big.pgb");
        std::fs::write(&big, vec![0u8; 2048]).unwrap();
        let e = read_drop_in(&big, 1024).unwrap_err();
        assert_eq!(e.code(), "oversize");
        assert!(e.to_string().starts_with("oversize: 2048 bytes"), "{e}");
        assert_eq!(read_drop_in(&big, 4096).unwrap().len(), 2048);
    }

    #[test]
    fn a_file_that_is_not_a_tar_is_never_quoted() {
        let mut secret = b"root:SECRET-HASH\nINFO probegate::bundle::install: installed".to_vec();
        secret.resize(1024, b'x');
        let e = super::format::unpack(&secret, 1 << 20).err().unwrap();
        assert!(!e.contains("SECRET") && !e.contains('\n'), "{e}");
    }
}
