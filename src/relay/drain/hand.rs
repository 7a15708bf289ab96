//! One message handed to the peer: its pending recipients less the held ones, one
//! transaction through the delivery client, and the outcome written to the spool, then to
//! the tracking log.

use super::{DrainError, MessageResult, RecipientResult};
use crate::deliver::{
    Attempt, ClientConfig, Hop, OutboundMessage, OutboundRcpt, Pool, RcptOutcome, deliver_reusing,
};
use crate::queue::holds::Holds;
use crate::queue::{NewRecipient, QueueError, QueueId, QueuedMessage, RecipientState, Spool};
use crate::relay::control::Who;
use crate::relay::track::{Event, EventId, Tracker};
use std::sync::Arc;

/// The indexes of the message's pending recipients.
pub(super) fn pending(m: &QueuedMessage) -> Vec<usize> {
    (0..m.states.len())
        .filter(|&i| matches!(m.states.get(i), Some(RecipientState::Pending { .. })))
        .collect()
}

/// The message's pending recipients: those to hand on, and those an administrator holds.
fn split_held<'m>(m: &'m QueuedMessage, holds: &Holds) -> (Vec<Pending<'m>>, Vec<Pending<'m>>) {
    pending(m)
        .into_iter()
        .filter_map(|i| m.meta.recipients.get(i).map(|r| (i, r)))
        .partition(|(_, r)| {
            let domain = r.address.rsplit_once('@').map_or("", |(_, d)| d);
            !holds.covers(&m.id, &r.send_connector, domain)
        })
}

/// The message with these recipients not handed, for `reply`.
fn unhanded(m: &QueuedMessage, recipients: &[Pending<'_>], reply: &str) -> MessageResult {
    MessageResult {
        id: m.id.clone(),
        message_id: m.meta.message_id.clone(),
        sender: m.meta.mail_from.clone(),
        recipients: recipients
            .iter()
            .map(|(_, r)| RecipientResult {
                address: r.address.clone(),
                handed: false,
                reply: reply.to_string(),
            })
            .collect(),
    }
}

/// What every message of one drain is handed with.
pub(super) struct Handing<'a> {
    pub(super) spool: &'a Spool,
    pub(super) cfg: &'a ClientConfig,
    pub(super) pool: &'a Arc<Pool>,
    pub(super) hops: &'a [Hop],
    pub(super) tracker: &'a Tracker,
    /// The peer, `HOST:PORT`.
    pub(super) to: &'a str,
    /// `drain to HOST:PORT`, for the tracking log and the last error of what stays.
    pub(super) context: &'a str,
    /// Who runs the drain.
    pub(super) who: &'a Who,
}

/// One pending recipient: its index in the message and its envelope.
type Pending<'m> = (usize, &'m NewRecipient);

/// The spool updates, tracking events and results of one message's attempt.
#[derive(Default)]
struct Judged {
    updates: Vec<(usize, RecipientState)>,
    events: Vec<Event>,
    results: Vec<RecipientResult>,
}

impl Handing<'_> {
    /// Hands on what of the message no hold covers; the flag says the peer was not reached.
    pub(super) async fn message(
        &self,
        m: &QueuedMessage,
        holds: &Holds,
    ) -> Result<(MessageResult, bool), DrainError> {
        let (to_hand, held) = split_held(m, holds);
        let (mut result, unreachable) = if to_hand.is_empty() {
            (unhanded(m, &[], ""), false)
        } else {
            self.hand(m, &to_hand).await?
        };
        let reply = "held: release it (mailflow queue release) to hand it on";
        result
            .recipients
            .extend(unhanded(m, &held, reply).recipients);
        Ok((result, unreachable))
    }

    /// Sends one message and records the outcome; the flag says the peer was not reached.
    async fn hand(
        &self,
        m: &QueuedMessage,
        recipients: &[Pending<'_>],
    ) -> Result<(MessageResult, bool), DrainError> {
        let body = match self.read_body(&m.id).await {
            Ok(b) => b,
            Err(e) => {
                // Left where it is: the relay bounces a damaged message itself once started.
                return Ok((unhanded(m, recipients, &format!("not handed: {e}")), false));
            }
        };
        let attempt = self.send(m, recipients, &body).await;
        let judged = self.judge(m, recipients, &attempt);
        let mut result = unhanded(m, &[], "");
        self.spool.update(&m.id, judged.updates).await?;
        // Logged once the spool has the outcome: the log never claims what a crash undid.
        // Who drained, as the other queue commands record who acted (an ADMIN event).
        self.tracker.log(crate::relay::control::event(
            self.context,
            self.who,
            Some(m),
        ));
        for e in judged.events {
            self.tracker.log(e);
        }
        result.recipients = judged.results;
        Ok((result, attempt.unreachable))
    }

    /// The spool reads bodies with blocking file I/O: off the async worker.
    async fn read_body(&self, id: &QueueId) -> Result<Vec<u8>, QueueError> {
        let (spool, id) = (self.spool.clone(), id.clone());
        tokio::task::spawn_blocking(move || spool.read_body(&id))
            .await
            .unwrap_or(Err(QueueError::Closed))
    }

    /// One transaction: the stored envelope, the final addresses, ORCPT the client's.
    async fn send(&self, m: &QueuedMessage, recipients: &[Pending<'_>], body: &[u8]) -> Attempt {
        let rcpts: Vec<OutboundRcpt> = recipients
            .iter()
            .map(|(_, r)| OutboundRcpt {
                address: r.address.clone(),
                notify: r.notify,
                orcpt: Some(
                    r.orcpt
                        .clone()
                        .unwrap_or_else(|| format!("rfc822;{}", r.original)),
                ),
            })
            .collect();
        let msg = OutboundMessage {
            mail_from: m.meta.mail_from.as_deref(),
            recipients: &rcpts,
            body,
            prepend: b"",
            envid: m.meta.envid.as_deref(),
            ret_full: m.meta.ret_full,
            smtputf8: m.meta.smtputf8,
            eight_bit: m.meta.eight_bit,
        };
        deliver_reusing(self.cfg, self.pool, self.hops, &msg).await
    }

    /// A `250` is delivered; anything else stays pending with the peer's answer as its last
    /// error (its attempts and due time as they were: the node's own schedule is unchanged).
    fn judge(&self, m: &QueuedMessage, recipients: &[Pending<'_>], attempt: &Attempt) -> Judged {
        let mut j = Judged::default();
        for ((i, r), outcome) in recipients.iter().zip(&attempt.outcomes) {
            let (handed, reply) = match outcome {
                RcptOutcome::Delivered { reply } => (true, reply.clone()),
                RcptOutcome::Temporary(s) | RcptOutcome::Permanent(s) => (false, s.to_string()),
            };
            let state = match m.states.get(*i) {
                _ if handed => RecipientState::Delivered {
                    reply: format!("drained to {}: {reply}", self.to),
                },
                Some(RecipientState::Pending {
                    attempts,
                    next_attempt,
                    ..
                }) => RecipientState::Pending {
                    attempts: *attempts,
                    next_attempt: *next_attempt,
                    last_error: Some(format!("{}: {reply}", self.context)),
                },
                _ => continue,
            };
            j.updates.push((*i, state));
            let id = if handed {
                EventId::Send
            } else {
                EventId::Defer
            };
            let mut e = Event::new(id, "SMTP");
            e.internal_message_id = Some(m.id.to_string());
            e.message_id = m.meta.message_id.clone();
            e.sender_address = m.meta.mail_from.clone();
            e.recipient_address = vec![r.address.clone()];
            e.recipient_status = vec![reply.clone()];
            e.server_hostname = Some(attempt.host.clone()).filter(|h| !h.is_empty());
            e.server_ip = attempt.addr.map(|a| a.ip().to_string());
            e.total_bytes = Some(m.size);
            e.source_context = Some(self.context.to_string());
            j.events.push(e);
            j.results.push(RecipientResult {
                address: r.address.clone(),
                handed,
                reply,
            });
        }
        j
    }
}
