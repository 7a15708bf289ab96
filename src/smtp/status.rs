//! [`Status`]: the one SMTP status (code, enhanced code, text) the relay carries from wherever
//! a reply is decided (a command refused, a rule's reject, a next hop's answer, a local
//! failure) to wherever it is written (the client's reply, the spool, a DSN, a log line).

use super::reply::Reply;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A reply code with its enhanced status code (RFC 3463) and text.
///
/// `enhanced` is a plain string rather than `Option<String>` or a parsed triple: the spool
/// stores `RecipientState::Failed` with postcard, which has no field names, and this
/// struct's fields (`u16`, `String`, `String`, in this order) encode exactly as the variant's
/// own fields did, so spools written before the type existed still read. Our own statuses
/// always carry an enhanced code; one built from a next hop's reply gets `class.0.0` when the
/// hop sent none ([`Status::from_reply`]). An empty `enhanced` is written as no enhanced code.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Status {
    /// Basic reply code, e.g. `550`.
    pub code: u16,
    /// Enhanced status code, e.g. `5.1.1`.
    pub enhanced: String,
    /// Reply text, one line.
    pub text: String,
}

impl Status {
    /// A status from its parts.
    pub fn new(code: u16, enhanced: &str, text: impl Into<String>) -> Status {
        Status {
            code,
            enhanced: enhanced.to_string(),
            text: text.into(),
        }
    }

    /// What a client reads in a server's reply: its code, its enhanced code (`class.0.0`
    /// when absent or of another class, see [`Reply::status`]) and its text, lines joined.
    pub fn from_reply(r: &Reply) -> Status {
        Status {
            code: r.code,
            enhanced: r.status(),
            text: r.text(),
        }
    }

    /// 5xx: do not retry.
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// 4xx: try again later.
    pub fn is_temporary(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// The reply that sends this status on the wire.
    pub fn reply(&self) -> Reply {
        Reply::new(self.code, &self.enhanced, self.text.clone())
    }
}

/// `550 5.1.1 user unknown`: the form logs, DSN diagnostics and error messages use.
impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.code, self.enhanced, self.text)
    }
}

/// A refused command is returned as its status.
impl std::error::Error for Status {}

impl From<Status> for Reply {
    fn from(s: Status) -> Reply {
        Reply::new(s.code, &s.enhanced, s.text)
    }
}

impl From<&Status> for Reply {
    fn from(s: &Status) -> Reply {
        s.reply()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::smtp::parse_reply;

    #[test]
    fn written_once() {
        let s = Status::new(550, "5.1.1", "user unknown");
        assert_eq!(s.to_string(), "550 5.1.1 user unknown");
        assert_eq!(s.reply().to_bytes(), b"550 5.1.1 user unknown\r\n");
        assert_eq!(Reply::from(&s), Reply::from(s.clone()));
        assert!(s.is_permanent() && !s.is_temporary());
        let t = Status::new(451, "4.4.2", "connection lost");
        assert!(t.is_temporary() && !t.is_permanent());
        // No enhanced code: none on the wire either.
        assert_eq!(Status::new(220, "", "mx").reply().to_bytes(), b"220 mx\r\n");
    }

    #[test]
    fn read_from_a_reply() {
        let (r, _) = parse_reply(b"550-5.1.1 no such\r\n550 5.1.1 user\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            Status::from_reply(&r),
            Status::new(550, "5.1.1", "no such user")
        );
        let (r, _) = parse_reply(b"452 busy\r\n").unwrap().unwrap();
        assert_eq!(Status::from_reply(&r), Status::new(452, "4.0.0", "busy"));
    }

    /// The spool's `RecipientState::Failed { code, enhanced, text }` became `Failed(Status)`:
    /// postcard must encode both the same, or old spools stop reading.
    #[test]
    fn postcard_encoding_is_the_bare_fields() {
        let s = Status::new(550, "5.1.1", "user unknown");
        let fields: (u16, String, String) = (550, "5.1.1".into(), "user unknown".into());
        let a = postcard::to_allocvec(&s).unwrap();
        assert_eq!(a, postcard::to_allocvec(&fields).unwrap());
        assert_eq!(postcard::from_bytes::<Status>(&a).unwrap(), s);
    }
}
