//! One SMTP connection to a next hop, up to the point where it can take a transaction:
//! TCP, the greeting, EHLO (HELO as a fallback), STARTTLS as the send connector's policy asks
//! and EHLO again ([`open`]). Then the wire: commands out, replies in, parsed by the crate's
//! one reply parser ([`crate::smtp::parse_reply`]), each wait under its timeout.

use super::config::ClientConfig;
use super::failure::{self, HopError};
use super::hop::Hop;
use crate::model::OutboundTls;
use crate::smtp::Status;
use crate::smtp::{MAX_REPLY_LINE, Reply, parse_reply};
use crate::stream::Stream;
use rustls::pki_types::ServerName;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Most lines in one multi-line reply.
const MAX_REPLY_LINES: usize = 100;
/// QUIT is a courtesy: never wait long for its answer.
const QUIT_TIMEOUT: Duration = Duration::from_secs(5);

/// The extensions a server offered in its EHLO reply: keyword in upper case, parameters.
pub(super) type Extensions = HashMap<String, String>;

/// One SMTP conversation: the stream and what has been read but not parsed yet.
pub(super) struct Session {
    stream: Stream,
    buf: Vec<u8>,
    /// The rest of an over-long reply line is being dropped as it arrives.
    skipping: bool,
}

impl Session {
    fn new(stream: Stream) -> Session {
        Session {
            stream,
            buf: Vec::new(),
            skipping: false,
        }
    }

    /// Writes `bytes` (one command or a pipelined group of them) and flushes.
    pub(super) async fn send(&mut self, bytes: &[u8], t: Duration) -> Result<(), HopError> {
        let write = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(t, write).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(HopError::Timeout),
        }
    }

    pub(super) async fn command(&mut self, line: &str, t: Duration) -> Result<Reply, HopError> {
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.send(&bytes, t).await?;
        self.read_reply(t).await
    }

    /// One whole reply, every line CRLF-terminated and carrying the same code.
    pub(super) async fn read_reply(&mut self, t: Duration) -> Result<Reply, HopError> {
        match tokio::time::timeout(t, self.read_reply_inner()).await {
            Ok(r) => r,
            Err(_) => Err(HopError::Timeout),
        }
    }

    /// Whether nothing the server sent is waiting unread: a connection with leftovers is
    /// out of step and must not carry another transaction.
    pub(super) fn in_step(&self) -> bool {
        self.buf.is_empty() && !self.skipping
    }

    /// Whether the connection can carry another transaction: nothing unread, and nothing
    /// (no bytes, no close) waiting on the socket either. Looks without waiting. A server
    /// that sent a reply nobody asked for (a second answer to the dot, anything while the
    /// connection was idle) would otherwise have it read as the answer to the next MAIL, and
    /// every reply after it shifted by one. Postfix's connection cache checks the same before
    /// reuse. A reply that arrives after this look and before the next MAIL's answer is not
    /// caught; it can only come from a server that breaks RFC 5321's one reply per command.
    pub(super) async fn settled(&mut self) -> bool {
        if !self.in_step() {
            return false;
        }
        let mut chunk = [0u8; 64];
        let mut read = ReadBuf::new(&mut chunk);
        let stream = &mut self.stream;
        let polled =
            std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *stream).poll_read(cx, &mut read)))
                .await;
        // Pending: nothing waiting. Bytes, end of stream or an error: not fit.
        polled.is_pending()
    }

    async fn read_reply_inner(&mut self) -> Result<Reply, HopError> {
        loop {
            match parse_reply(&self.buf) {
                Ok(Some((reply, n))) => {
                    self.buf.drain(..n);
                    return Ok(reply);
                }
                Ok(None) => {}
                Err(e) => return Err(HopError::Protocol(e.to_string())),
            }
            // Incomplete: every line in the buffer belongs to the first reply.
            let complete_lines = self.buf.iter().filter(|b| **b == b'\n').count();
            if complete_lines >= MAX_REPLY_LINES {
                return Err(HopError::Protocol("reply has too many lines".into()));
            }
            self.bound_last_line();
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(HopError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed",
                )));
            }
            self.take(chunk.get(..n).unwrap_or_default());
        }
    }

    /// RFC 5321 4.5.3.1.5 allows 512 octets per reply line, CRLF included. Some servers
    /// write longer ones (policy texts with URLs); refusing them would turn a clear answer
    /// into a protocol error and a retry. So an unfinished line is never kept past 512
    /// octets: the rest is dropped as it arrives. A longer line that arrives whole in one
    /// read is taken as it is (at most one read, 4 KiB). Memory per reply stays bounded.
    fn bound_last_line(&mut self) {
        let start = self
            .buf
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |p| p + 1);
        let room = MAX_REPLY_LINE - 2;
        if self.buf.len() - start > room {
            self.buf.truncate(start + room);
            self.skipping = true;
        }
    }

    fn take(&mut self, chunk: &[u8]) {
        if !self.skipping {
            self.buf.extend_from_slice(chunk);
            return;
        }
        if let Some(nl) = chunk.iter().position(|b| *b == b'\n') {
            self.skipping = false;
            // The line's CR may have been among the dropped bytes.
            self.buf.push(b'\r');
            self.buf
                .extend_from_slice(chunk.get(nl..).unwrap_or_default());
        }
    }

    /// EHLO, or HELO when EHLO gets a 5xx. Returns the extensions, or the failure when the
    /// server will not talk to us.
    async fn hello(
        &mut self,
        helo: &str,
        t: Duration,
    ) -> Result<Result<Extensions, Status>, HopError> {
        let reply = self.command(&format!("EHLO {helo}"), t).await?;
        if reply.is_completion() {
            let ext = reply
                .lines
                .iter()
                .skip(1)
                .filter_map(|l| {
                    let mut it = l.splitn(2, ' ');
                    let kw = it.next()?.to_ascii_uppercase();
                    (!kw.is_empty()).then(|| (kw, it.next().unwrap_or("").to_string()))
                })
                .collect();
            return Ok(Ok(ext));
        }
        if reply.code < 500 {
            self.quit().await;
            return Ok(Err(failure::from_reply(&reply, "EHLO")));
        }
        let reply = self.command(&format!("HELO {helo}"), t).await?;
        if reply.is_completion() {
            return Ok(Ok(HashMap::new()));
        }
        self.quit().await;
        Ok(Err(failure::from_reply(&reply, "HELO")))
    }

    async fn starttls(
        self,
        cfg: &ClientConfig,
        verify: bool,
        name: &str,
        ip: IpAddr,
    ) -> Result<Session, HopError> {
        // Anything the server sent after its 220 was sent in plaintext and must not be
        // read as if it came over TLS (CVE-2011-0411 in the other direction).
        if !self.in_step() {
            return Err(HopError::Protocol(
                "data after the reply to STARTTLS".into(),
            ));
        }
        let tcp = match self.stream {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(_) | Stream::Closed => {
                return Err(HopError::Protocol("TLS already active".into()));
            }
        };
        let server_name = match ServerName::try_from(name.to_string()) {
            Ok(n) => n,
            Err(_) => match super::hop::parse_ip_literal(name) {
                Some(ip) => ServerName::IpAddress(ip.into()),
                None if !verify => ServerName::IpAddress(ip.into()),
                None => {
                    return Err(HopError::Protocol(format!(
                        "{name:?} cannot be checked against a certificate"
                    )));
                }
            },
        };
        let config = cfg.rustls().map_err(HopError::Protocol)?;
        let connector = tokio_rustls::TlsConnector::from(config);
        let stream =
            match tokio::time::timeout(cfg.command_timeout, connector.connect(server_name, tcp))
                .await
            {
                Ok(r) => r?,
                Err(_) => return Err(HopError::Timeout),
            };
        Ok(Session::new(Stream::Tls(Box::new(stream.into()))))
    }

    fn tls_description(&self) -> Option<String> {
        match self.stream.tls() {
            None => None,
            Some(conn) => {
                let version = conn
                    .protocol_version()
                    .map(|v| format!("{v:?}").replace('_', "."))
                    .unwrap_or_default();
                let suite = conn
                    .negotiated_cipher_suite()
                    .map(|s| format!("{:?}", s.suite()))
                    .unwrap_or_default();
                Some(format!("{version} {suite}").trim().to_string())
            }
        }
    }

    /// QUIT and close, without caring how the server takes it.
    pub(super) async fn quit(&mut self) {
        let _ = tokio::time::timeout(QUIT_TIMEOUT, async {
            if self.send(b"QUIT\r\n", QUIT_TIMEOUT).await.is_ok() {
                let _ = self.read_reply(QUIT_TIMEOUT).await;
            }
            let _ = self.stream.shutdown().await;
        })
        .await;
    }

    /// Closes without QUIT: for a connection whose server is not listening for commands
    /// (it took DATA although no recipient was accepted).
    pub(super) async fn abort(&mut self) {
        let _ = tokio::time::timeout(QUIT_TIMEOUT, self.stream.shutdown()).await;
    }
}

/// A session ready for MAIL, with what the server offered and how it is protected.
pub(super) struct Connection {
    pub(super) session: Session,
    pub(super) ext: Extensions,
    /// The negotiated TLS version and cipher suite; `None`: plaintext.
    pub(super) tls: Option<String>,
    /// Transactions it has carried.
    pub(super) transactions: u32,
}

/// Connects to one address of a hop and makes the session ready for MAIL: greeting,
/// EHLO (HELO as a fallback), STARTTLS as the policy asks and EHLO again. Returns the
/// connection, or why this address is of no use (try the next one). `tls_out` learns the
/// TLS description as soon as the handshake is done, so a failure after it still reports it.
/// Shared by deliveries and recipient probes ([`super::probe`]), so both talk to a hop alike.
pub(super) async fn open(
    cfg: &ClientConfig,
    hop: &Hop,
    addr: SocketAddr,
    tls_out: &mut Option<String>,
) -> Result<Connection, Status> {
    let tcp = match tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            return Err(Status::new(451, "4.4.1", format!("connect to {addr}: {e}")));
        }
        Err(_) => {
            return Err(Status::new(
                451,
                "4.4.1",
                format!("connect to {addr}: timed out"),
            ));
        }
    };
    // Pipelined groups and the body go out in few writes already; waiting for ACKs of
    // small writes would only add latency to each command.
    let _ = tcp.set_nodelay(true);
    let mut s = Session::new(Stream::Plain(tcp));
    let t = cfg.command_timeout;

    let greeting = s
        .read_reply(t)
        .await
        .map_err(|e| failure::io("greeting", &e))?;
    if !greeting.is_completion() {
        s.quit().await;
        return Err(failure::from_reply(&greeting, "greeting"));
    }
    let mut ext = match s.hello(cfg.helo(), t).await {
        Ok(Ok(ext)) => ext,
        Ok(Err(f)) => return Err(f),
        Err(e) => return Err(failure::io("EHLO", &e)),
    };

    let offers_tls = ext.contains_key("STARTTLS");
    let use_tls = match cfg.tls() {
        OutboundTls::Off => false,
        OutboundTls::Opportunistic => offers_tls,
        OutboundTls::Required => {
            if !offers_tls {
                s.quit().await;
                return Err(Status::new(
                    454,
                    "4.7.5",
                    "TLS is required, but the server does not offer STARTTLS",
                ));
            }
            true
        }
    };
    if use_tls {
        let reply = s
            .command("STARTTLS", t)
            .await
            .map_err(|e| failure::io("STARTTLS", &e))?;
        if !reply.is_completion() {
            if cfg.tls() == OutboundTls::Required {
                s.quit().await;
                return Err(failure::tls(failure::from_reply(&reply, "STARTTLS")));
            }
            // Opportunistic: the server declined, the session is still clean plaintext.
        } else {
            let verify = cfg.tls() == OutboundTls::Required;
            let name = cfg.tls_name().unwrap_or(&hop.host);
            s = match s.starttls(cfg, verify, name, addr.ip()).await {
                Ok(s) => s,
                Err(e) => {
                    return Err(Status::new(454, "4.7.5", format!("TLS with {name}: {e}")));
                }
            };
            *tls_out = s.tls_description();
            // RFC 3207 4.2: forget what the server said before TLS.
            ext = match s.hello(cfg.helo(), t).await {
                Ok(Ok(ext)) => ext,
                Ok(Err(f)) => return Err(f),
                Err(e) => return Err(failure::io("EHLO after STARTTLS", &e)),
            };
        }
    }

    Ok(Connection {
        session: s,
        ext,
        tls: tls_out.clone(),
        transactions: 0,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::net::TcpListener;

    async fn session_with(server_writes: Vec<Vec<u8>>) -> Session {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            for w in server_writes {
                tcp.write_all(&w).await.unwrap();
                tcp.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Session::new(Stream::Plain(TcpStream::connect(addr).await.unwrap()))
    }

    #[tokio::test]
    async fn an_over_long_reply_line_is_cut_not_refused() {
        // 3,000 octets of text over several reads, then a reply of the usual kind.
        let long = format!("550 5.7.1 {}", "x".repeat(3000));
        let (a, b) = long.as_bytes().split_at(1500);
        let mut s = session_with(vec![a.to_vec(), b.to_vec(), b"\r\n250 ok\r\n".to_vec()]).await;
        let t = Duration::from_secs(5);
        let r = s.read_reply(t).await.unwrap();
        assert_eq!((r.code, r.status().as_str()), (550, "5.7.1"));
        assert!(r.full().len() <= MAX_REPLY_LINE - 2, "{}", r.full().len());
        assert!(r.text().starts_with("xxx"));
        let r = s.read_reply(t).await.unwrap();
        assert_eq!(r.full(), "250 ok");
        assert!(s.in_step());
    }

    #[tokio::test]
    async fn settled_sees_bytes_and_a_close_that_nobody_asked_for() {
        let t = Duration::from_secs(5);
        // Quiet after its reply (and open for a second more): fit for another transaction.
        let mut quiet = vec![b"250 ok\r\n".to_vec()];
        quiet.extend(std::iter::repeat_n(Vec::new(), 20));
        let mut s = session_with(quiet).await;
        s.read_reply(t).await.unwrap();
        assert!(s.settled().await);
        // An extra reply waiting on the socket, not yet read into the buffer.
        let mut s = session_with(vec![b"250 ok\r\n".to_vec(), b"250 again\r\n".to_vec()]).await;
        s.read_reply(t).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(!s.settled().await);
        // Closed by the server (the task ends and drops its socket).
        let mut s = session_with(vec![b"250 ok\r\n".to_vec()]).await;
        s.read_reply(t).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(!s.settled().await);
    }

    #[tokio::test]
    async fn a_reply_of_too_many_lines_is_refused() {
        let lines = "250-x\r\n".repeat(MAX_REPLY_LINES + 1);
        let mut s = session_with(vec![lines.into_bytes()]).await;
        let e = s.read_reply(Duration::from_secs(5)).await.unwrap_err();
        assert!(e.to_string().contains("too many lines"), "{e}");
    }
}
