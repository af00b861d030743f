//! Real parts for the daemon tests: a mosquitto broker, a mosquitto_sub subscriber, the
//! plugins built to components, and the `probegate` binary run as a user would run it.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::sleep;
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

pub fn capture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// The component built from `plugins/` (once per test run, by the same xtask the demo uses).
pub fn plugin(file: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        // For a quick rerun while plugins/ is mid-edit: test the components already built.
        if std::env::var_os("PROBEGATE_TEST_PREBUILT").is_some() {
            return;
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
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
    });
    let path = repo().join("target/wasm").join(file);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        sleep(Duration::from_millis(20));
    }
}

/// A mosquitto of the test's own, on a free loopback port, killed on drop.
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    conf: PathBuf,
    _dir: tempfile::TempDir,
}

impl Broker {
    pub fn start() -> Broker {
        Broker::with_persistence(false)
    }

    /// A broker that keeps sessions and queued messages across its own restarts, so a
    /// persistent subscriber misses nothing published while the broker was away.
    pub fn persistent() -> Broker {
        Broker::with_persistence(true)
    }

    fn with_persistence(persistence: bool) -> Broker {
        Broker::configured(|dir| match persistence {
            true => format!(
                "persistence true\npersistence_location {}/\nmax_queued_messages 100000\n",
                dir.display()
            ),
            false => "persistence false\n".into(),
        })
    }

    /// A broker whose listener gets the extra lines `extra(dir)` returns (`dir` is the
    /// broker's own directory, for certificates and state).
    pub fn configured(extra: impl FnOnce(&Path) -> String) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        // `user root`: as root (CI), mosquitto would otherwise switch to its own user and
        // could not read the test's private keys or write its state. Ignored as non-root.
        let text = format!(
            "user root\nlistener {port} 127.0.0.1\nallow_anonymous true\n{}",
            extra(dir.path())
        );
        std::fs::write(&conf, text).unwrap();
        let mut broker = Broker {
            child: None,
            port,
            conf,
            _dir: dir,
        };
        broker.restart();
        broker
    }

    /// The broker's own directory (certificates, state).
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// Starts the broker again (after `stop`), on the same port and with the same state.
    pub fn restart(&mut self) {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is installed (cargo xtask deps)");
        self.child = Some(child);
        wait_for_port(self.port);
    }

    /// Stops the broker as an operator or a crash would: SIGTERM, so it saves its state.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One message as a back-office subscriber received it.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub retained: bool,
    pub payload: String,
}

impl Message {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.payload).unwrap_or_else(|e| {
            panic!(
                "payload on {} is not JSON ({e}): {}",
                self.topic, self.payload
            )
        })
    }
}

/// mosquitto_sub on `probegate/#` at QoS 1: a subscriber that shares no code with ours.
pub struct Subscriber {
    child: Child,
    messages: Arc<Mutex<Vec<Message>>>,
}

impl Subscriber {
    pub fn start(broker: &Broker) -> Subscriber {
        Subscriber::spawn(broker, &[])
    }

    /// A subscriber with a persistent session: the broker keeps its messages while it is
    /// away, and it reconnects by itself.
    pub fn persistent(broker: &Broker, id: &str) -> Subscriber {
        Subscriber::spawn(broker, &["-c", "-i", id])
    }

    fn spawn(broker: &Broker, extra: &[&str]) -> Subscriber {
        let mut child = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-q", "1"])
            .args(["-t", "probegate/#", "-F", "%r %t %p"])
            // Bundle chunks are binary: a line-based reader has no use for them.
            .args([
                "-T",
                "probegate/v1/+/+/cmd/bundles/#",
                "-T",
                "probegate/v1/+/cmd/bundles/#",
            ])
            .args(["-T", "probegate/fleet/#"])
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub is installed");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = messages.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
                let line = String::from_utf8_lossy(&line);
                let mut parts = line.splitn(3, ' ');
                let (Some(r), Some(topic), Some(payload)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                sink.lock().unwrap().push(Message {
                    topic: topic.to_owned(),
                    retained: r == "1",
                    payload: payload.to_owned(),
                });
            }
        });
        let sub = Subscriber { child, messages };
        sub.wait_until_subscribed(broker);
        sub
    }

    /// mosquitto_sub says nothing when its subscription is in place: publish markers until
    /// one comes back, so no message of the test can be missed.
    fn wait_until_subscribed(&self, broker: &Broker) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
                .args(["-t", "probegate/_ready", "-m", "ready"])
                .status()
                .unwrap();
            if self.wait_for(
                |m| m.topic == "probegate/_ready",
                Duration::from_millis(300),
            ) {
                return;
            }
            assert!(Instant::now() < deadline, "mosquitto_sub never subscribed");
        }
    }

    pub fn messages(&self) -> Vec<Message> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.topic != "probegate/_ready")
            .cloned()
            .collect()
    }

    /// Waits until some message satisfies `pred` (which must not call back into `self`).
    pub fn wait_for(&self, pred: impl Fn(&Message) -> bool, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.messages.lock().unwrap().iter().any(&pred) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// Waits for a gateway's clean "offline" status and then for the messages still on their
    /// way: a stop slower than the daemon's first 300 ms (a loaded machine) sends the status
    /// before the broker has acknowledged the last messages, which then arrive after it. Done
    /// when nothing new came for 300 ms (10 s at most): a heuristic, which a full test run on
    /// two cores can outlast; a test that needs every message waits for its count as well
    /// (chain.rs, `wait_for_sightings`).
    pub fn wait_offline(&self) -> bool {
        if !self.wait_for(
            |m| m.payload.contains("\"offline\""),
            Duration::from_secs(10),
        ) {
            return false;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = self.messages.lock().unwrap().len();
        while Instant::now() < deadline {
            sleep(Duration::from_millis(300));
            let now = self.messages.lock().unwrap().len();
            if now == seen {
                break;
            }
            seen = now;
        }
        true
    }

    /// Waits until `cond(self)` holds; for conditions over all messages (counts, states).
    pub fn wait_until(&self, cond: impl Fn(&Subscriber) -> bool, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !cond(self) {
            if Instant::now() > deadline {
                return false;
            }
            sleep(Duration::from_millis(20));
        }
        true
    }

    /// Messages on a plugin stream, payloads parsed, in arrival order.
    pub fn stream(&self, plugin: &str, stream: &str) -> Vec<serde_json::Value> {
        let suffix = format!("/plugins/{plugin}/{stream}");
        self.messages()
            .iter()
            .filter(|m| m.topic.ends_with(&suffix))
            .map(Message::json)
            .collect()
    }

    /// Every enveloped message (plugin streams and plugin status: those with a `seq`), in
    /// arrival order.
    pub fn envelopes(&self) -> Vec<serde_json::Value> {
        self.messages()
            .iter()
            .filter(|m| m.topic != GATEWAY_STATUS)
            .map(Message::json)
            .filter(|m| m.get("seq").is_some())
            .collect()
    }

    /// The host's reports on one plugin (topic `.../plugin-status/{plugin}`).
    pub fn plugin_statuses(&self, plugin: &str) -> Vec<serde_json::Value> {
        let suffix = format!("/plugin-status/{plugin}");
        self.messages()
            .iter()
            .filter(|m| m.topic.ends_with(&suffix))
            .map(|m| m.json()["data"].clone())
            .collect()
    }

    /// The gateway's own status messages.
    pub fn statuses(&self) -> Vec<serde_json::Value> {
        self.messages()
            .iter()
            .filter(|m| m.topic == GATEWAY_STATUS)
            .map(Message::json)
            .collect()
    }
}

impl Drop for Subscriber {
    /// Every message any test received must satisfy its schema in docs/schemas: the back
    /// office's contract is checked on everything the suite sees, not on chosen samples.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            return;
        }
        static VALIDATORS: OnceLock<probegate::publish::schemas::Validators> = OnceLock::new();
        let validators = VALIDATORS.get_or_init(probegate::publish::schemas::Validators::new);
        let wrong: Vec<String> = self
            .messages()
            .iter()
            .filter_map(|m| validators.check(&m.topic, m.payload.as_bytes()).err())
            .collect();
        assert!(wrong.is_empty(), "payloads off their schema: {wrong:#?}");
    }
}

/// A plugin entry for a test site.
pub struct PluginEntry<'a> {
    pub name: &'a str,
    pub file: &'a str,
    /// Inline TOML table for the plugin's `config`.
    pub config: &'a str,
    /// Inline TOML array of granted capabilities; "" keeps the default grant.
    pub allow: &'a str,
}

pub const COUNTER: PluginEntry<'static> = PluginEntry {
    name: "visitor-counter",
    file: "visitor_counter.wasm",
    config: "{ interval_secs = 300 }",
    allow: "",
};

/// A site config in its own directory: the daemon's whole world for one test.
pub struct Site {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Site {
    /// `extra` is TOML placed first: top-level keys (`log = ...`, `privacy.x = ...`), then
    /// any whole tables (`[limits]`).
    pub fn new(broker: &Broker, plugins: &[PluginEntry], extra: &str) -> Site {
        let dir = tempfile::tempdir().unwrap();
        // Tests compare exact counts; the aggregation guard has tests of its own.
        let min_cell = match extra.contains("min_cell") {
            true => "",
            false => "privacy.min_cell = 1\n",
        };
        let mut text = format!(
            "privacy.signal_floor_dbm = {FLOOR}\n{min_cell}{extra}\n\n[gateway]\nsite = \"test-store\"\nid = \"gw-1\"\n\n[mqtt]\nhost = \"127.0.0.1\"\nport = {}\nkeep_alive_secs = 5\n\n",
            broker.port
        );
        for p in plugins {
            text += &format!(
                "[[plugin]]\nname = \"{}\"\npath = \"{}\"\nconfig = {}\n",
                p.name,
                plugin(p.file).display(),
                p.config
            );
            if !p.allow.is_empty() {
                text += &format!("allow = {}\n", p.allow);
            }
            text += "\n";
        }
        let config = dir.path().join("probegate.toml");
        std::fs::write(&config, text).unwrap();
        Site { dir, config }
    }

    /// `probegate replay` to the end of `capture`, as a user runs it.
    pub fn replay(&self, capture: &Path, rust_log: &str) -> Output {
        self.command(rust_log)
            .arg("replay")
            .arg("--config")
            .arg(&self.config)
            .arg(capture)
            .output()
            .unwrap()
    }

    /// `probegate replay -` on `capture` (a name under tests/data), fed by the test.
    pub fn replay_stream(&self, capture_name: &str) -> Stream {
        let child = self.spawn_stdin_replay("info");
        let bytes = std::fs::read(capture(capture_name)).unwrap();
        let mut stream = Stream {
            child,
            stdin: None,
            offsets: record_offsets(&bytes),
            bytes,
            sent: 0,
        };
        stream.stdin = stream.child.stdin.take();
        stream
    }

    /// Adds lines to the `[mqtt]` table of the site's config.
    pub fn mqtt_settings(&self, lines: &str) {
        let config = std::fs::read_to_string(&self.config).unwrap();
        let edited = config.replace(
            "keep_alive_secs = 5\n",
            &format!("keep_alive_secs = 5\n{lines}\n"),
        );
        assert_ne!(config, edited);
        std::fs::write(&self.config, edited).unwrap();
    }

    pub fn command(&self, rust_log: &str) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_probegate"));
        cmd.current_dir(self.dir.path()).env("RUST_LOG", rust_log);
        cmd
    }

    /// `probegate replay` of `source` (a capture's path, or `-` for stdin) with this site's
    /// config, logging at `rust_log`; the caller sets stdio and runs it.
    pub fn replay_command(&self, rust_log: &str, source: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = self.command(rust_log);
        cmd.args(["replay", "--config"])
            .arg(&self.config)
            .arg(source);
        cmd
    }

    /// `probegate replay -` started with its stdin for the test to feed, stderr kept.
    pub fn spawn_stdin_replay(&self, rust_log: &str) -> Child {
        self.replay_command(rust_log, "-")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

/// Every test site is gateway gw-1 of store test-store.
pub const GATEWAY_STATUS: &str = "probegate/v1/test-store/gw-1/status";

/// The signal floor every test site uses; expectations apply the same one.
pub const FLOOR: i32 = -95;

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A TCP proxy between the gateway and the broker that can blackhole the link: bytes are
/// read and thrown away, connections stay open, nothing answers. That is what a dead uplink
/// looks like to a router: no error, just silence until keep-alive notices.
pub struct Proxy {
    pub port: u16,
    blackhole: Arc<std::sync::atomic::AtomicBool>,
}

impl Proxy {
    pub fn start(upstream: u16) -> Proxy {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let blackhole = Arc::new(AtomicBool::new(false));
        let flag = blackhole.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let flag = flag.clone();
                    std::thread::spawn(move || {
                        use std::io::{Read, Write};
                        let mut buf = [0u8; 16384];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if flag.load(Ordering::SeqCst) {
                                continue;
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Proxy { port, blackhole }
    }

    pub fn blackhole(&self, on: bool) {
        self.blackhole
            .store(on, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Byte offsets where each frame's record starts in a classic little-endian pcap.
pub fn record_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        offsets.push(at);
        let len = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        at += 16 + len;
    }
    offsets
}

/// A pcap file with a header and no frames, of link type `dlt`.
pub fn empty_pcap(path: &Path, dlt: u32) {
    let mut header = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
    header.extend([0; 8]);
    header.extend(65535u32.to_le_bytes());
    header.extend(dlt.to_le_bytes());
    std::fs::write(path, header).unwrap();
}

/// `probegate replay -` fed a real capture piece by piece on stdin, as frames would come
/// from a radio: the test decides when each part arrives.
pub struct Stream {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    bytes: Vec<u8>,
    offsets: Vec<usize>,
    sent: usize,
}

impl Stream {
    /// Sends the capture up to `num/den` of its frames (whole frames only).
    pub fn feed_to(&mut self, num: usize, den: usize) {
        use std::io::Write;
        let end = self.offsets[num * self.offsets.len() / den];
        let stdin = self.stdin.as_mut().expect("stream still open");
        stdin.write_all(&self.bytes[self.sent..end]).unwrap();
        stdin.flush().unwrap();
        self.sent = end;
    }

    /// Sends the rest and closes the stream; waits for the daemon to finish.
    pub fn finish(mut self) -> Output {
        use std::io::Write;
        let mut stdin = self.stdin.take().expect("stream still open");
        stdin.write_all(&self.bytes[self.sent..]).unwrap();
        drop(stdin);
        self.child.wait_with_output().unwrap()
    }

    /// SIGKILL: the daemon gets no chance to say goodbye.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// How a broker without MQTT 5 answers a v5 CONNECT.
#[derive(Clone, Copy)]
pub enum Refusal {
    /// A 3.1.1 CONNACK, return code 1 "unacceptable protocol version", then it hangs up:
    /// what MQTT 3.1.1 prescribes.
    Connack,
    /// It hangs up without a word.
    HangUp,
}

/// A broker that speaks only MQTT 3.1.1: a front on its own port that reads each client's
/// CONNECT, refuses protocol level 5 as `refusal` says, and splices every other connection
/// through to the real broker at `upstream`. mosquitto itself cannot be told to refuse v5.
pub struct Mqtt311Only {
    pub port: u16,
    /// The protocol level of every CONNECT seen (4 = 3.1.1, 5 = MQTT 5), in order.
    levels: Arc<Mutex<Vec<u8>>>,
}

impl Mqtt311Only {
    pub fn start(upstream: u16, refusal: Refusal) -> Mqtt311Only {
        use std::io::{Read, Write};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let levels = Arc::new(Mutex::new(Vec::new()));
        let seen = levels.clone();
        std::thread::spawn(move || {
            for mut client in listener.incoming().map_while(Result::ok) {
                let Some(connect) = read_packet(&mut client) else {
                    continue;
                };
                // Variable header: protocol name (2-byte length, "MQTT"), then the level.
                let level = connect.get(1 + remaining_len_size(&connect) + 6).copied();
                seen.lock().unwrap().push(level.unwrap_or(0));
                if level == Some(5) {
                    if let Refusal::Connack = refusal {
                        let _ = client.write_all(&[0x20, 0x02, 0x00, 0x01]);
                    }
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                if server.write_all(&connect).is_err() {
                    continue;
                }
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        while let Ok(n @ 1..) = from.read(&mut buf) {
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Mqtt311Only { port, levels }
    }

    pub fn levels(&self) -> Vec<u8> {
        self.levels.lock().unwrap().clone()
    }
}

/// One whole MQTT packet (fixed header included) from `stream`.
fn read_packet(stream: &mut TcpStream) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut packet = vec![0u8; 1];
    stream.read_exact(&mut packet).ok()?;
    let mut len = 0usize;
    for shift in [0, 7, 14, 21] {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).ok()?;
        packet.push(byte[0]);
        len |= usize::from(byte[0] & 0x7f) << shift;
        if byte[0] & 0x80 == 0 {
            break;
        }
    }
    let start = packet.len();
    packet.resize(start + len, 0);
    stream.read_exact(&mut packet[start..]).ok()?;
    Some(packet)
}

/// Bytes of the remaining-length field of the packet starting `packet`.
fn remaining_len_size(packet: &[u8]) -> usize {
    packet[1..]
        .iter()
        .position(|b| b & 0x80 == 0)
        .map_or(4, |i| i + 1)
}

/// A broker that writes its own log (`broker_log`), to tell which MQTT version each client
/// really spoke.
pub fn logging_broker() -> Broker {
    Broker::configured(|dir| {
        format!(
            "persistence false\nlog_dest file {}/mosquitto.log\nconnection_messages true\n",
            dir.display()
        )
    })
}

/// What a [`logging_broker`] logged.
pub fn broker_log(broker: &Broker) -> String {
    std::fs::read_to_string(broker.dir().join("mosquitto.log")).unwrap_or_default()
}

/// A number from the daemon's "probegate stopped" summary line.
pub fn summary(stderr: &str, key: &str) -> u64 {
    stderr
        .split(&format!(" {key}="))
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in the summary: {stderr}"))
}
