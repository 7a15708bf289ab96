//! The admin socket (`SPOOL/admin.sock`): how the queue commands' requests reach the running
//! relay and their answers leave it, at most [`CLIENTS`] at a time, a stored message a
//! [`PIECE`] at a time. What a request does is [`super::online`]'s.

use super::online::handle;
use super::{Reply, Request, Who};
use crate::queue::StoredBody;
use crate::relay::Shared;
use base64::Engine;
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

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
                    let found = {
                        let _one = lock.lock().await;
                        answer(&shared, req, &who).await
                    };
                    // Reading a large body through takes time; other commands need not
                    // wait for it.
                    checked(found).await
                }
                Err(why) => Answer::from(Reply::error(why)),
            };
            // A reader that stops reading costs its task a minute, no more.
            let sent = tokio::time::timeout(
                std::time::Duration::from_secs(60),
                send(&mut writer, answer),
            )
            .await;
            if sent.is_err() {
                tracing::info!(
                    "a queue command's answer was not taken within a minute; its client was left"
                );
            }
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

/// Carries out one request; for `show --message`, finds the stored message without
/// reading it ([`checked`] reads it through, [`send`] a piece at a time).
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
    match shared.spool.stored_body(&id) {
        Ok(body) => Answer {
            reply,
            body: Some(body),
        },
        // Delivered (or bounced) since it was found: gone, as if asked a moment later.
        Err(crate::queue::QueueError::UnknownId(_)) => Reply::Missing { id }.into(),
        Err(e) => Reply::error(e.to_string()).into(),
    }
}

/// The answer once its stored message, if any, has been read through against its checksum
/// (blocking file I/O, off the async workers): an error answer if it fails.
async fn checked(answer: Answer) -> Answer {
    let Some(body) = answer.body else {
        return answer;
    };
    let checking = body.clone();
    match tokio::task::spawn_blocking(move || checking.check()).await {
        Ok(Ok(())) => Answer {
            reply: answer.reply,
            body: Some(body),
        },
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
