//! Messages for the tests that drive the delivery client directly (deliver, relay_reuse,
//! reuse_attack).

use mailflow::deliver::{OutboundMessage, OutboundRcpt};

/// A small message, as the sinks and scripted hops of those tests expect it.
pub const BODY: &[u8] = b"From: a@example.test\r\nSubject: hi\r\n\r\nhello\r\n";

/// Recipients with no DSN parameters.
pub fn rcpts(addrs: &[&str]) -> Vec<OutboundRcpt> {
    addrs
        .iter()
        .map(|a| OutboundRcpt {
            address: a.to_string(),
            ..OutboundRcpt::default()
        })
        .collect()
}

/// `body` from a@example.test to `rcpts`, no DSN or 8-bit parameters.
pub fn message<'a>(rcpts: &'a [OutboundRcpt], body: &'a [u8]) -> OutboundMessage<'a> {
    OutboundMessage {
        mail_from: Some("a@example.test"),
        recipients: rcpts,
        body,
        prepend: &[],
        envid: None,
        ret_full: None,
        smtputf8: false,
        eight_bit: false,
    }
}
