//! What the relay runs with: a rule set (checked and compiled, or a table from `mailflow
//! compile`), the site overrides that adapt a rule set to one machine (listen addresses,
//! remote ranges, smart hosts), and the relay's own options (spool, resolver, ports).

use crate::check::check_file_allowing;
use crate::compile::{Table, artifact, compile};
use crate::diagnostic::{Severity, render};
use crate::model::{IpRange, RuleSet, SmartHost};
use crate::queue::RetryPolicy;
use crate::source::Span;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Replacements for settings of named connectors, so a rule set written for production
/// (`listen 0.0.0.0:25`, EOP's ranges, Microsoft's smart hosts) runs unchanged on a test
/// machine or in staging.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Receive connector name → listen addresses.
    pub listen: Vec<(String, Vec<SocketAddr>)>,
    /// Receive connector name → remote ranges.
    pub remote: Vec<(String, Vec<IpRange>)>,
    /// Send connector name → smart hosts.
    pub smart_host: Vec<(String, Vec<SmartHost>)>,
    /// Folders outside the rule set's own that includes and imports may read
    /// (`--allow-path`).
    pub allow_paths: Vec<PathBuf>,
}

/// Why a rule set could not be loaded; `message` is ready to print or log.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct LoadFailure {
    /// The rendered diagnostics or the I/O error.
    pub message: String,
}

fn failure(message: impl Into<String>) -> LoadFailure {
    LoadFailure {
        message: message.into(),
    }
}

/// A loaded rule set: the compiled table and the warnings found on the way.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The table every session evaluates with.
    pub table: Arc<Table>,
    /// Warnings, rendered (empty when clean).
    pub warnings: String,
    /// The rule set's digest before site overrides ([`artifact::digest`]).
    pub digest: String,
}

/// Reads, checks, adapts and compiles a rule set. Any error leaves the caller's current table
/// in place: the relay never runs half a rule set.
pub fn load(path: &Path, overrides: &Overrides) -> Result<Loaded, LoadFailure> {
    let bytes = crate::load::read_limited(path).or_else(|e| {
        match std::fs::metadata(path).map(|m| m.is_dir()) {
            Ok(true) => Ok(Vec::new()),
            _ => Err(failure(format!("{}: {e}", path.display()))),
        }
    })?;
    let (mut set, warnings) = if artifact::is_artifact(&bytes) {
        let set = artifact::rule_set_from_bytes(&bytes)
            .map_err(|e| failure(format!("{}: {e}", path.display())))?;
        (set, String::new())
    } else {
        let mut report = check_file_allowing(path, &overrides.allow_paths)
            .map_err(|e| failure(e.to_string()))?;
        if report.has_errors() {
            return Err(failure(render::human(
                &report.diagnostics,
                &report.sources,
                false,
            )));
        }
        let warnings: Vec<_> = report
            .diagnostics
            .iter()
            .filter(|d| d.severity() == Severity::Warning)
            .cloned()
            .collect();
        let warnings = if warnings.is_empty() {
            String::new()
        } else {
            render::human(&warnings, &report.sources, false)
        };
        if report.rule_sets.len() != 1 {
            return Err(failure(format!(
                "{}: the relay runs one rule set, found {}: name its root file",
                path.display(),
                report.rule_sets.len()
            )));
        }
        (report.rule_sets.remove(0).rules, warnings)
    };
    // Before the overrides: nodes of one deployment differ in those, not in their rules.
    let digest = artifact::digest(&set).map_err(|e| failure(e.to_string()))?;
    apply(&mut set, overrides)?;
    let table = compile(&set).map_err(|e| failure(e.to_string()))?;
    Ok(Loaded {
        table: Arc::new(table),
        warnings,
        digest,
    })
}

/// Applies the overrides; an unknown connector name is an error, not a silent no-op.
pub fn apply(set: &mut RuleSet, o: &Overrides) -> Result<(), LoadFailure> {
    use crate::model::Spanned;
    let span = Span::new(crate::source::FileId(0), 0, 0);
    for (name, addrs) in &o.listen {
        let c = set
            .receive_connectors
            .iter_mut()
            .find(|c| &c.name.value == name)
            .ok_or_else(|| failure(format!("--listen: no receive connector named `{name}`")))?;
        c.listen = addrs.iter().map(|a| Spanned::new(*a, span)).collect();
    }
    for (name, ranges) in &o.remote {
        let c = set
            .receive_connectors
            .iter_mut()
            .find(|c| &c.name.value == name)
            .ok_or_else(|| failure(format!("--remote: no receive connector named `{name}`")))?;
        c.remote = ranges.iter().map(|r| Spanned::new(*r, span)).collect();
    }
    for (name, hosts) in &o.smart_host {
        let c = set
            .send_connectors
            .iter_mut()
            .find(|c| &c.name.value == name)
            .ok_or_else(|| failure(format!("--smart-host: no send connector named `{name}`")))?;
        c.smart_hosts = hosts
            .iter()
            .map(|h| Spanned::new(h.clone(), span))
            .collect();
    }
    Ok(())
}

/// Parses `NAME=VALUE[,VALUE...]` as given on the command line.
pub fn split_override(s: &str) -> Result<(String, Vec<String>), String> {
    let (name, values) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("`{s}`: expected CONNECTOR=VALUE[,VALUE...]"))?;
    let values: Vec<String> = values
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    if name.is_empty() || values.is_empty() {
        return Err(format!("`{s}`: expected CONNECTOR=VALUE[,VALUE...]"));
    }
    Ok((name.to_string(), values))
}

/// Everything `mailflow relay` is started with.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// The rule set's root file, or a compiled table.
    pub rules: PathBuf,
    /// Site overrides.
    pub overrides: Overrides,
    /// The spool folder (queue, tracking log, pid file).
    pub spool: PathBuf,
    /// The name this relay gives itself (Received headers, DSNs, default EHLO).
    pub hostname: String,
    /// DNS server for MX lookups (tests: a loopback server); `None`: /etc/resolv.conf.
    pub dns: Option<SocketAddr>,
    /// The port MX hosts are contacted on (25; Postfix's `smtp_tcp_port`).
    pub mx_port: u16,
    /// Extra trust anchors (PEM) for verifying next hops and client certificates; `None`:
    /// the Mozilla roots.
    pub ca_file: Option<PathBuf>,
    /// Admin port for `/metrics` and `/reload`.
    pub admin: Option<SocketAddr>,
    /// Retry schedule.
    pub retry: RetryPolicy,
    /// The longest the scheduler sleeps (it wakes at each due time, arrival and finished
    /// attempt anyway; this only bounds a clock jump's effect).
    pub queue_interval: Duration,
    /// Messages the queue may hold; past it MAIL gets `452 4.3.1` (DSNs are still queued).
    pub max_queue: usize,
    /// Delivery attempts in flight at once (Postfix's `default_process_limit`).
    pub delivery_concurrency: usize,
    /// Delivery attempts in flight to one destination, a send connector and recipient
    /// domain (Postfix's `default_destination_concurrency_limit`).
    pub destination_concurrency: usize,
    /// After how long a still-queued message gets a delay notice (RFC 3464
    /// `action=delayed`; Exchange's 4 hours); zero: never.
    pub delay_warning: Duration,
    /// How long a next hop may take to answer a command; the final dot gets twice this.
    pub smtp_timeout: Duration,
    /// Transactions one connection to a next hop carries at most (Postfix's
    /// `smtp_connection_reuse_count_limit`); 0 or 1: no reuse ([`crate::deliver::pool`]).
    pub connection_reuse_limit: u32,
    /// How long a connection to a next hop is kept idle for the next message (Postfix's
    /// `smtp_connection_cache_time_limit`); zero: no reuse.
    pub connection_idle_timeout: Duration,
    /// How long SIGTERM waits for sessions to finish.
    pub drain_timeout: Duration,
    /// Connections open at once across all receive connectors (each connector also has its
    /// own `max-connections`).
    pub max_connections: u32,
    /// Message data all sessions together may hold in memory; past it a message gets
    /// `452 4.3.1` ([`super::memory`]).
    pub max_message_memory: u64,
    /// How the tracking log is rotated, capped and kept from the spool's space.
    pub tracking: super::track::TrackLimits,
    /// Captured traffic ([`super::capture`]): off (`None`), or bounded like the tracking log.
    pub capture: Option<super::track::TrackLimits>,
    /// A candidate rule set evaluated beside the live one on every message, changing
    /// nothing ([`super::shadow`]).
    pub shadow: Option<PathBuf>,
    /// Bounds of recipient verification (`verify-recipients`, [`super::verify`]).
    pub verify: super::verify::VerifyOptions,
}
