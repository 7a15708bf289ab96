//! One inbound SMTP session: the command loop over a plain or TLS stream, STARTTLS, the
//! transaction state, recipients answered at RCPT time from the evaluator, and at the end of
//! data the full evaluation, the durable spool write, and the one reply that acknowledges it.

use super::Shared;
use super::memory::Lease;
use super::tls::{ClientCert, peer_name, trusted_for_oorg};
use super::track::{Event, EventId, Refusal};
use crate::compile::Table;
use crate::eval::{Envelope, Fate, Message, Verdict, evaluate, evaluate_recipients};
use crate::model::{Address, InboundTls, ReceiveConnector};
use crate::queue::{NewMessage, NewRecipient, QueueError};
use crate::relay::metrics::Metrics;
use crate::smtp::command::{
    Body, Command, LineEnd, MailParams, RcptParams, find_line, parse_command,
};
use crate::smtp::data::{BdatReceiver, Buffered, DataError, DataReceiver, MAX_TEXT_LINE};
use crate::smtp::reply::Reply;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// Errors before the session gives up on a client (Postfix's hard error limit).
const MAX_ERRORS: u32 = 20;
/// The longest command line read before it is refused; MAIL and RCPT with parameters.
const MAX_LINE: usize = 1024;
/// Recipients over the connector's limit answered 452 without counting as errors, so a
/// pipelining client learns the limit and sends the rest in a new transaction (Postfix's
/// smtpd_recipient_overshoot_limit); past it every refusal counts.
const RECIPIENT_OVERSHOOT: usize = 1000;

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Moved out for the TLS handshake.
    Closed,
}

impl Stream {
    async fn read(&mut self, buf: &mut Vec<u8>) -> std::io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = match self {
            Stream::Plain(s) => s.read(&mut chunk).await?,
            Stream::Tls(s) => s.read(&mut chunk).await?,
            Stream::Closed => 0,
        };
        buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    async fn shutdown(&mut self) {
        let _ = match self {
            Stream::Plain(s) => s.shutdown().await,
            Stream::Tls(s) => s.shutdown().await,
            Stream::Closed => Ok(()),
        };
    }

    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => write_flush(s, bytes).await,
            Stream::Tls(s) => write_flush(s.as_mut(), bytes).await,
            Stream::Closed => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }
}

async fn write_flush<S: AsyncWrite + Unpin>(s: &mut S, bytes: &[u8]) -> std::io::Result<()> {
    s.write_all(bytes).await?;
    s.flush().await
}

/// Where the session is in a transaction.
#[derive(Default)]
struct Transaction {
    mail_from: Option<Option<Address>>,
    params: Option<MailParams>,
    rcpts: Vec<(Address, RcptParams)>,
    bdat: Option<BdatReceiver>,
    /// The memory the BDAT chunks so far are kept in.
    lease: Option<Lease>,
    /// RCPTs refused for the recipient limit.
    overshoot: usize,
}

/// How a session ended, for the log.
enum End {
    Quit,
    Closed,
    Timeout,
    TooManyErrors,
    Shutdown,
    Disconnect,
    Unsynchronized,
}

struct Session {
    shared: Arc<Shared>,
    stream: Stream,
    buf: Vec<u8>,
    peer: SocketAddr,
    /// The configured listen address (port 0 included), which connector selection compares.
    listen: SocketAddr,
    table: Arc<Table>,
    connector: usize,
    helo: Option<String>,
    esmtp: bool,
    tls_peer: Option<String>,
    tls_active: bool,
    tx: Transaction,
    errors: u32,
    /// The rest of an over-long line is being thrown away.
    skipping: bool,
    started: Instant,
    /// This connection's places in the connection counts (relay, connector, address), given
    /// back as QUIT is answered: a client that reconnects at once must not find its old
    /// session still counted.
    slot: Option<super::limits::Slot>,
}

/// Serves one connection until QUIT, a timeout, too many errors, or shutdown.
pub(super) async fn serve(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    listen: SocketAddr,
    slot: super::limits::Slot,
) {
    let table = shared.table();
    let connector =
        crate::compile::select_receive(&table.receive_connectors, Some(listen), peer.ip());
    let mut stream = Stream::Plain(tcp);
    let Some(connector) = connector else {
        Metrics::inc(&shared.metrics.rejected);
        let _ = stream
            .write_all(
                &Reply::new(554, "5.7.1", "no receive connector accepts mail from you").to_bytes(),
            )
            .await;
        tracing::info!(client = %peer, "refused: no receive connector accepts this client");
        return;
    };
    let mut s = Session {
        shared,
        stream,
        buf: Vec::with_capacity(4096),
        peer,
        listen,
        table,
        connector,
        helo: None,
        esmtp: false,
        tls_peer: None,
        tls_active: false,
        tx: Transaction::default(),
        errors: 0,
        skipping: false,
        started: Instant::now(),
        slot: Some(slot),
    };
    let end = s.run().await;
    if matches!(end, End::TooManyErrors | End::Unsynchronized) {
        s.linger().await;
    }
    let why = match end {
        End::Quit => "quit",
        End::Closed => "client closed the connection",
        End::Timeout => "timeout",
        End::TooManyErrors => "too many errors",
        End::Shutdown => "shutting down",
        End::Disconnect => "disconnected by a transport rule",
        End::Unsynchronized => "commands sent ahead of the replies (protocol synchronization)",
    };
    tracing::debug!(client = %s.peer, connector = %s.conn().name.value, "session ended: {why}");
}

enum Read {
    Line(Vec<u8>),
    BareLf,
    TooLong,
    Closed,
    Timeout,
    Shutdown,
}

impl Session {
    fn conn(&self) -> &ReceiveConnector {
        // The index was chosen from this very table, which the session keeps for its life.
        &self.table.receive_connectors[self.connector.min(self.table.receive_connectors.len() - 1)]
    }

    fn fqdn(&self) -> String {
        self.conn()
            .fqdn
            .clone()
            .unwrap_or_else(|| self.shared.hostname.clone())
    }

    async fn reply(&mut self, r: Reply) -> bool {
        if r.code >= 400 {
            Metrics::inc(&self.shared.metrics.rejected);
        }
        self.stream.write_all(&r.to_bytes()).await.is_ok()
    }

    /// Fills the buffer until `want` says it holds enough, under the inactivity timeout and
    /// the overall connection limit. Returns false when the client went away or time ran out.
    async fn fill(&mut self) -> Result<(), Read> {
        let limits = &self.conn().limits;
        let idle = limits.inactivity_timeout;
        let left = limits
            .connection_timeout
            .checked_sub(self.started.elapsed())
            .unwrap_or(Duration::ZERO);
        let wait = idle.min(left);
        let mut shutdown = self.shared.shutdown.clone();
        tokio::select! {
            r = tokio::time::timeout(wait, self.stream.read(&mut self.buf)) => match r {
                Ok(Ok(0)) | Ok(Err(_)) => Err(Read::Closed),
                Ok(Ok(_)) => Ok(()),
                Err(_) => Err(Read::Timeout),
            },
            _ = shutdown.changed() => Err(Read::Shutdown),
        }
    }

    async fn read_line(&mut self) -> Read {
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

    async fn run(&mut self) -> End {
        let banner = Reply::new(220, "", format!("{} ESMTP mailflow ready", self.fqdn()));
        if !self.reply(banner).await {
            return End::Closed;
        }
        loop {
            let line = match self.read_line().await {
                Read::Line(l) => l,
                Read::BareLf => {
                    if !self
                        .error(Reply::new(
                            500,
                            "5.5.2",
                            "bare <LF> received; lines end with <CR><LF>",
                        ))
                        .await
                    {
                        return End::TooManyErrors;
                    }
                    continue;
                }
                Read::TooLong => {
                    if !self.error(Reply::new(500, "5.5.2", "line too long")).await {
                        return End::TooManyErrors;
                    }
                    continue;
                }
                Read::Closed => return End::Closed,
                Read::Timeout => {
                    let _ = self
                        .reply(Reply::new(
                            421,
                            "4.4.2",
                            format!("{} timeout, closing", self.fqdn()),
                        ))
                        .await;
                    return End::Timeout;
                }
                Read::Shutdown => {
                    let _ = self
                        .reply(Reply::new(
                            421,
                            "4.3.2",
                            format!("{} shutting down", self.fqdn()),
                        ))
                        .await;
                    return End::Shutdown;
                }
            };
            let cmd = match parse_command(&line) {
                Ok(c) => c,
                Err(e) => {
                    if !self
                        .error(Reply::new(e.code, e.enhanced, e.message.clone()))
                        .await
                    {
                        return End::TooManyErrors;
                    }
                    continue;
                }
            };
            if self.unsynchronized(&cmd) {
                tracing::info!(client = %self.peer, "commands sent ahead of the replies; disconnecting");
                let _ = self
                    .reply(Reply::new(
                        554,
                        "5.5.0",
                        "protocol synchronization error: commands sent before the reply",
                    ))
                    .await;
                return End::Unsynchronized;
            }
            match self.command(cmd).await {
                Ok(()) => {}
                Err(end) => return end,
            }
        }
    }

    /// Whether the client sent more input where it had to wait for this command's reply
    /// (RFC 2920): after EHLO, HELO or DATA, or after anything when PIPELINING was not
    /// offered. Spammers and smuggling attempts write ahead; real MTAs do not (Postfix's
    /// smtpd_forbid_unauth_pipelining). STARTTLS discards what follows instead, and QUIT
    /// ends the session anyway; a BDAT chunk follows its command by design.
    fn unsynchronized(&self, cmd: &Command) -> bool {
        if self.buf.is_empty() {
            return false;
        }
        match cmd {
            Command::StartTls | Command::Quit | Command::Bdat { .. } => false,
            Command::Ehlo(_) | Command::Helo(_) | Command::Data => true,
            _ => !self.esmtp,
        }
    }

    /// Closes after a parting reply to a client that is still writing: closing with its
    /// input unread would reset the connection and could destroy the reply in flight, so
    /// the write side is shut and input read and dropped for a moment, bounded in time
    /// and bytes.
    async fn linger(&mut self) {
        const LINGER: Duration = Duration::from_secs(2);
        const LINGER_BYTES: usize = 4 * 1024 * 1024;
        self.stream.shutdown().await;
        let deadline = Instant::now() + LINGER;
        let mut seen = 0;
        while seen < LINGER_BYTES {
            self.buf.clear();
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.stream.read(&mut self.buf)).await {
                Ok(Ok(n)) if n > 0 => seen += n,
                _ => break,
            }
        }
    }

    /// Sends an error reply and counts it; false once the client has made too many.
    async fn error(&mut self, r: Reply) -> bool {
        self.errors += 1;
        if self.errors >= MAX_ERRORS {
            let _ = self
                .reply(Reply::new(
                    421,
                    "4.7.0",
                    "too many errors, closing the connection",
                ))
                .await;
            return false;
        }
        self.reply(r).await
    }

    async fn ok_or_close(&mut self, r: Reply) -> Result<(), End> {
        let failed = r.code >= 400;
        if failed {
            if self.error(r).await {
                Ok(())
            } else {
                Err(End::TooManyErrors)
            }
        } else if self.reply(r).await {
            Ok(())
        } else {
            Err(End::Closed)
        }
    }

    fn xoorg_offered(&self) -> bool {
        self.tls_active && trusted_for_oorg(self.tls_peer.as_deref(), self.conn())
    }

    fn tls_offered(&self) -> bool {
        !self.tls_active
            && self.conn().tls.value != InboundTls::Off
            && self.shared.tls_config(&self.conn().name.value).is_some()
    }

    fn ehlo_reply(&self, name: &str) -> Reply {
        let mut lines = vec![format!("{} Hello {name} [{}]", self.fqdn(), self.peer.ip())];
        lines.push("PIPELINING".into());
        lines.push(format!("SIZE {}", self.conn().limits.max_message_size));
        lines.push("8BITMIME".into());
        lines.push("ENHANCEDSTATUSCODES".into());
        if self.tls_offered() {
            lines.push("STARTTLS".into());
        }
        lines.push("CHUNKING".into());
        lines.push("SMTPUTF8".into());
        lines.push("DSN".into());
        if self.xoorg_offered() {
            lines.push("XOORG".into());
        }
        Reply::multi(250, "", lines)
    }

    async fn command(&mut self, cmd: Command) -> Result<(), End> {
        // A client that must use TLS gets nothing but the greeting, STARTTLS, NOOP, RSET and QUIT.
        let tls_required = self.conn().tls.value == InboundTls::Required && !self.tls_active;
        match cmd {
            Command::Ehlo(name) | Command::Helo(name) if name.is_empty() => {
                self.ok_or_close(Reply::new(
                    501,
                    "5.5.4",
                    "a domain name or address literal is needed",
                ))
                .await
            }
            Command::Ehlo(name) => {
                self.tx = Transaction::default();
                let r = self.ehlo_reply(&name);
                self.helo = Some(name);
                self.esmtp = true;
                self.ok_or_close(r).await
            }
            Command::Helo(name) => {
                self.tx = Transaction::default();
                let r = Reply::new(250, "", format!("{} Hello {name}", self.fqdn()));
                self.helo = Some(name);
                self.esmtp = false;
                self.ok_or_close(r).await
            }
            Command::StartTls => self.starttls().await,
            Command::Noop => self.ok_or_close(Reply::new(250, "2.0.0", "OK")).await,
            Command::Rset => {
                self.tx = Transaction::default();
                self.ok_or_close(Reply::new(250, "2.0.0", "OK")).await
            }
            Command::Quit => {
                self.slot = None;
                let _ = self
                    .reply(Reply::new(
                        221,
                        "2.0.0",
                        format!("{} closing connection", self.fqdn()),
                    ))
                    .await;
                Err(End::Quit)
            }
            Command::Help => {
                self.ok_or_close(Reply::new(214, "2.0.0", "see RFC 5321"))
                    .await
            }
            Command::Vrfy(_) => {
                self.ok_or_close(Reply::new(
                    252,
                    "2.5.0",
                    "cannot verify the user; send some mail",
                ))
                .await
            }
            Command::Expn(_) => {
                self.ok_or_close(Reply::new(502, "5.5.1", "EXPN is not offered"))
                    .await
            }
            Command::Auth(_) => {
                self.ok_or_close(Reply::new(502, "5.5.1", "AUTH is not offered"))
                    .await
            }
            // A refused chunk is still read: its bytes are data, never commands.
            Command::Bdat { size, last } => {
                let refusal = tls_required
                    .then(|| Reply::new(530, "5.7.0", "must issue a STARTTLS command first"));
                self.bdat(size, last, refusal).await
            }
            _ if tls_required => {
                self.ok_or_close(Reply::new(
                    530,
                    "5.7.0",
                    "must issue a STARTTLS command first",
                ))
                .await
            }
            Command::Mail { from, params } => self.mail(from, params).await,
            Command::Rcpt { to, params } => self.rcpt(to, params).await,
            Command::Data => self.data().await,
        }
    }

    async fn starttls(&mut self) -> Result<(), End> {
        if self.tls_active {
            return self
                .ok_or_close(Reply::new(503, "5.5.1", "TLS is already active"))
                .await;
        }
        let config = if self.conn().tls.value == InboundTls::Off {
            None
        } else {
            self.shared.tls_config(&self.conn().name.value)
        };
        let Some(config) = config else {
            return self
                .ok_or_close(Reply::new(502, "5.5.1", "STARTTLS is not offered"))
                .await;
        };
        if !self
            .reply(Reply::new(220, "2.0.0", "ready to start TLS"))
            .await
        {
            return Err(End::Closed);
        }
        // Anything the client sent after STARTTLS in the clear is thrown away (CVE-2011-0411):
        // it must not be read as if it came over TLS.
        self.buf.clear();
        let Stream::Plain(plain) = std::mem::replace(&mut self.stream, Stream::Closed) else {
            return Err(End::Closed);
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&config.config));
        let handshake = tokio::time::timeout(
            self.conn().limits.inactivity_timeout,
            acceptor.accept(plain),
        )
        .await;
        match handshake {
            Ok(Ok(tls)) => {
                let (_, conn) = tls.get_ref();
                self.tls_peer = match config.client_cert(conn.peer_certificates()) {
                    ClientCert::Verified(certs) => peer_name(&certs, self.conn()),
                    ClientCert::None => None,
                    ClientCert::Unverified(why) => {
                        tracing::info!(client = %self.peer, "client certificate not verified ({why}): treated as no certificate");
                        None
                    }
                };
                self.stream = Stream::Tls(Box::new(tls));
                self.tls_active = true;
                self.helo = None;
                self.esmtp = false;
                self.tx = Transaction::default();
                tracing::debug!(client = %self.peer, peer = ?self.tls_peer, "tls established");
                Ok(())
            }
            Ok(Err(e)) => {
                tracing::info!(client = %self.peer, "tls handshake failed: {e}");
                Err(End::Closed)
            }
            Err(_) => Err(End::Timeout),
        }
    }

    async fn mail(&mut self, from: Option<Address>, params: MailParams) -> Result<(), End> {
        if self.helo.is_none() {
            return self
                .ok_or_close(Reply::new(503, "5.5.1", "send EHLO or HELO first"))
                .await;
        }
        if self.tx.mail_from.is_some() {
            return self
                .ok_or_close(Reply::new(503, "5.5.1", "nested MAIL command"))
                .await;
        }
        let limits = &self.conn().limits;
        if let Some(size) = params.size {
            if size > limits.max_message_size {
                return self
                    .ok_or_close(Reply::new(
                        552,
                        "5.3.4",
                        format!(
                            "message size exceeds the limit of {} bytes",
                            limits.max_message_size
                        ),
                    ))
                    .await;
            }
        }
        let needed = params.size.unwrap_or(0).max(limits.max_message_size);
        if !self.shared.spool.has_room(needed) {
            return self
                .ok_or_close(Reply::new(452, "4.3.1", "insufficient system storage"))
                .await;
        }
        // Each queued message costs memory (its envelope in the spool's index and the
        // plan): the queue's length is bounded by configuration, not by senders. Checked
        // here only, so a DSN is never refused for it (sessions may overshoot by their
        // number, which --max-connections bounds).
        if self.shared.spool.len() >= self.shared.options.max_queue {
            return self
                .ok_or_close(Reply::new(452, "4.3.1", "queue full; try again later"))
                .await;
        }
        if self.shared.memory.is_spent() {
            return self.refuse_data(&DataError::NoMemory).await;
        }
        if params.xoorg.is_some() && !self.xoorg_offered() {
            // XOORG is never trusted from a peer it was not offered to: refuse, don't ignore,
            // so a misconfigured tenant connector shows up at once.
            return self
                .ok_or_close(Reply::new(
                    555,
                    "5.5.4",
                    "XOORG is not accepted from this client",
                ))
                .await;
        }
        if !self.esmtp
            && (params.size.is_some()
                || params.body.is_some()
                || params.smtputf8
                || params.xoorg.is_some())
        {
            return self
                .ok_or_close(Reply::new(555, "5.5.4", "parameters need EHLO"))
                .await;
        }
        if from.as_ref().is_some_and(|a| !is_ascii(a)) && !params.smtputf8 {
            return self
                .ok_or_close(Reply::new(
                    553,
                    "5.6.7",
                    "non-ASCII address without SMTPUTF8",
                ))
                .await;
        }
        self.tx = Transaction {
            mail_from: Some(from),
            params: Some(params),
            ..Transaction::default()
        };
        self.ok_or_close(Reply::new(250, "2.1.0", "sender OK"))
            .await
    }

    fn envelope(&self, rcpts: Vec<Address>) -> Envelope {
        Envelope {
            connector: None,
            local: Some(self.listen),
            client_ip: Some(self.peer.ip()),
            tls_peer: self.tls_peer.clone(),
            xoorg: self.tx.params.as_ref().and_then(|p| p.xoorg.clone()),
            mail_from: self.tx.mail_from.clone().flatten(),
            rcpt_to: rcpts,
        }
    }

    /// `RCPT TO:<postmaster>` (RFC 5321 requires it) belongs to this host, which keeps no
    /// mailboxes: it is the postmaster of the relay's default domain (`None` without one).
    /// Every other address is already qualified.
    fn qualified(&self, to: Address) -> Option<Address> {
        if !to.domain.is_empty() {
            return Some(to);
        }
        let domain = self.table.domains.postmaster_domain()?;
        Some(Address {
            local: to.local,
            domain: domain.to_string(),
        })
    }

    async fn rcpt(&mut self, to: Address, params: RcptParams) -> Result<(), End> {
        let Some(_) = &self.tx.mail_from else {
            return self
                .ok_or_close(Reply::new(503, "5.5.1", "send MAIL first"))
                .await;
        };
        if self.tx.rcpts.len() >= self.conn().limits.max_recipients as usize {
            let r = Reply::new(452, "4.5.3", "too many recipients");
            self.tx.overshoot += 1;
            if self.tx.overshoot <= RECIPIENT_OVERSHOOT {
                Metrics::inc(&self.shared.metrics.rejected);
                return if self.stream.write_all(&r.to_bytes()).await.is_ok() {
                    Ok(())
                } else {
                    Err(End::Closed)
                };
            }
            return self.ok_or_close(r).await;
        }
        let smtputf8 = self.tx.params.as_ref().is_some_and(|p| p.smtputf8);
        if !is_ascii(&to) && !smtputf8 {
            return self
                .ok_or_close(Reply::new(
                    553,
                    "5.6.7",
                    "non-ASCII address without SMTPUTF8",
                ))
                .await;
        }
        let Some(to) = self.qualified(to) else {
            return self
                .ok_or_close(Reply::new(
                    550,
                    "5.1.1",
                    "no accepted domain; this relay has no postmaster",
                ))
                .await;
        };
        let verdict = evaluate_recipients(&self.table, &self.envelope(vec![to.clone()]));
        let mut refused = verdict.recipients.iter().find_map(|r| match &r.fate {
            Fate::Reject {
                code,
                enhanced,
                text,
            } => Some(Reply::new(*code, enhanced, text.clone())),
            _ => None,
        });
        if refused.is_none() {
            // `verify-recipients`: the next hop is asked before the recipient is accepted.
            refused = super::verify::refusal(&self.shared, &self.table, &verdict).await;
        }
        if let Some(r) = refused {
            // Counted per client and reply, not written per RCPT: a flood of refusals must
            // not fill the spool's disk (`track::refusals`).
            self.shared.tracker.refused(Refusal {
                client: self.peer.ip(),
                connector: self.conn().name.value.clone(),
                sender: self.tx.mail_from.clone().flatten().map(|a| a.to_string()),
                recipient: to.to_string(),
                status: format!(
                    "{} {} {}",
                    r.code,
                    r.enhanced.as_deref().unwrap_or_default(),
                    r.lines.join(" ")
                ),
            });
            return self.ok_or_close(r).await;
        }
        self.tx.rcpts.push((to, params));
        self.ok_or_close(Reply::new(250, "2.1.5", "recipient OK"))
            .await
    }

    async fn data(&mut self) -> Result<(), End> {
        if self.tx.bdat.is_some() {
            // RFC 3030: a transaction that began with BDAT goes on with BDAT only.
            return self
                .ok_or_close(Reply::new(
                    503,
                    "5.5.1",
                    "DATA cannot follow BDAT in one transaction",
                ))
                .await;
        }
        if self.tx.mail_from.is_none() {
            return self
                .ok_or_close(Reply::new(503, "5.5.1", "send MAIL first"))
                .await;
        }
        if self.tx.rcpts.is_empty() {
            return self
                .ok_or_close(Reply::new(554, "5.5.1", "no valid recipients"))
                .await;
        }
        if self
            .tx
            .params
            .as_ref()
            .is_some_and(|p| p.body == Some(Body::BinaryMime))
        {
            return self
                .ok_or_close(Reply::new(503, "5.5.1", "BODY=BINARYMIME needs BDAT"))
                .await;
        }
        if !self
            .reply(Reply::new(354, "", "end data with <CR><LF>.<CR><LF>"))
            .await
        {
            return Err(End::Closed);
        }
        let limits = &self.conn().limits;
        let mut rx = DataReceiver::new(limits.max_message_size)
            .with_header_limit(limits.max_header_size)
            .with_line_limit(MAX_TEXT_LINE);
        let mut lease = Lease::new(&self.shared.memory);
        loop {
            budget(&mut lease, &mut rx, self.buf.len());
            let progress = rx.feed(&self.buf);
            self.buf.drain(..progress.consumed);
            if progress.done {
                break;
            }
            // RFC 5321's data block timeout is 3 minutes; the connector's idle limit applies.
            self.fill().await.map_err(ended)?;
        }
        let bare = rx.bare_line_endings();
        if bare > 0 {
            tracing::info!(client = %self.peer, "{bare} bare CR or LF line endings normalised to CRLF");
        }
        match rx.finish() {
            Ok(bytes) => self.message(bytes, lease).await,
            Err(e) => self.refuse_data(&e).await,
        }
    }

    /// Ends the transaction with the reply for a refused message.
    async fn refuse_data(&mut self, e: &DataError) -> Result<(), End> {
        if *e == DataError::NoMemory {
            tracing::warn!(client = %self.peer, "message refused: the relay's memory for message data is spent (--max-message-memory)");
        }
        self.tx = Transaction::default();
        self.ok_or_close(Reply::from(e)).await
    }

    /// Reads `size` octets of a chunk and drops them as they come: a refused chunk is
    /// still data, never commands, and costs no memory.
    async fn discard(&mut self, size: u64) -> Result<(), End> {
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

    /// One `BDAT` chunk. Its bytes are read whatever the answer; a chunk announced over the
    /// size limit is refused at once, before they arrive, and the rest go through the
    /// receiver a read at a time under the memory budget, never buffered whole.
    async fn bdat(&mut self, size: u64, last: bool, refusal: Option<Reply>) -> Result<(), End> {
        let refusal = refusal.or_else(|| {
            (self.tx.mail_from.is_none() || self.tx.rcpts.is_empty())
                .then(|| Reply::new(503, "5.5.1", "send MAIL and RCPT first"))
        });
        if let Some(r) = refusal {
            self.discard(size).await?;
            return self.ok_or_close(r).await;
        }
        let limits = &self.conn().limits;
        let (max, max_header) = (limits.max_message_size, limits.max_header_size);
        let mut rx = self.tx.bdat.take().unwrap_or_else(|| {
            BdatReceiver::new(max)
                .with_header_limit(max_header)
                .with_line_limit(MAX_TEXT_LINE)
        });
        let mut lease = self
            .tx
            .lease
            .take()
            .unwrap_or_else(|| Lease::new(&self.shared.memory));
        // Normalisation only adds octets, so an announced size over the limit is final.
        if rx.size().saturating_add(size) > max {
            drop((rx, lease));
            self.tx = Transaction::default();
            self.ok_or_close(Reply::from(&DataError::TooLarge { limit: max }))
                .await?;
            return self.discard(size).await;
        }
        let mut left = size;
        while left > 0 {
            if self.buf.is_empty() {
                self.fill().await.map_err(ended)?;
            }
            let take = (self.buf.len() as u64).min(left) as usize;
            budget(&mut lease, &mut rx, take);
            rx.feed(self.buf.get(..take).unwrap_or_default());
            self.buf.drain(..take);
            left -= take as u64;
        }
        if let Some(e) = rx.refusal() {
            return self.refuse_data(&e).await;
        }
        if !last {
            self.tx.bdat = Some(rx);
            self.tx.lease = Some(lease);
            return self
                .ok_or_close(Reply::new(250, "2.0.0", format!("{size} octets received")))
                .await;
        }
        let bare = rx.bare_line_endings();
        if bare > 0 {
            tracing::info!(client = %self.peer, "{bare} bare CR or LF line endings normalised to CRLF");
        }
        match rx.finish() {
            Ok(bytes) => self.message(bytes, lease).await,
            Err(e) => self.refuse_data(&e).await,
        }
    }

    /// The end of data: loop and size checks, the full evaluation, the spool write, one reply.
    async fn message(&mut self, bytes: Vec<u8>, mut lease: Lease) -> Result<(), End> {
        let tx = std::mem::take(&mut self.tx);
        if !lease.grow_for_evaluation(bytes.len() as u64) {
            return self.refuse_data(&DataError::NoMemory).await;
        }
        // A reload since RCPT is taken now: the message is judged by one table, start to end.
        self.table = self.shared.table();
        let connector_index = crate::compile::select_receive(
            &self.table.receive_connectors,
            Some(self.listen),
            self.peer.ip(),
        );
        let Some(ci) = connector_index else {
            return self
                .ok_or_close(Reply::new(
                    554,
                    "5.7.1",
                    "no receive connector accepts mail from you",
                ))
                .await;
        };
        self.connector = ci;
        let limits = self.conn().limits.clone();
        let message = Message::parse(&bytes);
        let hops = message
            .headers
            .iter()
            .filter(|h| h.name().eq_ignore_ascii_case("Received"))
            .count();
        if hops as u64 >= u64::from(limits.max_hop_count) {
            return self
                .ok_or_close(Reply::new(
                    554,
                    "5.4.6",
                    format!("hop count exceeded ({hops} Received headers): possible mail loop"),
                ))
                .await;
        }
        let rcpts: Vec<Address> = tx.rcpts.iter().map(|(a, _)| a.clone()).collect();
        self.tx.mail_from = tx.mail_from.clone();
        self.tx.params = tx.params.clone();
        let env = self.envelope(rcpts);
        self.tx = Transaction::default();
        let verdict = evaluate(&self.table, &env, Some(&message), false);
        // From here on only its header fields are read; its copy of the body goes, so the
        // stamped copy below stays within what the memory budget counts.
        let message = Message {
            headers: message.headers,
            body: Vec::new(),
        };
        self.shared.metrics.rules_fired(&verdict.rules_fired);
        let params = tx.params.clone().unwrap_or_default();
        if verdict.disconnect {
            self.track_rules(&verdict, &message);
            let _ = self
                .reply(Reply::new(421, "4.7.0", "connection closed by policy"))
                .await;
            return Err(End::Disconnect);
        }
        let delivered: Vec<usize> = verdict
            .recipients
            .iter()
            .enumerate()
            .filter(|(_, r)| matches!(r.fate, Fate::Deliver { .. }))
            .map(|(i, _)| i)
            .collect();
        let rejected: Vec<&crate::eval::RecipientVerdict> = verdict
            .recipients
            .iter()
            .filter(|r| matches!(r.fate, Fate::Reject { .. }))
            .collect();
        // Every recipient refused (a rule's reject, say): the client gets the refusal itself,
        // and nothing is queued or bounced by us.
        if delivered.is_empty()
            && !rejected.is_empty()
            && rejected.len() == verdict.recipients.len()
        {
            self.track_rules(&verdict, &message);
            let r = match &rejected[0].fate {
                Fate::Reject {
                    code,
                    enhanced,
                    text,
                } => Reply::new(*code, enhanced, text.clone()),
                _ => Reply::new(550, "5.7.1", "refused"),
            };
            return self.ok_or_close(r).await;
        }
        let body = self.stamp(&verdict, &bytes, &message, &params);
        let message_id = message.get("Message-ID");
        let new = NewMessage {
            mail_from: verdict.mail_from.as_ref().map(ToString::to_string),
            envid: params.envid.clone(),
            ret_full: params
                .ret
                .map(|r| matches!(r, crate::smtp::command::Ret::Full)),
            message_id: message_id.clone(),
            client_ip: Some(self.peer.ip()),
            connector: Some(self.conn().name.value.clone()),
            recipients: delivered
                .iter()
                .filter_map(|&i| verdict.recipients.get(i))
                .map(|r| {
                    let p = tx
                        .rcpts
                        .iter()
                        .find(|(a, _)| a.key() == r.original.key())
                        .map(|(_, p)| p);
                    NewRecipient {
                        address: r.address.to_string(),
                        original: r.original.to_string(),
                        send_connector: match &r.fate {
                            Fate::Deliver { connector } => connector.clone(),
                            _ => String::new(),
                        },
                        notify: p.and_then(|p| p.notify.as_ref()).map(notify_text),
                        orcpt: p.and_then(|p| p.orcpt.clone()),
                    }
                })
                .collect(),
            smtputf8: params.smtputf8,
            eight_bit: matches!(params.body, Some(Body::EightBitMime | Body::BinaryMime))
                || !bytes.is_ascii(),
        };
        let stored = if new.recipients.is_empty() {
            None
        } else {
            match self.shared.spool.store(new, body).await {
                Ok(q) => Some(q),
                Err(QueueError::NoSpace { .. }) => {
                    return self
                        .ok_or_close(Reply::new(452, "4.3.1", "insufficient system storage"))
                        .await;
                }
                Err(e) => {
                    tracing::error!("spool write failed: {e}");
                    return self
                        .ok_or_close(Reply::new(
                            451,
                            "4.3.0",
                            "local error in processing; try again later",
                        ))
                        .await;
                }
            }
        };
        let id = stored.as_ref().map(|q| q.id.to_string());
        Metrics::inc(&self.shared.metrics.received);
        self.track_received(&verdict, &message, id.as_deref(), bytes.len() as u64);
        // Recipients refused after data while others were accepted get a DSN from us.
        if !rejected.is_empty() {
            self.shared
                .bounce_refused(&verdict, &rejected, &bytes, &params)
                .await;
        }
        if let Some(q) = &stored {
            self.shared.enqueue(q);
        }
        let text = match &id {
            Some(id) => format!("queued as {id}"),
            None => "accepted".to_string(),
        };
        self.ok_or_close(Reply::new(250, "2.6.0", text)).await
    }

    /// The bytes to queue: a Received header, then the message with the verdict's header
    /// changes, or the original bytes untouched when there were none.
    fn stamp(
        &self,
        verdict: &Verdict,
        original: &[u8],
        message: &Message,
        params: &MailParams,
    ) -> Vec<u8> {
        let _ = message;
        let with = match (self.tls_active, self.esmtp) {
            (true, _) => "ESMTPS",
            (false, true) => "ESMTP",
            (false, false) => "SMTP",
        };
        let with = if params.smtputf8 {
            format!("UTF8{with}")
        } else {
            with.to_string()
        };
        let helo = self.helo.clone().unwrap_or_default();
        let received = format!(
            "Received: from {} ({} [{}])\r\n\tby {} (mailflow) with {with};\r\n\t{}\r\n",
            sanitize(&helo),
            self.peer.ip(),
            self.peer.ip(),
            self.fqdn(),
            mail_builder::headers::date::Date::now().to_rfc822()
        );
        let rest = if verdict.header_changes.is_empty() {
            original.to_vec()
        } else {
            verdict.message.to_bytes()
        };
        let mut out = Vec::with_capacity(received.len() + rest.len());
        out.extend_from_slice(received.as_bytes());
        out.extend_from_slice(&rest);
        out
    }

    fn base_event(&self, id: EventId, source: &str, verdict: &Verdict, message: &Message) -> Event {
        let mut e = Event::new(id, source);
        e.client_ip = Some(self.peer.ip().to_string());
        e.server_ip = Some(self.listen.ip().to_string());
        e.connector_id = verdict.connector.clone();
        e.message_id = message.get("Message-ID");
        e.sender_address = verdict.mail_from.as_ref().map(ToString::to_string);
        e.message_subject = message.text("Subject");
        e.tenant_id = verdict.originating_org.clone();
        e.directionality = Some(
            if verdict.auth_as == crate::model::AuthAs::Internal {
                "Originating"
            } else {
                "Incoming"
            }
            .to_string(),
        );
        e
    }

    fn track_rules(&self, verdict: &Verdict, message: &Message) {
        for rule in &verdict.rules_fired {
            let mut e = self.base_event(EventId::AgentInfo, "AGENT", verdict, message);
            e.source_context = Some(format!("transport rule `{rule}`"));
            e.recipient_address = verdict
                .recipients
                .iter()
                .map(|r| r.address.to_string())
                .collect();
            self.shared.tracker.log(e);
        }
    }

    /// Exchange's word for why a recipient's address changed: EXPAND for a group's
    /// members, RESOLVE for a rewrite entry or a contact's forwarding, REDIRECT for what a
    /// transport rule sent elsewhere.
    fn change_kind(&self, r: &crate::eval::RecipientVerdict) -> EventId {
        use crate::compile::Lookup;
        let addressed = self
            .table
            .rewrites
            .inbound(&r.original)
            .map_or_else(|| r.original.clone(), |w| w.address);
        match self.table.directory.lookup(&addressed) {
            Lookup::Group { .. } => EventId::Expand,
            Lookup::Forward { .. } => EventId::Resolve,
            _ if addressed.key() == r.address.key() => EventId::Resolve,
            _ => EventId::Redirect,
        }
    }

    fn track_received(&self, verdict: &Verdict, message: &Message, id: Option<&str>, size: u64) {
        let mut e = self.base_event(EventId::Receive, "SMTP", verdict, message);
        e.internal_message_id = id.map(str::to_string);
        e.total_bytes = Some(size);
        e.recipient_address = verdict
            .recipients
            .iter()
            .map(|r| r.original.to_string())
            .collect();
        e.recipient_count = Some(verdict.recipients.len());
        self.shared.tracker.log(e);
        self.track_rules(verdict, message);
        for r in &verdict.recipients {
            if r.address.key() != r.original.key() {
                let mut e = self.base_event(self.change_kind(r), "ROUTING", verdict, message);
                e.internal_message_id = id.map(str::to_string);
                e.recipient_address = vec![r.address.to_string()];
                e.related_recipient_address = Some(r.original.to_string());
                self.shared.tracker.log(e);
            }
            if let Fate::Drop { reason } = &r.fate {
                Metrics::inc(&self.shared.metrics.dropped);
                let mut e = self.base_event(EventId::Drop, "AGENT", verdict, message);
                e.internal_message_id = id.map(str::to_string);
                e.recipient_address = vec![r.address.to_string()];
                e.source_context = Some(reason.clone());
                self.shared.tracker.log(e);
            }
        }
    }
}

fn notify_text(n: &crate::smtp::command::Notify) -> String {
    if n.never {
        return "NEVER".into();
    }
    let mut v = Vec::new();
    if n.success {
        v.push("SUCCESS");
    }
    if n.failure {
        v.push("FAILURE");
    }
    if n.delay {
        v.push("DELAY");
    }
    v.join(",")
}

fn is_ascii(a: &Address) -> bool {
    a.local.is_ascii() && a.domain.is_ascii()
}

/// Client-supplied text going into a header: printable ASCII only, so a HELO name can never
/// break the header or inject a line.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .take(255)
        .collect()
}

/// How a read that ended a data phase ends the session.
fn ended(r: Read) -> End {
    match r {
        Read::Timeout => End::Timeout,
        Read::Shutdown => End::Shutdown,
        _ => End::Closed,
    }
}

/// Reserves from the relay's budget what feeding `input` more octets may make `rx` keep.
/// When the budget is spent the receiver stops keeping (the message will get `452 4.3.1`)
/// and what it held is given back; it goes on consuming, so the client stays in step.
fn budget(lease: &mut Lease, rx: &mut impl Buffered, input: usize) {
    let want = rx.capacity_for(input);
    if want > rx.capacity() {
        if lease.grow_for_receiving(want as u64) {
            rx.reserve(want);
        } else {
            rx.out_of_memory();
        }
    }
    if rx.capacity() == 0 {
        lease.shrink_to(0);
    }
}
