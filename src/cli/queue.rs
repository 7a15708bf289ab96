//! `mailflow queue`: see and steer a relay's queue, through the running relay's socket or,
//! when none runs, on its stopped spool. Exit 0: done (or found); 1: something named was not
//! there or not changed, or nothing matched; 2: an error, nothing changed.

use super::Exit;
use super::relay::parse_duration;
use mailflow::queue::QueueId;
use mailflow::queue::holds::{HoldTarget, Holds};
use mailflow::queue::listing::{DestinationView, Filter, MessageView, State};
use mailflow::relay::control::{self, Reply, Report, Request, Selection, Who};
use mailflow::relay::track::rfc3339;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

#[derive(Debug, clap::Subcommand)]
pub(super) enum QueueCommand {
    /// List queued messages and their pending recipients (like mailq).
    List(ListArgs),
    /// Pending recipients per destination (send connector and domain): counts, oldest,
    /// next attempt and last error, like Exchange's queue viewer.
    Summary(ListArgs),
    /// One message: envelope, every recipient's state, last error, next attempt.
    Show(ShowArgs),
    /// Write a queued message as it is stored (an .eml) to standard output or a file.
    Export(ExportArgs),
    /// Attempt now what is pending (held recipients stay held).
    Retry(SelectArgs),
    /// Hold messages, recipient domains or send connectors: nothing held is attempted or
    /// expires until released; a domain's or connector's hold covers later mail too.
    Hold(HoldArgs),
    /// Release holds.
    Release(ReleaseArgs),
    /// Remove messages without a report to anyone.
    Delete(SelectArgs),
    /// Fail messages' pending recipients, with a report (DSN) to the sender as they asked.
    Bounce(SelectArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum QueueFormat {
    /// For people.
    Human,
    /// One JSON document.
    Json,
}

#[derive(Debug, clap::Args)]
pub(super) struct Where {
    /// The relay's spool folder.
    #[arg(long, default_value = "spool")]
    spool: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = QueueFormat::Human)]
    format: QueueFormat,
}

#[derive(Debug, clap::Args)]
pub(super) struct FilterArgs {
    /// Messages whose envelope sender contains this (`<>`: the null sender).
    #[arg(long)]
    sender: Option<String>,
    /// With a recipient whose address contains this.
    #[arg(long)]
    recipient: Option<String>,
    /// With a recipient going through this send connector.
    #[arg(long)]
    connector: Option<String>,
    /// With a recipient in this domain.
    #[arg(long)]
    domain: Option<String>,
    /// With a recipient in this state (queued, deferred, held, delivered, failed).
    #[arg(long)]
    state: Option<State>,
    /// Queued at least this long (30m, 4h, 2d).
    #[arg(long, value_parser = parse_duration)]
    older_than: Option<Duration>,
}

impl FilterArgs {
    fn filter(&self) -> Filter {
        Filter {
            sender: self.sender.clone(),
            recipient: self.recipient.clone(),
            connector: self.connector.clone(),
            domain: self.domain.clone(),
            state: self.state,
            older_than: self.older_than.map(|d| d.as_secs()),
        }
    }
}

#[derive(Debug, clap::Args)]
pub(super) struct ListArgs {
    #[command(flatten)]
    filter: FilterArgs,
    #[command(flatten)]
    at: Where,
}

#[derive(Debug, clap::Args)]
pub(super) struct ShowArgs {
    /// The queue id.
    id: String,
    /// Print the stored message too.
    #[arg(long)]
    message: bool,
    #[command(flatten)]
    at: Where,
}

#[derive(Debug, clap::Args)]
pub(super) struct ExportArgs {
    /// The queue id.
    id: String,
    /// Write here instead of standard output.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// The relay's spool folder.
    #[arg(long, default_value = "spool")]
    spool: PathBuf,
}

#[derive(Debug, clap::Args)]
pub(super) struct SelectArgs {
    /// Queue ids; without them, the messages the filters take.
    ids: Vec<String>,
    #[command(flatten)]
    filter: FilterArgs,
    /// Every message (when no id or filter is given).
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    at: Where,
}

#[derive(Debug, clap::Args)]
pub(super) struct HoldArgs {
    /// Queue ids of messages to hold.
    ids: Vec<String>,
    /// Hold a recipient domain (repeat for more).
    #[arg(long = "domain")]
    domains: Vec<String>,
    /// Hold a send connector (repeat for more).
    #[arg(long = "connector")]
    connectors: Vec<String>,
    #[command(flatten)]
    at: Where,
}

#[derive(Debug, clap::Args)]
pub(super) struct ReleaseArgs {
    #[command(flatten)]
    hold: HoldArgs,
    /// Release every hold.
    #[arg(long)]
    all: bool,
}

impl HoldArgs {
    fn targets(&self) -> Vec<HoldTarget> {
        let ids = self.ids.iter().map(|i| HoldTarget::Message(id(i)));
        let domains = self.domains.iter().map(|d| HoldTarget::Domain(d.clone()));
        let connectors = self
            .connectors
            .iter()
            .map(|c| HoldTarget::Connector(c.clone()));
        ids.chain(domains).chain(connectors).collect()
    }
}

/// Queue ids print in upper case; typed ones may not be.
fn id(s: &str) -> QueueId {
    QueueId(s.trim().to_ascii_uppercase())
}

impl SelectArgs {
    fn selection(&self) -> Result<Selection, String> {
        let filter = self.filter.filter();
        if !self.ids.is_empty() {
            if !filter.is_empty() || self.all {
                return Err("give queue ids, or filters (or --all), not both".into());
            }
            return Ok(Selection {
                ids: self.ids.iter().map(|s| id(s)).collect(),
                filter: None,
            });
        }
        if filter.is_empty() && !self.all {
            return Err("name the messages: queue ids, filters, or --all for every one".into());
        }
        Ok(Selection {
            ids: Vec::new(),
            filter: Some(filter),
        })
    }
}

pub(super) fn run(cmd: QueueCommand) -> Exit {
    let (request, at) = match request(&cmd) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Error;
        }
    };
    let reply = match ask(&at.spool, &request) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Error;
        }
    };
    if let QueueCommand::Export(a) = &cmd {
        return export(reply, a.output.as_deref());
    }
    match at.format {
        QueueFormat::Json => json(&reply),
        QueueFormat::Human => human(&reply),
    }
}

/// The request a command makes, and where it goes.
fn request(cmd: &QueueCommand) -> Result<(Request, Where), String> {
    let at = |w: &Where| Where {
        spool: w.spool.clone(),
        format: w.format,
    };
    Ok(match cmd {
        QueueCommand::List(a) => (
            Request::List {
                filter: a.filter.filter(),
            },
            at(&a.at),
        ),
        QueueCommand::Summary(a) => (
            Request::Summary {
                filter: a.filter.filter(),
            },
            at(&a.at),
        ),
        QueueCommand::Show(a) => (
            Request::Show {
                id: id(&a.id),
                message: a.message,
            },
            at(&a.at),
        ),
        QueueCommand::Export(a) => (
            Request::Show {
                id: id(&a.id),
                message: true,
            },
            Where {
                spool: a.spool.clone(),
                format: QueueFormat::Human,
            },
        ),
        QueueCommand::Retry(a) => (
            Request::Retry {
                select: a.selection()?,
            },
            at(&a.at),
        ),
        QueueCommand::Delete(a) => (
            Request::Delete {
                select: a.selection()?,
            },
            at(&a.at),
        ),
        QueueCommand::Bounce(a) => (
            Request::Bounce {
                select: a.selection()?,
            },
            at(&a.at),
        ),
        QueueCommand::Hold(a) => {
            let targets = a.targets();
            if targets.is_empty() {
                return Err("name what to hold: queue ids, --domain or --connector".into());
            }
            (Request::Hold { targets }, at(&a.at))
        }
        QueueCommand::Release(a) => {
            let targets = a.hold.targets();
            if targets.is_empty() != a.all {
                return Err(
                    "name what to release (queue ids, --domain, --connector) or --all".into(),
                );
            }
            (
                Request::Release {
                    targets,
                    all: a.all,
                },
                at(&a.hold.at),
            )
        }
    })
}

/// Asks the running relay, else does it on the stopped spool.
fn ask(spool: &std::path::Path, req: &Request) -> Result<Reply, String> {
    let socket = control::socket_path(spool);
    match control::ask(&socket, req, Duration::from_secs(300)) {
        Ok(reply) => Ok(reply),
        Err(control::AskError::NotRunning { .. }) => {
            let who = Who {
                uid: rustix::process::getuid().as_raw(),
                pid: Some(std::process::id() as i32),
            };
            Ok(control::offline::handle(spool, req, &who))
        }
        Err(e) => Err(e.to_string()),
    }
}

fn json(reply: &Reply) -> Exit {
    match serde_json::to_string_pretty(reply) {
        Ok(s) => println!("{s}"),
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
        Reply::Messages { messages, .. } if messages.is_empty() => Exit::Findings,
        Reply::Destinations { destinations, .. } if destinations.is_empty() => Exit::Findings,
        Reply::Done(r) if r.done.is_empty() || !r.skipped.is_empty() => Exit::Findings,
        _ => Exit::Clean,
    }
}

fn human(reply: &Reply) -> Exit {
    let mut out = std::io::stdout().lock();
    let now = mailflow::clock::now_secs();
    match reply {
        Reply::Error { message } => eprintln!("error: {message}"),
        Reply::Missing { id } => eprintln!("no message {id} in the queue"),
        Reply::Messages { messages, .. } => {
            if messages.is_empty() {
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

fn export(reply: Reply, output: Option<&std::path::Path>) -> Exit {
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
