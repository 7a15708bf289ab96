//! The form a message is stored in: a Received line naming the client, this host and the
//! protocol, then the message with the verdict's header changes, or the bytes received
//! untouched when there were none. The body is the received buffer, shared, never copied.
//! Verified Internet mail gets more on top ([`super::authenticate`]).

use super::Session;
use crate::auth::report::Verified;
use crate::eval::Verdict;
use crate::queue::MessageBytes;
use crate::smtp::command::MailParams;
use bytes::Bytes;

impl Session {
    /// The bytes to queue: the Received line and header, then the body as received.
    pub(super) fn stamp(
        &self,
        verdict: &Verdict,
        original: &Bytes,
        params: &MailParams,
        verified: Option<&Verified>,
    ) -> MessageBytes {
        let received = self.received(params);
        if let (Some(v), Some(id)) = (verified, self.authserv_id()) {
            return self.stamp_verified(verdict, original, &received, v, id);
        }
        if verdict.header_changes.is_empty() {
            MessageBytes::new([Bytes::from(received), original.clone()])
        } else {
            let head = verdict.message.header_bytes(received.as_bytes());
            MessageBytes::new([Bytes::from(head), verdict.message.body.clone()])
        }
    }

    /// `Received: from HELO (IP [IP]) by FQDN (mailflow) with PROTOCOL; DATE`, folded.
    fn received(&self, params: &MailParams) -> String {
        let esmtp = self.state.esmtp();
        let with = match (self.tls_active, esmtp) {
            (true, _) => "ESMTPS",
            (false, true) => "ESMTP",
            (false, false) => "SMTP",
        };
        let with = if params.smtputf8 {
            format!("UTF8{with}")
        } else {
            with.to_string()
        };
        let helo = self.state.hello().map_or("", |h| h.name.as_str());
        format!(
            "Received: from {} ({} [{}])\r\n\tby {} (mailflow) with {with};\r\n\t{}\r\n",
            sanitize(helo),
            self.peer.ip(),
            self.peer.ip(),
            self.fqdn(),
            mail_builder::headers::date::Date::now().to_rfc822()
        )
    }
}

/// Client-supplied text going into a header: printable ASCII only, so a HELO name can never
/// break the header or inject a line.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .take(255)
        .collect()
}
