//! One mail transaction on a connection ready for MAIL: MAIL, RCPT per recipient, DATA and
//! the payload, and one outcome per recipient from the replies. Towards a server that
//! offers PIPELINING (RFC 2920) MAIL, every RCPT and DATA go out in one write and the
//! replies are read in order; otherwise each command waits for its reply. The outcomes are
//! the same either way. A transaction that ends cleanly (any reply to the final dot but
//! 421) leaves the connection fit for another, which starts with MAIL directly: RFC 5321
//! 4.1.1.4 clears the server's state once it has answered the dot, so RSET would only cost
//! a round trip.

use super::client::RcptOutcome;
use super::connection::Connection;
use super::envelope::Payload;
use super::failure::{self, HopError};
use crate::smtp::Reply;
use crate::smtp::Status;
use std::time::Duration;

/// The body goes out in blocks of this size, each under the command timeout.
const DATA_BLOCK: usize = 64 * 1024;

/// What one transaction came to.
pub(super) enum HopResult {
    /// Nothing was delivered here; try the next address.
    Next(Status),
    /// This hop's answers, per recipient index.
    Done(Vec<(usize, RcptOutcome)>),
}

/// A transaction's result and what is left of the connection.
#[expect(
    clippy::large_enum_variant,
    reason = "one per transaction, returned once; boxing would allocate per message"
)]
pub(super) enum Ended {
    /// The connection was reused, and the server had closed it (or is closing it: 421)
    /// before MAIL was answered: nothing happened, try again on a fresh connection.
    Stale,
    /// The result; the connection when it can carry another transaction (else it has been
    /// closed).
    Result(HopResult, Option<Connection>),
}

/// Runs the transaction for `payload` on `conn`; `reused` says the connection has carried
/// one before, so losing it before MAIL is answered is no fault of this hop.
pub(super) async fn run(
    conn: Connection,
    payload: &Payload<'_>,
    t: Duration,
    data_timeout: Duration,
    reused: bool,
) -> Ended {
    let mut conn = conn;
    let all = |f: &Status| -> Vec<(usize, RcptOutcome)> {
        payload
            .pending
            .iter()
            .map(|i| (*i, RcptOutcome::failure(f)))
            .collect()
    };
    // Refused before any command: the connection is still clean for the next message.
    if payload.needs_utf8 && !conn.ext.contains_key("SMTPUTF8") {
        let f = Status::new(
            553,
            "5.6.7",
            "the message needs SMTPUTF8, which the next hop does not offer",
        );
        return Ended::Result(HopResult::Done(all(&f)), Some(conn));
    }
    if let Some(limit) = conn
        .ext
        .get("SIZE")
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        if limit > 0 && payload.data.len() > limit {
            let f = Status::new(
                552,
                "5.3.4",
                format!("message size exceeds the next hop's limit of {limit} bytes"),
            );
            return Ended::Result(HopResult::Done(all(&f)), Some(conn));
        }
    }

    let replies = if conn.ext.contains_key("PIPELINING") {
        pipelined(&mut conn, payload, t).await
    } else {
        lock_step(&mut conn, payload, t).await
    };
    let Envelope { mail, rcpts, data } = match replies {
        Ok(r) => r,
        Err(Lost::BeforeMail(_)) if reused => return Ended::Stale,
        Err(Lost::BeforeMail(e)) => return next(failure::io("MAIL", &e)),
        Err(Lost::After(context, e)) => return next(failure::io(context, &e)),
    };
    if reused && mail.code == 421 {
        conn.session.quit().await;
        return Ended::Stale;
    }
    if !mail.is_completion() {
        close(&mut conn, data.as_ref()).await;
        let f = failure::from_reply(&mail, "MAIL");
        if mail.code >= 500 {
            return Ended::Result(HopResult::Done(all(&f)), None);
        }
        return next(failure::retry_later(&f));
    }

    let mut results = Vec::with_capacity(payload.pending.len());
    let mut accepted = Vec::new();
    for (i, reply) in payload.pending.iter().zip(&rcpts) {
        if reply.is_completion() {
            accepted.push(*i);
        } else {
            let f = failure::refusal(failure::from_reply(reply, "RCPT"));
            results.push((*i, RcptOutcome::failure(&f)));
        }
    }
    let data = match (accepted.is_empty(), data) {
        (true, data) => {
            close(&mut conn, data.as_ref()).await;
            return done(results, None);
        }
        (false, Some(d)) => d,
        (false, None) => match conn.session.command("DATA", t).await {
            Ok(d) => d,
            Err(e) => return next(failure::io("DATA", &e)),
        },
    };
    let for_accepted = |results: &mut Vec<(usize, RcptOutcome)>, o: RcptOutcome| {
        results.extend(accepted.iter().map(|i| (*i, o.clone())));
    };
    if data.code != 354 {
        conn.session.quit().await;
        let f = failure::refusal(failure::from_reply(&data, "DATA"));
        for_accepted(&mut results, RcptOutcome::failure(&f));
        return done(results, None);
    }
    for block in payload.data.chunks(DATA_BLOCK) {
        if let Err(e) = conn.session.send(block, t).await {
            return next(failure::io("sending the message", &e));
        }
    }
    match conn.session.read_reply(data_timeout).await {
        Ok(reply) => {
            let o = if reply.is_completion() {
                RcptOutcome::Delivered {
                    reply: reply.full(),
                }
            } else {
                RcptOutcome::failure(&failure::refusal(failure::from_reply(
                    &reply,
                    "end of data",
                )))
            };
            for_accepted(&mut results, o);
            conn.transactions += 1;
            if reply.code == 421 {
                conn.session.quit().await;
                return done(results, None);
            }
            done(results, Some(conn))
        }
        Err(e) => {
            // The dot went out: the hop may have the message. Retrying risks a duplicate,
            // which is better than a loss.
            let f = failure::io("waiting for the reply to end of data", &e);
            for_accepted(&mut results, RcptOutcome::failure(&f));
            done(results, None)
        }
    }
}

/// Ends a connection whose transaction failed. A server that took a pipelined DATA (RFC
/// 2920 says it must not when MAIL or every RCPT failed) now reads a message, not commands:
/// closing without QUIT aborts it.
async fn close(conn: &mut Connection, data: Option<&Reply>) {
    if data.is_some_and(|d| d.code == 354) {
        conn.session.abort().await;
    } else {
        conn.session.quit().await;
    }
}

fn next(f: Status) -> Ended {
    Ended::Result(HopResult::Next(f), None)
}

fn done(results: Vec<(usize, RcptOutcome)>, conn: Option<Connection>) -> Ended {
    Ended::Result(HopResult::Done(results), conn)
}

/// The replies up to DATA: MAIL's, one per RCPT sent, and DATA's when DATA went out with
/// them (pipelined).
struct Envelope {
    mail: Reply,
    rcpts: Vec<Reply>,
    data: Option<Reply>,
}

/// Where the connection was lost.
enum Lost {
    /// Before MAIL was answered.
    BeforeMail(HopError),
    /// Later, while waiting for the reply named.
    After(&'static str, HopError),
}

/// MAIL, every RCPT and DATA in one write, then their replies in order.
async fn pipelined(
    conn: &mut Connection,
    payload: &Payload<'_>,
    t: Duration,
) -> Result<Envelope, Lost> {
    let (mail, rcpts) = payload.commands(&conn.ext);
    let mut group = String::with_capacity(mail.len() + 8 + rcpts.len() * 48);
    for line in std::iter::once(&mail).chain(&rcpts) {
        group.push_str(line);
        group.push_str("\r\n");
    }
    group.push_str("DATA\r\n");
    let s = &mut conn.session;
    s.send(group.as_bytes(), t)
        .await
        .map_err(Lost::BeforeMail)?;
    let mail = s.read_reply(t).await.map_err(Lost::BeforeMail)?;
    if mail.code == 421 {
        // The server is closing the connection: no other reply is coming.
        return Ok(Envelope {
            mail,
            rcpts: Vec::new(),
            data: None,
        });
    }
    let mut replies = Vec::with_capacity(rcpts.len());
    for _ in &rcpts {
        replies.push(s.read_reply(t).await.map_err(|e| Lost::After("RCPT", e))?);
    }
    let data = s.read_reply(t).await.map_err(|e| Lost::After("DATA", e))?;
    Ok(Envelope {
        mail,
        rcpts: replies,
        data: Some(data),
    })
}

/// Each command after the previous one's reply; RCPT only after MAIL was taken, and DATA
/// left to the caller (only when some recipient was accepted).
async fn lock_step(
    conn: &mut Connection,
    payload: &Payload<'_>,
    t: Duration,
) -> Result<Envelope, Lost> {
    let (mail, rcpts) = payload.commands(&conn.ext);
    let s = &mut conn.session;
    let mail = s.command(&mail, t).await.map_err(Lost::BeforeMail)?;
    let mut replies = Vec::with_capacity(rcpts.len());
    if mail.is_completion() {
        for r in &rcpts {
            replies.push(s.command(r, t).await.map_err(|e| Lost::After("RCPT", e))?);
        }
    }
    Ok(Envelope {
        mail,
        rcpts: replies,
        data: None,
    })
}
