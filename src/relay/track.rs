//! The message tracking log: one JSON line per event with Exchange's field names
//! (`Get-MessageTrackingLog`), appended by one writer thread so sessions never wait on the
//! disk, in a folder of files bounded in size and age ([`files`]), with refused recipients
//! counted rather than written one by one ([`refusals`]); and the search behind
//! `mailflow track`, across the rotated files.

pub(crate) mod files;
mod refusals;

pub use files::{LIVE, TrackLimits, rotated_files};
pub use refusals::Refusal;

use files::LogFiles;
use refusals::Refusals;
use serde::{Deserialize, Serialize};
use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Exchange's event ids, as it spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EventId {
    /// A message was accepted (250 after DATA/BDAT LAST).
    Receive,
    /// A recipient was rewritten or forwarded.
    Resolve,
    /// A group was expanded.
    Expand,
    /// A rule or contact redirected a recipient.
    Redirect,
    /// A transport rule fired.
    AgentInfo,
    /// A recipient was dropped on purpose.
    Drop,
    /// Delivered to the next hop.
    Send,
    /// Delivery failed temporarily; it will be retried.
    Defer,
    /// Delivery failed for good (or a recipient was refused).
    Fail,
    /// A delivery status notification was generated.
    Dsn,
    /// An administrator acted on the queue (`mailflow queue ...`): who and what in
    /// `source-context`.
    Admin,
}

/// One line of the log. Field names are Exchange's where it has one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Event {
    /// When, RFC 3339 UTC.
    pub date_time: String,
    /// What happened.
    pub event_id: Option<EventId>,
    /// Which component: SMTP, AGENT (rules), ROUTING, QUEUE, DSN.
    pub source: String,
    /// The client's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    /// The next hop's address, or the local address for RECEIVE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_ip: Option<String>,
    /// The next hop's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_hostname: Option<String>,
    /// Receive or send connector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector_id: Option<String>,
    /// The queue id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_message_id: Option<String>,
    /// The Message-ID header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// MAIL FROM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_address: Option<String>,
    /// The SRS envelope sender a forwarded message was sent with (`sender-address` stays
    /// the original, to whom reports go).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub srs_sender_address: Option<String>,
    /// Recipients the event is about.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipient_address: Vec<String>,
    /// Per recipient: the reply or status.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipient_status: Vec<String>,
    /// The address a RESOLVE/REDIRECT/EXPAND came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub related_recipient_address: Option<String>,
    /// Message size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_bytes: Option<u64>,
    /// Number of recipients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient_count: Option<usize>,
    /// Subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_subject: Option<String>,
    /// The rule (AGENTINFO) or the reason (DROP, FAIL, DEFER).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_context: Option<String>,
    /// The originating organization (XOORG), when trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// Incoming (received from outside the organization) or Originating (internal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directionality: Option<String>,
}

impl Event {
    /// A new event stamped now.
    pub fn new(id: EventId, source: &str) -> Event {
        Event {
            date_time: rfc3339(SystemTime::now()),
            event_id: Some(id),
            source: source.to_string(),
            ..Event::default()
        }
    }
}

/// `2026-11-23T10:00:00.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's
/// algorithm): the tracking log needs dates, not a date library.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Events waiting for the writer, at most; past it an event is dropped and counted, so a
/// disk slower than the traffic costs events, never the relay's memory.
const BACKLOG: usize = 65_536;
/// Messages the writer takes before it flushes and looks at the clock.
const BATCH: usize = 4096;

enum Msg {
    Event(Box<Event>),
    Refused(Refusal),
    /// Write every count now, flush, and answer.
    Flush(mpsc::SyncSender<()>),
}

/// The writer's handle: cheap to clone; events are queued and written in order by one thread.
#[derive(Debug, Clone)]
pub struct Tracker {
    tx: Option<mpsc::SyncSender<Msg>>,
    dropped: Arc<AtomicU64>,
}

impl Tracker {
    /// Opens the log folder `dir` (creating it), bounded by `limits`. Nothing is written
    /// while the file system has less than `stop_below` bytes free (the spool's floor plus
    /// the reserve); events dropped for that, or for a full backlog, are added to `dropped`.
    pub fn open(
        dir: &Path,
        limits: TrackLimits,
        stop_below: u64,
        dropped: Arc<AtomicU64>,
    ) -> std::io::Result<Tracker> {
        let mut files = LogFiles::open(
            dir,
            limits,
            stop_below,
            Arc::clone(&dropped),
            SystemTime::now(),
        )?;
        // The log of earlier versions: one file beside the folder.
        if let Some(old) = dir.parent().map(|p| p.join(LIVE)) {
            if old.is_file() {
                files.adopt(&old, SystemTime::now())?;
            }
        }
        let (tx, rx) = mpsc::sync_channel::<Msg>(BACKLOG);
        std::thread::Builder::new()
            .name("tracking-log".into())
            .spawn(move || write_loop(&rx, files))?;
        Ok(Tracker {
            tx: Some(tx),
            dropped,
        })
    }

    /// A tracker that writes nothing.
    pub fn disabled() -> Tracker {
        Tracker {
            tx: None,
            dropped: Arc::default(),
        }
    }

    fn send(&self, m: Msg) {
        if let Some(tx) = &self.tx {
            if let Err(mpsc::TrySendError::Full(_)) = tx.try_send(m) {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Queues one event.
    pub fn log(&self, e: Event) {
        self.send(Msg::Event(Box::new(e)));
    }

    /// Counts one refused recipient (see [`refusals`]).
    pub fn refused(&self, r: Refusal) {
        self.send(Msg::Refused(r));
    }

    /// Writes what is counted and buffered, and waits (up to 10 s) until it is written: at
    /// shutdown, so no count is lost.
    pub fn flush(&self) {
        if let Some(tx) = &self.tx {
            let (ack, done) = mpsc::sync_channel(1);
            if tx.send(Msg::Flush(ack)).is_ok() {
                let _ = done.recv_timeout(Duration::from_secs(10));
            }
        }
    }
}

/// Appends events to the live file of the log folder `dir` of a relay that is not running
/// (`mailflow queue` on a stopped spool): no rotation, which the relay does when it starts.
pub fn append(dir: &Path, events: &[Event]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    crate::queue::private_dir(dir)?;
    let mut out = Vec::new();
    for e in events {
        serde_json::to_writer(&mut out, e).map_err(std::io::Error::other)?;
        out.push(b'\n');
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(crate::queue::PRIVATE)
        .open(dir.join(LIVE))?;
    f.write_all(&out)?;
    f.sync_data()
}

fn write_event(files: &mut LogFiles, e: &Event, now: SystemTime) {
    if let Ok(mut line) = serde_json::to_vec(e) {
        line.push(b'\n');
        files.write(&line, now);
    }
}

/// The writer thread: takes what is queued in batches, flushes whenever the queue runs dry
/// (a reader sees every event soon, without a write per event under load), writes the
/// counts that are due, and rotates and deletes by age even when nothing comes.
fn write_loop(rx: &mpsc::Receiver<Msg>, mut files: LogFiles) {
    let mut refusals = Refusals::default();
    let mut last_tick = SystemTime::now();
    loop {
        let wait = if refusals.is_empty() {
            Duration::from_secs(60)
        } else {
            Duration::from_secs(1)
        };
        let mut next = match rx.recv_timeout(wait) {
            Ok(m) => Some(m),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let mut acks = Vec::new();
        let mut taken = 0;
        while let Some(m) = next {
            let now = SystemTime::now();
            match m {
                Msg::Event(e) => write_event(&mut files, &e, now),
                Msg::Refused(r) => refusals.add(r, now),
                Msg::Flush(ack) => {
                    for e in refusals.drain() {
                        write_event(&mut files, &e, now);
                    }
                    acks.push(ack);
                }
            }
            taken += 1;
            next = if taken < BATCH {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        let now = SystemTime::now();
        for e in refusals.due(now) {
            write_event(&mut files, &e, now);
        }
        files.flush(now);
        if now.duration_since(last_tick).unwrap_or_default() >= Duration::from_secs(60) {
            files.tick(now);
            last_tick = now;
        }
        for ack in acks {
            let _ = ack.send(());
        }
    }
    let now = SystemTime::now();
    for e in refusals.drain() {
        write_event(&mut files, &e, now);
    }
    files.flush(now);
}

/// What `mailflow track` looks for; every given field must match.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// The Message-ID, with or without angle brackets.
    pub message_id: Option<String>,
    /// MAIL FROM (or the SRS sender it left with), case-insensitive.
    pub sender: Option<String>,
    /// Any recipient of the event, case-insensitive.
    pub recipient: Option<String>,
    /// Only this event.
    pub event_id: Option<EventId>,
}

fn bare_id(s: &str) -> &str {
    s.trim().trim_start_matches('<').trim_end_matches('>')
}

impl Query {
    /// Whether `e` is wanted.
    pub fn matches(&self, e: &Event) -> bool {
        let ci = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        self.message_id.as_deref().is_none_or(|m| {
            e.message_id
                .as_deref()
                .is_some_and(|x| bare_id(x) == bare_id(m))
        }) && self.sender.as_deref().is_none_or(|s| {
            e.sender_address.as_deref().is_some_and(|x| ci(x, s))
                || e.srs_sender_address.as_deref().is_some_and(|x| ci(x, s))
        }) && self.recipient.as_deref().is_none_or(|r| {
            e.recipient_address.iter().any(|x| ci(x, r))
                || e.related_recipient_address
                    .as_deref()
                    .is_some_and(|x| ci(x, r))
        }) && self.event_id.is_none_or(|id| e.event_id == Some(id))
    }
}

/// Every event in the log at `path` that `q` matches, in order. `path` is the log's folder
/// (the rotated files oldest first, then the live file) or one file of it. Lines that are not
/// events (a torn last line after a crash) are skipped.
pub fn search(path: &Path, q: &Query) -> std::io::Result<Vec<Event>> {
    use std::os::unix::fs::MetadataExt;
    let mut found = Vec::new();
    if !std::fs::metadata(path)?.is_dir() {
        search_in(crate::input::open_regular(path)?, q, &mut found)?;
        return Ok(found);
    }
    let open = |p: &Path| match crate::input::open_regular(p) {
        Ok(f) => Ok(Some(f)),
        // Rotated away or deleted since the folder was listed.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    };
    // The live file is opened before the folder is listed, so a rotation in between shows as
    // a rotated file; one that happens after is the file already open, read last.
    let live = open(&path.join(LIVE))?;
    let live_id = match &live {
        Some(f) => f.metadata().map(|m| Some((m.dev(), m.ino())))?,
        None => None,
    };
    for p in rotated_files(path)? {
        let Some(f) = open(&p)? else { continue };
        let m = f.metadata()?;
        if Some((m.dev(), m.ino())) != live_id {
            search_in(f, q, &mut found)?;
        }
    }
    if let Some(f) = live {
        search_in(f, q, &mut found)?;
    }
    Ok(found)
}

fn search_in(file: std::fs::File, q: &Query, found: &mut Vec<Event>) -> std::io::Result<()> {
    use std::io::Read;
    // A regular file only (a FIFO would block), read a line at a time with each line bounded:
    // an event is a few hundred bytes, so a longer line (or `/dev/zero`-like input with no
    // newline) is skipped as not an event instead of filling memory.
    const MAX_LINE: u64 = 1 << 20;
    let mut input = std::io::BufReader::new(file);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = input.by_ref().take(MAX_LINE).read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        if !line.ends_with(b"\n") && n as u64 == MAX_LINE {
            // Skip the rest of the overlong line.
            loop {
                let buf = input.fill_buf()?;
                if buf.is_empty() {
                    break;
                }
                match buf.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        input.consume(i + 1);
                        break;
                    }
                    None => {
                        let len = buf.len();
                        input.consume(len);
                    }
                }
            }
            continue;
        }
        if let Ok(e) = serde_json::from_slice::<Event>(&line) {
            if q.matches(&e) {
                found.push(e);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates_are_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_392_000_123);
        assert_eq!(rfc3339(t), "2026-11-23T00:00:00.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(&rfc3339(leap)[..10], "2000-02-29");
    }

    #[test]
    fn queries_match_ids_with_or_without_brackets() {
        let mut e = Event::new(EventId::Receive, "SMTP");
        e.message_id = Some("<a@b>".into());
        e.sender_address = Some("John@Example.com".into());
        e.recipient_address = vec!["x@y.example".into()];
        let q = Query {
            message_id: Some("a@b".into()),
            sender: Some("john@example.com".into()),
            recipient: Some("X@y.example".into()),
            event_id: Some(EventId::Receive),
        };
        assert!(q.matches(&e));
        let other = Query {
            event_id: Some(EventId::Send),
            ..Query::default()
        };
        assert!(!other.matches(&e));
    }
}
