//! The message tracking log: one JSON line per event with Exchange's field names
//! (`Get-MessageTrackingLog`), appended by one writer thread so sessions never wait on the
//! disk; and the search behind `mailflow track`.

use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

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

/// The writer's handle: cheap to clone; events are queued and written in order by one thread.
#[derive(Debug, Clone)]
pub struct Tracker {
    tx: Option<mpsc::Sender<Event>>,
}

impl Tracker {
    /// Opens (appends to) the log at `path`.
    pub fn open(path: &Path) -> std::io::Result<Tracker> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let (tx, rx) = mpsc::channel::<Event>();
        let path: PathBuf = path.to_path_buf();
        std::thread::Builder::new()
            .name("tracking-log".into())
            .spawn(move || {
                let mut out = BufWriter::new(file);
                while let Ok(first) = rx.recv() {
                    let mut next = Some(first);
                    while let Some(e) = next {
                        if let Ok(line) = serde_json::to_string(&e) {
                            if let Err(err) = writeln!(out, "{line}") {
                                tracing::warn!("tracking log {}: {err}", path.display());
                            }
                        }
                        next = rx.try_recv().ok();
                    }
                    // Flushed whenever the queue runs dry, so a reader sees every event soon
                    // without a write per event under load.
                    if let Err(err) = out.flush() {
                        tracing::warn!("tracking log {}: {err}", path.display());
                    }
                }
            })?;
        Ok(Tracker { tx: Some(tx) })
    }

    /// A tracker that writes nothing.
    pub fn disabled() -> Tracker {
        Tracker { tx: None }
    }

    /// Queues one event.
    pub fn log(&self, e: Event) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(e);
        }
    }
}

/// What `mailflow track` looks for; every given field must match.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// The Message-ID, with or without angle brackets.
    pub message_id: Option<String>,
    /// MAIL FROM, case-insensitive.
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
        }) && self
            .sender
            .as_deref()
            .is_none_or(|s| e.sender_address.as_deref().is_some_and(|x| ci(x, s)))
            && self.recipient.as_deref().is_none_or(|r| {
                e.recipient_address.iter().any(|x| ci(x, r))
                    || e.related_recipient_address
                        .as_deref()
                        .is_some_and(|x| ci(x, r))
            })
            && self.event_id.is_none_or(|id| e.event_id == Some(id))
    }
}

/// Every event in the log at `path` that `q` matches, in order. Lines that are not events
/// (a torn last line after a crash) are skipped.
pub fn search(path: &Path, q: &Query) -> std::io::Result<Vec<Event>> {
    use std::io::Read;
    // A regular file only (a FIFO would block), read a line at a time with each line bounded:
    // an event is a few hundred bytes, so a longer line (or `/dev/zero`-like input with no
    // newline) is skipped as not an event instead of filling memory.
    const MAX_LINE: u64 = 1 << 20;
    let mut input = std::io::BufReader::new(crate::input::open_regular(path)?);
    let mut found = Vec::new();
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
    // Events of one message in the order they happened, messages by their first event.
    Ok(found)
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
