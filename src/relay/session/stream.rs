//! The session's connection, plain or TLS, and reading from it: command lines (an over-long
//! one thrown away as it comes), data under the inactivity and connection timeouts and
//! shutdown, chunks dropped unread, and lingering after a parting reply.

use super::{End, Session};
use crate::smtp::command::{LineEnd, find_line};
use crate::stream::Stream;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The longest command line read before it is refused; MAIL and RCPT with parameters.
const MAX_LINE: usize = 1024;

/// Reads what is there (up to 16 KiB) onto the end of `buf`: the buffer grows by what
/// came, never by a read's worth of spare room.
async fn read_into(stream: &mut Stream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut chunk = [0u8; 16 * 1024];
    let n = stream.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// Writes a reply and flushes it: a TLS stream holds written bytes until flushed.
pub(super) async fn write_flush(stream: &mut Stream, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// What reading a command line gave.
pub(super) enum Read {
    Line(Vec<u8>),
    BareLf,
    TooLong,
    Closed,
    Timeout,
    Shutdown,
}

/// How a read that ended a data phase ends the session.
pub(super) fn ended(r: Read) -> End {
    match r {
        Read::Timeout => End::Timeout,
        Read::Shutdown => End::Shutdown,
        _ => End::Closed,
    }
}

impl Session {
    /// Reads more into the buffer, under the inactivity timeout and the overall connection
    /// limit; an error when the client went away, time ran out or the relay shuts down.
    pub(super) async fn fill(&mut self) -> Result<(), Read> {
        let limits = &self.conn().limits;
        let idle = limits.inactivity_timeout;
        let left = limits
            .connection_timeout
            .checked_sub(self.started.elapsed())
            .unwrap_or(Duration::ZERO);
        let wait = idle.min(left);
        let mut shutdown = self.shared.shutdown.clone();
        tokio::select! {
            r = tokio::time::timeout(wait, read_into(&mut self.stream, &mut self.buf)) => match r {
                Ok(Ok(0)) | Ok(Err(_)) => Err(Read::Closed),
                Ok(Ok(_)) => Ok(()),
                Err(_) => Err(Read::Timeout),
            },
            _ = shutdown.changed() => Err(Read::Shutdown),
        }
    }

    pub(super) async fn read_line(&mut self) -> Read {
        loop {
            if self.skipping {
                // The tail of an over-long line: drop it as it comes, holding no more than one
                // read, and answer the line once, at its end.
                match self.buf.iter().position(|&b| b == b'\n') {
                    Some(p) => {
                        self.buf.drain(..=p);
                        self.skipping = false;
                        return Read::TooLong;
                    }
                    None => {
                        self.buf.clear();
                        if let Err(r) = self.fill().await {
                            return r;
                        }
                        continue;
                    }
                }
            }
            match find_line(&self.buf, MAX_LINE) {
                LineEnd::Complete(n) => {
                    let line: Vec<u8> = self.buf.drain(..n).collect();
                    return Read::Line(line[..n.saturating_sub(2)].to_vec());
                }
                LineEnd::BareLf(n) => {
                    self.buf.drain(..n);
                    return Read::BareLf;
                }
                LineEnd::TooLong => {
                    self.skipping = true;
                }
                LineEnd::Incomplete => {
                    if let Err(r) = self.fill().await {
                        return r;
                    }
                }
            }
        }
    }

    /// Reads `size` octets of a chunk and drops them as they come: a refused chunk is
    /// still data, never commands, and costs no memory.
    pub(super) async fn discard(&mut self, size: u64) -> Result<(), End> {
        let mut left = size;
        while left > 0 {
            if self.buf.is_empty() {
                self.fill().await.map_err(ended)?;
            }
            let take = (self.buf.len() as u64).min(left) as usize;
            self.buf.drain(..take);
            left -= take as u64;
        }
        Ok(())
    }

    /// Closes after a parting reply to a client that is still writing: closing with its
    /// input unread would reset the connection and could destroy the reply in flight, so
    /// the write side is shut and input read and dropped for a moment, bounded in time
    /// and bytes.
    pub(super) async fn linger(&mut self) {
        const LINGER: Duration = Duration::from_secs(2);
        const LINGER_BYTES: usize = 4 * 1024 * 1024;
        let _ = self.stream.shutdown().await;
        let deadline = Instant::now() + LINGER;
        let mut seen = 0;
        while seen < LINGER_BYTES {
            self.buf.clear();
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, read_into(&mut self.stream, &mut self.buf)).await {
                Ok(Ok(n)) if n > 0 => seen += n,
                _ => break,
            }
        }
    }
}
