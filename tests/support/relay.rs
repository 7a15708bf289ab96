//! Running the `mailflow relay` binary for end-to-end tests: start it on free ports, read its
//! ready line, drive it with Python's smtplib (`smtp_client.py`), search its tracking log.

use super::sink::Received;
use super::tls::Pem;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_mailflow");

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The command line most relay tests share: the `Loopback` receive connector on a free
/// port, the send connectors `Out` and `Dead` to ports `out` and `dead` on 127.0.0.1,
/// retries `retry` apart, next hops given `smtp_timeout` to answer.
pub fn loopback(out: u16, dead: u16, retry: &str, smtp_timeout: &str) -> Vec<String> {
    [
        "--listen",
        "Loopback=127.0.0.1:0",
        "--smart-host",
        &format!("Out=127.0.0.1:{out}"),
        "--smart-host",
        &format!("Dead=127.0.0.1:{dead}"),
        "--retry-min",
        retry,
        "--retry-max",
        retry,
        "--smtp-timeout",
        smtp_timeout,
    ]
    .map(String::from)
    .to_vec()
}

/// A relay process; killed when dropped.
pub struct Relay {
    pub child: Child,
    pub addr: SocketAddr,
    /// Every listener: its address and the connectors it serves.
    pub listeners: Vec<(SocketAddr, Vec<String>)>,
    pub admin: Option<SocketAddr>,
    pub spool: PathBuf,
    /// The ready line, as the relay printed it.
    pub ready: Value,
}

impl Relay {
    pub fn start(rules: &Path, spool: &Path, args: &[String]) -> Relay {
        Relay::start_logged(rules, spool, args, None)
    }

    /// As [`Relay::start`], with its log (stderr, at `--log error` unless `args` give
    /// `--log`) appended to `log`.
    pub fn start_logged(rules: &Path, spool: &Path, args: &[String], log: Option<&Path>) -> Relay {
        let level = if args.iter().any(|a| a == "--log") {
            &[][..]
        } else {
            &["--log", "error"][..]
        };
        let stderr = match log {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .unwrap(),
            ),
            None => Stdio::inherit(),
        };
        let mut cmd = Command::new(BIN);
        cmd.arg("relay")
            .arg(rules)
            .arg("--spool")
            .arg(spool)
            .args(["--hostname", "relay.test"])
            .args(level)
            .args(args)
            .stderr(stderr);
        Relay::spawn(&mut cmd, spool)
    }

    /// Starts `cmd`, a `mailflow relay` command line as a test writes it (under a wrapper,
    /// another log level, ...) on `spool`, and waits for its ready line.
    pub fn spawn(cmd: &mut Command, spool: &Path) -> Relay {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ready: Value = serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("the relay did not start: {line:?}"));
        let addr = ready["listeners"][0]["address"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let admin = ready["admin"].as_str().map(|a| a.parse().unwrap());
        let listeners = ready["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                let names = l["connectors"].as_array().unwrap();
                (
                    l["address"].as_str().unwrap().parse().unwrap(),
                    names
                        .iter()
                        .map(|n| n.as_str().unwrap().to_string())
                        .collect(),
                )
            })
            .collect();
        Relay {
            child,
            addr,
            listeners,
            admin,
            spool: spool.to_path_buf(),
            ready,
        }
    }

    /// The address the named receive connector listens on.
    pub fn listener(&self, connector: &str) -> SocketAddr {
        self.listeners
            .iter()
            .find(|(_, names)| names.iter().any(|n| n == connector))
            .map(|(a, _)| *a)
            .unwrap_or_else(|| panic!("no listener for {connector}: {:?}", self.listeners))
    }

    /// Sends SIGTERM and waits (up to 40 s, a watchdog) for a clean exit.
    pub async fn terminate(&mut self) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let t0 = Instant::now();
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(40),
                "still running after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(status.success(), "{status:?}");
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn track(&self, args: &[&str]) -> Vec<Value> {
        let out = Command::new(BIN)
            .arg("track")
            .arg("--spool")
            .arg(&self.spool)
            .arg("--json")
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs the Python client; returns its JSON summary.
pub async fn client(args: Vec<String>) -> Value {
    tokio::task::spawn_blocking(move || {
        let out = Command::new("python3")
            .arg(root().join("tests/support/smtp_client.py"))
            .args(&args)
            .output()
            .expect("python3 is needed for the relay tests");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let last = text.lines().last().unwrap_or_default().to_string();
        serde_json::from_str(&last).unwrap_or_else(|_| {
            panic!(
                "client output: {text}\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    })
    .await
    .unwrap()
}

pub fn s(v: &str) -> String {
    v.to_string()
}

/// The client's arguments: the relay's port, then `extra`.
pub fn with_port(relay: &Relay, extra: &[&str]) -> Vec<String> {
    let mut a = port_args(relay);
    a.extend(extra.iter().map(|x| x.to_string()));
    a
}

pub fn port_args(relay: &Relay) -> Vec<String> {
    vec![s("--port"), relay.addr.port().to_string()]
}

/// `GET path` from the admin port (HTTP/1.0: the answer ends at close).
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(tcp, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = tcp.read_to_string(&mut out);
    out
}

/// Waits until `f` holds, for up to `secs` seconds.
pub async fn wait_until(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}

pub fn data_text(m: &Received) -> String {
    String::from_utf8_lossy(&m.data).to_string()
}

pub fn header<'a>(m: &'a str, name: &str) -> Option<&'a str> {
    let head = m.split("\r\n\r\n").next().unwrap_or_default();
    head.split("\r\n")
        .find(|l| {
            l.len() > name.len()
                && l[..name.len()].eq_ignore_ascii_case(name)
                && l.as_bytes()[name.len()] == b':'
        })
        .map(|l| l[name.len() + 1..].trim())
}

/// Writes a PEM pair into `dir`.
pub fn write_pem(pem: &Pem, dir: &Path, name: &str) -> (String, String) {
    let (c, k) = pem.write(dir, name);
    (c.display().to_string(), k.display().to_string())
}

/// The free port of a listener that is closed again: a next hop that is down.
pub fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A relay on a rule set of `tests/fixtures/relay/` in a scratch folder: the fixture's text
/// (through `edit`) next to a server certificate for mx.example.com (`edge.crt`, `edge.key`)
/// from a test CA the relay trusts, every receive connector in `listen` on a free port of
/// 127.0.0.1, every send connector in `send` delivering to one sink, quick retries, and
/// `extra` arguments.
pub struct Fixture<'a> {
    pub name: &'a str,
    pub listen: &'a [&'a str],
    pub send: &'a [&'a str],
}

impl Fixture<'_> {
    pub async fn start(
        &self,
        tmp: &Path,
        edit: impl Fn(String) -> String,
        extra: &[&str],
    ) -> (Relay, super::sink::Sink, super::tls::TestCa) {
        self.start_with(tmp, edit, extra, super::sink::SinkOptions::default())
            .await
    }

    /// As [`Fixture::start`], with a sink that behaves as `sink` says.
    pub async fn start_with(
        &self,
        tmp: &Path,
        edit: impl Fn(String) -> String,
        extra: &[&str],
        sink: super::sink::SinkOptions,
    ) -> (Relay, super::sink::Sink, super::tls::TestCa) {
        self.start_logged(tmp, edit, extra, sink, None).await
    }

    /// As [`Fixture::start_with`], with the relay's log written to `log`.
    pub async fn start_logged(
        &self,
        tmp: &Path,
        edit: impl Fn(String) -> String,
        extra: &[&str],
        sink: super::sink::SinkOptions,
        log: Option<&Path>,
    ) -> (Relay, super::sink::Sink, super::tls::TestCa) {
        let ca = super::tls::TestCa::new();
        ca.issue(&["mx.example.com"]).write(tmp, "edge");
        std::fs::write(tmp.join("ca.pem"), &ca.cert_pem).unwrap();
        let text =
            std::fs::read_to_string(root().join("tests/fixtures/relay").join(self.name)).unwrap();
        let rules = tmp.join(self.name);
        std::fs::write(&rules, edit(text)).unwrap();
        let sink = super::sink::Sink::start(sink).await;
        let mut args = vec![
            s("--ca-file"),
            tmp.join("ca.pem").display().to_string(),
            s("--retry-min"),
            s("1s"),
            s("--queue-interval"),
            s("1s"),
        ];
        for c in self.listen {
            args.extend([s("--listen"), format!("{c}=127.0.0.1:0")]);
        }
        for c in self.send {
            args.extend([s("--smart-host"), format!("{c}={}", sink.addr)]);
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        let relay = Relay::start_logged(&rules, &tmp.join("spool"), &args, log);
        (relay, sink, ca)
    }
}

/// The hostile-client tests' rule set (`edge.mailflow`): the public MX of example.com.
pub const EDGE: Fixture<'static> = Fixture {
    name: "edge.mailflow",
    listen: &["Internet", "Slow", "Tenant"],
    send: &["Out"],
};

/// A field of /proc/PID/status in KiB (`VmRSS:`, `VmHWM:`, the peak resident set); 0 when
/// the process or the field is gone.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
