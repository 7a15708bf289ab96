//! MAIL and RCPT: opening a transaction (size, spool room, queue length, memory, XOORG and
//! parameter checks) and answering each recipient at RCPT time from the evaluator's
//! recipient stages (rewriting, resolution, relay permission, route; no transport rules,
//! which wait for the message), then from the next hop when its domain verifies recipients.

use super::stream;
use super::{End, Session, State, Transaction};
use crate::eval::{Envelope, Fate, evaluate_recipients};
use crate::model::Address;
use crate::relay::metrics::Metrics;
use crate::relay::track::Refusal;
use crate::smtp::Status;
use crate::smtp::command::{MailParams, RcptParams};
use crate::smtp::data::DataError;
use crate::smtp::reply::Reply;

/// Recipients over the connector's limit answered 452 without counting as errors, so a
/// pipelining client learns the limit and sends the rest in a new transaction (Postfix's
/// smtpd_recipient_overshoot_limit); past it every refusal counts.
const RECIPIENT_OVERSHOOT: usize = 1000;

impl Session {
    pub(super) async fn mail(
        &mut self,
        from: Option<Address>,
        params: MailParams,
    ) -> Result<(), End> {
        let hello = match std::mem::take(&mut self.state) {
            State::Greeted(h) => h,
            other => {
                let r = match other {
                    State::Connected => Reply::new(503, "5.5.1", "send EHLO or HELO first"),
                    _ => Reply::new(503, "5.5.1", "nested MAIL command"),
                };
                self.state = other;
                return self.ok_or_close(r).await;
            }
        };
        let esmtp = hello.esmtp;
        self.state = State::Greeted(hello);
        if let Some(r) = self.mail_refusal(&params) {
            return self.ok_or_close(r).await;
        }
        if self.shared.memory.is_spent() {
            return self.refuse_data(&DataError::NoMemory).await;
        }
        if let Some(r) = self.parameter_refusal(from.as_ref(), &params, esmtp) {
            return self.ok_or_close(r).await;
        }
        if let State::Greeted(h) = std::mem::take(&mut self.state) {
            self.state = State::Transaction(
                h,
                Transaction {
                    mail_from: from,
                    params,
                    rcpts: Vec::new(),
                    overshoot: 0,
                },
            );
        }
        self.ok_or_close(Reply::new(250, "2.1.0", "sender OK"))
            .await
    }

    /// Why MAIL is refused for the room it needs (size, spool, queue), if it is.
    fn mail_refusal(&self, params: &MailParams) -> Option<Reply> {
        let limits = &self.conn().limits;
        if let Some(size) = params.size {
            if size > limits.max_message_size {
                return Some(Reply::new(
                    552,
                    "5.3.4",
                    format!(
                        "message size exceeds the limit of {} bytes",
                        limits.max_message_size
                    ),
                ));
            }
        }
        let needed = params.size.unwrap_or(0).max(limits.max_message_size);
        if !self.shared.spool.has_room(needed) {
            return Some(Reply::new(452, "4.3.1", "insufficient system storage"));
        }
        // Each queued message costs memory (its envelope in the spool's index and the
        // plan): the queue's length is bounded by configuration, not by senders. Checked
        // here only, so a DSN is never refused for it (sessions may overshoot by their
        // number, which --max-connections bounds).
        if self.shared.spool.len() >= self.shared.options.max_queue {
            return Some(Reply::new(452, "4.3.1", "queue full; try again later"));
        }
        None
    }

    /// The checks of MAIL's parameters, after the memory's.
    fn parameter_refusal(
        &self,
        from: Option<&Address>,
        params: &MailParams,
        esmtp: bool,
    ) -> Option<Reply> {
        if params.xoorg.is_some() && !self.xoorg_offered() {
            // XOORG is never trusted from a peer it was not offered to: refuse, don't ignore,
            // so a misconfigured tenant connector shows up at once.
            return Some(Reply::new(
                555,
                "5.5.4",
                "XOORG is not accepted from this client",
            ));
        }
        if !esmtp
            && (params.size.is_some()
                || params.body.is_some()
                || params.smtputf8
                || params.xoorg.is_some())
        {
            return Some(Reply::new(555, "5.5.4", "parameters need EHLO"));
        }
        if from.is_some_and(|a| !is_ascii(a)) && !params.smtputf8 {
            return Some(Reply::new(
                553,
                "5.6.7",
                "non-ASCII address without SMTPUTF8",
            ));
        }
        None
    }

    /// What the evaluator is told of the session and `tx`, with these recipients; the
    /// connector is the one this session chose, by name, so it is not chosen again.
    pub(super) fn envelope(&self, tx: &Transaction, rcpts: Vec<Address>) -> Envelope {
        Envelope {
            connector: Some(self.conn().name.value.clone()),
            local: Some(self.listen),
            client_ip: Some(self.peer.ip()),
            tls_peer: self.tls_peer.clone(),
            xoorg: tx.params.xoorg.clone(),
            mail_from: tx.mail_from.clone(),
            rcpt_to: rcpts,
            auth: None,
            day: Some(crate::clock::days_since_epoch()),
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

    pub(super) async fn rcpt(&mut self, to: Address, params: RcptParams) -> Result<(), End> {
        let max = self.conn().limits.max_recipients as usize;
        let Some(tx) = self.state.transaction_mut() else {
            return self
                .ok_or_close(Reply::new(503, "5.5.1", "send MAIL first"))
                .await;
        };
        if tx.rcpts.len() >= max {
            let r = Reply::new(452, "4.5.3", "too many recipients");
            tx.overshoot += 1;
            if tx.overshoot <= RECIPIENT_OVERSHOOT {
                Metrics::inc(&self.shared.metrics.rejected);
                return if stream::write_flush(&mut self.stream, &r.to_bytes())
                    .await
                    .is_ok()
                {
                    Ok(())
                } else {
                    Err(End::Closed)
                };
            }
            return self.ok_or_close(r).await;
        }
        if !is_ascii(&to) && !tx.params.smtputf8 {
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
        if let Some(r) = self.recipient_refusal(&to).await {
            // Counted per client and reply, not written per RCPT: a flood of refusals must
            // not fill the spool's disk (`track::refusals`).
            self.shared.tracker.refused(Refusal {
                client: self.peer.ip(),
                connector: self.conn().name.value.clone(),
                sender: self
                    .state
                    .transaction()
                    .and_then(|tx| tx.mail_from.as_ref())
                    .map(ToString::to_string),
                recipient: to.to_string(),
                status: r.to_string(),
            });
            return self.ok_or_close(r.reply()).await;
        }
        if let Some(tx) = self.state.transaction_mut() {
            tx.rcpts.push((to, params));
        }
        self.ok_or_close(Reply::new(250, "2.1.5", "recipient OK"))
            .await
    }

    /// Why the evaluator, or the next hop of a domain that verifies recipients, refuses
    /// `to` in the open transaction, if it does.
    async fn recipient_refusal(&self, to: &Address) -> Option<Status> {
        let tx = self.state.transaction()?;
        let verdict = evaluate_recipients(&self.table, &self.envelope(tx, vec![to.clone()]));
        let refused = verdict.recipients.iter().find_map(|r| match &r.fate {
            Fate::Reject(status) => Some(status.clone()),
            _ => None,
        });
        if crate::eval::is_srs_address(&self.table, to) {
            let m = &self.shared.metrics;
            Metrics::inc(match refused {
                Some(_) => &m.srs_refused,
                None => &m.srs_reversals,
            });
        }
        match refused {
            Some(r) => Some(r),
            // `verify-recipients`: the next hop is asked before the recipient is accepted.
            None => crate::relay::verify::refusal(&self.shared, &self.table, &verdict).await,
        }
    }
}

pub(super) fn is_ascii(a: &Address) -> bool {
    a.local.is_ascii() && a.domain.is_ascii()
}
