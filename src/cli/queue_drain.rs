//! `mailflow queue drain`: hand a stopped relay's queue to a peer ([`mailflow::relay::drain`]).

use super::Exit;
use mailflow::ast::Text;
use mailflow::relay::drain::{DrainOptions, MessageResult, Summary, drain};
use mailflow::source::{SourceMap, Span};
use std::path::PathBuf;
use std::time::Duration;

/// What `mailflow queue drain` was given.
pub(super) struct DrainArgs {
    pub spool: PathBuf,
    pub to: String,
    pub helo: Option<String>,
    pub tls_name: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
    pub json: bool,
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
        helo: a.helo.unwrap_or_else(super::relay::hostname),
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
    let json = a.json;
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
