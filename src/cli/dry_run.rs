//! `mailflow dry-run`.

use super::{Exit, Format};
use mailflow::auth::AuthResults;
use mailflow::auth::arc;
use mailflow::auth::keys::KeyStore;
use mailflow::auth::report::Verified;
use mailflow::auth::verify::{Client, Verifier};
use mailflow::compile::{Table, artifact};
use mailflow::diagnostic::render;
use mailflow::eval::{Envelope, Fate, Message, Verdict, evaluate, srs_sender};
use mailflow::model::{AuthAs, RuleSet};
use mailflow::relay::sign::signers;
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
    pub verify: Option<Verify>,
    pub message: Option<PathBuf>,
    pub format: Format,
    pub allow_path: Vec<PathBuf>,
}

/// The rule set's keys as the relay would read them, or why it could not.
type Keys = Result<KeyStore, mailflow::auth::keys::LoadError>;

/// `--verify`: verify the message over DNS as the relay would.
pub(super) struct Verify {
    pub helo: String,
    pub dns: Option<std::net::SocketAddr>,
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

/// What delivery adds that the verdict does not say, when the rule set signs or rewrites
/// senders: per send connector the verdict delivers through, the DKIM signatures (keys read
/// as the relay reads them), and per recipient the SRS envelope sender.
fn outbound(table: &Table, keys: &Keys, v: &Verdict, day: u64) -> String {
    if table.dkim_keys.is_empty() && table.srs.is_none() {
        return String::new();
    }
    let message = v.message.to_bytes();
    let mut out = String::from("\noutbound:\n");
    let mut seen: Vec<&str> = Vec::new();
    for r in &v.recipients {
        let Fate::Deliver { connector } = &r.fate else {
            continue;
        };
        if !table.dkim_keys.is_empty() && !seen.contains(&connector.as_str()) {
            seen.push(connector);
            let signing = match &keys {
                _ if table
                    .send_connectors
                    .iter()
                    .any(|c| c.name.value == *connector && !c.dkim_sign) =>
                {
                    "not signed: `dkim-sign off`".to_string()
                }
                Err(e) => format!("not signed: {e}"),
                Ok(keys) => match signers(keys, &message) {
                    Ok((_, found)) => {
                        let each: Vec<String> = found
                            .iter()
                            .map(|k| format!("d={} s={}", k.domain, k.selector))
                            .collect();
                        format!("signed {}", each.join(", "))
                    }
                    Err(why) => format!("not signed: {why}"),
                },
            };
            out.push_str(&format!("  via `{connector}`: {signing}\n"));
        }
        if let Some(srs) = srs_sender(table, v.mail_from.as_ref(), &r.original, &r.address, day) {
            out.push_str(&format!("  {}: MAIL FROM {srs} (SRS)\n", r.address));
        }
    }
    out
}

/// `--verify`: what the relay's verification finds for this message from this client, put
/// into `env.auth` for the rules, and the text saying it: the `Authentication-Results`
/// field and the ARC seal the relay would add (or why it would not verify or seal). Only
/// mail the relay verifies is verified: AuthAs Anonymous, with an `authserv-id`.
fn verify_inbound(
    table: &Table,
    keys: &Keys,
    env: &mut Envelope,
    v: &Verify,
    raw: &[u8],
) -> Result<String, String> {
    let mut out = String::from("\ninbound:\n");
    let Some(id) = table
        .authentication
        .as_ref()
        .and_then(|a| a.authserv_id.as_ref())
    else {
        out.push_str("  not verified: the rule set names no `authserv-id`\n");
        return Ok(out);
    };
    let who = mailflow::eval::auth_as(table, env);
    if who != Some(AuthAs::Anonymous) {
        out.push_str("  not verified: not Internet mail (AuthAs is not Anonymous)\n");
        return Ok(out);
    }
    let verifier = match v.dns {
        Some(addr) => Verifier::with_nameserver(addr),
        None => Verifier::system()?,
    };
    let client = Client {
        ip: env.client_ip.ok_or("needs --client-ip")?,
        helo: v.helo.clone(),
        mail_from: env.mail_from.as_ref().map(ToString::to_string),
        host: id.value.clone(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let bytes = bytes::Bytes::copy_from_slice(raw);
    let verified = runtime.block_on(verifier.verify(bytes, client));
    env.auth = Some(verified.results.clone());
    for line in verified.header_field(&id.value).lines() {
        out.push_str(&format!("  {line}\n"));
    }
    out.push_str(&format!(
        "  {}\n",
        seal_text(table, keys, &verified, &id.value, raw)
    ));
    Ok(out)
}

/// Whether the relay would seal the message it received as `raw` (sealing what it stores
/// changes only the fields a rule rewrites, which the seal's own tags do not show).
fn seal_text(table: &Table, keys: &Keys, verified: &Verified, id: &str, raw: &[u8]) -> String {
    let Some(domain) = table
        .authentication
        .as_ref()
        .and_then(|a| a.arc_seal.as_ref())
    else {
        return "not sealed: no `arc-seal`".to_string();
    };
    let keys = match keys {
        Ok(keys) => keys,
        Err(e) => return format!("not sealed: {e}"),
    };
    let Some(key) = arc::sealing_key(keys, &domain.value) else {
        return format!("not sealed: no dkim-key for {}", domain.value);
    };
    // As the relay seals: our Authentication-Results on top of the head as it arrived.
    let (head, body) = arc::split_at_body(&bytes::Bytes::copy_from_slice(raw));
    let head = [verified.header_field(id).as_bytes(), &head].concat();
    let results = verified.arc_results(id);
    match arc::seal(&head, &body, key, &results, verified.results.arc.result) {
        Ok(set) => {
            let seal = set
                .split("\r\n")
                .find(|l| l.starts_with("ARC-Seal:"))
                .unwrap_or_default();
            let tags: Vec<&str> = seal
                .trim_start_matches("ARC-Seal:")
                .split(';')
                .map(str::trim)
                .filter(|t| ["i=", "cv=", "d=", "s="].iter().any(|p| t.starts_with(p)))
                .collect();
            format!("ARC-sealed: {}", tags.join("; "))
        }
        Err(e) => e.to_string(),
    }
}

/// A rule set from rule text (checked) or from a compiled table.
pub(super) fn load(path: &std::path::Path, allow: &[PathBuf]) -> Result<(RuleSet, Table), Exit> {
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
        eprintln!(
            "error: {}: the rule set has errors; fix them first",
            path.display()
        );
        return Err(Exit::Findings);
    }
    if report.rule_sets.len() != 1 {
        return Err(fail(format!(
            "{}: holds several rule sets; name one's file",
            path.display()
        )));
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
    let raw = match &d.message {
        Some(p) => match mailflow::input::read_limited(p) {
            Ok(raw) => Some(raw),
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
    let message = raw.as_deref().map(Message::parse);
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
    let mut env = Envelope {
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
    // Read once, as the relay reads them at load, for the signatures and the seal shown.
    let keys = KeyStore::load(&table.dkim_keys);
    let inbound = match (&d.verify, &raw) {
        (Some(v), Some(raw)) => match verify_inbound(&table, &keys, &mut env, v, raw) {
            Ok(text) => text,
            Err(why) => return usage(format!("--verify: {why}")),
        },
        _ => String::new(),
    };
    let verdict = evaluate(&table, &env, message.as_ref(), true);
    match d.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&verdict).unwrap_or_default()
        ),
        _ => print!(
            "{}{inbound}{}",
            human(&verdict, &d.rules.display().to_string()),
            outbound(&table, &keys, &verdict, env.day.unwrap_or_default())
        ),
    }
    if verdict.all_delivered() {
        Exit::Clean
    } else {
        Exit::Findings
    }
}
