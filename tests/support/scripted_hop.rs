//! A scripted next hop for attacking the delivery client: it answers like a plain SMTP
//! server (PIPELINING offered or not) except where its script says otherwise, counts the
//! connections it accepted and those closed since, and records each message it answered the
//! final dot of with 2xx.

use mailflow::deliver::Hop as NextHop;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// What the scripted hop does with one command.
#[derive(Clone)]
pub enum Act {
    /// Writes these bytes (one or more replies, CRLFs included).
    Say(String),
    /// Answers nothing (and reads on).
    Silent,
    /// Writes these bytes, then closes the connection.
    SayAndClose(String),
    /// Writes the first bytes, then the second ones after the delay (unsolicited).
    SayThenLater(String, Duration, String),
}

/// What the script sees: the connection's number (0 first), the number of messages this
/// connection took before, and the command (`.` for the final dot).
pub type Script = dyn Fn(usize, usize, &str) -> Option<Act> + Send + Sync;

/// A message the hop answered the dot of with 2xx.
#[derive(Debug, Clone)]
pub struct Taken {
    pub connection: usize,
    pub rcpts: Vec<String>,
}

pub struct Hop {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    taken: Arc<Mutex<Vec<Taken>>>,
}

impl Hop {
    /// A hop offering PIPELINING (or not) that asks `script` first for each command; `None`
    /// from the script: the usual answer (`250`, `354` to DATA).
    pub async fn start(pipelining: bool, script: Arc<Script>) -> Hop {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let taken = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(AtomicUsize::new(0));
        let (c, t, d) = (connections.clone(), taken.clone(), closed.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let n = c.fetch_add(1, Ordering::SeqCst);
                let (script, taken, closed) = (script.clone(), t.clone(), d.clone());
                tokio::spawn(async move {
                    let _ = serve(tcp, n, pipelining, &*script, &taken).await;
                    closed.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Hop {
            addr,
            connections,
            closed,
            taken,
        }
    }

    pub fn hops(&self) -> Vec<NextHop> {
        vec![NextHop {
            host: "hop.test".into(),
            addrs: vec![self.addr],
            preference: 0,
        }]
    }

    pub fn taken(&self) -> Vec<Taken> {
        self.taken.lock().unwrap().clone()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Connections the client has not closed yet, as the hop sees them.
    pub fn open(&self) -> usize {
        self.connections() - self.closed.load(Ordering::SeqCst)
    }
}

async fn serve(
    tcp: tokio::net::TcpStream,
    n: usize,
    pipelining: bool,
    script: &Script,
    taken: &Mutex<Vec<Taken>>,
) -> std::io::Result<()> {
    let (r, mut w) = tcp.into_split();
    let mut r = BufReader::new(r);
    w.write_all(b"220 hop.test ESMTP\r\n").await?;
    let mut messages = 0;
    let mut rcpts = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_string();
        let verb = cmd
            .split([' ', ':'])
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let usual = match verb.as_str() {
            "EHLO" if pipelining => "250-hop.test\r\n250 PIPELINING\r\n".to_string(),
            "EHLO" => "250 hop.test\r\n".to_string(),
            "MAIL" => {
                rcpts.clear();
                "250 2.1.0 ok\r\n".into()
            }
            "RCPT" => "250 2.1.5 ok\r\n".into(),
            "DATA" => "354 go on\r\n".into(),
            "QUIT" => {
                w.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => "250 ok\r\n".into(),
        };
        let act = script(n, messages, &cmd).unwrap_or(Act::Say(usual));
        let said = match &act {
            Act::Say(s) | Act::SayAndClose(s) | Act::SayThenLater(s, _, _) => s.clone(),
            Act::Silent => String::new(),
        };
        if verb == "RCPT" && said.starts_with('2') {
            rcpts.push(cmd[8..].trim_matches(['<', '>']).to_string());
        }
        // The usual answer to DATA: read the message up to the dot, then ask for that.
        if verb == "DATA" && said.starts_with("354") {
            w.write_all(said.as_bytes()).await?;
            loop {
                line.clear();
                if r.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" {
                    break;
                }
            }
            let act = script(n, messages, ".").unwrap_or(Act::Say("250 2.0.0 queued\r\n".into()));
            let said = match &act {
                Act::Say(s) | Act::SayAndClose(s) | Act::SayThenLater(s, _, _) => s.clone(),
                Act::Silent => String::new(),
            };
            if said.starts_with('2') {
                taken.lock().unwrap().push(Taken {
                    connection: n,
                    rcpts: std::mem::take(&mut rcpts),
                });
            }
            messages += 1;
            if !act_out(&mut w, act).await? {
                return Ok(());
            }
            continue;
        }
        if !act_out(&mut w, act).await? {
            return Ok(());
        }
    }
}

/// Carries out `act`; false: the connection is to close.
async fn act_out(w: &mut tokio::net::tcp::OwnedWriteHalf, act: Act) -> std::io::Result<bool> {
    match act {
        Act::Say(s) => w.write_all(s.as_bytes()).await?,
        Act::Silent => {}
        Act::SayAndClose(s) => {
            w.write_all(s.as_bytes()).await?;
            w.shutdown().await?;
            return Ok(false);
        }
        Act::SayThenLater(now, after, later) => {
            w.write_all(now.as_bytes()).await?;
            w.flush().await?;
            tokio::time::sleep(after).await;
            w.write_all(later.as_bytes()).await?;
        }
    }
    w.flush().await?;
    Ok(true)
}
