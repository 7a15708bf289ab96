//! Step five: evaluating one message against a compiled [`Table`], in the order Exchange
//! runs its stages: connector, tenant attribution and authentication, header firewall,
//! inbound rewriting, recipient resolution and relay permission, transport rules, outbound
//! rewriting, routing. No I/O and no panics; the result is a [`Verdict`] per recipient plus a
//! trace that says, in an administrator's words, why.

/// Adds a line to the trace, formatting it only when the trace is wanted: the relay's path
/// evaluates without one and must not pay for the words.
macro_rules! trace {
    ($run:expr, $stage:expr, $($fmt:tt)+) => {
        if $run.explain {
            $run.step($stage, format!($($fmt)+));
        }
    };
}

mod address_list;
pub mod message;
pub mod organization;
mod recipients;
mod run;
mod srs;
mod stages;
mod transport;
mod trust;

pub use message::{Header, Message};
pub use srs::{is_srs_address, srs_sender};
pub(crate) use stages::{INBOUND_HEADERS, OUTBOUND_HEADERS};
pub use stages::{auth_as, evaluate, evaluate_recipients};

use crate::model::{Address, AuthAs};
use crate::smtp::Status;
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};

/// What arrived: the SMTP envelope and the session facts around it.
#[derive(Debug, Clone, Default)]
pub struct Envelope {
    /// The receive connector, by name (dry runs and tests); else chosen by `local`/`client_ip`.
    pub connector: Option<String>,
    /// The address the client connected to.
    pub local: Option<SocketAddr>,
    /// The client's address.
    pub client_ip: Option<IpAddr>,
    /// The name in the client's verified TLS certificate.
    pub tls_peer: Option<String>,
    /// The XOORG parameter of MAIL FROM.
    pub xoorg: Option<String>,
    /// MAIL FROM (`None`: the null sender).
    pub mail_from: Option<Address>,
    /// RCPT TO, in order.
    pub rcpt_to: Vec<Address>,
    /// What verifying the message found (Internet mail on a relay with an
    /// `authentication` block); `None`: not verified, every method reads as `none`.
    pub auth: Option<crate::auth::AuthResults>,
    /// Today in days since 1970 (UTC), for SRS addresses' day stamps; `None` where no clock
    /// was given (then SRS addresses are not reversed).
    pub day: Option<u64>,
}

/// What becomes of one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "fate", rename_all = "lowercase")]
pub enum Fate {
    /// Sent on through this send connector.
    Deliver {
        /// The send connector's name.
        connector: String,
    },
    /// Accepted and silently dropped.
    Drop {
        /// Why.
        reason: String,
    },
    /// Refused, with this status (`code`, `enhanced` and `text` beside `fate` in JSON).
    Reject(Status),
}

/// One recipient's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecipientVerdict {
    /// The RCPT TO address it came from.
    pub original: Address,
    /// The final address (after rewriting, forwarding, expansion).
    pub address: Address,
    /// What becomes of it.
    pub fate: Fate,
    /// Delivered, but no object here knows the address and its internal-relay domain has
    /// `verify-recipients`: before accepting it, the relay asks the send connector's next hop
    /// whether it takes the address (the evaluator does no I/O; `relay::verify` does).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub verify: bool,
    /// Why `address` is not `original`, as the stage that changed it knows (message
    /// tracking's EXPAND, RESOLVE and REDIRECT); `None` when nothing did.
    #[serde(skip)]
    pub change: Option<Change>,
}

/// Why a recipient's address changed on its way through the stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A member of a group the address expanded to.
    Expand,
    /// A rewrite entry's address, or a contact's forwarding address.
    Resolve,
    /// An address a transport rule sent the message to instead, or added.
    Redirect,
}

/// The stage a trace line belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Choosing the receive connector.
    Connector,
    /// Stripping and stamping organization headers.
    HeaderFirewall,
    /// XOORG.
    Attribution,
    /// External to internal addresses.
    InboundRewrite,
    /// Recipients: accepted domains, contacts, groups, relay permission.
    Resolve,
    /// Transport rules.
    Rules,
    /// Internal to external addresses.
    OutboundRewrite,
    /// Choosing send connectors.
    Route,
}

/// One line of the trace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Step {
    /// The stage.
    pub stage: Stage,
    /// What happened, in words.
    pub text: String,
}

/// The outcome of evaluating one message.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// The receive connector used.
    pub connector: Option<String>,
    /// The authentication level stamped.
    pub auth_as: AuthAs,
    /// The originating organization, when XOORG was trusted.
    pub originating_org: Option<String>,
    /// MAIL FROM after rewriting.
    pub mail_from: Option<Address>,
    /// Every recipient's fate.
    pub recipients: Vec<RecipientVerdict>,
    /// Names of the rules that fired (audit-mode rules included).
    pub rules_fired: Vec<String>,
    /// Whether a rule asked to drop the connection.
    pub disconnect: bool,
    /// The message with every header change applied.
    #[serde(skip)]
    pub message: Message,
    /// Header changes, in order: (header, before, after); `None` for absent.
    pub header_changes: Vec<(String, Option<String>, Option<String>)>,
    /// What happened, stage by stage.
    pub trace: Vec<Step>,
}

impl Verdict {
    /// Whether every recipient is delivered.
    pub fn all_delivered(&self) -> bool {
        !self.recipients.is_empty()
            && self
                .recipients
                .iter()
                .all(|r| matches!(r.fate, Fate::Deliver { .. }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unknown_recipients_of_a_verifying_domain_are_marked() {
        let report = crate::check::check_text(
            "t.mailflow",
            "accepted-domain t.example internal-relay verify-recipients
accepted-domain u.example internal-relay
receive-connector \"In\" {
  listen 127.0.0.1:25
  auth anonymous
}
send-connector \"Tenant\" {
  address-space t.example, u.example
  smart-host 192.0.2.1
}
send-connector \"Out\" {
  address-space *
}
contact \"Desk\" {
  address desk@t.example
  external desk@partner.example
}
",
        );
        assert!(!report.has_errors());
        let table = crate::compile::compile(&report.rule_sets[0].rules).unwrap();
        let to = |a: &str| {
            let (local, domain) = a.split_once('@').unwrap();
            Address {
                local: local.into(),
                domain: domain.into(),
            }
        };
        let env = Envelope {
            connector: Some("In".into()),
            mail_from: Some(to("x@elsewhere.example")),
            rcpt_to: ["anyone@t.example", "desk@t.example", "anyone@u.example"]
                .into_iter()
                .map(to)
                .collect(),
            ..Envelope::default()
        };
        let v = evaluate_recipients(&table, &env);
        // RCPT time stamps no header: there is no message yet.
        assert!(v.header_changes.is_empty(), "{:?}", v.header_changes);
        let full = evaluate(&table, &env, None, false);
        assert_eq!(full.recipients, v.recipients);
        assert!(!full.header_changes.is_empty());
        let marked: Vec<(String, bool)> = v
            .recipients
            .iter()
            .map(|r| (r.address.to_string(), r.verify))
            .collect();
        assert_eq!(
            marked,
            [
                ("anyone@t.example".to_string(), true),
                ("desk@partner.example".to_string(), false),
                ("anyone@u.example".to_string(), false),
            ]
        );
        assert!(matches!(
            &v.recipients[0].fate,
            Fate::Deliver { connector } if connector == "Tenant"
        ));
    }

    #[test]
    fn mail_a_shared_service_relays_for_others_is_anonymous_and_so_verified() {
        // Seed 002: the EOP connector is externally-secured, yet only a trusted XOORG naming
        // a tenant makes a message Internal; the rest is Internet mail the relay verifies.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
        let report = crate::check::check_paths(&[dir.join("shared-domain.mailflow")]).unwrap();
        assert!(!report.has_errors(), "{:?}", report.diagnostics);
        let table = crate::compile::compile(&report.rule_sets[0].rules).unwrap();
        let addr = |local: &str, domain: &str| Address {
            local: local.into(),
            domain: domain.into(),
        };
        let mut env = Envelope {
            connector: Some("From EOP".into()),
            client_ip: Some("40.107.22.51".parse().unwrap()),
            mail_from: Some(addr("someone", "other-tenant.example")),
            rcpt_to: vec![addr("john.smith", "myexchlab.com")],
            ..Envelope::default()
        };
        assert_eq!(auth_as(&table, &env), Some(AuthAs::Anonymous));
        env.tls_peer = Some("mail.protection.outlook.com".into());
        env.xoorg = Some("other-tenant.example".into());
        assert_eq!(auth_as(&table, &env), Some(AuthAs::Anonymous));
        env.xoorg = Some("tenant1.myexchlab.com".into());
        assert_eq!(auth_as(&table, &env), Some(AuthAs::Internal));
        env.connector = Some("Internet".into());
        assert_eq!(auth_as(&table, &env), Some(AuthAs::Anonymous));
    }

    #[test]
    fn the_stage_that_changes_an_address_says_why() {
        let report = crate::check::check_text(
            "t.mailflow",
            "accepted-domain example.com
accepted-domain tenant.example.com internal-relay
receive-connector \"In\" {
  listen 127.0.0.1:25
  auth externally-secured
}
send-connector \"Out\" {
  address-space *
}
rewrite \"Ann\" ann@tenant.example.com -> ann@example.com
contact \"Desk\" {
  address desk@example.com
  external desk@partner.example
}
contact \"Member\" {
  address member@example.com
  external member@partner.example
}
group \"Team\" {
  address team@example.com
  members \"Member\"
}
rule \"Redirect legal\" {
  if recipient contains \"legal\"
  redirect-to archive@partner.example
}
",
        );
        assert!(!report.has_errors(), "{:?}", report.diagnostics);
        let table = crate::compile::compile(&report.rule_sets[0].rules).unwrap();
        let to = |a: &str| {
            let (local, domain) = a.split_once('@').unwrap();
            Address {
                local: local.into(),
                domain: domain.into(),
            }
        };
        let env = |rcpts: &[&str]| Envelope {
            connector: Some("In".into()),
            mail_from: Some(to("x@example.com")),
            rcpt_to: rcpts.iter().map(|a| to(a)).collect(),
            ..Envelope::default()
        };
        let changes = |v: &Verdict| -> Vec<(String, Option<Change>)> {
            v.recipients
                .iter()
                .map(|r| (r.address.to_string(), r.change))
                .collect()
        };
        let v = evaluate(
            &table,
            &env(&[
                "ann@example.com",
                "desk@example.com",
                "team@example.com",
                "x@other.example",
            ]),
            None,
            false,
        );
        assert_eq!(
            changes(&v),
            [
                ("ann@tenant.example.com".to_string(), Some(Change::Resolve)),
                ("desk@partner.example".to_string(), Some(Change::Resolve)),
                ("member@partner.example".to_string(), Some(Change::Expand)),
                ("x@other.example".to_string(), None),
            ]
        );
        let v = evaluate(&table, &env(&["legal@other.example"]), None, false);
        assert_eq!(
            changes(&v),
            [(
                "archive@partner.example".to_string(),
                Some(Change::Redirect)
            )]
        );
    }
}
