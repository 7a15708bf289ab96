//! Why a next hop did not take (part of) a message, as the client reports it: a
//! [`Status`] (the server's reply, or one the client makes up for a local problem, built by
//! the functions here), or a [`HopError`], trouble on the wire that has no reply at all.

use crate::smtp::{Reply, Status};
use std::io;

/// A next hop's refusal as the client reports it: the reply's status, its text after the
/// command it answered (`RCPT: user unknown`).
pub(super) fn from_reply(r: &Reply, context: &str) -> Status {
    let mut s = Status::from_reply(r);
    if !context.is_empty() {
        s.text = format!("{context}: {}", s.text);
    }
    s
}

/// The same reason, but to be retried: a hop that refused us may not be the last word.
pub(super) fn retry_later(s: &Status) -> Status {
    if s.code < 500 {
        return s.clone();
    }
    let enhanced = match s.enhanced.split_once('.') {
        Some((_, rest)) => format!("4.{rest}"),
        None => "4.0.0".to_string(),
    };
    Status {
        code: 451,
        enhanced,
        text: format!("{} {}", s.code, s.text),
    }
}

/// Trouble on the wire during `context`: retry.
pub(super) fn io(context: &str, e: &HopError) -> Status {
    Status::new(451, "4.4.2", format!("{context}: {e}"))
}

/// A refused STARTTLS: TLS was required, so this is a TLS failure whatever the hop said.
pub(super) fn tls(s: Status) -> Status {
    Status {
        code: 454,
        enhanced: "4.7.5".into(),
        text: s.text,
    }
}

/// Replies outside 4xx/5xx where a 4xx or 5xx was due are protocol trouble: retry.
pub(super) fn refusal(s: Status) -> Status {
    if (400..600).contains(&s.code) {
        s
    } else {
        Status::new(
            451,
            "4.5.0",
            format!("unexpected reply {}: {}", s.code, s.text),
        )
    }
}

/// A failure talking to one server.
#[derive(Debug, thiserror::Error)]
pub(super) enum HopError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("timed out")]
    Timeout,
    #[error("protocol error: {0}")]
    Protocol(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_become_temporary() {
        let f = retry_later(&Status::new(554, "5.7.1", "go away"));
        assert_eq!((f.code, f.enhanced.as_str()), (451, "4.7.1"));
    }
}
