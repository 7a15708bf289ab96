//! How `mailflow queue` prints a reply: JSON as the socket gave it, or lines for people;
//! and the exit code a reply means.

use super::super::Exit;
use mailflow::queue::holds::Holds;
use mailflow::queue::listing::{DestinationView, MessageView, State};
use mailflow::relay::control::{Reply, Report};
use mailflow::relay::track::rfc3339;
use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

pub(super) fn json(reply: &Reply) -> Exit {
    match serde_json::to_string_pretty(reply) {
        Ok(s) => {
            let _ = writeln!(std::io::stdout().lock(), "{s}");
        }
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Error;
        }
    }
    exit_of(reply)
}

fn exit_of(reply: &Reply) -> Exit {
    match reply {
        Reply::Error { .. } => Exit::Error,
        Reply::Missing { .. } => Exit::Findings,
        Reply::Messages { matched, .. } if *matched == 0 => Exit::Findings,
        Reply::Destinations { destinations, .. } if destinations.is_empty() => Exit::Findings,
        Reply::Done(r) if r.done.is_empty() || !r.skipped.is_empty() => Exit::Findings,
        _ => Exit::Clean,
    }
}

pub(super) fn human(reply: &Reply) -> Exit {
    let mut out = std::io::stdout().lock();
    let now = mailflow::clock::now_secs();
    match reply {
        Reply::Error { message } => eprintln!("error: {message}"),
        Reply::Missing { id } => eprintln!("no message {id} in the queue"),
        Reply::Messages {
            messages, matched, ..
        } => {
            if *matched == 0 {
                eprintln!("no matching messages");
            }
            for m in messages {
                let _ = message_lines(&mut out, m, now, false);
            }
            let pending: usize = messages.iter().map(|m| m.pending().count()).sum();
            let held: usize = messages
                .iter()
                .map(|m| m.pending().filter(|r| r.state == State::Held).count())
                .sum();
            let bytes: u64 = messages.iter().map(|m| m.size).sum();
            let _ = writeln!(
                out,
                "-- {} messages, {pending} recipients pending ({held} held), {} KiB",
                messages.len(),
                bytes.div_ceil(1024)
            );
            if *matched > messages.len() {
                let _ = writeln!(
                    out,
                    "-- {matched} matched; the oldest {} listed",
                    messages.len()
                );
            }
        }
        Reply::Destinations {
            destinations,
            holds,
        } => {
            if destinations.is_empty() {
                eprintln!("nothing pending");
            }
            let _ = destinations_table(&mut out, destinations, now);
            let _ = holds_line(&mut out, holds);
        }
        Reply::Message { message, data } => {
            let _ = message_lines(&mut out, message, now, true);
            if let Some(data) = data {
                use base64::Engine;
                if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(data) {
                    let _ = writeln!(out);
                    let _ = out.write_all(&bytes);
                }
            }
        }
        Reply::Done(r) => {
            let _ = report_lines(&mut out, r);
        }
    }
    exit_of(reply)
}

pub(super) fn export(reply: Reply, output: Option<&std::path::Path>) -> Exit {
    use base64::Engine;
    let bytes = match &reply {
        Reply::Message {
            data: Some(data), ..
        } => match base64::engine::general_purpose::STANDARD.decode(data) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: the relay's answer: {e}");
                return Exit::Error;
            }
        },
        Reply::Error { message } => {
            eprintln!("error: {message}");
            return Exit::Error;
        }
        Reply::Missing { id } => {
            eprintln!("no message {id} in the queue");
            return Exit::Findings;
        }
        _ => {
            eprintln!("error: the relay did not send the message");
            return Exit::Error;
        }
    };
    let written = match output {
        Some(path) => std::fs::write(path, &bytes),
        None => std::io::stdout().lock().write_all(&bytes),
    };
    match written {
        Ok(()) => Exit::Clean,
        Err(e) => {
            eprintln!("error: {e}");
            Exit::Error
        }
    }
}

fn when(secs: u64) -> String {
    let t = rfc3339(UNIX_EPOCH + Duration::from_secs(secs));
    // Whole seconds are enough for a queue.
    t.split('.').next().map_or(t.clone(), |s| format!("{s}Z"))
}

fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn message_lines(
    out: &mut impl Write,
    m: &MessageView,
    now: u64,
    all: bool,
) -> std::io::Result<()> {
    writeln!(
        out,
        "{}  {:>8} B  {}  ({} old)  from {}{}",
        m.id,
        m.size,
        when(m.received_at),
        age(now.saturating_sub(m.received_at)),
        m.sender.as_deref().unwrap_or("<>"),
        if m.held { "  [message held]" } else { "" }
    )?;
    if all {
        let field = |k: &str, v: &Option<String>| v.as_ref().map(|v| format!("    {k}: {v}\n"));
        for line in [
            field("message-id", &m.message_id),
            field("client", &m.client_ip),
            field("receive connector", &m.receive_connector),
            field("envid", &m.envid),
            field("ret", &m.ret),
        ]
        .into_iter()
        .flatten()
        {
            out.write_all(line.as_bytes())?;
        }
    }
    for r in m.recipients.iter().filter(|r| all || r.is_pending()) {
        let mut line = format!(
            "    {:<9} {} via \"{}\"",
            r.state.as_str(),
            r.address,
            r.connector
        );
        if let Some(o) = &r.original {
            line.push_str(&format!(" (was {o})"));
        }
        if r.is_pending() && r.state != State::Held {
            line.push_str(&format!(", {} attempts", r.attempts));
            if let Some(at) = r.next_attempt {
                if at > now {
                    line.push_str(&format!(", next in {}", age(at - now)));
                } else {
                    line.push_str(", due now");
                }
            }
        }
        if let Some(reply) = &r.last_reply {
            line.push_str(&format!(": {reply}"));
        }
        writeln!(out, "{line}")?;
        if all {
            if let Some(n) = &r.notify {
                writeln!(out, "              notify {n}")?;
            }
            if let Some(o) = &r.orcpt {
                writeln!(out, "              orcpt {o}")?;
            }
        }
    }
    Ok(())
}

fn destinations_table(
    out: &mut impl Write,
    ds: &[DestinationView],
    now: u64,
) -> std::io::Result<()> {
    if ds.is_empty() {
        return Ok(());
    }
    let cw = ds
        .iter()
        .map(|d| d.connector.len())
        .max()
        .unwrap_or(0)
        .max(9);
    let dw = ds.iter().map(|d| d.domain.len()).max().unwrap_or(0).max(6);
    writeln!(
        out,
        "{:<cw$}  {:<dw$}  {:>5}  {:>5}  {:>4}  {:>6}  {:<9}  LAST ERROR",
        "CONNECTOR", "DOMAIN", "MSGS", "RCPTS", "HELD", "OLDEST", "NEXT"
    )?;
    for d in ds {
        let next = match d.next_attempt {
            None => "-".to_string(),
            Some(at) if at <= now => "now".to_string(),
            Some(at) => format!("in {}", age(at - now)),
        };
        writeln!(
            out,
            "{:<cw$}  {:<dw$}  {:>5}  {:>5}  {:>4}  {:>6}  {:<9}  {}",
            d.connector,
            d.domain,
            d.messages,
            d.recipients,
            d.held,
            age(now.saturating_sub(d.oldest)),
            next,
            d.last_error.as_deref().unwrap_or("-")
        )?;
    }
    Ok(())
}

fn holds_line(out: &mut impl Write, h: &Holds) -> std::io::Result<()> {
    if h.is_empty() {
        return Ok(());
    }
    let mut parts: Vec<String> = Vec::new();
    parts.extend(
        h.connectors
            .iter()
            .map(|c| format!("send connector \"{c}\"")),
    );
    parts.extend(h.domains.iter().map(|d| format!("domain {d}")));
    if !h.messages.is_empty() {
        parts.push(format!("{} messages", h.messages.len()));
    }
    writeln!(out, "held: {}", parts.join(", "))
}

fn report_lines(out: &mut impl Write, r: &Report) -> std::io::Result<()> {
    for d in &r.done {
        writeln!(out, "{}: {d}", r.action)?;
    }
    if let Some(n) = r.deliveries {
        writeln!(out, "{n} deliveries due now")?;
    }
    for s in &r.skipped {
        writeln!(out, "not {}: {} ({})", past(&r.action), s.what, s.why)?;
    }
    if r.done.is_empty() && r.skipped.is_empty() {
        writeln!(out, "nothing matched")?;
    }
    holds_line(out, &r.holds)
}

fn past(action: &str) -> &'static str {
    match action {
        "retry" => "retried",
        "hold" => "held",
        "release" => "released",
        "delete" => "deleted",
        "bounce" => "bounced",
        _ => "done",
    }
}
