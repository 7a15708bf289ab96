//! One inbound SMTP session, driven as an explicit state machine over where the client is
//! ([`State`]): connected, greeted, in a transaction, sending BDAT chunks. This file owns the
//! loop (read a command, check it is in step, dispatch it) and the replies; each group of
//! commands has its own file: [`hello`] (EHLO, HELO, STARTTLS), [`envelope`] (MAIL, RCPT),
//! [`data`] (DATA, BDAT), [`accept`] (the end of data: evaluation, spool record, the one
//! reply that acknowledges it), with [`authenticate`] (verifying Internet mail, our
//! Authentication-Results and ARC seal), [`stamp`] (the Received line and the stored form)
//! and [`tracking`] (the message tracking events of received mail) beside them; [`stream`]
//! reads lines and data from the plain or TLS connection.
//!
//! The receive connector is chosen once, by the accept loop, and passed in; the session
//! chooses again only when a reload has swapped the table it judges a message by (the
//! choice depends on the listen address and the client's address, never on TLS).

mod accept;
mod authenticate;
mod data;
mod envelope;
mod hello;
mod stamp;
mod stream;
mod tracking;

use super::Shared;
use super::memory::Lease;
use crate::compile::Table;
use crate::model::{Address, InboundTls, ReceiveConnector};
use crate::relay::metrics::Metrics;
use crate::smtp::command::{Command, MailParams, RcptParams, parse_command};
use crate::smtp::data::BdatReceiver;
use crate::smtp::reply::Reply;
use crate::stream::Stream;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use stream::Read;
use tokio::net::TcpStream;

/// Errors before the session gives up on a client (Postfix's hard error limit).
const MAX_ERRORS: u32 = 20;

/// Where the client is in the conversation. Commands move it along: EHLO or HELO greets,
/// MAIL opens a transaction, a BDAT chunk that is not the last keeps it chunking, and RSET,
/// a new EHLO, the end of a message or its refusal bring it back to greeted; STARTTLS starts
/// over at connected.
#[derive(Default)]
enum State {
    /// The banner is sent and no EHLO or HELO answered (again so after STARTTLS).
    #[default]
    Connected,
    /// EHLO or HELO answered; no transaction open.
    Greeted(Hello),
    /// MAIL accepted: recipients are being given.
    Transaction(Hello, Transaction),
    /// BDAT chunks of the transaction arriving; what came so far is kept between chunks.
    Chunking(Hello, Transaction, Chunks),
}

/// What the client said of itself.
struct Hello {
    /// The name in EHLO or HELO.
    name: String,
    /// EHLO (extensions, pipelining), not HELO.
    esmtp: bool,
}

/// One mail transaction: MAIL and the recipients accepted so far.
struct Transaction {
    /// MAIL FROM (`None`: the null sender).
    mail_from: Option<Address>,
    params: MailParams,
    rcpts: Vec<(Address, RcptParams)>,
    /// RCPTs refused for the recipient limit.
    overshoot: usize,
}

/// The chunks of a BDAT transaction received so far, and the memory they are kept in.
struct Chunks {
    rx: BdatReceiver,
    lease: Lease,
}

impl State {
    fn hello(&self) -> Option<&Hello> {
        match self {
            State::Connected => None,
            State::Greeted(h) | State::Transaction(h, _) | State::Chunking(h, _, _) => Some(h),
        }
    }

    fn esmtp(&self) -> bool {
        self.hello().is_some_and(|h| h.esmtp)
    }

    fn transaction(&self) -> Option<&Transaction> {
        match self {
            State::Transaction(_, tx) | State::Chunking(_, tx, _) => Some(tx),
            State::Connected | State::Greeted(_) => None,
        }
    }

    fn transaction_mut(&mut self) -> Option<&mut Transaction> {
        match self {
            State::Transaction(_, tx) | State::Chunking(_, tx, _) => Some(tx),
            State::Connected | State::Greeted(_) => None,
        }
    }

    /// Ends the transaction, if any (RSET, the end of a message or its refusal): greeted
    /// again, or still connected when the client never said EHLO or HELO.
    fn reset(&mut self) {
        *self = match std::mem::take(self) {
            State::Connected => State::Connected,
            State::Greeted(h) | State::Transaction(h, _) | State::Chunking(h, _, _) => {
                State::Greeted(h)
            }
        };
    }
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
    /// The address the client reached (a wildcard listener's specific one), which the
    /// capture records: a replay under rules that split a wildcard into addresses needs it.
    local: SocketAddr,
    /// The table the connector was chosen from; a message is judged by the newest one.
    table: Arc<Table>,
    /// This client's receive connector in `table`.
    connector: usize,
    state: State,
    tls_peer: Option<String>,
    tls_active: bool,
    errors: u32,
    /// The rest of an over-long line is being thrown away.
    skipping: bool,
    started: Instant,
    /// This connection's places in the connection counts (relay, connector, address), given
    /// back as QUIT is answered: a client that reconnects at once must not find its old
    /// session still counted.
    slot: Option<super::limits::Slot>,
}

/// The receive connector the accept loop chose for a connection, in the table it chose it
/// from (`None`: no connector accepts the client).
pub(super) struct Chosen {
    pub(super) table: Arc<Table>,
    pub(super) connector: Option<usize>,
}

/// Serves one connection until QUIT, a timeout, too many errors, or shutdown.
pub(super) async fn serve(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    listen: SocketAddr,
    slot: super::limits::Slot,
    chosen: Chosen,
) {
    // An IPv4 client of a dual-stack listener reaches `::ffff:a.b.c.d`: recorded as a.b.c.d,
    // the address rules name.
    let local = tcp
        .local_addr()
        .map_or(listen, |a| SocketAddr::new(a.ip().to_canonical(), a.port()));
    let mut stream = Stream::Plain(tcp);
    let Some(connector) = chosen.connector else {
        Metrics::inc(&shared.metrics.rejected);
        let refusal = Reply::new(554, "5.7.1", "no receive connector accepts mail from you");
        let _ = stream::write_flush(&mut stream, &refusal.to_bytes()).await;
        tracing::info!(client = %peer, "refused: no receive connector accepts this client");
        return;
    };
    let mut s = Session {
        shared,
        stream,
        buf: Vec::with_capacity(4096),
        peer,
        listen,
        local,
        table: chosen.table,
        connector,
        state: State::Connected,
        tls_peer: None,
        tls_active: false,
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

impl Session {
    fn conn(&self) -> &ReceiveConnector {
        // The index was chosen from this very table, which the session keeps until it
        // chooses again from a newer one.
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
        stream::write_flush(&mut self.stream, &r.to_bytes())
            .await
            .is_ok()
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
                    if !self.error(e.reply()).await {
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
            _ => !self.state.esmtp(),
        }
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
            Command::Ehlo(name) => self.ehlo(name).await,
            Command::Helo(name) => self.helo(name).await,
            Command::StartTls => self.starttls().await,
            Command::Noop => self.ok_or_close(Reply::new(250, "2.0.0", "OK")).await,
            Command::Rset => {
                self.state.reset();
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
}
