//! What goes on the wire for one message, worked out once for all hops and connections: the
//! recipients still to deliver, the dot-stuffed DATA payload, and the MAIL and RCPT command
//! lines with the parameters (SIZE, BODY, SMTPUTF8, DSN) the server offered.

use super::client::{OutboundMessage, RcptOutcome};
use super::connection::Extensions;
use std::fmt::Write as _;

/// What is to be sent.
pub(super) struct Payload<'a> {
    pub(super) msg: &'a OutboundMessage<'a>,
    /// Indexes of the recipients still to deliver.
    pub(super) pending: Vec<usize>,
    pub(super) data: Vec<u8>,
    pub(super) needs_utf8: bool,
}

impl<'a> Payload<'a> {
    /// The payload for the recipients without an outcome yet.
    pub(super) fn new(msg: &'a OutboundMessage<'a>, outcomes: &[Option<RcptOutcome>]) -> Self {
        let pending: Vec<usize> = outcomes
            .iter()
            .enumerate()
            .filter(|(_, o)| o.is_none())
            .map(|(i, _)| i)
            .collect();
        let needs_utf8 = msg.smtputf8
            || !msg.mail_from.unwrap_or("").is_ascii()
            || pending
                .iter()
                .filter_map(|i| msg.recipients.get(*i))
                .any(|r| !r.address.is_ascii());
        Payload {
            msg,
            data: if pending.is_empty() {
                Vec::new()
            } else {
                encode_data(msg.prepend, msg.body)
            },
            pending,
            needs_utf8,
        }
    }

    /// MAIL FROM and RCPT TO command lines, with the parameters the server understands.
    pub(super) fn commands(&self, ext: &Extensions) -> (String, Vec<String>) {
        let msg = self.msg;
        let dsn = ext.contains_key("DSN");
        let mut mail = format!("MAIL FROM:<{}>", msg.mail_from.unwrap_or(""));
        if ext.contains_key("SIZE") {
            let _ = write!(mail, " SIZE={}", self.data.len());
        }
        if msg.eight_bit && ext.contains_key("8BITMIME") {
            mail.push_str(" BODY=8BITMIME");
        }
        if self.needs_utf8 {
            mail.push_str(" SMTPUTF8");
        }
        if dsn {
            match msg.ret_full {
                Some(true) => mail.push_str(" RET=FULL"),
                Some(false) => mail.push_str(" RET=HDRS"),
                None => {}
            }
            if let Some(envid) = msg.envid {
                let _ = write!(mail, " ENVID={}", xtext(envid));
            }
        }
        let rcpts = self
            .pending
            .iter()
            .filter_map(|i| msg.recipients.get(*i))
            .map(|r| {
                let mut line = format!("RCPT TO:<{}>", r.address);
                if dsn {
                    if let Some(notify) = r.notify {
                        let _ = write!(line, " NOTIFY={notify}");
                    }
                    if let Some(orcpt) = r.orcpt.as_deref() {
                        let (kind, addr) = match orcpt.split_once(';') {
                            Some((kind, addr)) if valid_addr_type(kind) => (kind, addr),
                            _ => ("rfc822", orcpt),
                        };
                        let _ = write!(line, " ORCPT={kind};{}", xtext(addr));
                    }
                }
                line
            })
            .collect();
        (mail, rcpts)
    }
}

fn valid_addr_type(t: &str) -> bool {
    !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Nothing in a path may end the command line or confuse the angle brackets.
pub(super) fn safe_path(p: &str) -> bool {
    !p.chars().any(|c| c.is_control() || c == '<' || c == '>')
}

/// RFC 3461 4: xtext, as the server side decodes it.
fn xtext(s: &str) -> String {
    crate::smtp::command::xtext_encode(s)
}

/// The DATA payload (`prepend`, then `body`): every line ending CRLF (bare CR and bare LF become CRLF, so no
/// variant of `<CR><LF>.<CR><LF>` can end the message early at the next hop), lines
/// starting with `.` doubled, and the terminating `.` line; the same encoder the server
/// side's tests round-trip through its DATA receiver.
pub(crate) fn encode_data(prepend: &[u8], body: &[u8]) -> Vec<u8> {
    crate::smtp::data::dot_stuff_after(prepend, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_normalises_and_stuffs() {
        assert_eq!(encode_data(b"", b""), b".\r\n");
        assert_eq!(encode_data(b"", b"a"), b"a\r\n.\r\n");
        assert_eq!(encode_data(b"", b"a\nb\rc\r\n"), b"a\r\nb\r\nc\r\n.\r\n");
        assert_eq!(
            encode_data(b"", b".x\n..y\n."),
            b"..x\r\n...y\r\n..\r\n.\r\n"
        );
        // Smuggling shapes cannot end the data early.
        assert_eq!(
            encode_data(b"", b"a\r\n.\r\r\nb"),
            b"a\r\n..\r\n\r\nb\r\n.\r\n"
        );
        assert_eq!(encode_data(b"", b"a\n.\nb"), b"a\r\n..\r\nb\r\n.\r\n");
        // Fields put before the message go out first, in the same buffer.
        assert_eq!(
            encode_data(b"DKIM-Signature: a\r\n", b"From: x\r\n\r\n.b\r\n"),
            b"DKIM-Signature: a\r\nFrom: x\r\n\r\n..b\r\n.\r\n"
        );
    }

    #[test]
    fn xtext_encodes_specials() {
        assert_eq!(xtext("a+b=c d"), "a+2Bb+3Dc+20d");
        assert_eq!(xtext("é"), "+C3+A9");
    }
}
