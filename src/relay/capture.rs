//! Captured traffic (`mailflow relay --capture`): for each message the relay evaluates at
//! the end of data, what the evaluator saw, one JSON line in `SPOOL/capture/`: the envelope
//! (sender, recipients, the receive connector, the address the client reached, the client's
//! address, the TLS peer's verified name, XOORG), the authentication results, the size, and
//! only the header fields the rules read (the rewritten address fields, the organization headers, the fields
//! conditions name, the Subject when a rule reads or changes it). Never the body. Off by
//! default; rotated and capped like the tracking log ([`super::track::files`]). `mailflow
//! diff` replays it ([`Captured::input`]).

use super::track::files::{LogFiles, TrackLimits};
use crate::auth::AuthResults;
use crate::compile::Table;
use crate::diff::Input;
use crate::diff::inputs::EnvelopeRecord;
use crate::eval::{Envelope, Message};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

/// The files' stem in the folder: `capture.log`, `capture-NNNNNNNNNN.log`.
pub const STEM: &str = "capture";

/// The largest body a replayed message is given (a larger captured size is cut to it).
const MAX_BODY: usize = 64 << 20;

/// Records waiting for the writer at most; past it they are dropped and counted.
const BACKLOG: usize = 10_000;

/// One message as the evaluator saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Captured {
    /// When, RFC 3339 UTC.
    pub date_time: String,
    /// The envelope (its `auth` is left out: `auth` below has the whole results).
    pub envelope: EnvelopeRecord,
    /// What verifying it found, when it was verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthResults>,
    /// The message's size in bytes.
    pub size: u64,
    /// The header fields the rules read: name and value as received (lossy UTF-8).
    pub headers: Vec<(String, String)>,
}

/// Whether the capture keeps header field `name` for rules in `table`.
fn kept(table: &Table, name: &str) -> bool {
    // What rewriting changes, and the tenant header the organization stage reads.
    crate::eval::OUTBOUND_HEADERS
        .iter()
        .chain(crate::eval::INBOUND_HEADERS)
        .chain(&["X-OriginatorOrg"])
        .any(|n| n.eq_ignore_ascii_case(name))
        || name
            .get(..27)
            .is_some_and(|p| p.eq_ignore_ascii_case("X-MS-Exchange-Organization-"))
        || table.rules.tests_header(name)
        || (name.eq_ignore_ascii_case("Subject") && table.rules.uses_subject())
}

impl Captured {
    /// What the evaluator saw of one message under `table`, with the header fields the
    /// `--shadow` candidate reads too (`candidate`): a capture then serves the review of
    /// the change being tried.
    pub fn of(
        table: &Table,
        candidate: Option<&Table>,
        env: &Envelope,
        message: &Message,
        size: u64,
    ) -> Captured {
        let headers = message
            .headers
            .iter()
            .filter(|h| kept(table, h.name()) || candidate.is_some_and(|c| kept(c, h.name())))
            .map(|h| {
                (
                    h.name().to_string(),
                    String::from_utf8_lossy(h.raw_value()).into_owned(),
                )
            })
            .collect();
        Captured {
            date_time: super::track::rfc3339(SystemTime::now()),
            envelope: EnvelopeRecord {
                from: env
                    .mail_from
                    .as_ref()
                    .map_or_else(|| "<>".to_string(), ToString::to_string),
                to: env.rcpt_to.iter().map(ToString::to_string).collect(),
                connector: env.connector.clone(),
                local: env.local,
                client_ip: env.client_ip,
                tls_peer: env.tls_peer.clone(),
                xoorg: env.xoorg.clone(),
                auth: None,
            },
            auth: env.auth.clone(),
            size,
            headers,
        }
    }

    /// The message to evaluate again, named `name`: its header fields, and a body of zeros
    /// (a slice of `zeros`, shared) so size conditions see its size.
    pub fn input(&self, name: String, zeros: &Bytes) -> Result<Input, String> {
        let mut envelope = self.envelope.envelope()?;
        envelope.auth.clone_from(&self.auth);
        let mut raw = Vec::new();
        for (n, v) in &self.headers {
            raw.extend_from_slice(n.as_bytes());
            raw.push(b':');
            raw.extend_from_slice(v.as_bytes());
            if !v.ends_with('\n') {
                raw.extend_from_slice(b"\r\n");
            }
        }
        raw.extend_from_slice(b"\r\n");
        let mut message = Message::parse(&raw);
        let head = message.size();
        let body = usize::try_from(self.size.saturating_sub(head)).unwrap_or(usize::MAX);
        message.body = zeros.slice(..body.min(zeros.len()));
        Ok(Input {
            name,
            envelope,
            message,
        })
    }
}

enum Msg {
    Record(Box<Captured>),
    /// Write what is queued, flush, and answer.
    Flush(mpsc::SyncSender<()>),
}

/// The writer's handle: cheap to clone; records go to one thread, in order.
#[derive(Debug, Clone)]
pub struct Capture {
    tx: Option<mpsc::SyncSender<Msg>>,
    dropped: Arc<AtomicU64>,
}

impl Capture {
    /// Opens the folder `dir` bounded by `limits`; nothing is written while the file system
    /// has less than `stop_below` free, and what is dropped then (or for a full backlog) is
    /// counted in `dropped`.
    pub fn open(
        dir: &Path,
        limits: TrackLimits,
        stop_below: u64,
        dropped: Arc<AtomicU64>,
    ) -> std::io::Result<Capture> {
        let mut files = LogFiles::open_named(
            dir,
            STEM,
            limits,
            stop_below,
            Arc::clone(&dropped),
            SystemTime::now(),
        )?;
        let (tx, rx) = mpsc::sync_channel::<Msg>(BACKLOG);
        std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || {
                let mut last_tick = SystemTime::now();
                loop {
                    let first = match rx.recv_timeout(Duration::from_secs(60)) {
                        Ok(c) => Some(c),
                        Err(mpsc::RecvTimeoutError::Timeout) => None,
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    };
                    let now = SystemTime::now();
                    let mut acks = Vec::new();
                    for m in first.into_iter().chain(rx.try_iter().take(1000)) {
                        match m {
                            Msg::Record(c) => {
                                if let Ok(mut line) = serde_json::to_vec(&c) {
                                    line.push(b'\n');
                                    files.write(&line, now);
                                }
                            }
                            Msg::Flush(ack) => acks.push(ack),
                        }
                    }
                    files.flush(now);
                    for ack in acks {
                        let _ = ack.send(());
                    }
                    if now.duration_since(last_tick).unwrap_or_default() >= Duration::from_secs(60)
                    {
                        files.tick(now);
                        last_tick = now;
                    }
                }
                files.flush(SystemTime::now());
            })?;
        Ok(Capture {
            tx: Some(tx),
            dropped,
        })
    }

    /// A capture that keeps nothing (the default).
    pub fn disabled() -> Capture {
        Capture {
            tx: None,
            dropped: Arc::default(),
        }
    }

    /// Writes what is queued and waits (up to 10 s) until it is written: at shutdown, so
    /// the last messages' records are not lost with the process.
    pub fn flush(&self) {
        if let Some(tx) = &self.tx {
            let (ack, done) = mpsc::sync_channel(1);
            if tx.send(Msg::Flush(ack)).is_ok() {
                let _ = done.recv_timeout(Duration::from_secs(10));
            }
        }
    }

    /// Whether records are kept.
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues one record; dropped (and counted) when the writer is that far behind.
    pub fn record(&self, c: Captured) {
        if let Some(tx) = &self.tx {
            if let Err(mpsc::TrySendError::Full(_)) = tx.try_send(Msg::Record(Box::new(c))) {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The records of a capture folder (rotated files oldest first, then the live one) or of one
/// file of it, as inputs named `FILE:LINE`, read one at a time: a replay holds one file's
/// reader and one message, not the capture. A line that does not read is an error naming it:
/// a damaged capture should not silently shrink a review.
pub fn replay(path: &Path) -> Result<Replay, String> {
    let files = if path.is_dir() {
        let mut v = super::track::files::rotated_files_of(path, STEM)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let live = path.join(super::track::files::live_name(STEM));
        if live.exists() {
            v.push(live);
        }
        v
    } else {
        vec![path.to_path_buf()]
    };
    Ok(Replay {
        files: files.into(),
        current: None,
        zeros: Bytes::new(),
    })
}

type FileLines = std::iter::Peekable<std::io::Lines<std::io::BufReader<std::fs::File>>>;

/// The inputs of a capture, in order ([`replay`]).
pub struct Replay {
    files: std::collections::VecDeque<std::path::PathBuf>,
    /// The file being read, its lines, and the number of the last one read.
    current: Option<(std::path::PathBuf, FileLines, usize)>,
    /// Bodies are slices of one buffer of zeros, grown (doubled) when a larger message
    /// comes: a replay holds at most twice the largest body, however many messages.
    zeros: Bytes,
}

impl Replay {
    fn input(&mut self, name: String, line: &str) -> Result<Input, String> {
        let c: Captured = serde_json::from_str(line).map_err(|e| format!("{name}: {e}"))?;
        let size = usize::try_from(c.size).unwrap_or(usize::MAX).min(MAX_BODY);
        if size > self.zeros.len() {
            self.zeros = Bytes::from(vec![0u8; size.max(self.zeros.len() * 2).min(MAX_BODY)]);
        }
        c.input(name.clone(), &self.zeros)
            .map_err(|e| format!("{name}: {e}"))
    }
}

impl Iterator for Replay {
    type Item = Result<Input, String>;

    fn next(&mut self) -> Option<Self::Item> {
        use std::io::BufRead;
        loop {
            if self.current.is_none() {
                let f = self.files.pop_front()?;
                match std::fs::File::open(&f) {
                    Ok(file) => {
                        let lines = std::io::BufReader::new(file).lines().peekable();
                        self.current = Some((f, lines, 0));
                    }
                    Err(e) => return Some(Err(format!("{}: {e}", f.display()))),
                }
            }
            let (path, lines, no) = self.current.as_mut()?;
            match lines.next() {
                None => self.current = None,
                Some(Err(e)) => {
                    let e = format!("{}: {e}", path.display());
                    self.current = None;
                    self.files.clear();
                    return Some(Err(e));
                }
                Some(Ok(line)) => {
                    *no += 1;
                    if line.trim().is_empty() {
                        continue;
                    }
                    let name = format!("{}:{no}", path.display());
                    // The last line of the last file may be one the relay was writing when
                    // it stopped (killed): left out, not a reason to refuse the capture.
                    let last = lines.peek().is_none() && self.files.is_empty();
                    match self.input(name, &line) {
                        Err(_) if last => return None,
                        result => return Some(result),
                    }
                }
            }
        }
    }
}

/// Whether `path` is captured traffic rather than messages: a folder with capture files, or
/// any file but an `.eml`.
pub fn is_capture(path: &Path) -> bool {
    if path.is_dir() {
        path.join(super::track::files::live_name(STEM)).exists()
            || super::track::files::rotated_files_of(path, STEM).is_ok_and(|v| !v.is_empty())
    } else {
        path.extension().is_none_or(|x| x != "eml")
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Address;

    fn table(rules: &str) -> Table {
        let text = format!(
            "accepted-domain example.com\nreceive-connector \"In\" {{\n  listen 127.0.0.1:25\n  auth anonymous\n}}\n{rules}"
        );
        let report = crate::check::check_text("t.mailflow", &text);
        assert!(!report.has_errors(), "{:?}", report.diagnostics);
        crate::compile::compile(&report.rule_sets[0].rules).unwrap()
    }

    #[test]
    fn keeps_what_rules_read_and_replays_at_the_same_size() {
        let raw = b"Received: from x\r\nSubject: private\r\nX-Ticket: 42\r\nFrom: a@b.example\r\nX-MS-Exchange-Organization-AuthAs: Internal\r\n\r\nsecret body text\r\n";
        let message = Message::parse(raw);
        let env = Envelope {
            connector: Some("In".into()),
            mail_from: Some(Address {
                local: "a".into(),
                domain: "b.example".into(),
            }),
            rcpt_to: vec![Address {
                local: "c".into(),
                domain: "example.com".into(),
            }],
            ..Envelope::default()
        };
        let plain = Captured::of(&table(""), None, &env, &message, raw.len() as u64);
        let names: Vec<&str> = plain.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["From", "X-MS-Exchange-Organization-AuthAs"]);
        let reading = table(
            "rule \"T\" {\n  if header \"x-ticket\" contains \"4\"\n  if subject contains \"p\"\n  stop\n}\n",
        );
        let c = Captured::of(&table(""), Some(&reading), &env, &message, raw.len() as u64);
        let names: Vec<&str> = c.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "Subject",
                "X-Ticket",
                "From",
                "X-MS-Exchange-Organization-AuthAs"
            ]
        );
        let line = serde_json::to_string(&c).unwrap();
        assert!(!line.contains("secret"), "{line}");
        let back: Captured = serde_json::from_str(&line).unwrap();
        let zeros = Bytes::from(vec![0u8; 4096]);
        let input = back.input("x".into(), &zeros).unwrap();
        assert_eq!(input.message.size(), raw.len() as u64);
        assert_eq!(input.message.get("X-Ticket").as_deref(), Some("42"));
        assert_eq!(input.envelope.connector.as_deref(), Some("In"));
    }

    #[test]
    fn a_replay_reads_line_by_line_and_names_a_bad_line() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let line = |size: u64| {
            serde_json::to_string(&Captured {
                date_time: "2026-12-07T00:00:00.000Z".into(),
                envelope: EnvelopeRecord {
                    from: "<>".into(),
                    to: vec!["a@example.com".into()],
                    ..EnvelopeRecord::default()
                },
                auth: None,
                size,
                headers: vec![("Subject".into(), " x\r\n".into())],
            })
            .unwrap()
        };
        std::fs::write(
            dir.join("capture-0000000001.log"),
            format!("{}\n", line(100)),
        )
        .unwrap();
        // A damaged line in the middle is an error; a torn last line (a relay killed while
        // writing it) is left out.
        std::fs::write(
            dir.join("capture.log"),
            format!(
                "\n{}\n{{not json\n{}\n{{\"date-time\": \"2026",
                line(5000),
                line(20)
            ),
        )
        .unwrap();
        assert!(is_capture(dir));
        let got: Vec<Result<Input, String>> = replay(dir).unwrap().collect();
        assert_eq!(got.len(), 4, "the blank line is skipped");
        let sizes: Vec<u64> = got
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|i| i.message.size())
            .collect();
        assert_eq!(sizes, [100, 5000, 20]);
        assert!(
            got[0]
                .as_ref()
                .unwrap()
                .name
                .ends_with("capture-0000000001.log:1")
        );
        let bad = got[2].as_ref().unwrap_err();
        assert!(bad.contains("capture.log:3"), "{bad}");
    }
}
