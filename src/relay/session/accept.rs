//! The end of data: the loop and size checks, the full evaluation, the spool record, and
//! the one reply that acknowledges the message (or refuses it). The message stays one
//! buffer throughout: parsed, evaluated and stored as slices of the bytes received.

use super::{End, Session, Transaction};
use crate::auth::report::Verified;
use crate::eval::{Fate, Message, RecipientVerdict, Verdict, evaluate};
use crate::model::Address;
use crate::queue::{NewMessage, NewRecipient, QueueError, QueuedMessage};
use crate::relay::memory::Lease;
use crate::relay::metrics::Metrics;
use crate::smtp::command::{Body, MailParams, RcptParams, Ret};
use crate::smtp::data::DataError;
use crate::smtp::reply::Reply;
use bytes::Bytes;
use std::sync::Arc;

impl Session {
    /// The end of data: loop and size checks, the full evaluation, the spool write, one reply.
    pub(super) async fn message(
        &mut self,
        tx: Transaction,
        bytes: Vec<u8>,
        mut lease: Lease,
    ) -> Result<(), End> {
        // One buffer from here to the spool: the parsed body, the evaluator's and the stored
        // form are slices of it.
        let bytes = Bytes::from(bytes);
        let header = Message::header_len(&bytes) as u64;
        if !lease.grow_for_evaluation(bytes.len() as u64, header) {
            return self.refuse_data(&DataError::NoMemory).await;
        }
        if !self.newest_table() {
            return self
                .ok_or_close(Reply::new(
                    554,
                    "5.7.1",
                    "no receive connector accepts mail from you",
                ))
                .await;
        }
        let message = Message::parse_shared(&bytes);
        let hops = message
            .headers
            .iter()
            .filter(|h| h.name().eq_ignore_ascii_case("Received"))
            .count();
        let max_hops = self.conn().limits.max_hop_count;
        if hops as u64 >= u64::from(max_hops) {
            return self
                .ok_or_close(Reply::new(
                    554,
                    "5.4.6",
                    format!("hop count exceeded ({hops} Received headers): possible mail loop"),
                ))
                .await;
        }
        // Internet mail is verified as it arrived, before any rule rewrites it.
        let verified = self.verify_inbound(&tx, &bytes).await;
        let rcpts: Vec<Address> = tx.rcpts.iter().map(|(a, _)| a.clone()).collect();
        let mut env = self.envelope(&tx, rcpts);
        env.auth = verified.as_ref().map(|v| v.results.clone());
        let verdict = evaluate(&self.table, &env, Some(&message), false);
        crate::relay::shadow::compare(
            &self.shared,
            &self.table,
            &env,
            self.local,
            &message,
            &verdict,
        );
        if self.shared.capture.enabled() {
            let candidate = self.shared.shadow_table();
            let mut seen = crate::relay::capture::Captured::of(
                &self.table,
                candidate.as_deref(),
                &env,
                &message,
                bytes.len() as u64,
            );
            // The address the client reached, not the listener's: the rules a replay meets
            // may bind that address alone where these bound a wildcard.
            seen.envelope.local = Some(self.local);
            self.shared.capture.record(seen);
        }
        // From here on only its header fields are read.
        let message = Message {
            headers: message.headers,
            body: Bytes::new(),
        };
        self.shared.metrics.rules_fired(&verdict.rules_fired);
        let params = tx.params;
        if verdict.disconnect {
            self.track_rules(&verdict, &message);
            let _ = self
                .reply(Reply::new(421, "4.7.0", "connection closed by policy"))
                .await;
            return Err(End::Disconnect);
        }
        let rejected: Vec<&RecipientVerdict> = verdict
            .recipients
            .iter()
            .filter(|r| matches!(r.fate, Fate::Reject { .. }))
            .collect();
        // Every recipient refused (a rule's reject, say): the client gets the refusal itself,
        // and nothing is queued or bounced by us.
        if !rejected.is_empty() && rejected.len() == verdict.recipients.len() {
            self.track_rules(&verdict, &message);
            let r = match &rejected[0].fate {
                Fate::Reject(status) => status.reply(),
                _ => Reply::new(550, "5.7.1", "refused"),
            };
            return self.ok_or_close(r).await;
        }
        let stored = match self
            .spool(
                &verdict,
                &message,
                &tx.rcpts,
                &params,
                &bytes,
                verified.as_ref(),
            )
            .await
        {
            Ok(stored) => stored,
            Err(r) => return self.ok_or_close(r).await,
        };
        let id = stored.as_ref().map(|q| q.id.to_string());
        Metrics::inc(&self.shared.metrics.received);
        self.track_received(
            &verdict,
            &message,
            id.as_deref(),
            bytes.len() as u64,
            env.auth.as_ref(),
        );
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

    /// Writes the message, stamped, to the spool for its delivered recipients (none: nothing
    /// is written); the reply for the client when the spool cannot take it.
    async fn spool(
        &self,
        verdict: &Verdict,
        message: &Message,
        rcpts: &[(Address, RcptParams)],
        params: &MailParams,
        bytes: &Bytes,
        verified: Option<&Verified>,
    ) -> Result<Option<QueuedMessage>, Reply> {
        let new = NewMessage {
            mail_from: verdict.mail_from.as_ref().map(ToString::to_string),
            envid: params.envid.clone(),
            ret_full: params.ret.map(|r| matches!(r, Ret::Full)),
            message_id: message.get("Message-ID"),
            client_ip: Some(self.peer.ip()),
            connector: Some(self.conn().name.value.clone()),
            recipients: delivered(&verdict.recipients, rcpts),
            smtputf8: params.smtputf8,
            eight_bit: matches!(params.body, Some(Body::EightBitMime | Body::BinaryMime))
                || !bytes.is_ascii(),
        };
        if new.recipients.is_empty() {
            return Ok(None);
        }
        let body = self.stamp(verdict, bytes, params, verified);
        match self.shared.spool.store(new, body).await {
            Ok(q) => Ok(Some(q)),
            Err(e) => {
                if !matches!(e, QueueError::NoSpace { .. }) {
                    tracing::error!("spool write failed: {e}");
                }
                Err(e.smtp_status().reply())
            }
        }
    }

    /// Takes the relay's newest table, so a message is judged by one table from start to
    /// end, whatever a reload did since RCPT; the connector is chosen again only when a
    /// reload swapped the table. False when no connector of the new table accepts the
    /// client.
    fn newest_table(&mut self) -> bool {
        let table = self.shared.table();
        if Arc::ptr_eq(&table, &self.table) {
            return true;
        }
        let chosen = crate::compile::select_receive(
            &table.receive_connectors,
            Some(self.listen),
            self.peer.ip(),
        );
        self.table = table;
        match chosen {
            Some(c) => {
                self.connector = c;
                true
            }
            None => false,
        }
    }
}

/// What the spool records of each delivered recipient, with the DSN parameters its RCPT
/// gave.
fn delivered(verdicts: &[RecipientVerdict], rcpts: &[(Address, RcptParams)]) -> Vec<NewRecipient> {
    verdicts
        .iter()
        .filter_map(|r| match &r.fate {
            Fate::Deliver { connector } => Some((r, connector)),
            _ => None,
        })
        .map(|(r, connector)| {
            let p = rcpts
                .iter()
                .find(|(a, _)| a.key() == r.original.key())
                .map(|(_, p)| p);
            NewRecipient {
                address: r.address.to_string(),
                original: r.original.to_string(),
                send_connector: connector.clone(),
                notify: p.and_then(|p| p.notify),
                orcpt: p.and_then(|p| p.orcpt.clone()),
            }
        })
        .collect()
}
