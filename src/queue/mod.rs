//! The relay's durable spool: every accepted message and every recipient's progress, kept in
//! an append-only, checksummed journal that survives `kill -9`, torn writes and damaged
//! segments. The SMTP server stores; the delivery scheduler updates and reads bodies.
//!
//! # Guarantees
//!
//! - [`Spool::store`] and [`Spool::update`] return only after the record is written and
//!   `fdatasync`ed (and, for a new segment, its directory entry too). Concurrent callers share
//!   one sync (group commit): one writer thread takes every request waiting, writes them all,
//!   syncs once and answers them all.
//! - Delivery is at least once, as in Postfix: a crash between a remote server's `250` and the
//!   durable `Delivered` record sends that recipient again after restart.
//! - A torn tail is cut off on open: the newest segment ends inside a record (its header,
//!   and its head when all there, verify; the file stops before the declared end), a write
//!   the crash interrupted, never synced and so never acknowledged. Anything else is damage:
//!   a record written whole that fails a checksum, wherever it is, or bytes that are no
//!   record. Damaged records are skipped (records carry a magic and a checksum, so reading
//!   resumes at the next one whose head verifies), the segment is copied to `corrupt/` and
//!   its live messages are rewritten. Either way the segment is copied to `corrupt/` before
//!   anything is cut, and an error is logged naming segment, offset and what was found.
//! - A message record whose head verifies but whose body does not stays queued with its
//!   envelope; [`Spool::read_body`] reports [`QueueError::Corrupt`] for it, and the relay
//!   bounces its pending recipients to the sender.
//!
//! # On disk
//!
//! `<dir>/lock` (an `flock` so two processes cannot share a spool), `<dir>/journal/NNNNNNNN.seg`
//! segments and `<dir>/corrupt/` for quarantined copies. A segment is a 16-byte header
//! (`MFSPOOL\0`, version 1, a random 32-bit salt) and records:
//!
//! ```text
//! "MFR1" | kind u8 | 0 0 0 | head_len u32 | body_len u32 | head_crc u32 | body_crc u32 | head | body
//! ```
//!
//! (little endian; CRC-32 is the IEEE/zlib one, as `crc32fast` computes it; `head_crc` is
//! CRC-32 of bytes 4..16 and the head, XOR the segment salt, so record-shaped bytes inside a
//! message body are not mistaken for records when resyncing).
//! Heads are postcard: kind 1 `Message {id, received_at, meta, states}` with the message as
//! body, kind 2 `Recipients {id, updates}`, kind 3 `Done {id}`. Replay applies records in
//! segment order; a later `Message` record for an id (a compaction copy) replaces the earlier.

mod body;
mod format;
pub mod holds;
mod index;
pub mod listing;
mod notify_text;
mod recover;
mod writer;

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::net::IpAddr;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::clock::{now_micros, now_secs};
use crate::smtp::{Notify, Status};

pub use body::StoredBody;

/// The mode of every file the relay creates in its spool: messages, holds, the tracking log
/// and captured traffic are the service user's alone, whatever the umask (the folders are
/// 0700 too; a backup or a copy taken from them keeps it so).
pub const PRIVATE: u32 = 0o600;

/// Creates a folder of the spool and any missing above it, 0700 whatever the umask, as
/// [`PRIVATE`] is for files.
pub fn private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}
pub use format::MessageBytes;
use format::{Encoded, Kind, MessageHeadRef};
use index::Index;
use writer::{Request, Writer};

/// Postfix's default `message_size_limit`.
const DEFAULT_MESSAGE_SIZE_LIMIT: u64 = 10_240_000;

/// How the spool is sized and how often deliveries are retried.
#[derive(Clone, Debug)]
pub struct SpoolOptions {
    /// Size at which the journal moves on to a new segment file (default 64 MiB).
    pub segment_size: u64,
    /// `store` refuses while the file system has less free space than this plus the
    /// message (default 1.5 × Postfix's 10,240,000-byte message size limit).
    pub min_free_bytes: u64,
    /// Retry schedule, for the delivery scheduler.
    pub retry: RetryPolicy,
}

impl Default for SpoolOptions {
    fn default() -> Self {
        SpoolOptions::with_message_size_limit(DEFAULT_MESSAGE_SIZE_LIMIT)
    }
}

impl SpoolOptions {
    /// Defaults, with the free-space floor at 1.5 × `limit` as Postfix does.
    pub fn with_message_size_limit(limit: u64) -> SpoolOptions {
        SpoolOptions {
            segment_size: 64 << 20,
            min_free_bytes: limit.saturating_add(limit / 2),
            retry: RetryPolicy::default(),
        }
    }
}

/// When to try a deferred recipient again and when to give up (Postfix's defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// First retry delay (`minimal_backoff_time`, 300 s).
    pub min_backoff: Duration,
    /// Longest retry delay (`maximal_backoff_time`, 4000 s).
    pub max_backoff: Duration,
    /// How long a message may stay queued (`maximal_queue_lifetime`, 5 days).
    pub lifetime: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            min_backoff: Duration::from_secs(300),
            max_backoff: Duration::from_secs(4000),
            lifetime: Duration::from_secs(5 * 24 * 3600),
        }
    }
}

impl RetryPolicy {
    /// Wait after `attempts` failed attempts: `min_backoff` after the first (and for 0),
    /// doubling each time, never more than `max_backoff`.
    pub fn delay(&self, attempts: u32) -> Duration {
        let mut d = self.min_backoff;
        for _ in 1..attempts {
            if d >= self.max_backoff || d.is_zero() {
                break;
            }
            d = d.saturating_mul(2);
        }
        d.min(self.max_backoff)
    }

    /// Whether a message received at `received_at` has outlived `lifetime` at `now` (unix
    /// seconds), so its pending recipients should bounce.
    pub fn expired(&self, received_at: u64, now: u64) -> bool {
        now.saturating_sub(received_at) >= self.lifetime.as_secs()
    }
}

/// A spooled message's name: 16 upper-case hex digits (arrival time in microseconds, shifted,
/// plus a counter), so ids sort by arrival and never repeat.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub struct QueueId(pub String);

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl QueueId {
    /// The numeric value, if this is an id the spool generated.
    fn value(&self) -> Option<u64> {
        if self.0.len() == 16 {
            u64::from_str_radix(&self.0, 16).ok()
        } else {
            None
        }
    }
}

/// The envelope of a message being spooled.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewMessage {
    /// The reverse path; `None` is the null sender `<>`.
    pub mail_from: Option<String>,
    /// DSN `ENVID`.
    pub envid: Option<String>,
    /// DSN `RET`: `Some(true)` for FULL, `Some(false)` for HDRS.
    pub ret_full: Option<bool>,
    /// The Message-ID header, for tracking.
    pub message_id: Option<String>,
    /// The client that sent it.
    pub client_ip: Option<IpAddr>,
    /// The receive connector that accepted it.
    pub connector: Option<String>,
    /// Recipients, in RCPT order.
    pub recipients: Vec<NewRecipient>,
    /// SMTPUTF8 was requested.
    pub smtputf8: bool,
    /// BODY=8BITMIME (or the body has 8-bit bytes).
    pub eight_bit: bool,
}

/// One recipient of a spooled message.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewRecipient {
    /// Address to deliver to (after rewriting).
    pub address: String,
    /// Address as given in RCPT TO.
    pub original: String,
    /// The send connector chosen for it.
    pub send_connector: String,
    /// DSN `NOTIFY`; `None` when `RCPT TO` gave none. Stored as its text (`"NEVER"`,
    /// `"FAILURE,DELAY"`), the layout spools have always had.
    #[serde(with = "notify_text")]
    pub notify: Option<Notify>,
    /// DSN `ORCPT`.
    pub orcpt: Option<String>,
}

/// Where one recipient stands.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum RecipientState {
    /// Still to deliver.
    Pending {
        /// Attempts made so far.
        attempts: u32,
        /// Not before this time (unix seconds).
        next_attempt: u64,
        /// Why the last attempt failed.
        last_error: Option<String>,
    },
    /// Accepted by the next hop.
    Delivered {
        /// The next hop's reply.
        reply: String,
    },
    /// Failed for good (bounced or expired): the status reported. A newtype variant of a
    /// struct encodes in postcard exactly as the struct variant `Failed { code, enhanced,
    /// text }` that spools were written with (see [`Status`]).
    Failed(Status),
}

/// A message in the spool, as the scheduler sees it (the body stays on disk: [`Spool::read_body`]).
#[derive(Clone, Debug)]
pub struct QueuedMessage {
    /// Its id.
    pub id: QueueId,
    /// When it was stored (unix seconds).
    pub received_at: u64,
    /// Its envelope.
    pub meta: NewMessage,
    /// One per `meta.recipients`, same order.
    pub states: Vec<RecipientState>,
    /// Body size in bytes.
    pub size: u64,
}

/// Counters for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// `fdatasync` calls made for records (group commit makes this much less than `records`).
    pub syncs: u64,
    /// Records written since open.
    pub records: u64,
    /// Segment files in the journal.
    pub segments: usize,
    /// Messages live.
    pub live: usize,
}

/// What a compaction pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Segment files deleted.
    pub segments_deleted: usize,
    /// Records copied forward out of sparse or damaged segments.
    pub records_moved: usize,
}

/// Why the spool could not do something.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Free space is below the floor (SMTP `452 4.3.1`).
    #[error("insufficient system storage: {free} bytes free, {needed} needed")]
    NoSpace {
        /// Bytes available to unprivileged users.
        free: u64,
        /// Floor plus the message.
        needed: u64,
    },
    /// Reading or writing the journal failed; nothing was acknowledged (SMTP `451 4.3.0`).
    #[error("spool I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Stored data failed its checksum.
    #[error("spool data is corrupt: {detail}")]
    Corrupt {
        /// What and where.
        detail: String,
    },
    /// No live message has this id.
    #[error("no live message {0} in the spool")]
    UnknownId(QueueId),
    /// An update named a recipient the message does not have.
    #[error("message {id} has no recipient {index}")]
    NoSuchRecipient {
        /// The message.
        id: QueueId,
        /// The index given.
        index: usize,
    },
    /// `store` was given a message without recipients.
    #[error("a message needs at least one recipient")]
    NoRecipients,
    /// Another process (or another `Spool` in this one) has the spool open.
    #[error("the spool in {} is in use", path.display())]
    Locked {
        /// The spool directory.
        path: PathBuf,
    },
    /// The spool has been closed.
    #[error("the spool is closed")]
    Closed,
    /// A segment was written by a newer mailflow: nothing is read or changed.
    #[error("{}: written by a newer mailflow, format {version}; this one reads up to {supported}\n  help: run the newer mailflow on this spool, or drain its queue with it first", path.display())]
    NewerFormat {
        /// The segment.
        path: PathBuf,
        /// Its format version.
        version: u32,
        /// The newest this build reads.
        supported: u32,
    },
    /// A record could not be encoded.
    #[error("cannot encode a spool record: {0}")]
    Encode(#[from] postcard::Error),
}

impl QueueError {
    /// The status for answering a client after this error. The text names no cause: the
    /// client cannot act on the spool's details, the log has them.
    pub fn smtp_status(&self) -> Status {
        match self {
            QueueError::NoSpace { .. } => Status::new(452, "4.3.1", "insufficient system storage"),
            _ => Status::new(451, "4.3.0", "local error in processing; try again later"),
        }
    }

    /// A copy for answering several waiters with one failure.
    pub(crate) fn duplicate(&self) -> QueueError {
        match self {
            QueueError::Io(e) => QueueError::Io(std::io::Error::new(e.kind(), e.to_string())),
            QueueError::NoSpace { free, needed } => QueueError::NoSpace {
                free: *free,
                needed: *needed,
            },
            QueueError::UnknownId(id) => QueueError::UnknownId(id.clone()),
            QueueError::NoSuchRecipient { id, index } => QueueError::NoSuchRecipient {
                id: id.clone(),
                index: *index,
            },
            QueueError::NoRecipients => QueueError::NoRecipients,
            QueueError::Locked { path } => QueueError::Locked { path: path.clone() },
            QueueError::Closed => QueueError::Closed,
            other => QueueError::Corrupt {
                detail: other.to_string(),
            },
        }
    }
}

/// State shared by handles and the writer thread.
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) options: SpoolOptions,
    pub(crate) index: Mutex<Index>,
    pub(crate) syncs: AtomicU64,
    pub(crate) records: AtomicU64,
    last_id: AtomicU64,
}

impl Shared {
    pub(crate) fn index(&self) -> MutexGuard<'_, Index> {
        // The index is only changed by whole-operation calls that do not panic; a poisoned
        // lock still holds a consistent index.
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn next_id(&self) -> QueueId {
        let now = (now_micros() << 12).max(1);
        let mut cur = self.last_id.load(Ordering::Relaxed);
        loop {
            let next = now.max(cur.saturating_add(1));
            match self.last_id.compare_exchange_weak(
                cur,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return QueueId(format!("{next:016X}")),
                Err(seen) => cur = seen,
            }
        }
    }
}

struct Inner {
    shared: Arc<Shared>,
    tx: Option<mpsc::Sender<Request>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel stops the writer after what it has queued; waiting for it
        // releases the lock, so the spool can be reopened at once.
        drop(self.tx.take());
        let handle = self
            .thread
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

/// The durable spool. Cheap to clone; all clones share one journal and one writer thread.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

impl fmt::Debug for Spool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.inner.shared.dir)
            .finish_non_exhaustive()
    }
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir`, replays the journal and returns the
    /// messages that still have pending recipients, oldest first. Damaged segments are
    /// quarantined and what can be read is kept; only I/O failures on the directory itself
    /// or a spool locked by another process stop it.
    pub fn open(
        dir: &Path,
        options: SpoolOptions,
    ) -> Result<(Spool, Vec<QueuedMessage>), QueueError> {
        let journal = dir.join("journal");
        let corrupt = dir.join("corrupt");
        private_dir(&journal)?;
        private_dir(&corrupt)?;
        let lock = lock_dir(dir)?;
        let rec = recover::replay(&journal, &corrupt)?;
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            options,
            index: Mutex::new(rec.index),
            syncs: AtomicU64::new(0),
            records: AtomicU64::new(0),
            last_id: AtomicU64::new(rec.max_id),
        });
        let mut writer = Writer::new(
            Arc::clone(&shared),
            journal,
            rec.max_seg.saturating_add(1),
            rec.damaged,
            lock,
        )?;
        if let Err(e) = writer.compact() {
            tracing::warn!(error = %e, "spool compaction after recovery failed; will retry");
        }
        let live = shared.index().snapshot_all();
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer.run(rx))?;
        let spool = Spool {
            inner: Arc::new(Inner {
                shared,
                tx: Some(tx),
                thread: Mutex::new(Some(handle)),
            }),
        };
        Ok((spool, live))
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    fn send(&self, req: Request) -> Result<(), QueueError> {
        match &self.inner.tx {
            Some(tx) => tx.send(req).map_err(|_| QueueError::Closed),
            None => Err(QueueError::Closed),
        }
    }

    /// Spools a message. Returns after it is on disk and synced; every recipient starts
    /// `Pending { attempts: 0, next_attempt: now }`. Fails with [`QueueError::NoSpace`] when
    /// the file system is short of space and [`QueueError::Io`] when writing fails; in both
    /// cases nothing was stored and the spool remains usable. The body may come in parts
    /// ([`MessageBytes`]), written one after another without being joined first.
    pub async fn store(
        &self,
        meta: NewMessage,
        body: impl Into<MessageBytes>,
    ) -> Result<QueuedMessage, QueueError> {
        let body = body.into();
        if meta.recipients.is_empty() {
            return Err(QueueError::NoRecipients);
        }
        let free = free_bytes(&self.shared().dir)?;
        let needed = self
            .shared()
            .options
            .min_free_bytes
            .saturating_add(body.len());
        if free < needed {
            return Err(QueueError::NoSpace { free, needed });
        }
        let now = now_secs();
        let id = self.shared().next_id();
        let states = vec![
            RecipientState::Pending {
                attempts: 0,
                next_attempt: now,
                last_error: None,
            };
            meta.recipients.len()
        ];
        let head = postcard::to_stdvec(&MessageHeadRef {
            id: &id,
            received_at: now,
            meta: &meta,
            states: &states,
        })?;
        let size = body.len();
        let enc = Encoded::new(Kind::Message, head, body);
        let msg = QueuedMessage {
            id,
            received_at: now,
            meta,
            states,
            size,
        };
        let (reply, rx) = oneshot::channel();
        self.send(Request::Store {
            enc,
            msg: Box::new(msg.clone()),
            reply,
        })?;
        rx.await.map_err(|_| QueueError::Closed)??;
        Ok(msg)
    }

    /// Records recipient outcomes (index into `meta.recipients`, new state), durably. When no
    /// recipient is left pending the message is finished and leaves the spool.
    pub async fn update(
        &self,
        id: &QueueId,
        updates: Vec<(usize, RecipientState)>,
    ) -> Result<(), QueueError> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Update {
            id: id.clone(),
            updates,
            reply,
        })?;
        rx.await.map_err(|_| QueueError::Closed)?
    }

    /// Removes a message whatever its recipients' states (an operator's `queue delete`).
    pub async fn remove(&self, id: &QueueId) -> Result<(), QueueError> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Remove {
            id: id.clone(),
            reply,
        })?;
        rx.await.map_err(|_| QueueError::Closed)?
    }

    /// Reads a live message's body from the journal and checks it against its checksum:
    /// [`QueueError::Corrupt`] when it fails (recovery keeps a message whose envelope is
    /// intact and whose body is damaged, so that it can be bounced rather than lost).
    /// Blocking file I/O: call it from `spawn_blocking` in async code.
    pub fn read_body(&self, id: &QueueId) -> Result<Vec<u8>, QueueError> {
        // The index's lock is held only to find the body: a compaction may delete the
        // segment meanwhile, and the open handle still reads it.
        let (loc, file) = self.shared().index().body_of(id)?;
        read_checked(id, loc, &file)
    }

    /// Where a live message's body lies, for reading it in pieces ([`StoredBody`]), not
    /// yet checked.
    pub fn stored_body(&self, id: &QueueId) -> Result<StoredBody, QueueError> {
        let (loc, file) = self.shared().index().body_of(id)?;
        Ok(StoredBody::new(id, loc, file))
    }

    /// A live message, if there is one with this id.
    pub fn get(&self, id: &QueueId) -> Option<QueuedMessage> {
        self.shared().index().snapshot(id)
    }

    /// Every live message, oldest first.
    pub fn live(&self) -> Vec<QueuedMessage> {
        self.shared().index().snapshot_all()
    }

    /// When the oldest live message arrived (unix seconds), if any.
    pub fn oldest(&self) -> Option<u64> {
        self.shared()
            .index()
            .live
            .values()
            .next()
            .map(|e| e.received_at)
    }

    /// Number of live messages.
    pub fn len(&self) -> usize {
        self.shared().index().live.len()
    }

    /// Whether no message is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a message of `size` bytes would be accepted now (for `MAIL FROM ... SIZE=`).
    pub fn has_room(&self, size: u64) -> bool {
        match free_bytes(&self.shared().dir) {
            Ok(free) => free >= self.shared().options.min_free_bytes.saturating_add(size),
            Err(_) => false,
        }
    }

    /// Counters since open.
    pub fn stats(&self) -> SpoolStats {
        let idx = self.shared().index();
        SpoolStats {
            syncs: self.shared().syncs.load(Ordering::Relaxed),
            records: self.shared().records.load(Ordering::Relaxed),
            segments: idx.segments.len(),
            live: idx.live.len(),
        }
    }

    /// Runs a compaction pass now (it also runs after each new segment and once a minute).
    pub async fn compact(&self) -> Result<CompactReport, QueueError> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Compact { reply })?;
        rx.await.map_err(|_| QueueError::Closed)?
    }

    /// Finishes what is queued and stops the writer; other clones then get
    /// [`QueueError::Closed`].
    pub async fn close(self) -> Result<(), QueueError> {
        let (reply, rx) = oneshot::channel();
        if self.send(Request::Close { reply }).is_ok() {
            let _ = rx.await;
        }
        Ok(())
    }

    /// Makes the next `n` syncs fail, to test error handling.
    #[cfg(test)]
    pub(crate) fn fail_next_syncs(&self, n: u32) -> Result<(), QueueError> {
        self.send(Request::FailSyncs(n))
    }
}

/// A body at `loc` in `file`, checked against its checksum.
fn read_checked(id: &QueueId, loc: index::BodyLoc, file: &File) -> Result<Vec<u8>, QueueError> {
    let mut body = vec![0u8; loc.len as usize];
    file.read_exact_at(&mut body, loc.offset)?;
    if crc32fast::hash(&body) != loc.crc {
        return Err(QueueError::Corrupt {
            detail: format!("body of {id} fails its checksum (segment {})", loc.seg),
        });
    }
    Ok(body)
}

/// A stopped spool as it stands, read without writing a record: for looking at the queue
/// while no relay runs (`mailflow queue list` on a stopped relay). It holds the spool's
/// lock, so no relay starts meanwhile. Recovery runs as at every open (a torn tail is cut,
/// damaged segments are copied to `corrupt/`), but no segment is started and nothing is
/// compacted.
pub struct Inspection {
    index: Index,
    _lock: SpoolLock,
}

impl Inspection {
    /// Opens the spool in `dir` (which must exist) for reading.
    pub fn open(dir: &Path) -> Result<Inspection, QueueError> {
        let journal = dir.join("journal");
        let corrupt = dir.join("corrupt");
        private_dir(&corrupt)?;
        let lock = lock_dir(dir)?;
        let rec = recover::replay(&journal, &corrupt)?;
        Ok(Inspection {
            index: rec.index,
            _lock: lock,
        })
    }

    /// Every live message, oldest first.
    pub fn live(&self) -> Vec<QueuedMessage> {
        self.index.snapshot_all()
    }

    /// A live message's body, checked as [`Spool::read_body`] checks it.
    pub fn read_body(&self, id: &QueueId) -> Result<Vec<u8>, QueueError> {
        let (loc, file) = self.index.body_of(id)?;
        read_checked(id, loc, &file)
    }
}

fn lock_dir(dir: &Path) -> Result<SpoolLock, QueueError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(PRIVATE)
        .open(dir.join("lock"))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
        |e| {
            if e == rustix::io::Errno::WOULDBLOCK {
                QueueError::Locked {
                    path: dir.to_path_buf(),
                }
            } else {
                QueueError::Io(e.into())
            }
        },
    )?;
    Ok(SpoolLock(file))
}

/// The spool directory's `flock`, released explicitly when dropped. Closing our descriptor
/// is not enough: a child process forked meanwhile (by anything in this process) shares the open
/// file description until it execs, and the lock would outlive `close` for that long.
pub(crate) struct SpoolLock(File);

impl Drop for SpoolLock {
    fn drop(&mut self) {
        let _ = rustix::fs::flock(&self.0, rustix::fs::FlockOperation::Unlock);
    }
}

fn free_bytes(dir: &Path) -> Result<u64, QueueError> {
    let st = rustix::fs::statvfs(dir).map_err(std::io::Error::from)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::format::{DoneHead, RecipientsHead, SEG_HEADER_LEN};
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    fn message() -> NewMessage {
        NewMessage {
            mail_from: None,
            envid: None,
            ret_full: None,
            message_id: None,
            client_ip: None,
            connector: None,
            recipients: vec![NewRecipient {
                address: "a@example.net".into(),
                original: "a@example.net".into(),
                send_connector: "out".into(),
                notify: Some(Notify {
                    never: true,
                    ..Notify::default()
                }),
                orcpt: Some("rfc822;a@example.net".into()),
            }],
            smtputf8: true,
            eight_bit: false,
        }
    }

    /// `Failed` was a struct variant before [`Status`] existed; spools hold records in that
    /// layout, so both must encode alike.
    #[test]
    fn failed_encodes_as_the_struct_variant_did() {
        #[derive(Serialize)]
        #[expect(dead_code, reason = "mirrors the old layout; only Failed is built")]
        enum Old {
            Pending {
                attempts: u32,
                next_attempt: u64,
                last_error: Option<String>,
            },
            Delivered {
                reply: String,
            },
            Failed {
                code: u16,
                enhanced: String,
                text: String,
            },
        }
        let old = postcard::to_stdvec(&Old::Failed {
            code: 550,
            enhanced: "5.1.1".into(),
            text: "no such user".into(),
        })
        .unwrap();
        let new = RecipientState::Failed(Status::new(550, "5.1.1", "no such user"));
        assert_eq!(postcard::to_stdvec(&new).unwrap(), old);
        assert_eq!(postcard::from_bytes::<RecipientState>(&old).unwrap(), new);
    }

    #[test]
    fn tuple_encoding_is_a_recipients_head() {
        let id = QueueId("0123456789ABCDEF".into());
        let updates = vec![(3u32, RecipientState::Failed(Status::new(550, "5.1.1", "x")))];
        let tuple = postcard::to_stdvec(&(&id, &updates)).unwrap();
        let head = postcard::to_stdvec(&RecipientsHead {
            id: id.clone(),
            updates: updates.clone(),
        })
        .unwrap();
        assert_eq!(tuple, head);
    }

    #[test]
    fn failed_sync_is_reported_and_the_spool_stays_usable() {
        let tmp = tempfile::tempdir().unwrap();
        let rt = rt();
        let (spool, _) = Spool::open(tmp.path(), SpoolOptions::default()).unwrap();
        spool.fail_next_syncs(1).unwrap();
        let err = rt
            .block_on(spool.store(message(), b"lost".to_vec()))
            .unwrap_err();
        assert!(matches!(err, QueueError::Io(_)), "{err:?}");
        assert_eq!(
            (err.smtp_status().code, err.smtp_status().enhanced.as_str()),
            (451, "4.3.0")
        );
        assert!(spool.is_empty());
        let kept = rt
            .block_on(spool.store(message(), b"kept".to_vec()))
            .unwrap();
        assert_eq!(spool.read_body(&kept.id).unwrap(), b"kept");
        rt.block_on(spool.close()).unwrap();

        let (spool, live) = Spool::open(tmp.path(), SpoolOptions::default()).unwrap();
        assert_eq!(
            live.len(),
            1,
            "the unacknowledged message must not come back"
        );
        assert_eq!(live[0].id, kept.id);
        assert_eq!(
            live[0].meta.recipients[0].notify.map(Notify::as_str),
            Some("NEVER")
        );
        assert_eq!(spool.read_body(&kept.id).unwrap(), b"kept");
    }

    /// A body given in parts is stored as one, small parts and parts past the direct-write
    /// size alike, and reads back whole after a restart.
    #[test]
    fn a_body_in_parts_is_stored_as_one() {
        let tmp = tempfile::tempdir().unwrap();
        let rt = rt();
        let (spool, _) = Spool::open(tmp.path(), SpoolOptions::default()).unwrap();
        let big = vec![b'x'; 200 << 10];
        let small = MessageBytes::new([
            bytes::Bytes::from_static(b"Received: a\r\n"),
            bytes::Bytes::new(),
            bytes::Bytes::from_static(b"\r\nbody\r\n"),
        ]);
        assert_eq!(small.parts().len(), 2);
        let large = MessageBytes::new([
            bytes::Bytes::from_static(b"Received: b\r\n"),
            bytes::Bytes::from(big.clone()),
        ]);
        let a = rt.block_on(spool.store(message(), small)).unwrap();
        let b = rt.block_on(spool.store(message(), large)).unwrap();
        assert_eq!(a.size, 21);
        rt.block_on(spool.close()).unwrap();
        let (spool, _) = Spool::open(tmp.path(), SpoolOptions::default()).unwrap();
        assert_eq!(
            spool.read_body(&a.id).unwrap(),
            b"Received: a\r\n\r\nbody\r\n"
        );
        assert_eq!(
            spool.read_body(&b.id).unwrap(),
            [b"Received: b\r\n".as_slice(), &big].concat()
        );
    }

    /// A message body carrying a record-shaped string (here a Done for another message) is
    /// not taken for a record when reading resynchronises through it after damage.
    #[test]
    fn forged_record_in_a_body_is_not_replayed() {
        let tmp = tempfile::tempdir().unwrap();
        let rt = rt();
        let (spool, _) = Spool::open(tmp.path(), SpoolOptions::default()).unwrap();
        let a = rt.block_on(spool.store(message(), b"a".to_vec())).unwrap();
        let forged = Encoded::new(
            Kind::Done,
            postcard::to_stdvec(&DoneHead { id: a.id.clone() }).unwrap(),
            Vec::new(),
        );
        let mut body = b"innocent text ".to_vec();
        for salt in [0u32, 1, u32::MAX] {
            body.extend_from_slice(&forged.header(salt));
            body.extend_from_slice(&forged.head);
        }
        let b = rt.block_on(spool.store(message(), body)).unwrap();
        let c = rt.block_on(spool.store(message(), b"c".to_vec())).unwrap();
        rt.block_on(spool.close()).unwrap();

        let journal = tmp.path().join("journal");
        let seg = recover::segment_path(&journal, 1);
        let mut bytes = fs::read(&seg).unwrap();
        // Break b's record header (its magic), so reading must resync through its body.
        let b_at = bytes
            .windows(b.id.0.len())
            .position(|w| w == b.id.0.as_bytes())
            .unwrap();
        let rec_at = bytes[..b_at]
            .windows(4)
            .rposition(|w| w == format::REC_MAGIC)
            .unwrap();
        assert!(rec_at as u64 >= SEG_HEADER_LEN);
        bytes[rec_at] ^= 0xFF;
        fs::write(&seg, &bytes).unwrap();

        let (_spool, live) = Spool::open(tmp.path(), SpoolOptions::default()).unwrap();
        let ids: Vec<QueueId> = live.into_iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![a.id, c.id]);
    }
}
