//! `mailflow dry-run`.

use super::{Exit, Format};
use mailflow::auth::AuthResults;
use mailflow::compile::{Table, artifact};
use mailflow::diagnostic::render;
use mailflow::eval::{Envelope, Fate, Message, Verdict, evaluate};
use mailflow::model::RuleSet;
use mailflow::resolve::parse_sender;
use std::net::IpAddr;
use std::path::PathBuf;

/// What to send through the rules.
pub(super) struct DryRun {
    pub rules: PathBuf,
    pub from: String,
    pub to: Vec<String>,
    pub connector: Option<String>,
    pub client_ip: Option<IpAddr>,
    pub tls_peer: Option<String>,
    pub oorg: Option<String>,
    pub auth: Option<String>,
    pub message: Option<PathBuf>,
    pub format: Format,
    pub allow_path: Vec<PathBuf>,
}

fn fate_text(f: &Fate) -> String {
    match f {
        Fate::Deliver { connector } => format!("delivered via `{connector}`"),
        Fate::Drop { reason } => format!("dropped: {reason}"),
        Fate::Reject(status) => format!("rejected: {status}"),
    }
}

fn human(v: &Verdict, rules: &str) -> String {
    let mut out = format!("dry run through {rules}\n\ntrace:\n");
    for s in &v.trace {
        let stage = serde_json::to_value(s.stage)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        out.push_str(&format!("  [{stage}] {}\n", s.text));
    }
    out.push_str("\nverdict:\n");
    let from = v
        .mail_from
        .as_ref()
        .map_or("<>".to_string(), ToString::to_string);
    out.push_str(&format!("  MAIL FROM {from}\n"));
    for r in &v.recipients {
        if r.original == r.address {
            out.push_str(&format!("  {}: {}\n", r.address, fate_text(&r.fate)));
        } else {
            out.push_str(&format!(
                "  {} (as {}): {}\n",
                r.original,
                r.address,
                fate_text(&r.fate)
            ));
        }
    }
    if !v.rules_fired.is_empty() {
        out.push_str(&format!("  rules fired: {}\n", v.rules_fired.join(", ")));
    }
    for (name, before, after) in &v.header_changes {
        match (before, after) {
            (Some(b), Some(a)) => out.push_str(&format!("  header {name}: {b} -> {a}\n")),
            (None, Some(a)) => out.push_str(&format!("  header {name}: added {a}\n")),
            (Some(b), None) => out.push_str(&format!("  header {name}: removed {b}\n")),
            (None, None) => {}
        }
    }
    if v.disconnect {
        out.push_str("  the connection is dropped\n");
    }
    out
}

/// A rule set from rule text (checked) or from a compiled table.
fn load(path: &std::path::Path, allow: &[PathBuf]) -> Result<(RuleSet, Table), Exit> {
    let fail = |msg: String| {
        eprintln!("error: {msg}");
        Exit::Error
    };
    if let Ok(bytes) = mailflow::input::read_limited(path) {
        if artifact::is_artifact(&bytes) {
            return artifact::load(&bytes).map_err(|e| fail(format!("{}: {e}", path.display())));
        }
    }
    let mut report =
        mailflow::check::check_file_allowing(path, allow).map_err(|e| fail(e.to_string()))?;
    if report.has_errors() {
        print!(
            "{}",
            render::human(&report.diagnostics, &report.sources, false)
        );
        eprintln!("error: the rule set has errors; fix them before a dry run");
        return Err(Exit::Findings);
    }
    if report.rule_sets.len() != 1 {
        return Err(fail("a dry run takes one rule set: name its file".into()));
    }
    let set = report.rule_sets.remove(0).rules;
    let table = mailflow::compile::compile(&set).map_err(|e| fail(e.to_string()))?;
    Ok((set, table))
}

pub(super) fn run(d: DryRun) -> Exit {
    let usage = |msg: String| {
        eprintln!("error: {msg}");
        Exit::Error
    };
    let from = match parse_sender(&d.from) {
        Ok(a) => a,
        Err(e) => return usage(format!("--from: {e}")),
    };
    let mut to = Vec::new();
    for t in &d.to {
        match parse_sender(t) {
            Ok(Some(a)) => to.push(a),
            Ok(None) => return usage("--to cannot be the null address <>".into()),
            Err(e) => return usage(format!("--to: {e}")),
        }
    }
    let message = match &d.message {
        Some(p) => match mailflow::input::read_limited(p) {
            Ok(raw) => Some(Message::parse(&raw)),
            Err(e) => {
                return usage(format!(
                    "cannot read `{}`: {}",
                    p.display(),
                    mailflow::resolve::io_reason(&e)
                ));
            }
        },
        None => None,
    };
    let auth = match d.auth.as_deref().map(AuthResults::from_spec).transpose() {
        Ok(a) => a,
        Err(why) => return usage(format!("--auth: {why}")),
    };
    if d.connector.is_none() && d.client_ip.is_none() {
        return usage(
            "give --connector NAME or --client-ip IP, so the receive connector is known".into(),
        );
    }
    let (set, table) = match load(&d.rules, &d.allow_path) {
        Ok(v) => v,
        Err(exit) => return exit,
    };
    if let Some(c) = &d.connector {
        if !set.receive_connectors.iter().any(|rc| &rc.name.value == c) {
            return usage(format!("no receive connector is named `{c}`"));
        }
    }
    let env = Envelope {
        connector: d.connector,
        local: None,
        client_ip: d.client_ip,
        tls_peer: d.tls_peer,
        xoorg: d.oorg,
        mail_from: from,
        rcpt_to: to,
        auth,
        day: Some(mailflow::clock::days_since_epoch()),
    };
    let verdict = evaluate(&table, &env, message.as_ref(), true);
    match d.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&verdict).unwrap_or_default()
        ),
        _ => print!("{}", human(&verdict, &d.rules.display().to_string())),
    }
    if verdict.all_delivered() {
        Exit::Clean
    } else {
        Exit::Findings
    }
}
