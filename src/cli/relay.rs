//! `mailflow relay`, `mailflow reload` and `mailflow track`.

use super::Exit;
use mailflow::ast::Text;
use mailflow::diagnostic::{Diagnostic, render};
use mailflow::queue::RetryPolicy;
use mailflow::relay::Relay;
use mailflow::relay::config::{Overrides, RelayOptions, split_override};
use mailflow::relay::privileges::RunAs;
use mailflow::relay::track::{self, EventId, Query};
use mailflow::relay::verify::{MAX_TIMEOUT as MAX_VERIFY_TIMEOUT, VerifyOptions};
use mailflow::resolve;
use mailflow::source::{SourceMap, Span};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `30s`, `5m`, `4h`, `5d`, or plain seconds.
pub(super) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().map_err(|_| format!("`{s}`: not a duration"))?;
    let mult = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{s}`: use s, m, h or d")),
    };
    Ok(Duration::from_secs(n.saturating_mul(mult)))
}

/// `256MB`, `1GB`, `512KB` or plain octets (binary units, as the rule language's sizes).
pub(super) fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "KB" | "K" => 1024,
        "MB" | "M" => 1024 * 1024,
        "GB" | "G" => 1024 * 1024 * 1024,
        _ => return Err(format!("`{s}`: use B, KB, MB or GB")),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("`{s}`: not a size"))
}

/// The bounds of recipient verification (`verify-recipients` in the rules).
#[derive(Debug, clap::Args)]
pub(super) struct VerifyArgs {
    /// Recipient verification: answers remembered at most (the oldest goes first).
    #[arg(long, default_value_t = 50_000)]
    verify_cache_size: usize,
    /// Recipient verification: how long a recipient the next hop accepted is remembered.
    #[arg(long, default_value = "1d", value_parser = parse_duration)]
    verify_positive_ttl: Duration,
    /// Recipient verification: how long a recipient the next hop refused is remembered.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    verify_negative_ttl: Duration,
    /// Recipient verification: probes started per second at most; past it `450 4.1.1`.
    #[arg(long, default_value_t = 20)]
    verify_rate: u32,
    /// Recipient verification: probes in progress at once at most; past it `450 4.1.1`.
    #[arg(long, default_value_t = 8)]
    verify_concurrency: u32,
    /// Recipient verification: the longest a probe may take (at most 60s, well under the
    /// 5 minutes a client waits for a RCPT reply); past it `450 4.1.1`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    verify_timeout: Duration,
}

impl VerifyArgs {
    fn options(&self) -> Result<VerifyOptions, String> {
        if self.verify_timeout.is_zero() || self.verify_timeout > MAX_VERIFY_TIMEOUT {
            return Err(format!(
                "--verify-timeout must be more than 0 and at most {}s",
                MAX_VERIFY_TIMEOUT.as_secs()
            ));
        }
        if self.verify_rate == 0 || self.verify_concurrency == 0 {
            return Err("--verify-rate and --verify-concurrency must be at least 1".into());
        }
        Ok(VerifyOptions {
            cache_size: self.verify_cache_size,
            positive_ttl: self.verify_positive_ttl,
            negative_ttl: self.verify_negative_ttl,
            rate: self.verify_rate,
            concurrency: self.verify_concurrency,
            timeout: self.verify_timeout,
        })
    }
}

/// Everything the relay subcommand takes.
pub(super) struct RelayArgs {
    pub rules: PathBuf,
    pub allow_path: Vec<PathBuf>,
    pub spool: PathBuf,
    pub hostname: Option<String>,
    pub listen: Vec<String>,
    pub remote: Vec<String>,
    pub smart_host: Vec<String>,
    pub dns: Option<SocketAddr>,
    pub mx_port: u16,
    pub ca_file: Option<PathBuf>,
    pub admin: Option<SocketAddr>,
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub lifetime: Duration,
    pub queue_interval: Duration,
    pub max_queue: usize,
    pub delivery_concurrency: usize,
    pub destination_concurrency: usize,
    pub delay_warning: Duration,
    pub smtp_timeout: Duration,
    pub connection_reuse_limit: u32,
    pub connection_idle_timeout: Duration,
    pub max_connections: u32,
    pub max_message_memory: u64,
    pub tracking: track::TrackLimits,
    pub capture: Option<track::TrackLimits>,
    pub shadow: Option<PathBuf>,
    pub verify: VerifyArgs,
    pub log: String,
    pub service: super::service::ServiceArgs,
}

/// Checks one value of `--listen`, `--remote` or `--smart-host` with the rule file's own
/// check, and renders a refusal as `check` renders it, the argument standing in for the file.
fn checked<T>(
    flag: &str,
    connector: &str,
    value: &str,
    check: fn(&Text) -> Result<T, Diagnostic>,
) -> Result<T, String> {
    let mut sources = SourceMap::new();
    let file = sources.add(format!("{flag} {connector}"), value.to_string());
    let text = Text {
        value: value.to_string(),
        span: Span::new(file, 0, value.len()),
        quoted: false,
    };
    check(&text).map_err(|d| {
        format!(
            "{flag} `{connector}`: `{value}` is refused\n{}",
            render::human(&[d], &sources, false).trim_end()
        )
    })
}

fn overrides(a: &RelayArgs) -> Result<Overrides, String> {
    let mut o = Overrides {
        allow_paths: a.allow_path.clone(),
        ..Overrides::default()
    };
    for s in &a.listen {
        let (name, vals) = split_override(s)?;
        let addrs = vals
            .iter()
            .map(|v| checked("--listen", &name, v, resolve::socket_addr))
            .collect::<Result<_, _>>()?;
        o.listen.push((name, addrs));
    }
    for s in &a.remote {
        let (name, vals) = split_override(s)?;
        let ranges = vals
            .iter()
            .map(|v| checked("--remote", &name, v, resolve::ip_range))
            .collect::<Result<_, _>>()?;
        o.remote.push((name, ranges));
    }
    for s in &a.smart_host {
        let (name, vals) = split_override(s)?;
        let hosts = vals
            .iter()
            .map(|v| checked("--smart-host", &name, v, resolve::smart_host))
            .collect::<Result<_, _>>()?;
        o.smart_host.push((name, hosts));
    }
    Ok(o)
}

pub(super) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

pub(super) fn run(a: RelayArgs) -> Exit {
    a.service.init_log(&a.log);
    let run_as = match a.service.run_as() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Error;
        }
    };
    if let Err(e) = a.tracking.check() {
        eprintln!("error: {e}");
        return Exit::Error;
    }
    let overrides = match overrides(&a) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Error;
        }
    };
    let verify = match a.verify.options() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Error;
        }
    };
    let options = RelayOptions {
        rules: a.rules.clone(),
        overrides,
        spool: a.spool.clone(),
        hostname: a.hostname.clone().unwrap_or_else(hostname),
        dns: a.dns,
        mx_port: a.mx_port,
        ca_file: a.ca_file.clone(),
        admin: a.admin,
        retry: RetryPolicy {
            min_backoff: a.retry_min,
            max_backoff: a.retry_max,
            lifetime: a.lifetime,
        },
        queue_interval: a.queue_interval,
        max_queue: a.max_queue,
        delivery_concurrency: a.delivery_concurrency,
        destination_concurrency: a.destination_concurrency,
        delay_warning: a.delay_warning,
        smtp_timeout: a.smtp_timeout,
        connection_reuse_limit: a.connection_reuse_limit,
        connection_idle_timeout: a.connection_idle_timeout,
        drain_timeout: Duration::from_secs(30),
        max_connections: a.max_connections,
        max_message_memory: a.max_message_memory,
        tracking: a.tracking,
        capture: a.capture,
        shadow: a.shadow.clone(),
        verify,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Error;
        }
    };
    runtime.block_on(serve(options, run_as))
}

async fn serve(options: RelayOptions, run_as: Option<RunAs>) -> Exit {
    use tokio::signal::unix::{SignalKind, signal};
    // Handlers go in before the pid file and the ready line announce us: a SIGHUP or
    // SIGTERM sent the moment we are announced must reload or drain, not kill.
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("error: cannot install signal handlers");
        return Exit::Error;
    };
    let pid_file = options.spool.join("mailflow.pid");
    let relay = match Relay::start_as(options, run_as.as_ref()).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Error;
        }
    };
    let _ = {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mailflow::queue::PRIVATE)
            .open(&pid_file)
            .and_then(|mut f| writeln!(f, "{}", std::process::id()))
    };
    // One JSON line on stdout says where everything listens: tests and scripts read it.
    let ready = serde_json::json!({
        "ready": true,
        "pid": std::process::id(),
        "listeners": relay.listeners,
        "admin": relay.admin,
        "rules_digest": relay.rules_digest(),
    });
    println!("{ready}");
    super::service::notify(&format!("READY=1\nMAINPID={}", std::process::id()));
    for l in &relay.listeners {
        tracing::info!("listening on {} for {}", l.address, l.connectors.join(", "));
    }
    loop {
        tokio::select! {
            _ = hup.recv() => { let _ = relay.reload().await; }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("stopping: draining sessions");
    super::service::notify("STOPPING=1");
    relay.shutdown().await;
    let _ = std::fs::remove_file(&pid_file);
    Exit::Clean
}

/// `mailflow reload`: through the admin port when given (the answer carries the
/// diagnostics), else SIGHUP to the pid in the spool.
pub(super) fn reload(admin: Option<SocketAddr>, spool: &Path) -> Exit {
    if let Some(addr) = admin {
        use std::io::{Read, Write};
        let mut tcp = match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {addr}: {e}");
                return Exit::Error;
            }
        };
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(120)));
        let req = format!(
            "POST /reload HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let mut resp = String::new();
        if tcp.write_all(req.as_bytes()).is_err() || tcp.read_to_string(&mut resp).is_err() {
            eprintln!("error: no answer from {addr}");
            return Exit::Error;
        }
        let ok = resp.starts_with("HTTP/1.1 200");
        let body = resp.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        print!("{body}");
        return if ok { Exit::Clean } else { Exit::Findings };
    }
    let pid_file = spool.join("mailflow.pid");
    let pid = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .and_then(rustix::process::Pid::from_raw);
    let Some(pid) = pid else {
        eprintln!("error: {}: no running relay", pid_file.display());
        return Exit::Error;
    };
    match rustix::process::kill_process(pid, rustix::process::Signal::HUP) {
        Ok(()) => {
            println!(
                "sent SIGHUP to {}; the relay logs the outcome",
                pid.as_raw_nonzero()
            );
            Exit::Clean
        }
        Err(e) => {
            eprintln!("error: signalling {}: {e}", pid.as_raw_nonzero());
            Exit::Error
        }
    }
}

/// The tracking log of the relay on `spool`: its folder, or the one file an earlier version
/// wrote when the folder is not there (the relay moves that file into the folder at start).
pub(super) fn default_log(spool: &Path) -> PathBuf {
    let dir = spool.join("tracking");
    let old = spool.join(track::LIVE);
    if !dir.exists() && old.exists() {
        old
    } else {
        dir
    }
}

/// What `mailflow track` searches for.
pub(super) struct TrackArgs {
    pub log: PathBuf,
    pub message_id: Option<String>,
    pub sender: Option<String>,
    pub recipient: Option<String>,
    pub event: Option<String>,
    pub json: bool,
}

pub(super) fn track(a: TrackArgs) -> Exit {
    let event_id = match a.event.as_deref() {
        None => None,
        Some(e) => match serde_json::from_value::<EventId>(serde_json::Value::String(
            e.to_ascii_uppercase(),
        )) {
            Ok(id) => Some(id),
            Err(_) => {
                eprintln!(
                    "error: `{e}` is not an event id (RECEIVE, RESOLVE, EXPAND, REDIRECT, AGENTINFO, DROP, SEND, DEFER, FAIL, DSN, ADMIN)"
                );
                return Exit::Error;
            }
        },
    };
    let q = Query {
        message_id: a.message_id,
        sender: a.sender,
        recipient: a.recipient,
        event_id,
    };
    let found = match track::search(&a.log, &q) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {}: {e}", a.log.display());
            return Exit::Error;
        }
    };
    for e in &found {
        if a.json {
            if let Ok(line) = serde_json::to_string(e) {
                println!("{line}");
            }
        } else {
            let id = e
                .event_id
                .and_then(|i| serde_json::to_value(i).ok())
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            // An aggregated refusal names its first recipients and counts them all.
            let more = match e.recipient_count {
                Some(n) if n > e.recipient_address.len() => format!(" ... ({n} in all)"),
                _ => String::new(),
            };
            println!(
                "{}  {:<9} {:<8} {}  from {}  to {}{more}{}",
                e.date_time,
                id,
                e.source,
                e.internal_message_id.as_deref().unwrap_or("-"),
                e.sender_address.as_deref().unwrap_or("<>"),
                e.recipient_address.join(", "),
                match (&e.recipient_status.first(), &e.source_context) {
                    (Some(s), _) => format!("  [{s}]"),
                    (None, Some(c)) => format!("  [{c}]"),
                    _ => String::new(),
                }
            );
        }
    }
    if found.is_empty() {
        eprintln!("no matching events");
        Exit::Findings
    } else {
        Exit::Clean
    }
}
