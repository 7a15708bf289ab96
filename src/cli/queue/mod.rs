//! `mailflow queue`: see and steer a relay's queue, through the running relay's socket or,
//! when none runs, on its stopped spool. Exit 0: done (or found); 1: something named was not
//! there or not changed, or nothing matched; 2: an error, nothing changed.

mod drain;
mod render;

use super::Exit;
use super::relay::parse_duration;
use mailflow::queue::QueueId;
use mailflow::queue::holds::HoldTarget;
use mailflow::queue::listing::{Filter, State};
use mailflow::relay::control::{self, Reply, Request, Selection, Who};
use std::path::PathBuf;
use std::time::Duration;

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
    /// Hand a stopped relay's queue to a peer over SMTP before the node is taken down: every
    /// pending recipient, envelope and DSN parameters kept; what the peer takes is marked
    /// delivered, what it refuses stays queued (exit 1), nothing is bounced.
    Drain(drain::DrainArgs),
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
    /// List at most this many (the oldest); the count covers them all.
    #[arg(long)]
    limit: Option<usize>,
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
    // The drain talks SMTP to a peer from the stopped spool; it asks the relay nothing.
    let cmd = match cmd {
        QueueCommand::Drain(a) => return drain::run(a),
        other => other,
    };
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
        return render::export(reply, a.output.as_deref());
    }
    match at.format {
        QueueFormat::Json => render::json(&reply),
        QueueFormat::Human => render::human(&reply),
    }
}

/// The request a command makes, and where it goes.
fn request(cmd: &QueueCommand) -> Result<(Request, Where), String> {
    let at = |w: &Where| Where {
        spool: w.spool.clone(),
        format: w.format,
    };
    Ok(match cmd {
        QueueCommand::Drain(_) => {
            return Err("`queue drain` works on the stopped spool, not through the relay".into());
        }
        QueueCommand::List(a) => (
            Request::List {
                filter: a.filter.filter(),
                limit: a.limit,
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

/// Asks the running relay, else does it on the stopped spool. A relay serving as many
/// commands as it takes is asked again for up to 30 seconds, so commands run side by side
/// (a script's `xargs -P`) wait their turn rather than fail.
fn ask(spool: &std::path::Path, req: &Request) -> Result<Reply, String> {
    let socket = control::socket_path(spool);
    let give_up = std::time::Instant::now() + Duration::from_secs(30);
    let mut answer = control::ask(&socket, req, Duration::from_secs(300));
    while answer.as_ref().is_ok_and(Reply::is_busy) && std::time::Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(200));
        answer = control::ask(&socket, req, Duration::from_secs(300));
    }
    match answer {
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
