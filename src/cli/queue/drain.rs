//! `mailflow queue drain`: hand a stopped relay's queue to a peer ([`mailflow::relay::drain`]).

use super::super::Exit;
use super::QueueFormat;
use mailflow::ast::Text;
use mailflow::relay::drain::{DrainOptions, MessageResult, Summary, drain};
use mailflow::source::{SourceMap, Span};
use std::path::PathBuf;
use std::time::Duration;

/// `mailflow queue drain`'s arguments.
#[derive(Debug, clap::Args)]
pub(in crate::cli) struct DrainArgs {
    /// The stopped relay's spool folder.
    #[arg(long, default_value = "spool")]
    spool: PathBuf,
    /// The peer relay: HOST[:PORT] (port 25 when left out).
    #[arg(long, value_name = "HOST:PORT")]
    to: String,
    /// The name in EHLO (default: the machine's host name).
    #[arg(long)]
    hostname: Option<String>,
    /// Require TLS and a peer certificate valid for this name (default: STARTTLS when the
    /// peer offers it, its certificate not checked).
    #[arg(long, value_name = "NAME")]
    tls_name: Option<String>,
    /// Require TLS and a peer certificate that chains to these trust anchors (PEM), valid for
    /// --tls-name or HOST.
    #[arg(long, value_name = "PEM")]
    ca_file: Option<PathBuf>,
    /// How long the peer may take to answer a command (the final dot gets twice this).
    #[arg(long, default_value = "300s", value_parser = super::super::relay::parse_duration)]
    timeout: Duration,
    /// Output: a line per message and a summary (human), or one JSON document.
    #[arg(long, value_enum, default_value_t = QueueFormat::Human)]
    format: QueueFormat,
}

pub(super) fn run(a: DrainArgs) -> Exit {
    let to = match peer(&a.to) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Error;
        }
    };
    let options = DrainOptions {
        spool: a.spool,
        to,
        helo: a.hostname.unwrap_or_else(super::super::relay::hostname),
        tls_name: a.tls_name,
        ca_file: a.ca_file,
        timeout: a.timeout,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Error;
        }
    };
    let mut messages = Vec::new();
    let json = a.format == QueueFormat::Json;
    let result = runtime.block_on(drain(&options, |m| {
        if json {
            messages.push(m.clone());
        } else {
            println!("{}", line(m));
        }
    }));
    let summary = match result {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Error;
        }
    };
    if json {
        let doc = serde_json::json!({ "messages": messages, "summary": summary });
        println!("{doc}");
    } else {
        println!("{}", total(&summary));
    }
    if summary.messages_left == 0 {
        Exit::Clean
    } else {
        Exit::Findings
    }
}

/// `HOST[:PORT]` as a smart host is written in the rules (port 25 when left out).
fn peer(to: &str) -> Result<mailflow::model::SmartHost, String> {
    let mut sources = SourceMap::new();
    let file = sources.add("--to".to_string(), to.to_string());
    let text = Text {
        value: to.to_string(),
        span: Span::new(file, 0, to.len()),
        quoted: false,
    };
    mailflow::resolve::smart_host(&text).map_err(|d| {
        format!(
            "--to `{to}` is refused\n{}",
            mailflow::diagnostic::render::human(&[d], &sources, false).trim_end()
        )
    })
}

/// One message's line: `handed ID <message-id> from SENDER: N recipients`, or `left ...` with
/// each recipient that stays and why.
fn line(m: &MessageResult) -> String {
    let head = format!(
        "{} {} {} from <{}>",
        if m.handed() { "handed" } else { "left  " },
        m.id,
        m.message_id.as_deref().unwrap_or("-"),
        m.sender.as_deref().unwrap_or("")
    );
    let handed = m.recipients.iter().filter(|r| r.handed).count();
    let mut out = format!(
        "{head}: {handed} of {} recipients handed",
        m.recipients.len()
    );
    for r in m.recipients.iter().filter(|r| !r.handed) {
        out.push_str(&format!("\n    {}: {}", r.address, r.reply));
    }
    out
}

fn total(s: &Summary) -> String {
    let mut out = format!(
        "drained {} of {} messages to {} ({} recipients); {} messages stay queued ({} recipients)",
        s.messages_handed,
        s.messages,
        s.to,
        s.recipients_handed,
        s.messages_left,
        s.recipients_left
    );
    if let Some(why) = &s.stopped {
        out.push_str(&format!("\nstopped: the peer could not be reached: {why}"));
    }
    out
}
