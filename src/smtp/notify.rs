//! `NOTIFY=` (RFC 3461 §4.1), the one typed value a recipient's DSN request travels as: parsed
//! once from `RCPT TO`, stored in the spool, consulted by the DSN decision ([`Notify::wants`])
//! and written to the next hop's `RCPT TO` ([`Notify`]'s `Display`).

use std::fmt;
use std::str::FromStr;

/// `NOTIFY=` flags: either `never` alone or any of the other three.
///
/// The parser never yields `never` with another flag, nor no flag at all; a value built by
/// hand with no flag asks for nothing, so it reads and writes as `NEVER`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Notify {
    /// `NEVER`.
    pub never: bool,
    /// `SUCCESS`.
    pub success: bool,
    /// `FAILURE`.
    pub failure: bool,
    /// `DELAY`.
    pub delay: bool,
}

/// What a report tells the sender about a recipient: the three things `NOTIFY` can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsnKind {
    /// Delivered (`SUCCESS`).
    Success,
    /// Given up (`FAILURE`).
    Failure,
    /// Still being retried (`DELAY`).
    Delay,
}

/// The `NOTIFY=` value is not `NEVER` alone nor a list of distinct `SUCCESS`, `FAILURE`,
/// `DELAY` (any case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadNotify;

impl Notify {
    /// What a recipient without `NOTIFY` gets. RFC 3461 §4.1 lets the MTA choose between
    /// `FAILURE` and `FAILURE,DELAY`; Postfix and Exchange report both, and so do we.
    pub const ABSENT: Notify = Notify {
        never: false,
        success: false,
        failure: true,
        delay: true,
    };

    /// Whether the sender asked to be told of `kind`; `NEVER` asks for nothing. For a
    /// recipient without `NOTIFY`, ask [`Notify::ABSENT`].
    pub fn wants(self, kind: DsnKind) -> bool {
        !self.never
            && match kind {
                DsnKind::Success => self.success,
                DsnKind::Failure => self.failure,
                DsnKind::Delay => self.delay,
            }
    }

    /// The wire form, upper case in RFC order: `NEVER` or e.g. `SUCCESS,DELAY`. This is also
    /// the text the spool has always stored, so it must not change.
    pub fn as_str(self) -> &'static str {
        if self.never {
            return "NEVER";
        }
        match (self.success, self.failure, self.delay) {
            (false, false, false) => "NEVER",
            (true, false, false) => "SUCCESS",
            (false, true, false) => "FAILURE",
            (false, false, true) => "DELAY",
            (true, true, false) => "SUCCESS,FAILURE",
            (true, false, true) => "SUCCESS,DELAY",
            (false, true, true) => "FAILURE,DELAY",
            (true, true, true) => "SUCCESS,FAILURE,DELAY",
        }
    }
}

impl fmt::Display for Notify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Notify {
    type Err = BadNotify;

    /// The strict RFC 3461 grammar `RCPT TO` is held to: keywords in any case and order, none
    /// twice, `NEVER` alone, no spaces.
    fn from_str(s: &str) -> Result<Self, BadNotify> {
        let mut n = Notify::default();
        for word in s.split(',') {
            let flag = if word.eq_ignore_ascii_case("NEVER") {
                &mut n.never
            } else if word.eq_ignore_ascii_case("SUCCESS") {
                &mut n.success
            } else if word.eq_ignore_ascii_case("FAILURE") {
                &mut n.failure
            } else if word.eq_ignore_ascii_case("DELAY") {
                &mut n.delay
            } else {
                return Err(BadNotify);
            };
            if *flag {
                return Err(BadNotify);
            }
            *flag = true;
        }
        if n.never && (n.success || n.failure || n.delay) {
            return Err(BadNotify);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value the parser accepts, written as it reads back.
    #[test]
    fn every_form_round_trips_through_its_text() {
        let forms = [
            "NEVER",
            "SUCCESS",
            "FAILURE",
            "DELAY",
            "SUCCESS,FAILURE",
            "SUCCESS,DELAY",
            "FAILURE,DELAY",
            "SUCCESS,FAILURE,DELAY",
        ];
        for text in forms {
            let n: Notify = text.parse().unwrap();
            assert_eq!(n.to_string(), text);
        }
    }

    #[test]
    fn any_case_and_order_is_written_upper_case_in_rfc_order() {
        let n: Notify = "delay,Success".parse().unwrap();
        assert_eq!(
            n,
            Notify {
                success: true,
                delay: true,
                ..Notify::default()
            }
        );
        assert_eq!(n.to_string(), "SUCCESS,DELAY");
    }

    #[test]
    fn malformed_values_are_refused() {
        for bad in [
            "",
            ",",
            "FAILURE,",
            "NEVER,DELAY",
            "DELAY,DELAY",
            "SOMETIMES",
            "FAILURE, DELAY",
            " NEVER",
        ] {
            assert_eq!(bad.parse::<Notify>(), Err(BadNotify), "{bad:?}");
        }
    }

    #[test]
    fn wants_only_what_is_listed() {
        let n: Notify = "SUCCESS,DELAY".parse().unwrap();
        assert!(n.wants(DsnKind::Success));
        assert!(!n.wants(DsnKind::Failure));
        assert!(n.wants(DsnKind::Delay));
        let never: Notify = "NEVER".parse().unwrap();
        for kind in [DsnKind::Success, DsnKind::Failure, DsnKind::Delay] {
            assert!(!never.wants(kind), "{kind:?}");
            assert!(!Notify::default().wants(kind), "{kind:?}");
        }
    }

    /// RFC 3461: without NOTIFY, failures and delays are reported, successes are not.
    #[test]
    fn absent_reports_failures_and_delays() {
        assert!(Notify::ABSENT.wants(DsnKind::Failure));
        assert!(Notify::ABSENT.wants(DsnKind::Delay));
        assert!(!Notify::ABSENT.wants(DsnKind::Success));
    }
}
