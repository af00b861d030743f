//! Hot reload: a plugin whose file is replaced, removed or (re)appears is swapped without
//! restarting the daemon or pausing the others. A replacement that does not load and
//! initialise is refused and the running version carries on.
//!
//! Files are watched by modification time and size, polled every few seconds: no inotify
//! dependency, and a router's flash sees no extra writes. Install a new version by writing
//! it beside the old one and renaming it into place, so a half-written file is never read.

use super::manifest::{self, Capability};
use super::runner::{PluginStatus, status_output};
use super::sandbox::{HostState, InstanceLimits, Limits, Output};
use super::{PluginError, PluginRunner};
use crate::config::is_valid_name;
use crate::untrusted::Escaped;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};
use wasmtime::Engine;
use wasmtime::component::Linker;

/// How often the plugin files are looked at.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

type Stamp = Option<((SystemTime, u64), Option<(SystemTime, u64)>)>;

/// One configured plugin's file.
pub struct Watched {
    pub name: String,
    pub path: PathBuf,
    pub config_json: String,
    pub granted: Vec<Capability>,
    /// Its own instance, table and memory counts from its [[plugin]] table.
    pub own_limits: InstanceLimits,
    stamp: Stamp,
    /// Counts the versions put in place or stopped, so an installer can tell whether the
    /// runner it watches is still the one it put there (version strings may repeat).
    generation: u64,
}

impl Watched {
    pub fn new(
        name: String,
        path: PathBuf,
        config_json: String,
        granted: Vec<Capability>,
        own_limits: InstanceLimits,
    ) -> Watched {
        let stamp = stamp(&path);
        Watched {
            name,
            path,
            config_json,
            granted,
            own_limits,
            stamp,
            generation: 0,
        }
    }

    /// A plugin found in the plugin directory with no [[plugin]] table: config `{}`, the
    /// default grant, the site's limits.
    fn discovered(name: String, path: PathBuf) -> Watched {
        Watched::new(
            name,
            path,
            "{}".into(),
            Capability::DEFAULT_GRANT.to_vec(),
            InstanceLimits::default(),
        )
    }
}

/// The component's and its manifest's times and sizes: a new version may change either.
fn stamp(path: &std::path::Path) -> Stamp {
    let one = |p: &std::path::Path| {
        let meta = std::fs::metadata(p).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    };
    let wasm = one(path)?;
    let manifest = one(&manifest::path_for(path));
    Some((wasm, manifest))
}

pub struct Reloader {
    engine: Engine,
    linker: Linker<HostState>,
    limits: Limits,
    watched: Vec<Watched>,
    /// The plugin directory, scanned for new plugins at every check.
    dir: Option<PathBuf>,
    last_check: Instant,
}

/// The plugins in `dir` that no entry of `known` names: each `<name>.wasm`, running under its
/// file name with config `{}` and the default grant. Files whose name is not a valid plugin
/// name are skipped with a warning.
pub fn discover(dir: &Path, known: &[Watched]) -> Vec<Watched> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        tracing::warn!(dir = %dir.display(), "cannot read the plugin directory");
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
        .filter(|p| !known.iter().any(|w| &w.path == p))
        .collect();
    // Directory order is arbitrary; names give a stable chain order.
    found.sort();
    found
        .into_iter()
        .filter_map(|path| {
            let name = path.file_stem()?.to_str()?.to_owned();
            if !is_valid_name(&name) || known.iter().any(|w| w.name == name) {
                tracing::warn!(file = %Escaped::new(&path.display().to_string()), "not a usable plugin name (a-z, 0-9, '-', '_', unique): skipped");
                return None;
            }
            let mut w = Watched::discovered(name, path);
            // Seen for the first time: load it at this check, whatever its stamp.
            w.stamp = None;
            Some(w)
        })
        .collect()
}

impl Reloader {
    pub fn new(
        engine: Engine,
        linker: Linker<HostState>,
        limits: Limits,
        mut watched: Vec<Watched>,
        dir: Option<PathBuf>,
    ) -> Reloader {
        // Loaded at start: only later changes count.
        for w in &mut watched {
            w.stamp = stamp(&w.path);
        }
        Reloader {
            engine,
            linker,
            limits,
            watched,
            dir,
            last_check: Instant::now(),
        }
    }

    /// Whether [`CHECK_EVERY`] of wall time passed since the last check.
    pub fn due(&self) -> bool {
        self.last_check.elapsed() >= CHECK_EVERY
    }

    /// Applies file changes to `runners` (kept in configured order). What stopped or
    /// swapped plugins publish goes to `out`.
    pub fn check(&mut self, runners: &mut Vec<PluginRunner>, now_ms: u64, out: &mut Vec<Output>) {
        self.last_check = Instant::now();
        if let Some(dir) = &self.dir {
            let new = discover(dir, &self.watched);
            self.watched.extend(new);
        }
        for order in 0..self.watched.len() {
            let current = stamp(&self.watched[order].path);
            if current == self.watched[order].stamp {
                continue;
            }
            self.watched[order].stamp = current;
            let name = self.watched[order].name.clone();
            let at = runners.iter().position(|r| r.name() == name);
            match current {
                None => {
                    if let Some(i) = at {
                        self.watched[order].generation += 1;
                        let mut old = runners.remove(i);
                        old.on_stop(now_ms, out);
                        tracing::info!(plugin = %name, "plugin file removed; plugin stopped");
                        report(out, &name, now_ms, "removed", None);
                    }
                }
                Some(_) => match self.candidate(order, at.map(|i| &runners[i]), now_ms) {
                    Ok(new) => self.place(order, new, runners, now_ms, out),
                    Err(e) => {
                        tracing::warn!(plugin = %name, error = %Escaped::bounded(&e.to_string(), 2048), "new plugin version refused; the running one carries on");
                        report(out, &name, now_ms, "reload_failed", Some(&e.to_string()));
                    }
                },
            }
        }
    }

    /// Loads and starts the new version beside the running one (`current`), whose key-value
    /// state its init sees.
    fn candidate(
        &self,
        order: usize,
        current: Option<&PluginRunner>,
        now_ms: u64,
    ) -> Result<PluginRunner, PluginError> {
        let w = &self.watched[order];
        let manifest = manifest::path_for(&w.path);
        self.load_and_start(w, (&w.path, &manifest), current, now_ms)
    }

    /// The one way a new version is tried: loaded with the plugin's config, grant and limits
    /// (the manifest checked against the grant, imports and exports type-checked),
    /// instantiated and initialised with a copy of the running version's state.
    fn load_and_start(
        &self,
        w: &Watched,
        files: (&Path, &Path),
        current: Option<&PluginRunner>,
        now_ms: u64,
    ) -> Result<PluginRunner, PluginError> {
        let mut runner = PluginRunner::load_from(
            &self.engine,
            &self.linker,
            &w.name,
            files,
            w.config_json.clone(),
            self.limits.with(w.own_limits),
            &w.granted,
            &mut super::runner::Compiled::default(),
        )?;
        if let Some(current) = current {
            current.lend_state(&mut runner);
        }
        runner.start(now_ms)?;
        Ok(runner)
    }

    /// Tries a staged new version of `name` (component `wasm`, manifest `manifest`, not yet
    /// in place) exactly as a reload would try it once in place: with the config, grant and
    /// limits `name` runs under, beside the running version. The started runner is what
    /// [`Reloader::adopt`] puts in place after the files are renamed; on an error nothing
    /// changed.
    pub fn trial(
        &self,
        name: &str,
        (wasm, manifest): (&Path, &Path),
        runners: &[PluginRunner],
        now_ms: u64,
    ) -> Result<PluginRunner, PluginError> {
        let current = runners.iter().find(|r| r.name() == name);
        let dir = self.dir.as_deref().unwrap_or(Path::new("."));
        let in_place = dir.join(format!("{name}.wasm"));
        let settings;
        let w = match self.watched.iter().find(|w| w.name == name) {
            Some(w) if w.path != in_place => {
                return Err(PluginError::Refused {
                    name: name.to_owned(),
                    reason: "a [[plugin]] table of this name runs a file outside plugin_dir".into(),
                });
            }
            Some(w) => w,
            None => {
                // Not running yet: it will be found in the plugin directory.
                settings = Watched::discovered(name.to_owned(), in_place);
                &settings
            }
        };
        self.load_and_start(w, (wasm, manifest), current, now_ms)
    }

    /// Puts `new`, a [`Reloader::trial`] that passed and whose files were then renamed into
    /// place, in for the running version, as a reload does; the rename is not reloaded
    /// again. Returns the plugin's generation (see [`Reloader::generation`]).
    pub fn adopt(
        &mut self,
        new: PluginRunner,
        runners: &mut Vec<PluginRunner>,
        now_ms: u64,
        out: &mut Vec<Output>,
    ) -> u64 {
        if let Some(dir) = &self.dir {
            let found = discover(dir, &self.watched);
            self.watched.extend(found);
        }
        let order = self
            .watched
            .iter()
            .position(|w| w.name == new.name())
            .expect("a bundle's plugin is in the plugin directory");
        self.watched[order].stamp = stamp(&self.watched[order].path);
        self.place(order, new, runners, now_ms, out);
        self.watched[order].generation
    }

    /// Which version of `name` runs: changes each time one is put in place or stopped.
    pub fn generation(&self, name: &str) -> Option<u64> {
        self.watched
            .iter()
            .find(|w| w.name == name)
            .map(|w| w.generation)
    }

    /// Swaps a started new version in for the running one (or adds it, in configured order).
    fn place(
        &mut self,
        order: usize,
        mut new: PluginRunner,
        runners: &mut Vec<PluginRunner>,
        now_ms: u64,
        out: &mut Vec<Output>,
    ) {
        let name = self.watched[order].name.clone();
        self.watched[order].generation += 1;
        match runners.iter().position(|r| r.name() == name) {
            Some(i) => {
                // The old version publishes what it holds, then steps aside.
                runners[i].on_stop(now_ms, out);
                new.inherit_space(&mut runners[i]);
                runners[i] = new;
            }
            None => {
                let i = self.insert_position(runners, order);
                runners.insert(i, new);
            }
        }
        let i = runners
            .iter()
            .position(|r| r.name() == name)
            .expect("just placed");
        runners[i].announce(out, now_ms);
        tracing::info!(plugin = %name, "plugin reloaded");
    }

    /// Where a plugin that (re)appears goes, so the chain keeps the configured order.
    fn insert_position(&self, runners: &[PluginRunner], order: usize) -> usize {
        let before: Vec<&str> = self.watched[..order]
            .iter()
            .map(|w| w.name.as_str())
            .collect();
        runners
            .iter()
            .take_while(|r| before.contains(&r.name()))
            .count()
    }
}

fn report(out: &mut Vec<Output>, name: &str, now_ms: u64, state: &str, reason: Option<&str>) {
    let status = PluginStatus {
        state,
        failures: 0,
        traps: 0,
        reason,
        retry_at_ms: None,
        failed_call_us: None,
        version: None,
        kind: None,
    };
    out.push(status_output(name.into(), now_ms, &status));
}
