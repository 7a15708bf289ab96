//! Mail from the Internet, authenticated at the end of data: verified before the evaluator
//! runs (its rules read the results), then stored with the relay's `Authentication-Results`
//! field on top, every incoming one claiming the relay's authserv-id removed, and an ARC
//! set sealing the message as stored. Only for mail the attribution stage takes as
//! `Anonymous` (an `auth anonymous` connector, or one that trusts XOORG when the XOORG does
//! not vouch for one of our tenants) and only when the rule set names an `authserv-id`:
//! mail from tenants and partners is theirs to vouch for.

use super::Session;
use super::Transaction;
use crate::auth::arc::{self, SealError};
use crate::auth::report::{Verified, is_forged};
use crate::auth::verify::Client;
use crate::eval::{Message, Verdict};
use crate::model::AuthAs;
use crate::queue::MessageBytes;
use bytes::Bytes;

impl Session {
    /// The authserv-id the relay writes and protects, when the rule set names one.
    pub(super) fn authserv_id(&self) -> Option<&str> {
        let id = self.table.authentication.as_ref()?.authserv_id.as_ref()?;
        Some(id.value.as_str())
    }

    /// Verifies `message` as it arrived, when it is Internet mail (AuthAs Anonymous) and the
    /// rule set asks for verification.
    pub(super) async fn verify_inbound(
        &self,
        tx: &Transaction,
        message: &Bytes,
    ) -> Option<Verified> {
        self.authserv_id()?;
        let env = self.envelope(tx, Vec::new());
        if crate::eval::auth_as(&self.table, &env) != Some(AuthAs::Anonymous) {
            return None;
        }
        let client = Client {
            ip: self.peer.ip(),
            helo: self
                .state
                .hello()
                .map(|h| h.name.clone())
                .unwrap_or_default(),
            mail_from: tx.mail_from.as_ref().map(ToString::to_string),
            host: self.fqdn(),
        };
        Some(
            self.shared
                .authenticator
                .verify(message.clone(), client)
                .await,
        )
    }

    /// The stored form of verified mail: the ARC set (when sealing is configured), our
    /// `Authentication-Results`, the Received line, then the message. When the verdict
    /// changed nothing and nobody forged our results, the bytes received follow untouched;
    /// else the header is written again from its fields, the forged ones left out.
    pub(super) fn stamp_verified(
        &self,
        verdict: &Verdict,
        original: &Bytes,
        received: &str,
        verified: &Verified,
        authserv_id: &str,
    ) -> MessageBytes {
        let mut top = verified.header_field(authserv_id);
        top.push_str(received);
        let forged = |h: &crate::eval::Header| is_forged(h.name(), h.value(), authserv_id);
        if verdict.header_changes.is_empty() && !verdict.message.headers.iter().any(forged) {
            let (head, body) = arc::split_at_body(original);
            let mut sealed_head = top.clone().into_bytes();
            sealed_head.extend_from_slice(&head);
            let seal = self.seal(verified, authserv_id, &sealed_head, &body);
            return MessageBytes::new([Bytes::from(seal + &top), original.clone()]);
        }
        let kept = Message {
            headers: verdict
                .message
                .headers
                .iter()
                .filter(|h| !forged(h))
                .cloned()
                .collect(),
            body: Bytes::new(),
        };
        let head = kept.header_bytes(top.as_bytes());
        let body = verdict.message.body.clone();
        let seal = self.seal(verified, authserv_id, &head, &body);
        MessageBytes::new([Bytes::from(seal), Bytes::from(head), body])
    }

    /// The ARC set for the message `head` + `body`, or nothing: no `arc-seal`, no key for
    /// its domain, or [`arc::decide`] says not to.
    fn seal(&self, verified: &Verified, authserv_id: &str, head: &[u8], body: &[u8]) -> String {
        let Some(domain) = self
            .table
            .authentication
            .as_ref()
            .and_then(|a| a.arc_seal.as_ref())
        else {
            return String::new();
        };
        let keys = self.shared.dkim_keys();
        let Some(key) = arc::sealing_key(&keys, &domain.value) else {
            tracing::warn!(
                "arc-seal {}: no dkim-key for that domain; mail goes unsealed",
                domain.value
            );
            return String::new();
        };
        let results = verified.arc_results(authserv_id);
        match arc::seal(head, body, key, &results, verified.results.arc.result) {
            Ok(set) => set,
            Err(e @ SealError::Skipped(_)) => {
                tracing::debug!(client = %self.peer, "{e}");
                String::new()
            }
            Err(e) => {
                tracing::warn!(client = %self.peer, "{e}");
                String::new()
            }
        }
    }
}
