//! Command-line definitions and dispatch; one file per subcommand.

mod check;
mod compile;
mod diff;
mod dkim;
mod dry_run;
mod explain;
mod fmt;
mod generate;
mod graph;
mod import;
mod lsp;
mod queue;
mod relay;
mod service;
mod test;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// How the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Nothing to report.
    Clean,
    /// Findings (errors, or warnings under --deny-warnings).
    Findings,
    /// Bad usage or unreadable input.
    Error,
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(match e {
            Exit::Clean => 0,
            Exit::Findings => 1,
            Exit::Error => 2,
        })
    }
}

/// mailflow: check, test and run mail-flow rules.
#[derive(Debug, Parser)]
#[command(name = "mailflow", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Parse and validate rule files, reporting every problem found.
    Check(CheckArgs),
    /// Explain a diagnostic code (`mailflow explain E012`), or list them all.
    Explain(ExplainArgs),
    /// Rewrite rule files in the canonical layout (comments kept), or `--check` that they are.
    Fmt(FmtArgs),
    /// Run the `test` blocks of rule sets, ending with `N passed, N failed`.
    Test(TestArgs),
    /// Send one message through a rule set and explain every decision.
    DryRun(DryRunArgs),
    /// Check a rule set and write it as a compiled table the relay can start from.
    Compile(CompileArgs),
    /// Run the SMTP relay: receive, evaluate, queue durably and deliver.
    // Boxed: its many options would make every other variant as large.
    Relay(Box<RelayArgs>),
    /// Make a running relay recompile its rules (the old rules stay on any error).
    Reload(ReloadArgs),
    /// Search the message tracking log.
    Track(TrackArgs),
    /// Which messages a rule change treats differently: two rule sets (or one and a git
    /// revision of it) on the same test blocks and messages.
    Diff(diff::DiffArgs),
    /// See and steer a relay's queue: list, show, retry, hold, release, delete, bounce.
    #[command(subcommand)]
    Queue(queue::QueueCommand),
    /// DKIM signing keys.
    #[command(subcommand)]
    Dkim(DkimCommand),
    /// Draw a rule set's mail flow (Mermaid or Graphviz DOT).
    Graph(GraphArgs),
    /// Translate Exchange configuration (PowerShell commands, rewrite CSV) into a rule set.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Print a shell completion script (`source <(mailflow completions bash)`).
    Completions(CompletionsArgs),
    /// Print the man page, or write one per subcommand into a folder.
    Man(ManArgs),
    /// Run the language server on stdin and stdout (for editors: diagnostics while typing,
    /// hover, go to definition).
    Lsp,
}

#[derive(Debug, clap::Args)]
struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(Debug, clap::Args)]
struct ManArgs {
    /// Write mailflow.1 and mailflow-SUBCOMMAND.1 into this folder instead.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum DkimCommand {
    /// Make a signing key for DOMAIN and print the TXT record to publish at
    /// SELECTOR._domainkey.DOMAIN.
    Keygen(DkimKeygenArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DkimAlgorithm {
    /// RSA (rsa-sha256): what every receiver verifies.
    Rsa,
    /// Ed25519 (ed25519-sha256, RFC 8463): small, but not yet verified everywhere; sign
    /// with an RSA key as well.
    Ed25519,
}

#[derive(Debug, clap::Args)]
struct DkimKeygenArgs {
    /// The signing domain (the d= of signatures; the From domain it signs for).
    domain: String,
    /// The selector (the s= of signatures), e.g. `mailflow2026`.
    selector: String,
    #[arg(long, value_enum, default_value = "rsa")]
    algorithm: DkimAlgorithm,
    /// RSA key size in bits (at least 2048, what the signer takes; 2048 is what every
    /// receiver verifies).
    #[arg(long, default_value_t = 2048)]
    bits: usize,
    /// Where to write the private key (PEM, mode 0600). Default: SELECTOR.DOMAIN.pem.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Overwrite the file if it exists.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Subcommand)]
enum ImportCommand {
    /// Exchange PowerShell command lines (New-ReceiveConnector, New-TransportRule, ...).
    Exchange(ImportExchangeArgs),
    /// An address rewrite CSV (Name,InternalAddress,ExternalAddress,ExceptionList,OutboundOnly).
    Csv(ImportCsvArgs),
}

#[derive(Debug, clap::Args)]
struct ImportCommon {
    /// Write the rule set here instead of standard output (relative paths in it, such as
    /// certificates, are relative to this file's folder).
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Format of the findings, written to standard error.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
    /// Color human output.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,
}

#[derive(Debug, clap::Args)]
struct ImportExchangeArgs {
    /// A file of PowerShell command lines (prompts such as `[PS] C:\>` may stay).
    #[arg(value_name = "FILE.ps1")]
    file: PathBuf,
    /// PEM certificate for connectors that use TLS (Exchange keeps it in the machine store).
    #[arg(long, value_name = "PEM")]
    certificate: Option<String>,
    /// The certificate's PEM private key.
    #[arg(long, value_name = "KEY")]
    key: Option<String>,
    #[command(flatten)]
    common: ImportCommon,
}

#[derive(Debug, clap::Args)]
struct ImportCsvArgs {
    /// The CSV file (as `Get-AddressRewriteEntry | Export-Csv` writes it).
    #[arg(value_name = "FILE.csv")]
    file: PathBuf,
    #[command(flatten)]
    common: ImportCommon,
}

#[derive(Debug, clap::Args)]
struct GraphArgs {
    /// The rule set's root file.
    #[arg(value_name = "RULES")]
    rules: PathBuf,
    /// Output language: `mermaid` (GitHub renders it in Markdown) or `dot` (Graphviz).
    #[arg(long, value_enum, default_value_t = GraphFormat::Mermaid)]
    format: GraphFormat,
    /// Let includes and imports read files in this folder too (they may read only inside
    /// the rule set's folder otherwise); repeat for more.
    #[arg(long = "allow-path", value_name = "DIR")]
    allow_path: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum GraphFormat {
    Mermaid,
    Dot,
}

#[derive(Debug, clap::Args)]
struct RelayArgs {
    /// The rule set's root file, or a table written by `mailflow compile`.
    #[arg(value_name = "RULES")]
    rules: PathBuf,
    /// The spool folder: the queue, the tracking log and the pid file.
    #[arg(long, default_value = "spool")]
    spool: PathBuf,
    /// The relay's own name (Received headers, DSNs); default: the machine's host name.
    #[arg(long)]
    hostname: Option<String>,
    /// Listen addresses for a receive connector instead of its `listen`: CONNECTOR=ADDR:PORT[,...].
    #[arg(long, value_name = "CONNECTOR=ADDR")]
    listen: Vec<String>,
    /// Remote ranges for a receive connector instead of its `remote`: CONNECTOR=RANGE[,...].
    #[arg(long, value_name = "CONNECTOR=RANGE")]
    remote: Vec<String>,
    /// Smart hosts for a send connector instead of its `smart-host`: CONNECTOR=HOST[:PORT][,...].
    #[arg(long, value_name = "CONNECTOR=HOST")]
    smart_host: Vec<String>,
    /// DNS server for MX lookups and for verifying Internet mail (default: /etc/resolv.conf).
    #[arg(long, value_name = "ADDR:PORT")]
    dns: Option<std::net::SocketAddr>,
    /// The port MX hosts are contacted on (Postfix's smtp_tcp_port).
    #[arg(long, default_value_t = 25)]
    mx_port: u16,
    /// Trust anchors (PEM) for next hops and client certificates (default: Mozilla's roots).
    #[arg(long, value_name = "PEM")]
    ca_file: Option<PathBuf>,
    /// Admin port serving /metrics and /reload.
    #[arg(long, value_name = "ADDR:PORT")]
    admin: Option<std::net::SocketAddr>,
    /// First retry delay (doubles up to --retry-max).
    #[arg(long, default_value = "300s", value_parser = relay::parse_duration)]
    retry_min: std::time::Duration,
    /// Longest retry delay.
    #[arg(long, default_value = "4000s", value_parser = relay::parse_duration)]
    retry_max: std::time::Duration,
    /// How long a message may stay queued before it is bounced.
    #[arg(long, default_value = "5d", value_parser = relay::parse_duration)]
    lifetime: std::time::Duration,
    /// The longest the delivery scheduler sleeps; it wakes at each message's due time, on
    /// arrival and when an attempt ends anyway, and never scans the whole queue.
    #[arg(long, default_value = "30s", value_parser = relay::parse_duration)]
    queue_interval: std::time::Duration,
    /// Messages the queue may hold (about 2 KB of memory each, for the envelope and the
    /// delivery plan); past it a new MAIL gets `452 4.3.1` and the client tries again later.
    #[arg(long, default_value_t = 500_000)]
    max_queue: usize,
    /// Delivery attempts in flight at once, across all destinations.
    #[arg(long, default_value_t = 64)]
    delivery_concurrency: usize,
    /// Delivery attempts in flight to one destination (a send connector and recipient
    /// domain); a destination none of whose next hops answers gets one probe at a time.
    #[arg(long, default_value_t = 20)]
    destination_concurrency: usize,
    /// After how long a message still queued gets a delay notice (RFC 3464
    /// `action=delayed`), once; 0s: never.
    #[arg(long, default_value = "4h", value_parser = relay::parse_duration)]
    delay_warning: std::time::Duration,
    /// How long a next hop may take to answer a command (RFC 5321's 5 minutes; the final
    /// dot gets twice as long) before the attempt is given up and retried.
    #[arg(long, default_value = "300s", value_parser = relay::parse_duration)]
    smtp_timeout: std::time::Duration,
    /// Transactions one connection to a next hop carries before it is closed (Postfix's
    /// `smtp_connection_reuse_count_limit`); 0 or 1: a new connection for every message.
    #[arg(long, default_value_t = 100)]
    connection_reuse_limit: u32,
    /// How long a connection to a next hop stays open idle, waiting for the next message to
    /// it (Postfix's `smtp_connection_cache_time_limit`); 0s: no reuse.
    #[arg(long, default_value = "2s", value_parser = relay::parse_duration)]
    connection_idle_timeout: std::time::Duration,
    /// Connections open at once across all receive connectors; each connector's own
    /// `max-connections` (Exchange's MaxInboundConnection) applies within it. Over it: 421 4.3.2.
    #[arg(long, default_value_t = mailflow::relay::limits::DEFAULT_MAX_CONNECTIONS)]
    max_connections: u32,
    /// Message data all sessions together may hold in memory (B, KB, MB, GB): a quarter
    /// for data arriving, the rest for evaluating what has arrived. A message that finds it
    /// spent gets `452 4.3.1` and the client tries again later.
    #[arg(long, default_value = "256MB", value_parser = relay::parse_size)]
    max_message_memory: u64,
    /// The tracking log (SPOOL/tracking/) starts a new file before one would pass this size
    /// (Exchange's MessageTrackingLogMaxFileSize).
    #[arg(long, default_value = "10MB", value_parser = relay::parse_size)]
    tracking_log_max_file_size: u64,
    /// ... and once its file is this old (Exchange starts a new file each day).
    #[arg(long, default_value = "1d", value_parser = relay::parse_duration)]
    tracking_log_max_file_age: std::time::Duration,
    /// The tracking log's files together stay under this: the oldest are deleted
    /// (Exchange's MessageTrackingLogMaxDirectorySize).
    #[arg(long, default_value = "1000MB", value_parser = relay::parse_size)]
    tracking_log_max_directory_size: u64,
    /// Tracking-log files older than this are deleted (Exchange's MessageTrackingLogMaxAge).
    #[arg(long, default_value = "30d", value_parser = relay::parse_duration)]
    tracking_log_max_age: std::time::Duration,
    /// The tracking log stops writing (and counts what it drops) when less than this is free
    /// above what the spool needs to take a largest message (2.5x the largest
    /// max-message-size); default: the largest max-message-size.
    #[arg(long, value_parser = relay::parse_size)]
    tracking_log_reserve: Option<u64>,
    /// Record what the evaluator sees of each message (envelope, connector, client, TLS
    /// peer, authentication results, size and the header fields rules read; never bodies) in
    /// SPOOL/capture/, for `mailflow diff` to replay. Off by default: see docs/change-review.md
    /// on privacy.
    #[arg(long)]
    capture: bool,
    /// Evaluate this candidate rule set beside the live one on every message, changing
    /// nothing: each message it would treat differently is logged and counted in /metrics
    /// (mailflow_shadow_*). Reloaded with the live rules.
    #[arg(long, value_name = "NEW_RULES")]
    shadow: Option<PathBuf>,
    /// Captured traffic kept at most (bytes, across its files).
    #[arg(long, default_value = "1000MB", value_parser = relay::parse_size)]
    capture_max_directory_size: u64,
    /// Captured-traffic files older than this are deleted.
    #[arg(long, default_value = "7d", value_parser = relay::parse_duration)]
    capture_max_age: std::time::Duration,
    #[command(flatten)]
    verify: relay::VerifyArgs,
    /// Log filter (RUST_LOG syntax), when RUST_LOG is unset.
    #[arg(long, default_value = "info")]
    log: String,
    #[command(flatten)]
    service: service::ServiceArgs,
    /// Let includes and imports read files in this folder too (they may read only inside
    /// the rule set's folder otherwise); repeat for more.
    #[arg(long = "allow-path", value_name = "DIR")]
    allow_path: Vec<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct ReloadArgs {
    /// The relay's admin port (reports the outcome).
    #[arg(long, value_name = "ADDR:PORT")]
    admin: Option<std::net::SocketAddr>,
    /// The relay's spool folder (SIGHUP to the pid there).
    #[arg(long, default_value = "spool")]
    spool: PathBuf,
}

#[derive(Debug, clap::Args)]
struct TrackArgs {
    /// The tracking log's folder (all its files, oldest first) or one file of it
    /// (default: SPOOL/tracking).
    #[arg(long, value_name = "DIR|FILE")]
    log: Option<PathBuf>,
    /// The relay's spool folder.
    #[arg(long, default_value = "spool")]
    spool: PathBuf,
    /// Events of the message with this Message-ID.
    #[arg(long)]
    message_id: Option<String>,
    /// Events with this envelope sender.
    #[arg(long)]
    sender: Option<String>,
    /// Events about this recipient.
    #[arg(long)]
    recipient: Option<String>,
    /// Only this event (RECEIVE, SEND, DEFER, FAIL, DSN, ...).
    #[arg(long)]
    event: Option<String>,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct CompileArgs {
    /// The rule set's root file.
    #[arg(value_name = "RULES")]
    rules: PathBuf,
    /// Where to write the table.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// Let includes and imports read files in this folder too (they may read only inside
    /// the rule set's folder otherwise); repeat for more.
    #[arg(long = "allow-path", value_name = "DIR")]
    allow_path: Vec<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct DryRunArgs {
    /// The rule set's root file, or a table written by `mailflow compile`.
    #[arg(value_name = "RULES")]
    rules: PathBuf,
    /// Envelope sender (`<>` for the null sender).
    #[arg(long)]
    from: String,
    /// Envelope recipient; repeat for more.
    #[arg(long, required = true)]
    to: Vec<String>,
    /// The receive connector the message arrives on.
    #[arg(long, conflicts_with = "client_ip")]
    connector: Option<String>,
    /// The client's address (the connector is chosen by its remote ranges).
    #[arg(long)]
    client_ip: Option<std::net::IpAddr>,
    /// The name in the client's TLS certificate.
    #[arg(long)]
    tls_peer: Option<String>,
    /// The XOORG parameter sent with MAIL FROM.
    #[arg(long)]
    oorg: Option<String>,
    /// What verification found, as a test block's `auth` writes it
    /// (`spf=pass, dkim=pass:partner.example, dmarc=fail`); not given: not verified.
    #[arg(long, value_name = "RESULTS")]
    auth: Option<String>,
    /// Verify SPF, DKIM, DMARC and ARC of --message over DNS as the relay would, for mail
    /// from --client-ip (the results go to the rules, and the Authentication-Results field
    /// and ARC seal the relay would add are shown).
    #[arg(long, conflicts_with = "auth", requires_all = ["client_ip", "message"])]
    verify: bool,
    /// The EHLO name the client gave (SPF checks it for the null sender).
    #[arg(long, default_value = "unknown", requires = "verify")]
    helo: String,
    /// The DNS server --verify asks (IP:PORT); the system's resolver when not given.
    #[arg(long, value_name = "IP:PORT", requires = "verify")]
    dns: Option<std::net::SocketAddr>,
    /// A message file (RFC 5322) to evaluate with its headers.
    #[arg(long)]
    message: Option<PathBuf>,
    /// Output format (human or json).
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
    /// Let includes and imports read files in this folder too (they may read only inside
    /// the rule set's folder otherwise); repeat for more.
    #[arg(long = "allow-path", value_name = "DIR")]
    allow_path: Vec<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct TestArgs {
    /// Rule files or folders, as for `check`.
    #[arg(required = true, value_name = "FILE|DIR")]
    paths: Vec<PathBuf>,
    /// Print the trace of passing tests too.
    #[arg(long, short)]
    verbose: bool,
    /// Let includes and imports read files in this folder too (they may read only inside
    /// the rule set's folder otherwise); repeat for more.
    #[arg(long = "allow-path", value_name = "DIR")]
    allow_path: Vec<PathBuf>,
}

/// Output formats for findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Annotated source, for people.
    Human,
    /// One JSON document.
    Json,
    /// GitHub Actions annotations.
    Github,
    /// SARIF 2.1.0.
    Sarif,
}

/// When to color human output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// When writing to a terminal and NO_COLOR is unset.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// Rule files, or folders searched for `.mailflow` files; each file no other file
    /// includes is checked as its own rule set.
    #[arg(required = true, value_name = "FILE|DIR")]
    paths: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
    /// Exit with 1 on warnings too.
    #[arg(long)]
    deny_warnings: bool,
    /// Color human output.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,
    /// Let includes and imports read files in this folder too (they may read only inside
    /// the rule set's folder otherwise); repeat for more.
    #[arg(long = "allow-path", value_name = "DIR")]
    allow_path: Vec<PathBuf>,
    /// Warn about certificates (connectors' server and client certificates) that expire
    /// within this many days, have expired or are not valid yet; 0 turns these warnings off.
    #[arg(long, value_name = "DAYS", default_value_t = mailflow::lint::LintOptions::DEFAULT_CERT_EXPIRY_DAYS)]
    cert_expiry_days: u32,
}

#[derive(Debug, clap::Args)]
struct FmtArgs {
    /// Rule files, or folders searched for `.mailflow` files; `-` formats standard input to
    /// standard output.
    #[arg(required_unless_present = "stdin", value_name = "FILE|DIR")]
    paths: Vec<PathBuf>,
    /// Write nothing: list the files that would change, with a diff, and exit 1 if any would.
    #[arg(long)]
    check: bool,
    /// Format standard input to standard output (as `-`).
    #[arg(long, conflicts_with = "paths")]
    stdin: bool,
    /// Color the syntax errors of files that do not parse.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,
}

#[derive(Debug, clap::Args)]
struct ExplainArgs {
    /// A code such as `E012` or a name such as `invalid-address`.
    #[arg(required_unless_present_any = ["list", "markdown"])]
    code: Option<String>,
    /// List every code with its summary.
    #[arg(long, conflicts_with = "markdown")]
    list: bool,
    /// Print every code's explanation as Markdown (the text of docs/diagnostics.md).
    #[arg(long)]
    markdown: bool,
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Exit {
    match cli.command {
        Command::Check(a) => {
            let lint = mailflow::lint::LintOptions {
                cert_expiry_days: a.cert_expiry_days,
                ..mailflow::lint::LintOptions::now()
            };
            check::run(
                &a.paths,
                &a.allow_path,
                &lint,
                a.format,
                a.deny_warnings,
                a.color,
            )
        }
        Command::Fmt(a) => fmt::run(&a.paths, a.check, a.stdin, a.color),
        Command::Explain(a) => explain::run(a.code.as_deref(), a.list, a.markdown),
        Command::Completions(a) => generate::completions(a.shell),
        Command::Man(a) => generate::man(a.dir.as_deref()),
        Command::Graph(a) => graph::run(
            &a.rules,
            &a.allow_path,
            match a.format {
                GraphFormat::Mermaid => mailflow::graph::Format::Mermaid,
                GraphFormat::Dot => mailflow::graph::Format::Dot,
            },
        ),
        Command::Lsp => lsp::run(),
        Command::Dkim(DkimCommand::Keygen(a)) => {
            let output = a
                .output
                .unwrap_or_else(|| PathBuf::from(format!("{}.{}.pem", a.selector, a.domain)));
            dkim::keygen(dkim::Keygen {
                domain: &a.domain,
                selector: &a.selector,
                algorithm: match a.algorithm {
                    DkimAlgorithm::Rsa => mailflow::auth::dkim::Algorithm::Rsa(a.bits),
                    DkimAlgorithm::Ed25519 => mailflow::auth::dkim::Algorithm::Ed25519,
                },
                output: &output,
                force: a.force,
            })
        }
        Command::Test(a) => test::run(&a.paths, &a.allow_path, a.verbose),
        Command::Import(ImportCommand::Exchange(a)) => import::run(import::Args {
            source: import::Source::Exchange,
            file: a.file,
            output: a.common.output,
            certificate: a.certificate,
            key: a.key,
            format: a.common.format,
            color: a.common.color,
        }),
        Command::Import(ImportCommand::Csv(a)) => import::run(import::Args {
            source: import::Source::Csv,
            file: a.file,
            output: a.common.output,
            certificate: None,
            key: None,
            format: a.common.format,
            color: a.common.color,
        }),
        Command::Compile(a) => compile::run(&a.rules, &a.allow_path, &a.output),
        Command::DryRun(a) => dry_run::run(dry_run::DryRun {
            rules: a.rules,
            from: a.from,
            to: a.to,
            connector: a.connector,
            client_ip: a.client_ip,
            tls_peer: a.tls_peer,
            oorg: a.oorg,
            auth: a.auth,
            verify: a.verify.then_some(dry_run::Verify {
                helo: a.helo,
                dns: a.dns,
            }),
            message: a.message,
            format: a.format,
            allow_path: a.allow_path,
        }),
        Command::Relay(a) => relay::run(relay::RelayArgs {
            rules: a.rules,
            spool: a.spool,
            hostname: a.hostname,
            listen: a.listen,
            remote: a.remote,
            smart_host: a.smart_host,
            dns: a.dns,
            mx_port: a.mx_port,
            ca_file: a.ca_file,
            admin: a.admin,
            retry_min: a.retry_min,
            retry_max: a.retry_max,
            lifetime: a.lifetime,
            queue_interval: a.queue_interval,
            max_queue: a.max_queue,
            delivery_concurrency: a.delivery_concurrency,
            destination_concurrency: a.destination_concurrency,
            delay_warning: a.delay_warning,
            smtp_timeout: a.smtp_timeout,
            connection_reuse_limit: a.connection_reuse_limit,
            connection_idle_timeout: a.connection_idle_timeout,
            max_connections: a.max_connections,
            max_message_memory: a.max_message_memory,
            tracking: mailflow::relay::track::TrackLimits {
                max_file_size: a.tracking_log_max_file_size,
                max_file_age: a.tracking_log_max_file_age,
                max_directory_size: a.tracking_log_max_directory_size,
                max_age: a.tracking_log_max_age,
                reserve: a.tracking_log_reserve,
            },
            shadow: a.shadow,
            capture: a.capture.then_some(mailflow::relay::track::TrackLimits {
                max_directory_size: a.capture_max_directory_size,
                max_age: a.capture_max_age,
                max_file_size: a.capture_max_directory_size.min(10 << 20),
                ..mailflow::relay::track::TrackLimits::default()
            }),
            verify: a.verify,
            log: a.log,
            allow_path: a.allow_path,
            service: a.service,
        }),
        Command::Reload(a) => relay::reload(a.admin, &a.spool),
        Command::Queue(c) => queue::run(c),
        Command::Diff(a) => diff::run(&a),
        Command::Track(a) => relay::track(relay::TrackArgs {
            log: a.log.unwrap_or_else(|| relay::default_log(&a.spool)),
            message_id: a.message_id,
            sender: a.sender,
            recipient: a.recipient,
            event: a.event,
            json: a.json,
        }),
    }
}
