//! The administrator's queue commands (`mailflow queue ...`): one request and one reply
//! type, answered by a running relay on its local socket (`<spool>/admin.sock`, [`online`])
//! or, when no relay runs, by opening the stopped spool ([`offline`]). Both read the queue
//! through [`crate::queue::listing`], so they answer alike; every change is recorded in the
//! tracking log as an `ADMIN` event naming who made it.
//!
//! The socket, not the TCP admin port, carries these: a Unix socket's permissions say who
//! may steer the queue (the relay's user and group), and its peer credentials say who did.

pub mod offline;
pub(crate) mod online;
pub(crate) mod socket;

use super::track::{Event, EventId};
use crate::queue::holds::{HoldTarget, Holds};
use crate::queue::listing::{self, DestinationView, Filter, MessageView};
use crate::queue::{QueueError, QueueId, QueuedMessage};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The socket's name inside the spool folder.
pub const SOCKET: &str = "admin.sock";

/// The longest request line the socket reads.
pub(crate) const MAX_REQUEST: usize = 64 << 10;

/// The socket of the relay whose spool is `spool`.
pub fn socket_path(spool: &Path) -> PathBuf {
    spool.join(SOCKET)
}

/// Which messages an action takes: the ids named, or those a filter matches (an empty
/// filter is every message: the command line asks for `--all` to send one).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    /// Queue ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<QueueId>,
    /// A filter, when no ids are given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
}

/// One queue command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Request {
    /// The messages a filter takes.
    List {
        /// Which.
        #[serde(default)]
        filter: Filter,
        /// At most this many, oldest first (the reply counts them all).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    /// Their pending recipients per destination.
    Summary {
        /// Which messages.
        #[serde(default)]
        filter: Filter,
    },
    /// One message in full.
    Show {
        /// Which.
        id: QueueId,
        /// With the stored message.
        #[serde(default)]
        message: bool,
    },
    /// Attempt now what is pending (held recipients stay held).
    Retry {
        /// Which.
        select: Selection,
    },
    /// Hold messages, domains or send connectors.
    Hold {
        /// What.
        targets: Vec<HoldTarget>,
    },
    /// Release holds (`all`: every hold).
    Release {
        /// What.
        targets: Vec<HoldTarget>,
        /// Every hold.
        #[serde(default)]
        all: bool,
    },
    /// Remove messages without telling anyone.
    Delete {
        /// Which.
        select: Selection,
    },
    /// Fail messages' pending recipients, with a DSN to the sender as NOTIFY asks.
    Bounce {
        /// Which.
        select: Selection,
    },
}

impl Request {
    /// The action's name, for the tracking log.
    pub fn action(&self) -> &'static str {
        match self {
            Request::List { .. } => "list",
            Request::Summary { .. } => "summary",
            Request::Show { .. } => "show",
            Request::Retry { .. } => "retry",
            Request::Hold { .. } => "hold",
            Request::Release { .. } => "release",
            Request::Delete { .. } => "delete",
            Request::Bounce { .. } => "bounce",
        }
    }
}

/// One thing an action did not do, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// The id or target named.
    pub what: String,
    /// Why not.
    pub why: String,
}

/// What an action did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The action.
    pub action: String,
    /// The messages or targets acted on.
    pub done: Vec<String>,
    /// Those named but left as they were.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<Skipped>,
    /// For retry: deliveries (message, destination) made due now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliveries: Option<usize>,
    /// The holds in force afterwards.
    pub holds: Holds,
}

/// The answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
pub enum Reply {
    /// For `list`.
    Messages {
        /// Oldest first.
        messages: Vec<MessageView>,
        /// How many matched (more than listed when a limit cut the list).
        matched: usize,
        /// The holds in force.
        holds: Holds,
    },
    /// For `summary`.
    Destinations {
        /// Busiest first.
        destinations: Vec<DestinationView>,
        /// The holds in force.
        holds: Holds,
    },
    /// For `show`.
    Message {
        /// The message.
        message: Box<MessageView>,
        /// The stored message (base64), when asked for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<String>,
    },
    /// For `show`: no such message is queued.
    Missing {
        /// The id asked for.
        id: QueueId,
    },
    /// For an action.
    Done(Report),
    /// The request could not be carried out; nothing was changed.
    Error {
        /// Why.
        message: String,
    },
}

/// What a relay already serving as many socket clients as it takes answers at once.
const BUSY: &str = "the relay is serving as many queue commands as it takes; try again in a moment";

impl Reply {
    fn error(message: impl Into<String>) -> Reply {
        Reply::Error {
            message: message.into(),
        }
    }

    /// The answer to a client past the socket's limit.
    pub(crate) fn busy() -> Reply {
        Reply::error(BUSY)
    }

    /// Whether this is that answer (nothing was done: the command may ask again).
    pub fn is_busy(&self) -> bool {
        matches!(self, Reply::Error { message } if message == BUSY)
    }
}

/// Who asked, for the tracking log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Who {
    /// The user id.
    pub uid: u32,
    /// The process, when the socket told.
    pub pid: Option<i32>,
}

impl std::fmt::Display for Who {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "uid {}", self.uid)?;
        if let Some(pid) = self.pid {
            write!(f, " (pid {pid})")?;
        }
        Ok(())
    }
}

/// Answers the requests that only read, the same way for a running relay and a stopped
/// spool; `None` for the others.
pub(crate) fn read(
    req: &Request,
    messages: &[QueuedMessage],
    holds: &Holds,
    body: impl Fn(&QueueId) -> Result<Vec<u8>, QueueError>,
    now: u64,
) -> Option<Reply> {
    use base64::Engine;
    Some(match req {
        Request::List { filter, limit } => {
            let mut messages = listing::list(messages, holds, filter, now);
            let matched = messages.len();
            messages.truncate(limit.unwrap_or(usize::MAX));
            Reply::Messages {
                messages,
                matched,
                holds: holds.clone(),
            }
        }
        Request::Summary { filter } => Reply::Destinations {
            destinations: listing::summary(&listing::list(messages, holds, filter, now), filter),
            holds: holds.clone(),
        },
        Request::Show { id, message } => match messages.iter().find(|m| m.id == *id) {
            None => Reply::Missing { id: id.clone() },
            Some(m) => {
                let data = if *message {
                    match body(id) {
                        Ok(b) => Some(base64::engine::general_purpose::STANDARD.encode(b)),
                        Err(e) => return Some(Reply::error(e.to_string())),
                    }
                } else {
                    None
                };
                Reply::Message {
                    message: Box::new(MessageView::of(m, holds)),
                    data,
                }
            }
        },
        _ => return None,
    })
}

/// The messages a selection takes, and the ids it names that are not queued.
pub(crate) fn select(
    selection: &Selection,
    messages: &[QueuedMessage],
    holds: &Holds,
    now: u64,
) -> (Vec<QueuedMessage>, Vec<Skipped>) {
    let mut missing = Vec::new();
    let chosen = if selection.ids.is_empty() {
        let filter = selection.filter.clone().unwrap_or_default();
        messages
            .iter()
            .filter(|m| MessageView::of(m, holds).matches(&filter, now))
            .cloned()
            .collect()
    } else {
        let mut v = Vec::new();
        for id in &selection.ids {
            match messages.iter().find(|m| m.id == *id) {
                Some(m) => v.push(m.clone()),
                None => missing.push(Skipped {
                    what: id.to_string(),
                    why: "not in the queue".into(),
                }),
            }
        }
        v
    };
    (chosen, missing)
}

/// Applies a hold or release request to `holds`: what changed and what was already so. A
/// message hold needs the message to be queued (`live`): a mistyped id would otherwise be
/// "held" while the message meant goes out.
pub(crate) fn change_holds(
    req: &Request,
    holds: &mut Holds,
    live: impl Fn(&QueueId) -> bool,
) -> (Vec<String>, Vec<Skipped>) {
    let mut done = Vec::new();
    let mut skipped = Vec::new();
    match req {
        Request::Hold { targets } => {
            for t in targets {
                if matches!(t, HoldTarget::Message(id) if !live(id)) {
                    skipped.push(Skipped {
                        what: t.to_string(),
                        why: "not in the queue".into(),
                    });
                } else if holds.hold(t) {
                    done.push(t.to_string());
                } else {
                    skipped.push(Skipped {
                        what: t.to_string(),
                        why: "already held".into(),
                    });
                }
            }
        }
        Request::Release { all: true, .. } => {
            let every = std::mem::take(holds);
            done.extend(
                every
                    .messages
                    .into_iter()
                    .map(|id| HoldTarget::Message(id).to_string()),
            );
            done.extend(
                every
                    .domains
                    .into_iter()
                    .map(|d| HoldTarget::Domain(d).to_string()),
            );
            done.extend(
                every
                    .connectors
                    .into_iter()
                    .map(|c| HoldTarget::Connector(c).to_string()),
            );
        }
        Request::Release { targets, .. } => {
            for t in targets {
                if holds.release(t) {
                    done.push(t.to_string());
                } else {
                    skipped.push(Skipped {
                        what: t.to_string(),
                        why: "not held".into(),
                    });
                }
            }
        }
        _ => {}
    }
    (done, skipped)
}

/// The tracking log's record of an action: who did what, to which message when there is one.
pub(crate) fn event(what: &str, who: &Who, m: Option<&QueuedMessage>) -> Event {
    let mut e = Event::new(EventId::Admin, "ADMIN");
    e.source_context = Some(format!("{what} by {who}"));
    if let Some(m) = m {
        e.internal_message_id = Some(m.id.to_string());
        e.message_id = m.meta.message_id.clone();
        e.sender_address = m.meta.mail_from.clone();
        e.recipient_address = m
            .meta
            .recipients
            .iter()
            .zip(&m.states)
            .filter(|(_, s)| matches!(s, crate::queue::RecipientState::Pending { .. }))
            .map(|(r, _)| r.address.clone())
            .collect();
        e.total_bytes = Some(m.size);
    }
    e
}

/// The pending recipients of `m` (by index) a retry takes: those the selection's filter
/// takes (its recipient, connector, domain and state), every pending one without a filter.
pub(crate) fn retried(m: &QueuedMessage, holds: &Holds, filter: Option<&Filter>) -> Vec<usize> {
    MessageView::of(m, holds)
        .recipients
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_pending() && filter.is_none_or(|f| r.matches(f)))
        .map(|(i, _)| i)
        .collect()
}

/// Why the socket could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// Nothing listens there: no relay runs on this spool (or it is too old to have one).
    #[error("no relay answers on {}", path.display())]
    NotRunning {
        /// The socket.
        path: PathBuf,
    },
    /// Something else went wrong talking to it.
    #[error("{}: {why}", path.display())]
    Failed {
        /// The socket.
        path: PathBuf,
        /// What.
        why: String,
    },
}

/// Sends one request to the relay on `socket` and reads its reply.
pub fn ask(socket: &Path, req: &Request, timeout: Duration) -> Result<Reply, AskError> {
    let failed = |why: String| AskError::Failed {
        path: socket.to_path_buf(),
        why,
    };
    let mut stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(AskError::NotRunning {
                path: socket.to_path_buf(),
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
            return Err(failed(
                "the path is too long for a socket (at most 108 bytes): a relay on this spool \
                 runs without one; a shorter --spool path lets the queue commands reach it"
                    .into(),
            ));
        }
        Err(e) => return Err(failed(e.to_string())),
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let mut line = serde_json::to_vec(req).map_err(|e| failed(e.to_string()))?;
    line.push(b'\n');
    // A relay too busy to take the request answers before reading it and closes: its
    // answer says why better than the broken pipe does.
    let sent = stream.write_all(&line);
    let mut answer = String::new();
    let read = BufReader::new(stream).read_line(&mut answer);
    match (serde_json::from_str(&answer), sent, read) {
        (Ok(reply), _, _) => Ok(reply),
        (Err(_), Err(e), _) => Err(failed(e.to_string())),
        (Err(_), Ok(()), Err(e)) => Err(failed(format!("no answer: {e}"))),
        (Err(e), Ok(()), Ok(_)) => Err(failed(format!("unreadable answer: {e}"))),
    }
}
