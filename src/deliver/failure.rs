//! Why a next hop did not take (part of) a message, as the client reports it: a
//! [`Failure`] is a reply (the server's, or one the client makes up for a local problem),
//! a [`HopError`] is trouble on the wire that has no reply at all.

use crate::smtp::Reply;
use std::io;

/// A reason not to deliver, as a reply.
#[derive(Debug, Clone)]
pub(super) struct Failure {
    pub(super) code: u16,
    pub(super) enhanced: String,
    pub(super) text: String,
}

impl Failure {
    pub(super) fn new(code: u16, enhanced: &str, text: impl Into<String>) -> Failure {
        Failure {
            code,
            enhanced: enhanced.to_string(),
            text: text.into(),
        }
    }

    pub(super) fn from_reply(r: &Reply, context: &str) -> Failure {
        Failure {
            code: r.code,
            enhanced: r.status(),
            text: if context.is_empty() {
                r.text()
            } else {
                format!("{context}: {}", r.text())
            },
        }
    }

    /// The same reason, but to be retried: a hop that refused us may not be the last word.
    pub(super) fn temporary(&self) -> Failure {
        if self.code < 500 {
            return self.clone();
        }
        let enhanced = match self.enhanced.split_once('.') {
            Some((_, rest)) => format!("4.{rest}"),
            None => "4.0.0".to_string(),
        };
        Failure {
            code: 451,
            enhanced,
            text: format!("{} {}", self.code, self.text),
        }
    }

    pub(super) fn io(context: &str, e: &HopError) -> Failure {
        Failure::new(451, "4.4.2", format!("{context}: {e}"))
    }

    pub(super) fn tls_failure(mut self) -> Failure {
        self.code = 454;
        self.enhanced = "4.7.5".into();
        self
    }

    /// Replies outside 4xx/5xx where a 4xx or 5xx was due are protocol trouble: retry.
    pub(super) fn class(self) -> Failure {
        if (400..600).contains(&self.code) {
            self
        } else {
            Failure::new(
                451,
                "4.5.0",
                format!("unexpected reply {}: {}", self.code, self.text),
            )
        }
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
        let f = Failure::new(554, "5.7.1", "go away").temporary();
        assert_eq!((f.code, f.enhanced.as_str()), (451, "4.7.1"));
    }
}
