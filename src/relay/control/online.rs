//! The running relay's side of the queue commands: the local socket, and each action done
//! to the spool and the delivery plan together, so the scheduler never attempts what was
//! just deleted, bounced or held.

use super::{Reply, Report, Request, Skipped, Who, change_holds, event, read, retried, select};
use crate::clock::now_secs;
use crate::queue::holds::HoldTarget;
use crate::queue::{QueuedMessage, StoredBody};
use crate::relay::Shared;
use crate::smtp::Status;
use base64::Engine;
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

/// The status a bounced recipient gets (its DSN says the administrator returned it).
fn returned() -> Status {
    Status::new(
        550,
        "5.3.0",
        "returned to the sender by the mail administrator",
    )
}

/// Binds the socket at `path` for the relay's user and group only (a socket left by a relay
/// that died is replaced: the spool's lock, taken before, says none runs).
pub(crate) fn bind(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

/// Clients served at once.
const CLIENTS: usize = 8;

/// Octets of a stored message read at a time for `show --message`: a multiple of 3, so that
/// the pieces' base64 put together is the whole message's.
const PIECE: usize = 3 * 64 * 1024;

/// Serves the socket until the relay stops: one request per connection, one at a time (an
/// action sees the queue as the one before it left it).
///
/// At most [`CLIENTS`] connections are served at once: each costs a file descriptor for up
/// to 10 seconds (a client that sends nothing) and its answer for up to a minute (one that
/// does not read it), so clients that stall must not be able to starve SMTP of descriptors
/// or the relay of memory. A stored message is sent a [`PIECE`] at a time as the client
/// takes it, so the largest message costs no more than a small answer. One more client is
/// told so at once and closed; leaving it in the backlog instead would make it wait behind
/// every stalled client before it.
pub(crate) async fn serve(shared: Arc<Shared>, listener: UnixListener) {
    let one_at_a_time = Arc::new(tokio::sync::Mutex::new(()));
    let slots = Arc::new(tokio::sync::Semaphore::new(CLIENTS));
    // Owned here: when the relay stops this task, the requests in progress stop with it,
    // before the spool is closed.
    let mut handlers = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            busy(&stream);
            continue;
        };
        let shared = Arc::clone(&shared);
        let lock = Arc::clone(&one_at_a_time);
        while handlers.try_join_next().is_some() {}
        handlers.spawn(async move {
            let _slot = slot;
            let who = Who {
                uid: stream.peer_cred().map_or(u32::MAX, |c| c.uid()),
                pid: stream.peer_cred().ok().and_then(|c| c.pid()),
            };
            let (reader, mut writer) = stream.into_split();
            let answer = match read_request(reader).await {
                Ok(req) => {
                    let _one = lock.lock().await;
                    answer(&shared, req, &who).await
                }
                Err(why) => Answer::from(Reply::error(why)),
            };
            // A reader that stops reading costs its task a minute, no more.
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(60),
                send(&mut writer, answer),
            )
            .await;
        });
    }
}

/// A reply, and the stored message that goes in it when `show --message` asked for one.
struct Answer {
    reply: Reply,
    body: Option<StoredBody>,
}

impl From<Reply> for Answer {
    fn from(reply: Reply) -> Answer {
        Answer { reply, body: None }
    }
}

/// Carries out one request; for `show --message`, finds and checks the stored message
/// without reading it into memory ([`send`] reads it a piece at a time).
async fn answer(shared: &Arc<Shared>, req: Request, who: &Who) -> Answer {
    let Request::Show { id, message: true } = req else {
        return handle(shared, req, who).await.into();
    };
    let shown = Request::Show {
        id: id.clone(),
        message: false,
    };
    let reply = handle(shared, shown, who).await;
    if !matches!(reply, Reply::Message { .. }) {
        return reply.into();
    }
    let spool = shared.spool.clone();
    let wanted = id.clone();
    let checked = tokio::task::spawn_blocking(move || {
        let body = spool.stored_body(&wanted)?;
        body.check()?;
        Ok::<_, crate::queue::QueueError>(body)
    })
    .await;
    match checked {
        Ok(Ok(body)) => Answer {
            reply,
            body: Some(body),
        },
        // Delivered (or bounced) since it was found: gone, as if asked a moment later.
        Ok(Err(crate::queue::QueueError::UnknownId(_))) => Reply::Missing { id }.into(),
        Ok(Err(e)) => Reply::error(e.to_string()).into(),
        Err(e) => Reply::error(e.to_string()).into(),
    }
}

/// Writes the answer as one JSON line. A stored message is the reply's `data` field
/// (base64, as [`Reply::Message`] has it), read and encoded a [`PIECE`] at a time while the
/// client takes it.
async fn send<W: AsyncWrite + Unpin>(writer: &mut W, answer: Answer) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(&answer.reply)?;
    drop(answer.reply);
    if let Some(body) = answer.body {
        // The reply is a JSON object without `data`: its closing brace makes way for it.
        if line.pop() != Some(b'}') {
            return Err(std::io::Error::other("a reply is a JSON object"));
        }
        line.extend_from_slice(b",\"data\":\"");
        writer.write_all(&line).await?;
        // The pieces are read again after the check: a body damaged meanwhile must not
        // reach the client as a whole answer, so its checksum is taken again as it goes.
        let mut crc = crc32fast::Hasher::new();
        let mut at = 0;
        while at < body.len() {
            let from = body.clone();
            let piece = tokio::task::spawn_blocking(move || from.piece(at, PIECE))
                .await
                .map_err(std::io::Error::other)?
                .map_err(std::io::Error::other)?;
            if piece.is_empty() {
                return Err(std::io::Error::other("the stored message ended early"));
            }
            at += piece.len() as u64;
            crc.update(&piece);
            let text = base64::engine::general_purpose::STANDARD.encode(&piece);
            writer.write_all(text.as_bytes()).await?;
        }
        if let Err(e) = body.confirm(crc.finalize()) {
            // The line stays unfinished: the client cannot take it for the message.
            tracing::error!("queue show --message: {e}");
            return Err(std::io::Error::other(e.to_string()));
        }
        line = b"\"}".to_vec();
    }
    line.push(b'\n');
    writer.write_all(&line).await?;
    writer.shutdown().await
}

/// Tells a client past [`CLIENTS`] to come back, without waiting for it: a fresh
/// connection's send buffer takes the line, or the client goes without it.
fn busy(stream: &tokio::net::UnixStream) {
    if let Ok(mut line) = serde_json::to_vec(&Reply::busy()) {
        line.push(b'\n');
        let _ = stream.try_write(&line);
    }
}

/// One JSON line, at most [`super::MAX_REQUEST`] bytes, within 10 seconds.
async fn read_request(reader: tokio::net::unix::OwnedReadHalf) -> Result<Request, String> {
    let mut line = Vec::new();
    let limited = reader.take(super::MAX_REQUEST as u64 + 1);
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        BufReader::new(limited).read_until(b'\n', &mut line),
    )
    .await;
    match read {
        Err(_) => Err("no request within 10 seconds".into()),
        Ok(Err(e)) => Err(format!("reading the request: {e}")),
        Ok(Ok(_)) if line.len() > super::MAX_REQUEST => {
            Err(format!("a request is at most {} bytes", super::MAX_REQUEST))
        }
        Ok(Ok(_)) => serde_json::from_slice(&line).map_err(|e| format!("not a request: {e}")),
    }
}

/// Carries out one request on the running relay.
async fn handle(shared: &Arc<Shared>, req: Request, who: &Who) -> Reply {
    let now = now_secs();
    let holds = shared.plan().holds().clone();
    let messages = shared.spool.live();
    let spool = shared.spool.clone();
    if let Some(mut reply) = read(&req, &messages, &holds, |id| spool.read_body(id), now) {
        suspensions(shared, &mut reply, now);
        return reply;
    }
    let mut report = Report {
        action: req.action().to_string(),
        ..Report::default()
    };
    match &req {
        Request::Hold { .. } | Request::Release { .. } => {
            let (req, mut skipped) = known_connectors(shared, req.clone());
            let mut changed = holds.clone();
            let (done, more) = change_holds(&req, &mut changed, |id| {
                messages.iter().any(|m| m.id == *id)
            });
            skipped.extend(more);
            if !done.is_empty() {
                if let Err(e) = save_holds(shared, &changed).await {
                    return Reply::error(e);
                }
                shared.plan().set_holds(changed, now);
                shared.wake.notify_one();
                for what in &done {
                    let m = what
                        .strip_prefix("message ")
                        .and_then(|id| messages.iter().find(|m| m.id.0 == id));
                    shared
                        .tracker
                        .log(event(&format!("{} {what}", req.action()), who, m));
                }
            }
            report.done = done;
            report.skipped = skipped;
        }
        Request::Retry { select: s } => {
            let (chosen, missing) = select(s, &messages, &holds, now);
            report.skipped = missing;
            // The destinations (delivery keys) of the recipients the filter takes.
            let mut due = std::collections::HashSet::new();
            for m in &chosen {
                for i in retried(m, &holds, s.filter.as_ref()) {
                    if let Some(r) = m.meta.recipients.get(i) {
                        let domain = r.address.rsplit_once('@').map_or("", |(_, d)| d);
                        due.insert((
                            m.id.clone(),
                            r.send_connector.clone(),
                            domain.to_ascii_lowercase(),
                        ));
                    }
                }
            }
            let n = shared.plan().retry(
                |k| {
                    due.contains(&(
                        k.id.clone(),
                        k.dest.connector.to_string(),
                        k.dest.domain.to_string(),
                    ))
                },
                now,
            );
            shared.wake.notify_one();
            report.done = chosen.iter().map(|m| m.id.to_string()).collect();
            report.deliveries = Some(n);
            if !chosen.is_empty() {
                let what = format!("retry of {} messages ({n} deliveries)", chosen.len());
                shared.tracker.log(event(&what, who, None));
            }
        }
        Request::Delete { select: s } | Request::Bounce { select: s } => {
            let (chosen, missing) = select(s, &messages, &holds, now);
            report.skipped = missing;
            let bounce = matches!(req, Request::Bounce { .. });
            for m in &chosen {
                match remove(shared, m, bounce, who).await {
                    Ok(id) => report.done.push(id),
                    Err(skip) => report.skipped.push(skip),
                }
            }
            forget_message_holds(shared, now).await;
        }
        Request::List { .. } | Request::Summary { .. } | Request::Show { .. } => {}
    }
    report.holds = shared.plan().holds().clone();
    Reply::Done(report)
}

/// A hold on a send connector the rules do not have would hold nothing (a typo during a
/// cut-over, and the tenant's mail flows): it is left out, and the answer says so.
fn known_connectors(shared: &Shared, req: Request) -> (Request, Vec<Skipped>) {
    let Request::Hold { targets } = req else {
        return (req, Vec::new());
    };
    let table = shared.table();
    let known = |c: &str| {
        table
            .send_connectors
            .iter()
            .any(|s| s.name.value.eq_ignore_ascii_case(c))
    };
    let (kept, unknown): (Vec<HoldTarget>, Vec<HoldTarget>) = targets
        .into_iter()
        .partition(|t| !matches!(t, HoldTarget::Connector(c) if !known(c)));
    let skipped = unknown
        .into_iter()
        .map(|t| Skipped {
            what: t.to_string(),
            why: "the rules have no send connector by this name".into(),
        })
        .collect();
    (Request::Hold { targets: kept }, skipped)
}

/// A recipient of a suspended destination (its next hops did not answer) is not attempted
/// before the suspension ends, whatever its own time says: the answer says so.
fn suspensions(shared: &Shared, reply: &mut Reply, now: u64) {
    let plan = shared.plan();
    let later = |next: &mut Option<u64>, connector: &str, domain: &str| {
        if let (Some(at), Some(until)) = (*next, plan.suspended_until(connector, domain, now)) {
            *next = Some(at.max(until));
        }
    };
    let views = |ms: &mut [crate::queue::listing::MessageView]| {
        for m in ms {
            for r in &mut m.recipients {
                let domain = r.domain();
                later(&mut r.next_attempt, &r.connector, &domain);
            }
        }
    };
    match reply {
        Reply::Messages { messages, .. } => views(messages),
        Reply::Message { message, .. } => views(std::slice::from_mut(message.as_mut())),
        Reply::Destinations { destinations, .. } => {
            for d in destinations {
                later(&mut d.next_attempt, &d.connector, &d.domain);
            }
        }
        _ => {}
    }
}

/// Deletes or bounces one message, unless an attempt for it is under way.
async fn remove(
    shared: &Arc<Shared>,
    m: &QueuedMessage,
    bounce: bool,
    who: &Who,
) -> Result<String, Skipped> {
    let id = m.id.to_string();
    let m = {
        let mut plan = shared.plan();
        if plan.in_flight(&m.id) {
            return Err(Skipped {
                what: id,
                why: "being delivered now; try again in a moment".into(),
            });
        }
        // The request's snapshot may be older than an attempt that has ended since: with no
        // attempt in flight (an attempt records its outcome before it leaves the plan) and
        // its keys forgotten, the spool's copy is the one that stays true. Bouncing the
        // snapshot would report delivered recipients as failed, or a delivered message as
        // bounced.
        let Some(now) = shared.spool.get(&m.id) else {
            return Err(Skipped {
                what: id,
                why: "no longer queued: its delivery ended meanwhile".into(),
            });
        };
        plan.forget(&now);
        now
    };
    let action = if bounce { "bounce" } else { "delete" };
    let result = if bounce {
        if crate::relay::scheduler::fail_pending(shared, m.clone(), returned()).await {
            Ok(())
        } else {
            Err("the spool did not take the update; the relay's log says why".to_string())
        }
    } else {
        shared.spool.remove(&m.id).await.map_err(|e| e.to_string())
    };
    match result {
        Ok(()) => {
            shared.tracker.log(event(action, who, Some(&m)));
            Ok(id)
        }
        Err(e) => {
            // Still queued: the plan takes it back.
            shared.plan().add(&m);
            Err(Skipped { what: id, why: e })
        }
    }
}

/// Message holds of messages gone from the queue are dropped from the file.
async fn forget_message_holds(shared: &Arc<Shared>, now: u64) {
    let mut holds = shared.plan().holds().clone();
    let before = holds.messages.len();
    holds.retain_messages(|id| shared.spool.get(id).is_some());
    if holds.messages.len() != before && save_holds(shared, &holds).await.is_ok() {
        shared.plan().set_holds(holds, now);
    }
}

async fn save_holds(
    shared: &Arc<Shared>,
    holds: &crate::queue::holds::Holds,
) -> Result<(), String> {
    let dir = shared.options.spool.clone();
    let holds = holds.clone();
    tokio::task::spawn_blocking(move || holds.save(&dir))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| format!("saving the holds: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// `bytes` stored after a 7-octet head in a file, as a segment holds a body.
    fn stored(bytes: &[u8]) -> (tempfile::NamedTempFile, StoredBody) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"segment").unwrap();
        f.write_all(bytes).unwrap();
        let file = Arc::new(f.reopen().unwrap());
        (f, StoredBody::at(file, 7, bytes))
    }

    fn answer(body: StoredBody) -> Answer {
        Answer {
            reply: Reply::error("placeholder"),
            body: Some(body),
        }
    }

    /// The line a client reads, or the error `send` ended with.
    async fn streamed(body: StoredBody) -> (Vec<u8>, std::io::Result<()>) {
        let mut out = std::io::Cursor::new(Vec::new());
        let sent = send(&mut out, answer(body)).await;
        (out.into_inner(), sent)
    }

    fn data(line: &[u8]) -> Vec<u8> {
        assert_eq!(line.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(line).unwrap();
        assert_eq!(v["reply"], "error", "the reply's own fields are kept");
        base64::engine::general_purpose::STANDARD
            .decode(v["data"].as_str().unwrap())
            .unwrap()
    }

    /// Every length around the piece boundaries, of binary octets (NUL, 8-bit, quote,
    /// backslash, newline): the line is one JSON object whose `data` decodes to exactly
    /// the stored octets.
    #[tokio::test]
    async fn every_length_around_the_pieces_streams_exactly() {
        let p = PIECE;
        for len in [
            0,
            1,
            2,
            3,
            4,
            p - 1,
            p,
            p + 1,
            p + 2,
            2 * p - 1,
            2 * p,
            2 * p + 1,
            3 * p + 2,
        ] {
            let bytes: Vec<u8> = (0..len)
                .map(|i| [0u8, 0xff, b'"', b'\\', b'\n', 0x80, (i % 251) as u8][i % 7])
                .collect();
            let (_f, body) = stored(&bytes);
            let (line, sent) = streamed(body).await;
            sent.unwrap();
            assert_eq!(
                line.iter().filter(|&&b| b == b'\n').count(),
                1,
                "one line ({len})"
            );
            assert!(data(&line) == bytes, "{len} octets streamed differ");
        }
    }

    /// A body damaged on disk after the check passed, while the client is still reading:
    /// the answer must not be a JSON line whose data is the damaged octets.
    #[tokio::test]
    async fn a_body_damaged_while_it_streams_is_never_a_whole_answer() {
        use std::os::unix::fs::FileExt;
        let bytes: Vec<u8> = (0..3 * PIECE + 10).map(|i| (i % 253) as u8).collect();
        let (f, body) = stored(&bytes);
        body.check().unwrap();
        // The damage is past the first piece: the check read it whole, the stream has not.
        let at = 7 + 2 * PIECE as u64 + 5;
        let old = bytes[2 * PIECE + 5];
        f.as_file().write_all_at(&[old ^ 0x20], at).unwrap();
        let (line, sent) = streamed(body).await;
        let why = sent.expect_err("sent as if whole").to_string();
        assert!(why.contains("fails its checksum"), "{why}");
        assert!(
            serde_json::from_slice::<serde_json::Value>(&line).is_err(),
            "the damaged body was answered as a whole JSON line"
        );
    }
}
