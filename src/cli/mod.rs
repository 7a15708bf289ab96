//! Command-line definitions and dispatch; one file per subcommand.

mod check;
mod compile;
mod dry_run;
mod explain;
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
    /// Run the `test` blocks of rule sets, ending with `N passed, N failed`.
    Test(TestArgs),
    /// Send one message through a rule set and explain every decision.
    DryRun(DryRunArgs),
    /// Check a rule set and write it as a compiled table the relay can start from.
    Compile(CompileArgs),
}

#[derive(Debug, clap::Args)]
struct CompileArgs {
    /// The rule set's root file.
    #[arg(value_name = "RULES")]
    rules: PathBuf,
    /// Where to write the table.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
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
    /// A message file (RFC 5322) to evaluate with its headers.
    #[arg(long)]
    message: Option<PathBuf>,
    /// Output format (human or json).
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
}

#[derive(Debug, clap::Args)]
struct TestArgs {
    /// Rule files or folders, as for `check`.
    #[arg(required = true, value_name = "FILE|DIR")]
    paths: Vec<PathBuf>,
    /// Print the trace of passing tests too.
    #[arg(long, short)]
    verbose: bool,
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
        Command::Check(a) => check::run(&a.paths, a.format, a.deny_warnings, a.color),
        Command::Explain(a) => explain::run(a.code.as_deref(), a.list, a.markdown),
        Command::Test(a) => test::run(&a.paths, a.verbose),
        Command::Compile(a) => compile::run(&a.rules, &a.output),
        Command::DryRun(a) => dry_run::run(dry_run::DryRun {
            rules: a.rules,
            from: a.from,
            to: a.to,
            connector: a.connector,
            client_ip: a.client_ip,
            tls_peer: a.tls_peer,
            oorg: a.oorg,
            message: a.message,
            format: a.format,
        }),
    }
}
