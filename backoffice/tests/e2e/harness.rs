//! Real parts for the back office's end-to-end tests: mosquitto, PostgreSQL, the probegate
//! daemon replaying a real capture, the service itself, and Debian's chromium through
//! chromium-driver. Each is started on a free loopback port and stopped on drop.

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::sleep;
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} never listened on {port}");
        sleep(Duration::from_millis(50));
    }
}

/// A child process killed on drop.
pub struct Reaper(pub Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The cargo target directory this test runs from (`.../debug/deps/e2e-...`).
fn target_debug() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_owned()
}

/// The probegate daemon and the plugins, built once per test run as the gateway's tests do.
pub fn daemon_binary() -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        // The daemon exactly as `cargo test --workspace` (CI) builds it: `build -p probegate`
        // alone unifies the dependencies' features differently and compiled wasmtime a second
        // time, minutes of a cold run. Inside the workspace run this only checks fingerprints.
        let status = Command::new(&cargo)
            .current_dir(repo())
            .args(["test", "--quiet", "--workspace", "--no-run"])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building probegate failed");
        // For a quick rerun while plugins/ is unchanged: use the components already built.
        if std::env::var_os("PROBEGATE_TEST_PREBUILT").is_none() {
            let status = Command::new(&cargo)
                .current_dir(repo())
                .args([
                    "run",
                    "--quiet",
                    "--package",
                    "xtask",
                    "--",
                    "build-plugins",
                ])
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building the plugins failed");
        }
    });
    let path = target_debug().join("probegate");
    assert!(path.exists(), "{} was not built", path.display());
    path
}

pub struct Broker {
    _child: Reaper,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Broker {
    pub fn start() -> Broker {
        Broker::with("")
    }

    /// A broker with extra lines in its config.
    pub fn with(extra: &str) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        // `user root`: as root (CI) mosquitto would otherwise switch users. Ignored as non-root.
        std::fs::write(
            &conf,
            format!(
                "user root\nlistener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n{extra}"
            ),
        )
        .unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is installed (cargo xtask deps)");
        wait_for_port(port, "mosquitto");
        Broker {
            _child: Reaper(child),
            port,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

/// mosquitto_sub on the whole tree: what the broker delivered, for the expectations.
pub struct Subscriber {
    _child: Reaper,
    lines: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
}

impl Subscriber {
    pub fn start(broker: &Broker) -> Subscriber {
        let mut child = Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &broker.port.to_string(),
                "-q",
                "1",
                "-v",
            ])
            .args(["-t", "probegate/v1/#", "-t", "marker"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub is installed");
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let (topic, payload) = line.split_once(' ').unwrap_or((&line, ""));
                let json = serde_json::from_str(payload).unwrap_or(serde_json::Value::Null);
                sink.lock().unwrap().push((topic.to_owned(), json));
            }
        });
        let sub = Subscriber {
            _child: Reaper(child),
            lines,
        };
        // mosquitto_sub says nothing once subscribed: publish markers until one arrives.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sub.lines.lock().unwrap().iter().any(|(t, _)| t == "marker") {
            assert!(Instant::now() < deadline, "mosquitto_sub never subscribed");
            Command::new("mosquitto_pub")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &broker.port.to_string(),
                    "-t",
                    "marker",
                    "-m",
                    "x",
                ])
                .status()
                .unwrap();
            sleep(Duration::from_millis(100));
        }
        sub
    }

    /// The `data` of every envelope on one plugin stream.
    pub fn stream(&self, plugin: &str, stream: &str) -> Vec<serde_json::Value> {
        let suffix = format!("/plugins/{plugin}/{stream}");
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| t.ends_with(&suffix))
            .map(|(_, v)| v["data"].clone())
            .collect()
    }

    pub fn count_where(&self, pred: impl Fn(&str, &serde_json::Value) -> bool) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, v)| pred(t, v))
            .count()
    }

    /// Every message so far: (topic, payload as JSON, or null if it was not JSON).
    pub fn all(&self) -> Vec<(String, serde_json::Value)> {
        self.lines.lock().unwrap().clone()
    }

    /// The last payload on `topic`.
    pub fn last(&self, topic: &str) -> serde_json::Value {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .rev()
            .find(|(t, _)| t == topic)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    /// Enveloped messages, each counted once: (site, gateway, boot_id, seq).
    pub fn distinct_envelopes(&self) -> usize {
        let lines = self.lines.lock().unwrap();
        let keys: std::collections::BTreeSet<String> = lines
            .iter()
            .filter(|(_, v)| v.get("seq").is_some())
            .map(|(_, v)| {
                format!(
                    "{} {} {} {}",
                    v["site"], v["gateway"], v["boot_id"], v["seq"]
                )
            })
            .collect();
        keys.len()
    }
}

/// What the broker retains under `filter`: (retained flag, topic, payload), read by a fresh
/// mosquitto_sub that listens for two seconds.
pub fn retained(broker: &Broker, filter: &str) -> Vec<(bool, String, String)> {
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-q", "1"])
        .args(["-t", filter, "-F", "%r %t %p", "-W", "2"])
        .output()
        .expect("mosquitto_sub is installed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ' ');
            let flag = parts.next()?;
            Some((
                flag == "1",
                parts.next()?.to_owned(),
                parts.next().unwrap_or("").to_owned(),
            ))
        })
        .collect()
}

/// A PostgreSQL server of the test's own: initdb in a temporary directory, on a free port.
/// As root (CI) it runs as the `postgres` user, since postgres refuses to run as root.
pub struct Postgres {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn as_postgres(program: &str) -> Command {
    let path = Path::new(PG_BIN).join(program);
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(path);
        cmd
    } else {
        Command::new(path)
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

impl Postgres {
    pub fn start() -> Postgres {
        assert!(
            Path::new(PG_BIN).join("initdb").exists(),
            "PostgreSQL 15 is not installed (cargo xtask deps installs Debian's postgresql)"
        );
        let dir = tempfile::Builder::new().prefix("pg").tempdir().unwrap();
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(ok.success());
        }
        let data = dir.path().join("data");
        let out = as_postgres("initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let child = as_postgres("postgres")
            .arg("-D")
            .arg(&data)
            .args([
                "-p",
                &port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
            ])
            .arg("-k")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(port, "postgres");
        let pg = Postgres {
            port,
            dir,
            child: Some(child),
        };
        // Accepting TCP is not accepting queries: wait until it answers.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !Command::new(Path::new(PG_BIN).join("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success()
        {
            assert!(Instant::now() < deadline, "postgres never got ready");
            sleep(Duration::from_millis(100));
        }
        pg
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = as_postgres("pg_ctl")
            .args(["stop", "-m", "immediate", "-D"])
            .arg(self.dir.path().join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The back office, as a user starts it.
pub struct Service {
    child: Reaper,
    pub url: String,
    pub log: Arc<Mutex<String>>,
}

impl Service {
    pub fn start(broker: &Broker, db: &str, config: &Path) -> Service {
        let mut child = Command::new(env!("CARGO_BIN_EXE_probegate-backoffice"))
            .args([
                "--broker",
                &broker.url(),
                "--db",
                db,
                "--listen",
                "127.0.0.1:0",
                "--rollup-secs",
                "1",
            ])
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let mut stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("dashboard: ")
            .unwrap_or_else(|| {
                panic!(
                    "the service printed {line:?}, then: {}",
                    log.lock().unwrap()
                )
            })
            .trim_end_matches('/')
            .to_owned();
        let service = Service {
            child: Reaper(child),
            url,
            log,
        };
        service.wait_for(|h| h["subscribed"] == true, "subscribed");
        service
    }

    pub fn health(&self) -> serde_json::Value {
        serde_json::from_str(&http_get(&format!("{}/healthz", self.url))).unwrap_or_default()
    }

    pub fn wait_for(&self, cond: impl Fn(&serde_json::Value) -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let h = self.health();
            if cond(&h) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the service never got {what}: {h}; log: {}",
                self.log.lock().unwrap()
            );
            sleep(Duration::from_millis(100));
        }
    }

    /// Waits until nothing new arrived for a second.
    pub fn settle(&self) {
        let mut last = self.health()["received"].clone();
        loop {
            sleep(Duration::from_millis(1000));
            let now = self.health()["received"].clone();
            if now == last {
                return;
            }
            last = now;
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
        if std::thread::panicking() {
            eprintln!("the service's log:\n{}", self.log.lock().unwrap());
        }
    }
}

/// A plain HTTP/1.0 GET on loopback: the health probe needs no client library.
pub fn http_get(url: &str) -> String {
    use std::io::Write;
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let Ok(mut s) = TcpStream::connect(host) else {
        return String::new();
    };
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

/// Debian's chromium under chromium-driver, headless. The driver runs in a process group of
/// its own, which drop ends whole: a test that fails never closes its session, and chromium
/// would outlive chromedriver.
pub struct Browser {
    driver: Reaper,
    pub client: fantoccini::Client,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The syscall, not the `kill` command: Debian 12's procps 4.0.2 turns
        // `kill -KILL -PGID` into kill(-1, SIGKILL), which as root ends every process on the
        // machine (it ended CI's run). The guard keeps a bad id from meaning "everyone".
        let pgid = self.driver.0.id() as libc::pid_t;
        if pgid > 1 {
            // SAFETY: kill(2) with a negative id signals that one process group and touches
            // no memory of ours.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    }
}

impl Browser {
    pub async fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is installed (cargo xtask deps: chromium-driver)");
        wait_for_port(port, "chromedriver");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            // Chromium phones Google at start (component updates, autofill, sign-in, leak
            // checks): nothing of it may leave a test machine, whose network is closed and
            // watched, so every background service that resolves or connects is switched off.
            serde_json::json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", "--window-size=1280,2600",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-quic", "--no-first-run",
                "--disable-default-apps", "--disable-domain-reliability",
                "--disable-client-side-phishing-detection", "--no-pings",
                "--disable-features=AutofillServerCommunication,PasswordLeakDetection,OptimizationHints,MediaRouter,Translate,NetworkTimeServiceQuerying,CertificateTransparencyComponentUpdater",
                "--dns-prefetch-disable",
                // What the switches above miss (sign-in, leak checks) finds no name either:
                // only loopback resolves, so no query leaves the machine.
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]}),
        );
        let client = fantoccini::ClientBuilder::new(
            hyper_util::client::legacy::connect::HttpConnector::new(),
        )
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("chromium starts under chromedriver");
        Browser {
            driver: Reaper(driver),
            client,
        }
    }
}

/// Types `text` into the page's element `id`.
pub async fn type_into(c: &fantoccini::Client, id: &str, text: &str) {
    c.find(fantoccini::Locator::Id(id))
        .await
        .unwrap()
        .send_keys(text)
        .await
        .unwrap();
}

/// Clicks the page's element `id`.
pub async fn click(c: &fantoccini::Client, id: &str) {
    c.find(fantoccini::Locator::Id(id))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// A minisign key pair made with the gateway's CLI, as a retailer makes one: (the public
/// key's base64 line, the secret key file).
pub fn signing_keys(dir: &Path) -> (String, PathBuf) {
    let out = Command::new(daemon_binary())
        .args(["plugin", "keygen"])
        .arg(dir.join("consent-signing"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = std::fs::read_to_string(dir.join("consent-signing.pub")).unwrap();
    let line = public
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap()
        .trim()
        .to_owned();
    (line, dir.join("consent-signing.key"))
}

/// Where screenshots go: CI keeps them as artifacts.
pub fn artifact_dir() -> PathBuf {
    let dir = repo().join("target/backoffice-e2e");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The service's config for a test: the demo user, one store with a consent key.
pub fn service_config(dir: &Path, consent_key_hex: &str) -> PathBuf {
    std::fs::write(dir.join("consent.key"), consent_key_hex).unwrap();
    let demo = std::fs::read_to_string(repo().join("backoffice/demo/backoffice.toml")).unwrap();
    let users: String = demo.split("[sites.").next().unwrap().to_owned();
    let text = format!(
        "{users}\n[sites.test-store]\nconsent_key_file = \"consent.key\"\n\n[groups]\ntest-group = [\"test-store\"]\n"
    );
    let path = dir.join("backoffice.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The gateway's site config: visitor counter with visits, occupancy, a consent key.
pub fn site_config(dir: &Path, broker: &Broker, consent_key_hex: &str) -> PathBuf {
    let wasm = repo().join("target/wasm");
    std::fs::write(dir.join("gateway-consent.key"), consent_key_hex).unwrap();
    let text = format!(
        "privacy.signal_floor_dbm = -95\nprivacy.min_cell = 1\nprivacy.consent_key_file = \"gateway-consent.key\"\n\n\
         [gateway]\nsite = \"test-store\"\nid = \"gw-1\"\n\n[mqtt]\nhost = \"127.0.0.1\"\nport = {}\nkeep_alive_secs = 5\n\
         metrics_interval_secs = 1\n\n\
         [[plugin]]\nname = \"visitor-counter\"\npath = \"{}\"\nconfig = {{ interval_secs = 300, visits = {{}} }}\n\n\
         [[plugin]]\nname = \"occupancy\"\npath = \"{}\"\nallow = [\"signal\", \"sequence\", \"ie-signature\"]\n\
         config = {{ window_secs = 300 }}\n",
        broker.port,
        wasm.join("visitor_counter.wasm").display(),
        wasm.join("occupancy.wasm").display()
    );
    let path = dir.join("probegate.toml");
    std::fs::write(&path, text).unwrap();
    path
}

pub const CAPTURE: &str = "gateway/tests/data/fryza-sc6-61/sc6-61_2024-03-22.pcap";
pub const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
