//! A loopback SMTP sink: listens on 127.0.0.1 on a free port and records every message it
//! accepts (envelope, parameters, data as sent and unstuffed, TLS and client certificate).
//! Knobs make it misbehave: greeting code, per-recipient replies, MAIL/DATA replies,
//! STARTTLS with a given certificate, and which extensions it offers; closing connections
//! after some messages or when idle. Each connection's commands are logged
//! ([`Sink::sessions`]): in which order they came, which came pipelined, and when QUIT and
//! the close came.
//!
//! ```ignore
//! let sink = Sink::start(SinkOptions::default()).await;
//! // ... deliver to sink.addr ...
//! assert_eq!(sink.messages()[0].rcpts, ["a@example.test"]);
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How the sink behaves.
#[derive(Clone)]
pub struct SinkOptions {
    /// The greeting's code: 220 serves, anything else is sent and the connection closed.
    pub greeting: u16,
    /// Answer EHLO (else 502, so clients must fall back to HELO).
    pub ehlo: bool,
    /// Offer STARTTLS with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Offer PIPELINING.
    pub pipelining: bool,
    /// Offer SMTPUTF8.
    pub smtputf8: bool,
    /// Offer DSN.
    pub dsn: bool,
    /// Offer 8BITMIME.
    pub eight_bit_mime: bool,
    /// Offer SIZE with this limit.
    pub size: Option<usize>,
    /// Reply to MAIL (default `250 2.1.0 ok`).
    pub mail_reply: String,
    /// Replies to RCPT for addresses starting with the prefix (ASCII case-insensitive),
    /// first match wins; default `250 2.1.5 ok`. E.g. `("bad@", "550 5.1.1 no such user")`.
    pub rcpt_replies: Vec<(String, String)>,
    /// Reply to the final dot (default `250 2.0.0 queued`); messages are recorded only when
    /// it is 2xx.
    pub data_reply: String,
    /// Closes a connection right after answering the final dot of its this-many-th message,
    /// without a word (a server that keeps no connections open).
    pub messages_per_connection: Option<usize>,
    /// Closes a connection that sends nothing for this long, with `421 4.4.2` first
    /// (Postfix's `smtpd_timeout`).
    pub idle_timeout: Option<Duration>,
}

impl Default for SinkOptions {
    fn default() -> Self {
        SinkOptions {
            greeting: 220,
            ehlo: true,
            tls: None,
            pipelining: true,
            smtputf8: false,
            dsn: false,
            eight_bit_mime: true,
            size: None,
            mail_reply: "250 2.1.0 ok".into(),
            rcpt_replies: Vec::new(),
            data_reply: "250 2.0.0 queued".into(),
            messages_per_connection: None,
            idle_timeout: None,
        }
    }
}

impl SinkOptions {
    /// Adds a RCPT reply rule.
    pub fn rcpt(mut self, prefix: &str, reply: &str) -> Self {
        self.rcpt_replies.push((prefix.into(), reply.into()));
        self
    }

    /// Offers STARTTLS.
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(config);
        self
    }
}

/// One accepted message.
#[derive(Debug, Clone, Default)]
pub struct Received {
    /// The last EHLO/HELO argument.
    pub helo: String,
    /// The reverse path (without brackets; empty for `<>`).
    pub mail_from: String,
    /// MAIL parameters, as written.
    pub mail_params: Vec<String>,
    /// Accepted recipients.
    pub rcpts: Vec<String>,
    /// Parameters of each accepted RCPT, as written.
    pub rcpt_params: Vec<Vec<String>>,
    /// The data as it came over the wire, up to and without the final `.` line.
    pub raw: Vec<u8>,
    /// The data with dot-stuffing removed.
    pub data: Vec<u8>,
    /// It came over TLS.
    pub tls: bool,
    /// The client presented a certificate.
    pub client_cert: bool,
}

/// One command line as the sink read it.
#[derive(Debug, Clone)]
pub struct Command {
    /// The line without CRLF; the end of the data is logged as `.`.
    pub line: String,
    /// More of what the client wrote was already waiting when this line was read: it came
    /// in one write with what follows (PIPELINING), not after this line's reply.
    pub pipelined: bool,
    /// When it was read.
    pub at: Instant,
}

/// What happened on one connection, in order.
#[derive(Debug, Clone)]
pub struct SessionLog {
    /// When it was accepted.
    pub opened: Instant,
    /// Every command line (after the data, `.`), over TLS or not.
    pub commands: Vec<Command>,
    /// When QUIT came.
    pub quit: Option<Instant>,
    /// When the connection ended (either side).
    pub closed: Option<Instant>,
}

impl SessionLog {
    /// The verbs (upper case) in order: `EHLO`, `MAIL`, `RCPT`, `DATA`, `.`, `QUIT`, ...
    pub fn verbs(&self) -> Vec<String> {
        self.commands
            .iter()
            .map(|c| {
                let verb = c.line.split([' ', ':']).next().unwrap_or("");
                verb.to_ascii_uppercase()
            })
            .collect()
    }

    /// Messages whose data was sent on this connection.
    pub fn transactions(&self) -> usize {
        self.commands.iter().filter(|c| c.line == ".").count()
    }
}

/// One RCPT command the sink answered, accepted or not, with its transaction's sender:
/// what recipient probes (`MAIL FROM:<>`, `RCPT`, `QUIT`) leave behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRcpt {
    /// The transaction's reverse path (empty for `<>`).
    pub mail_from: String,
    /// The address, without brackets.
    pub address: String,
    /// The code the sink answered.
    pub code: u16,
    /// It came over TLS.
    pub tls: bool,
}

/// A running sink; stops when dropped.
pub struct Sink {
    /// Where it listens.
    pub addr: SocketAddr,
    messages: Arc<Mutex<Vec<Received>>>,
    seen: Arc<Mutex<Vec<SeenRcpt>>>,
    connections: Arc<AtomicUsize>,
    sessions: Arc<Mutex<Vec<SessionLog>>>,
    task: JoinHandle<()>,
}

impl Sink {
    /// Starts a sink on 127.0.0.1, on a free port.
    pub async fn start(options: SinkOptions) -> Sink {
        Sink::start_on(0, options).await
    }

    /// Starts a sink on 127.0.0.1:`port` (a next hop that was down comes back); retries
    /// for a moment while the port is still in TIME_WAIT or held by a test.
    pub async fn start_on(port: u16, options: SinkOptions) -> Sink {
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", port)).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => panic!("binding 127.0.0.1:{port}: {e}"),
            }
        };
        let addr = listener.local_addr().unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let sessions = Arc::new(Mutex::new(Vec::new()));
        let options = Arc::new(options);
        let (m, c, sn) = (messages.clone(), connections.clone(), seen.clone());
        let logs = sessions.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let index = {
                    let mut logs = logs.lock().unwrap();
                    logs.push(SessionLog {
                        opened: Instant::now(),
                        commands: Vec::new(),
                        quit: None,
                        closed: None,
                    });
                    logs.len() - 1
                };
                let log = Log {
                    index,
                    logs: logs.clone(),
                };
                tokio::spawn(connection(tcp, options.clone(), m.clone(), sn.clone(), log));
            }
        });
        Sink {
            addr,
            messages,
            seen,
            connections,
            sessions,
            task,
        }
    }

    /// The messages accepted so far.
    pub fn messages(&self) -> Vec<Received> {
        self.messages.lock().unwrap().clone()
    }

    /// Every RCPT it has answered, in order.
    pub fn rcpts_seen(&self) -> Vec<SeenRcpt> {
        self.seen.lock().unwrap().clone()
    }

    /// How many connections it has accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// What happened on each connection, in the order they were accepted.
    pub fn sessions(&self) -> Vec<SessionLog> {
        self.sessions.lock().unwrap().clone()
    }

    /// Stops listening.
    pub fn stop(self) {}
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One connection's place in the sink's session logs.
#[derive(Clone, Default)]
struct Log {
    index: usize,
    logs: Arc<Mutex<Vec<SessionLog>>>,
}

impl Log {
    fn with(&self, f: impl FnOnce(&mut SessionLog)) {
        if let Some(log) = self.logs.lock().unwrap().get_mut(self.index) {
            f(log);
        }
    }

    fn command(&self, line: &str, pipelined: bool) {
        self.with(|l| {
            l.commands.push(Command {
                line: line.to_string(),
                pipelined,
                at: Instant::now(),
            })
        });
    }
}

#[derive(Default)]
struct State {
    helo: String,
    tls: bool,
    client_cert: bool,
    tx: Option<Received>,
    seen: Arc<Mutex<Vec<SeenRcpt>>>,
    log: Log,
    /// Messages taken on this connection.
    messages: usize,
}

async fn connection(
    tcp: TcpStream,
    options: Arc<SinkOptions>,
    store: Arc<Mutex<Vec<Received>>>,
    seen: Arc<Mutex<Vec<SeenRcpt>>>,
    log: Log,
) {
    let mut state = State {
        seen,
        log: log.clone(),
        ..State::default()
    };
    let closed = |log: &Log| log.with(|l| l.closed = Some(Instant::now()));
    let Ok(Some(tcp)) = session(tcp, &options, &store, &mut state, true).await else {
        closed(&log);
        return;
    };
    let Some(config) = options.tls.clone() else {
        closed(&log);
        return;
    };
    let Ok(tls) = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await else {
        closed(&log);
        return;
    };
    state.tls = true;
    state.client_cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .is_some_and(|c| !c.is_empty());
    state.helo.clear();
    state.tx = None;
    let _ = session(tls, &options, &store, &mut state, false).await;
    closed(&log);
}

/// Serves commands until QUIT, EOF or STARTTLS; returns the stream for the TLS handshake.
async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    o: &SinkOptions,
    store: &Mutex<Vec<Received>>,
    st: &mut State,
    greet: bool,
) -> std::io::Result<Option<S>> {
    let mut r = BufReader::new(stream);
    if greet {
        if o.greeting != 220 {
            r.get_mut()
                .write_all(format!("{} 4.3.2 not now\r\n", o.greeting).as_bytes())
                .await?;
            return Ok(None);
        }
        r.get_mut().write_all(b"220 sink.test ESMTP\r\n").await?;
    }
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = r.read_until(b'\n', &mut line);
        let n = match o.idle_timeout {
            None => read.await?,
            Some(t) => match tokio::time::timeout(t, read).await {
                Ok(n) => n?,
                Err(_) => {
                    r.get_mut().write_all(b"421 4.4.2 idle timeout\r\n").await?;
                    return Ok(None);
                }
            },
        };
        if n == 0 {
            return Ok(None);
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        st.log.command(&text, !r.buffer().is_empty());
        let upper = text.to_ascii_uppercase();
        let verb = upper.split(' ').next().unwrap_or("").to_string();
        let reply: String = match verb.as_str() {
            "EHLO" if o.ehlo => {
                st.helo = text[4..].trim().to_string();
                st.tx = None;
                let mut ext = vec!["sink.test".to_string()];
                if o.tls.is_some() && !st.tls {
                    ext.push("STARTTLS".into());
                }
                if o.pipelining {
                    ext.push("PIPELINING".into());
                }
                if o.eight_bit_mime {
                    ext.push("8BITMIME".into());
                }
                if o.smtputf8 {
                    ext.push("SMTPUTF8".into());
                }
                if o.dsn {
                    ext.push("DSN".into());
                }
                if let Some(n) = o.size {
                    ext.push(format!("SIZE {n}"));
                }
                ext.push("ENHANCEDSTATUSCODES".into());
                let last = ext.len() - 1;
                ext.iter()
                    .enumerate()
                    .map(|(i, e)| format!("250{}{e}\r\n", if i == last { ' ' } else { '-' }))
                    .collect()
            }
            "EHLO" => "502 5.5.1 no EHLO here\r\n".into(),
            "HELO" => {
                st.helo = text[4..].trim().to_string();
                st.tx = None;
                "250 sink.test\r\n".into()
            }
            "STARTTLS" if o.tls.is_some() && !st.tls => {
                r.get_mut().write_all(b"220 2.0.0 go ahead\r\n").await?;
                // Plaintext pipelined after STARTTLS is dropped (CVE-2011-0411).
                return Ok(Some(r.into_inner()));
            }
            "MAIL" if upper.starts_with("MAIL FROM:") => {
                let (path, params) = split_path(&text[10..]);
                if o.mail_reply.starts_with('2') {
                    st.tx = Some(Received {
                        helo: st.helo.clone(),
                        mail_from: path,
                        mail_params: params,
                        tls: st.tls,
                        client_cert: st.client_cert,
                        ..Received::default()
                    });
                }
                format!("{}\r\n", o.mail_reply)
            }
            "RCPT" if upper.starts_with("RCPT TO:") => match st.tx.as_mut() {
                None => "503 5.5.1 MAIL first\r\n".into(),
                Some(tx) => {
                    let (path, params) = split_path(&text[8..]);
                    let lower = path.to_ascii_lowercase();
                    let reply = o
                        .rcpt_replies
                        .iter()
                        .find(|(p, _)| lower.starts_with(&p.to_ascii_lowercase()))
                        .map_or("250 2.1.5 ok", |(_, r)| r.as_str());
                    st.seen.lock().unwrap().push(SeenRcpt {
                        mail_from: tx.mail_from.clone(),
                        address: path.clone(),
                        code: reply.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0),
                        tls: tx.tls,
                    });
                    if reply.starts_with('2') {
                        tx.rcpts.push(path);
                        tx.rcpt_params.push(params);
                    }
                    format!("{reply}\r\n")
                }
            },
            "DATA" => match st.tx.take() {
                Some(mut tx) if !tx.rcpts.is_empty() => {
                    r.get_mut()
                        .write_all(b"354 end with <CRLF>.<CRLF>\r\n")
                        .await?;
                    loop {
                        line.clear();
                        if r.read_until(b'\n', &mut line).await? == 0 {
                            return Ok(None);
                        }
                        if line == b".\r\n" {
                            st.log.command(".", !r.buffer().is_empty());
                            break;
                        }
                        tx.raw.extend_from_slice(&line);
                        let unstuffed = line.strip_prefix(b".").unwrap_or(&line);
                        tx.data.extend_from_slice(unstuffed);
                    }
                    if o.data_reply.starts_with('2') {
                        store.lock().unwrap().push(tx);
                    }
                    st.messages += 1;
                    if o.messages_per_connection.is_some_and(|n| st.messages >= n) {
                        let reply = format!("{}\r\n", o.data_reply);
                        r.get_mut().write_all(reply.as_bytes()).await?;
                        return Ok(None);
                    }
                    format!("{}\r\n", o.data_reply)
                }
                _ => "503 5.5.1 no valid recipients\r\n".into(),
            },
            "RSET" => {
                st.tx = None;
                "250 2.0.0 ok\r\n".into()
            }
            "NOOP" => "250 2.0.0 ok\r\n".into(),
            "QUIT" => {
                st.log.with(|l| l.quit = Some(Instant::now()));
                r.get_mut().write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(None);
            }
            _ => "500 5.5.2 what?\r\n".into(),
        };
        r.get_mut().write_all(reply.as_bytes()).await?;
    }
}

/// `<path> PARAM PARAM` to the path and the parameters.
fn split_path(s: &str) -> (String, Vec<String>) {
    let s = s.trim_start();
    match s.strip_prefix('<').and_then(|rest| rest.split_once('>')) {
        Some((path, params)) => (
            path.to_string(),
            params.split_whitespace().map(str::to_string).collect(),
        ),
        None => (s.to_string(), Vec::new()),
    }
}
