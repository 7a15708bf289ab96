//! `mailflow queue drain`: hands a stopped relay's queue to a peer over SMTP before the node
//! is taken down, as Postfix flushes to a relayhost. Each live message goes in one
//! transaction with the stored sender and DSN parameters (ENVID, RET), one RCPT per
//! pending recipient with its NOTIFY and ORCPT (the stored one, else `rfc822;` and the
//! address the client gave), the final address as the RCPT, and the stored bytes unchanged:
//! the peer runs the same rules and signs what it sends on. The transaction is the delivery
//! client's ([`crate::deliver`]), one connection reused from message to message.
//!
//! The peer's `250` marks a recipient delivered in the spool; anything else leaves it
//! pending, never bounced: the operator chose the peer, and a refusal there says more about
//! the peer than about the message. Recipients an administrator holds
//! ([`crate::queue::holds`]) are not handed: the hold says to keep them. Each message's
//! outcome is written to the spool (synced) before the next is sent, so an interrupted drain
//! sends again at most the message in flight, and each is recorded in the tracking log (an
//! ADMIN event saying who drained it, and SEND or DEFER per recipient, source context
//! `drain to HOST:PORT`).

mod hand;

use super::control::Who;
use super::track::{TrackLimits, Tracker};
use crate::deliver::{ClientConfig, Hop, Pool, ReuseOptions};
use crate::model::{OutboundTls, SmartHost};
use crate::queue::holds::Holds;
use crate::queue::{QueueError, QueueId, QueuedMessage, Spool, SpoolOptions};
use hand::{Handing, pending};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How to drain.
#[derive(Debug, Clone)]
pub struct DrainOptions {
    /// The relay's spool folder (`queue/` and `tracking/` in it).
    pub spool: PathBuf,
    /// The peer.
    pub to: SmartHost,
    /// The name in EHLO.
    pub helo: String,
    /// Verify the peer's certificate for this name (TLS then required).
    pub tls_name: Option<String>,
    /// Verify the peer's certificate against these trust anchors (TLS then required).
    pub ca_file: Option<PathBuf>,
    /// How long the peer may take to answer a command (the final dot gets twice this).
    pub timeout: Duration,
}

/// Why the drain could not run, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// A relay has the spool open.
    #[error(
        "a relay is running on {}: stop it first (the spool is locked while it runs)",
        spool.display()
    )]
    Running {
        /// The spool folder.
        spool: PathBuf,
    },
    /// No spool there.
    #[error("{}: no relay spool here (no queue/ folder)", .0.display())]
    NoSpool(PathBuf),
    /// Run by someone other than the spool's owner (the files it writes must stay the
    /// relay's).
    #[error("{0}")]
    NotOwner(String),
    /// The spool could not be read or written.
    #[error("spool: {0}")]
    Spool(#[from] QueueError),
    /// The peer's name has no address (the resolver's answer names it).
    #[error("the peer: {0}")]
    Resolve(crate::deliver::DeliverError),
    /// The trust anchors could not be read.
    #[error(transparent)]
    Tls(#[from] super::tls::TlsError),
    /// The tracking log could not be opened.
    #[error("tracking log: {0}")]
    Tracking(std::io::Error),
    /// The holds could not be read.
    #[error("the queue's holds: {0}")]
    Holds(std::io::Error),
}

/// What became of one recipient.
#[derive(Debug, Clone, Serialize)]
pub struct RecipientResult {
    /// The address handed on (the final one).
    pub address: String,
    /// The peer took it.
    pub handed: bool,
    /// The peer's reply, or what went wrong.
    pub reply: String,
}

/// What became of one message.
#[derive(Debug, Clone, Serialize)]
pub struct MessageResult {
    /// The queue id.
    pub id: QueueId,
    /// Its Message-ID.
    pub message_id: Option<String>,
    /// The envelope sender (`None`: `<>`).
    pub sender: Option<String>,
    /// Its pending recipients, in RCPT order.
    pub recipients: Vec<RecipientResult>,
}

impl MessageResult {
    /// Every pending recipient was handed.
    pub fn handed(&self) -> bool {
        self.recipients.iter().all(|r| r.handed)
    }
}

/// The whole drain.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// The peer, `HOST:PORT`.
    pub to: String,
    /// Messages with pending recipients found in the spool.
    pub messages: usize,
    /// Messages all of whose pending recipients the peer took.
    pub messages_handed: usize,
    /// Messages that stay queued (some recipient refused, or not tried).
    pub messages_left: usize,
    /// Recipients the peer took.
    pub recipients_handed: usize,
    /// Recipients that stay pending.
    pub recipients_left: usize,
    /// Why the drain stopped before the end (the peer could not be reached).
    pub stopped: Option<String>,
}

impl Summary {
    /// Adds one message's result.
    fn count(&mut self, result: &MessageResult) {
        let handed = result.recipients.iter().filter(|r| r.handed).count();
        self.recipients_handed += handed;
        self.recipients_left += result.recipients.len() - handed;
        if result.handed() {
            self.messages_handed += 1;
        } else {
            self.messages_left += 1;
        }
    }
}

/// Hands every pending recipient of every live message to the peer; `each` sees each
/// message's result once it is recorded. Stops early when the peer cannot be reached (the
/// rest stays queued and is counted as left).
pub async fn drain(
    options: &DrainOptions,
    mut each: impl FnMut(&MessageResult),
) -> Result<Summary, DrainError> {
    let queue = options.spool.join("queue");
    if !queue.is_dir() {
        return Err(DrainError::NoSpool(options.spool.clone()));
    }
    crate::relay::control::offline::owned_by_caller(&queue).map_err(DrainError::NotOwner)?;
    let (spool, live) = match Spool::open(&queue, SpoolOptions::default()) {
        Err(QueueError::Locked { .. }) => {
            return Err(DrainError::Running {
                spool: options.spool.clone(),
            });
        }
        other => other?,
    };
    let to = format!("{}:{}", options.to.host, options.to.port);
    let hops = [peer(&options.to).await?];
    let cfg = client_config(options)?;
    // An administrator's holds stand: what they cover is not handed on.
    let holds = Holds::load(&options.spool).map_err(DrainError::Holds)?;
    let tracker = open_tracker(&options.spool)?;
    // One connection carries the whole drain (a new one after 1000 messages).
    let pool = Pool::new(ReuseOptions {
        limit: 1000,
        idle_timeout: Duration::from_secs(30),
        per_destination: 1,
        total: 1,
    });
    let context = format!("drain to {to}");
    let who = Who {
        uid: rustix::process::getuid().as_raw(),
        pid: Some(std::process::id() as i32),
    };
    let handing = Handing {
        who: &who,
        to: &to,
        spool: &spool,
        cfg: &cfg,
        pool: &pool,
        hops: &hops,
        tracker: &tracker,
        context: &context,
    };
    let mut summary = Summary {
        to: to.clone(),
        ..Summary::default()
    };
    let live: Vec<QueuedMessage> = live
        .into_iter()
        .filter(|m| !pending(m).is_empty())
        .collect();
    summary.messages = live.len();
    for m in &live {
        if let Some(why) = &summary.stopped {
            summary.messages_left += 1;
            summary.recipients_left += pending(m).len();
            tracing::debug!("{} not tried: {why}", m.id);
            continue;
        }
        let (result, unreachable) = handing.message(m, &holds).await?;
        summary.count(&result);
        if unreachable {
            let why = result.recipients.first().map(|r| r.reply.clone());
            summary.stopped = Some(why.unwrap_or_default());
        }
        each(&result);
    }
    pool.close_idle().await;
    let _ = tokio::task::spawn_blocking(move || tracker.flush()).await;
    spool.close().await?;
    Ok(summary)
}

/// The peer's addresses, found as a smart host's are (the system's resolver).
async fn peer(to: &SmartHost) -> Result<Hop, DrainError> {
    // An address needs no resolver (nor a resolv.conf, in a minimal container).
    if let Some(hop) = crate::deliver::hop::literal_hop(to) {
        return Ok(hop);
    }
    let resolver = crate::deliver::Resolver::system().map_err(DrainError::Resolve)?;
    crate::deliver::hop::smart_host(&resolver, to)
        .await
        .map_err(DrainError::Resolve)
}

/// STARTTLS when the peer offers it, its certificate unchecked, as between MX hosts; with a
/// name or trust anchors to check it against, TLS is required and the certificate verified
/// (against the Mozilla roots when only a name is given).
fn client_config(o: &DrainOptions) -> Result<ClientConfig, DrainError> {
    let verify = o.tls_name.is_some() || o.ca_file.is_some();
    let roots = Arc::new(super::tls::roots(o.ca_file.as_deref())?);
    let policy = if verify {
        OutboundTls::Required
    } else {
        OutboundTls::Opportunistic
    };
    let mut cfg = ClientConfig::new(o.helo.clone(), policy, o.tls_name.clone(), &roots, None);
    cfg.set_timeouts(o.timeout);
    Ok(cfg)
}

/// The relay's tracking log, opened so that it deletes nothing: the limits the relay was
/// started with are not known here, and it applies them itself at its next start.
fn open_tracker(spool: &Path) -> Result<Tracker, DrainError> {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 86_400);
    let limits = TrackLimits {
        max_file_size: 10 << 20,
        max_file_age: CENTURY,
        max_directory_size: 1 << 50,
        max_age: CENTURY,
        reserve: None,
    };
    Tracker::open(
        &spool.join("tracking"),
        limits,
        SpoolOptions::default().min_free_bytes,
        Arc::default(),
    )
    .map_err(DrainError::Tracking)
}
