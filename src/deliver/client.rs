//! The SMTP client: delivers one message to the first of its next hops that takes it, with
//! STARTTLS as the send connector's policy asks, and reports one outcome per recipient.
//! Remote trouble is never an error here; it is a temporary or permanent outcome. With a
//! [`Pool`], a connection that ended its transaction cleanly is kept for the next message to
//! the same hop, and one kept is tried before a new one is opened.

use super::config::ClientConfig;
use super::connection::{Connection, open};
use super::envelope::{Payload, safe_path};
use super::failure;
use super::hop::Hop;
use super::pool::{Pool, PoolKey};
use super::transaction::{self, Ended, HopResult};
use crate::smtp::{Notify, Status};
use std::net::SocketAddr;
use std::sync::Arc;

/// One message to deliver.
#[derive(Debug, Clone, Copy)]
pub struct OutboundMessage<'a> {
    /// The reverse path; `None` is the null sender `<>`.
    pub mail_from: Option<&'a str>,
    /// The recipients, all for the same hops.
    pub recipients: &'a [OutboundRcpt],
    /// The message as received (header and body; any line ending).
    pub body: &'a [u8],
    /// Header fields sent before `body` (the relay's `DKIM-Signature` fields, each ending
    /// CRLF); empty for none.
    pub prepend: &'a [u8],
    /// DSN ENVID (decoded; sent xtext-encoded).
    pub envid: Option<&'a str>,
    /// DSN RET: `Some(true)` FULL, `Some(false)` HDRS.
    pub ret_full: Option<bool>,
    /// The message needs SMTPUTF8 (non-ASCII addresses also make it needed).
    pub smtputf8: bool,
    /// The body has 8-bit bytes (BODY=8BITMIME when the server offers it).
    pub eight_bit: bool,
}

/// One recipient with its DSN parameters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutboundRcpt {
    /// The forward path, without angle brackets.
    pub address: String,
    /// DSN NOTIFY, passed on as the sender gave it.
    pub notify: Option<Notify>,
    /// DSN ORCPT decoded, `addr-type;address` (`rfc822;joe@example.com`); a bare address
    /// is taken as rfc822. Sent xtext-encoded.
    pub orcpt: Option<String>,
}

/// What became of one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptOutcome {
    /// The hop took responsibility; `reply` is its answer to the final dot.
    Delivered {
        /// E.g. `250 2.0.0 Ok: queued as 4Xyz`.
        reply: String,
    },
    /// Try again later: the hop's 4xx reply, or what went wrong locally.
    Temporary(Status),
    /// Do not try again, bounce: the hop's 5xx reply, or what went wrong locally.
    Permanent(Status),
}

impl RcptOutcome {
    pub(super) fn failure(f: &Status) -> RcptOutcome {
        if f.is_permanent() {
            RcptOutcome::Permanent(f.clone())
        } else {
            RcptOutcome::Temporary(f.clone())
        }
    }
}

/// The result of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// One per recipient, in the order given.
    pub outcomes: Vec<RcptOutcome>,
    /// The negotiated TLS version and cipher suite (`TLSv1.3 TLS13_AES_256_GCM_SHA384`);
    /// `None`: plaintext.
    pub tls: Option<String>,
    /// The hop that answered last (empty when there was no hop).
    pub host: String,
    /// The address it answered at.
    pub addr: Option<SocketAddr>,
    /// No next hop took the transaction (none could be reached, or each refused before
    /// RCPT): the destination, not the message, is failing, and the scheduler backs off
    /// from it as a whole.
    pub unreachable: bool,
}

/// Tries the hops, and each hop's addresses, in order until one takes the transaction.
/// Connection failures, 4xx/5xx greetings, refused EHLO/HELO, 4xx to MAIL, TLS failures and
/// connections lost before the final dot was sent move on to the next address. From the
/// RCPT replies on, the hop's answers are final for this attempt: per RCPT for each
/// recipient, then DATA's and the final dot's for the accepted ones. A 5xx to MAIL is
/// permanent for all. When no hop takes it, every recipient gets the last hop's failure as
/// a temporary one. Never returns an error: remote problems are outcomes. Every connection
/// is new and closed after the transaction; [`deliver_reusing`] keeps them.
pub async fn deliver(cfg: &ClientConfig, hops: &[Hop], msg: &OutboundMessage<'_>) -> Attempt {
    deliver_with(cfg, None, hops, msg).await
}

/// [`deliver`], taking a connection to an address from `pool` when one is idle there and
/// giving it back after a transaction that ended cleanly. A kept connection that the server
/// closed meanwhile (an I/O error or 421 before MAIL is answered) costs nothing: the
/// transaction goes at once over a new connection to the same address.
pub async fn deliver_reusing(
    cfg: &ClientConfig,
    pool: &Arc<Pool>,
    hops: &[Hop],
    msg: &OutboundMessage<'_>,
) -> Attempt {
    deliver_with(cfg, Some(pool), hops, msg).await
}

async fn deliver_with(
    cfg: &ClientConfig,
    pool: Option<&Arc<Pool>>,
    hops: &[Hop],
    msg: &OutboundMessage<'_>,
) -> Attempt {
    let mut outcomes: Vec<Option<RcptOutcome>> = vec![None; msg.recipients.len()];
    let mut attempt = Attempt {
        outcomes: Vec::new(),
        tls: None,
        host: String::new(),
        addr: None,
        unreachable: false,
    };

    if let Some(from) = msg.mail_from {
        if !safe_path(from) {
            let f = Status::new(553, "5.1.7", "invalid sender address");
            attempt.outcomes = vec![RcptOutcome::failure(&f); msg.recipients.len()];
            return attempt;
        }
    }
    for (i, r) in msg.recipients.iter().enumerate() {
        if !safe_path(&r.address) || r.address.is_empty() {
            outcomes[i] = Some(RcptOutcome::failure(&Status::new(
                553,
                "5.1.3",
                "invalid recipient address",
            )));
        }
    }

    let payload = Payload::new(msg, &outcomes);
    if !payload.pending.is_empty() {
        let mut last = Status::new(451, "4.4.0", "no next hop");
        for (hop, addr) in targets(cfg, pool, hops) {
            attempt.host = hop.host.clone();
            attempt.addr = Some(addr);
            attempt.tls = None;
            let to = Target {
                cfg,
                pool,
                hop,
                addr,
            };
            match to.try_addr(&payload, &mut attempt.tls).await {
                HopResult::Next(f) => {
                    tracing::debug!(host = %hop.host, %addr, reason = %f.text, "next hop");
                    last = f;
                }
                HopResult::Done(results) => {
                    for (i, o) in results {
                        outcomes[i] = Some(o);
                    }
                    break;
                }
            }
        }
        // Nothing accepted the transaction: whatever is left is tried again later.
        attempt.unreachable = outcomes.iter().all(Option::is_none);
        let temp = failure::retry_later(&last);
        for o in outcomes.iter_mut().filter(|o| o.is_none()) {
            *o = Some(RcptOutcome::failure(&temp));
        }
    }
    attempt.outcomes = outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| RcptOutcome::failure(&Status::new(451, "4.4.0", "not tried"))))
        .collect();
    attempt
}

/// Every address of every hop, in order; with a pool, the first address that has a kept
/// connection goes first (as Postfix looks its cache up by destination before by address):
/// that connection is known to work, where an earlier address may be down and cost a
/// connect timeout per message.
fn targets<'h>(
    cfg: &ClientConfig,
    pool: Option<&Arc<Pool>>,
    hops: &'h [Hop],
) -> Vec<(&'h Hop, SocketAddr)> {
    let mut all: Vec<(&Hop, SocketAddr)> = hops
        .iter()
        .flat_map(|h| h.addrs.iter().map(move |a| (h, *a)))
        .collect();
    if let Some(pool) = pool {
        let kept = all
            .iter()
            .position(|(h, a)| pool.has_idle(&PoolKey::new(cfg, &h.host, *a)));
        if let Some(i) = kept.filter(|i| *i > 0) {
            let first = all.remove(i);
            all.insert(0, first);
        }
    }
    all
}

/// One address of one hop, as the client reaches it.
struct Target<'a> {
    cfg: &'a ClientConfig,
    pool: Option<&'a Arc<Pool>>,
    hop: &'a Hop,
    addr: SocketAddr,
}

impl Target<'_> {
    /// The transaction over a kept connection if there is one that still works, else over a
    /// new one.
    async fn try_addr(&self, payload: &Payload<'_>, tls_out: &mut Option<String>) -> HopResult {
        let key = PoolKey::new(self.cfg, &self.hop.host, self.addr);
        if let Some(pool) = self.pool {
            while let Some(mut conn) = pool.take(&key) {
                if !conn.session.settled().await {
                    tracing::debug!(addr = %self.addr, "kept connection is out of step; next");
                    conn.session.abort().await;
                    continue;
                }
                *tls_out = conn.tls.clone();
                match self.run(conn, payload, true).await {
                    Ended::Stale => {
                        tracing::debug!(addr = %self.addr, "kept connection was closed; next");
                    }
                    Ended::Result(result, conn) => return self.finish(key, result, conn).await,
                }
            }
        }
        let conn = match open(self.cfg, self.hop, self.addr, tls_out).await {
            Ok(conn) => conn,
            Err(f) => return HopResult::Next(f),
        };
        match self.run(conn, payload, false).await {
            // Only a reused connection is ever stale.
            Ended::Stale => HopResult::Next(Status::new(451, "4.4.2", "connection lost")),
            Ended::Result(result, conn) => self.finish(key, result, conn).await,
        }
    }

    async fn run(&self, conn: Connection, payload: &Payload<'_>, reused: bool) -> Ended {
        let cfg = self.cfg;
        transaction::run(conn, payload, cfg.command_timeout, cfg.data_timeout, reused).await
    }

    /// Keeps the connection for the next message, or closes it.
    async fn finish(&self, key: PoolKey, result: HopResult, conn: Option<Connection>) -> HopResult {
        let Some(mut conn) = conn else {
            return result;
        };
        if !conn.session.settled().await {
            // It sent more than it was asked for: closed without QUIT, whose reply could
            // not be told from the extra ones.
            conn.session.abort().await;
            return result;
        }
        let unkept = match self.pool {
            Some(pool) => pool.put(key, conn),
            None => Some(conn),
        };
        if let Some(mut conn) = unkept {
            conn.session.quit().await;
        }
        result
    }
}
