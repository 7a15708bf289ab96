//! The queue as an administrator reads it (`mailflow queue list`, `summary`, `show`): views
//! of spooled messages and of their destinations, filtered, computed from the spool's
//! snapshot and the holds alone, so a running relay and a stopped spool answer alike.

use super::holds::Holds;
use super::{QueueId, QueuedMessage, RecipientState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where one recipient stands, as `list --state` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Pending, not attempted yet.
    Queued,
    /// Pending after a failed attempt (it will be retried).
    Deferred,
    /// Pending and held by an administrator.
    Held,
    /// Accepted by the next hop.
    Delivered,
    /// Failed for good.
    Failed,
}

impl State {
    /// The word the listing prints.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Deferred => "deferred",
            State::Held => "held",
            State::Delivered => "delivered",
            State::Failed => "failed",
        }
    }
}

impl std::str::FromStr for State {
    type Err = String;

    fn from_str(s: &str) -> Result<State, String> {
        [
            State::Queued,
            State::Deferred,
            State::Held,
            State::Delivered,
            State::Failed,
        ]
        .into_iter()
        .find(|st| st.as_str().eq_ignore_ascii_case(s))
        .ok_or_else(|| format!("`{s}`: use queued, deferred, held, delivered or failed"))
    }
}

/// Which messages a listing or an action takes. Recipient-level criteria (recipient,
/// connector, domain, state) must all hold for one recipient of the message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    /// Part of the envelope sender (case-insensitive; `<>` matches the null sender).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// Part of a recipient's address, as delivered or as given in RCPT TO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// A send connector's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector: Option<String>,
    /// A recipient domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// A recipient state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<State>,
    /// Only messages queued at least this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub older_than: Option<u64>,
}

impl Filter {
    /// Whether it names nothing (every message matches).
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }
}

/// One recipient of a listed message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientView {
    /// The address delivered to.
    pub address: String,
    /// The address as given in RCPT TO, when rewriting or expansion changed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<String>,
    /// The send connector.
    pub connector: String,
    /// Where it stands.
    pub state: State,
    /// Attempts made.
    pub attempts: u32,
    /// The next attempt (unix seconds), for a pending recipient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<u64>,
    /// The last failure, or the next hop's reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reply: Option<String>,
    /// DSN NOTIFY, as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<String>,
    /// DSN ORCPT, as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orcpt: Option<String>,
}

/// A spooled message, as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageView {
    /// The queue id.
    pub id: QueueId,
    /// When it was received (unix seconds).
    pub received_at: u64,
    /// Its size in bytes.
    pub size: u64,
    /// The envelope sender; `None` for `<>`.
    pub sender: Option<String>,
    /// The Message-ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// The client that sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    /// The receive connector that took it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive_connector: Option<String>,
    /// DSN ENVID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envid: Option<String>,
    /// DSN RET (`FULL` or `HDRS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret: Option<String>,
    /// The message as a whole is held.
    pub held: bool,
    /// Every recipient, in RCPT order.
    pub recipients: Vec<RecipientView>,
}

impl MessageView {
    /// The view of `m` under `holds`.
    pub fn of(m: &QueuedMessage, holds: &Holds) -> MessageView {
        let recipients = m
            .meta
            .recipients
            .iter()
            .zip(&m.states)
            .map(|(r, s)| {
                let domain = r.address.rsplit_once('@').map_or("", |(_, d)| d);
                let held = holds.covers(&m.id, &r.send_connector, domain);
                let (state, attempts, next_attempt, last_reply) = match s {
                    RecipientState::Pending {
                        attempts,
                        next_attempt,
                        last_error,
                    } => {
                        let state = if held {
                            State::Held
                        } else if *attempts > 0 {
                            State::Deferred
                        } else {
                            State::Queued
                        };
                        (state, *attempts, Some(*next_attempt), last_error.clone())
                    }
                    RecipientState::Delivered { reply } => {
                        (State::Delivered, 0, None, Some(reply.clone()))
                    }
                    RecipientState::Failed(status) => {
                        (State::Failed, 0, None, Some(status.to_string()))
                    }
                };
                RecipientView {
                    address: r.address.clone(),
                    original: (r.original != r.address).then(|| r.original.clone()),
                    connector: r.send_connector.clone(),
                    state,
                    attempts,
                    next_attempt,
                    last_reply,
                    notify: r.notify.map(|n| n.as_str().to_string()),
                    orcpt: r.orcpt.clone(),
                }
            })
            .collect();
        MessageView {
            id: m.id.clone(),
            received_at: m.received_at,
            size: m.size,
            sender: m.meta.mail_from.clone(),
            message_id: m.meta.message_id.clone(),
            client_ip: m.meta.client_ip.map(|ip| ip.to_string()),
            receive_connector: m.meta.connector.clone(),
            envid: m.meta.envid.clone(),
            ret: m
                .meta
                .ret_full
                .map(|full| if full { "FULL" } else { "HDRS" }.to_string()),
            held: holds.messages.contains(&m.id),
            recipients,
        }
    }

    /// Whether it is one `filter` takes at `now` (unix seconds).
    pub fn matches(&self, filter: &Filter, now: u64) -> bool {
        if let Some(min) = filter.older_than {
            if now.saturating_sub(self.received_at) < min {
                return false;
            }
        }
        if let Some(s) = &filter.sender {
            let sender = self.sender.as_deref().unwrap_or("<>");
            if !contains(sender, s) {
                return false;
            }
        }
        self.recipients.iter().any(|r| r.matches(filter))
    }

    /// The recipients still to deliver (queued, deferred or held).
    pub fn pending(&self) -> impl Iterator<Item = &RecipientView> {
        self.recipients.iter().filter(|r| r.is_pending())
    }
}

impl RecipientView {
    /// Whether it is still to deliver.
    pub fn is_pending(&self) -> bool {
        matches!(self.state, State::Queued | State::Deferred | State::Held)
    }

    /// The recipient's domain, lower case.
    pub fn domain(&self) -> String {
        self.address
            .rsplit_once('@')
            .map_or(String::new(), |(_, d)| d.to_ascii_lowercase())
    }

    /// Whether the recipient-level criteria of `f` hold for this recipient (without a state,
    /// it must be pending).
    pub fn matches(&self, f: &Filter) -> bool {
        let state_ok = match f.state {
            Some(s) => self.state == s,
            // Without a state, the recipient criteria are about what is still queued.
            None => self.is_pending(),
        };
        state_ok
            && f.recipient.as_ref().is_none_or(|p| {
                contains(&self.address, p) || self.original.as_ref().is_some_and(|o| contains(o, p))
            })
            && f.connector
                .as_ref()
                .is_none_or(|c| self.connector.eq_ignore_ascii_case(c))
            && f.domain
                .as_ref()
                .is_none_or(|d| self.domain() == d.trim_end_matches('.').to_ascii_lowercase())
    }
}

fn contains(hay: &str, needle: &str) -> bool {
    hay.to_ascii_lowercase()
        .contains(&needle.to_ascii_lowercase())
}

/// Every message `filter` takes at `now`, oldest first.
pub fn list(
    messages: &[QueuedMessage],
    holds: &Holds,
    filter: &Filter,
    now: u64,
) -> Vec<MessageView> {
    let mut out: Vec<MessageView> = messages
        .iter()
        .map(|m| MessageView::of(m, holds))
        .filter(|v| v.matches(filter, now))
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// One destination's queue (Exchange's queue viewer: a send connector and a domain).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationView {
    /// The send connector.
    pub connector: String,
    /// The recipient domain.
    pub domain: String,
    /// Messages with a recipient pending here.
    pub messages: usize,
    /// Recipients pending here.
    pub recipients: usize,
    /// Of them, held.
    pub held: usize,
    /// When the oldest of its messages was received (unix seconds).
    pub oldest: u64,
    /// The soonest next attempt of a recipient not held (unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<u64>,
    /// The failure of the recipient attempted most lately (the one due last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The pending recipients of `messages` that `filter` takes, grouped by destination,
/// busiest first. A message's other recipients are left out: `summary --domain D` is D's
/// queue, not every destination of the messages with a recipient in D (which would count
/// those destinations short).
pub fn summary(messages: &[MessageView], filter: &Filter) -> Vec<DestinationView> {
    let mut by: BTreeMap<(String, String), (DestinationView, Option<QueueId>, u64)> =
        BTreeMap::new();
    for m in messages {
        for r in m.pending().filter(|r| r.matches(filter)) {
            let key = (r.connector.clone(), r.domain());
            let (d, last_id, last_due) = by.entry(key).or_insert_with(|| {
                (
                    DestinationView {
                        connector: r.connector.clone(),
                        domain: r.domain(),
                        messages: 0,
                        recipients: 0,
                        held: 0,
                        oldest: m.received_at,
                        next_attempt: None,
                        last_error: None,
                    },
                    None,
                    0,
                )
            });
            if last_id.as_ref() != Some(&m.id) {
                d.messages += 1;
                *last_id = Some(m.id.clone());
            }
            d.recipients += 1;
            d.oldest = d.oldest.min(m.received_at);
            if r.state == State::Held {
                d.held += 1;
                continue;
            }
            if let Some(at) = r.next_attempt {
                d.next_attempt = Some(d.next_attempt.map_or(at, |n| n.min(at)));
                if r.last_reply.is_some() && at >= *last_due {
                    *last_due = at;
                    d.last_error.clone_from(&r.last_reply);
                }
            }
        }
    }
    let mut out: Vec<DestinationView> = by.into_values().map(|(d, _, _)| d).collect();
    out.sort_by(|a, b| {
        b.recipients
            .cmp(&a.recipients)
            .then_with(|| a.oldest.cmp(&b.oldest))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::holds::HoldTarget;
    use crate::queue::{NewMessage, NewRecipient};
    use crate::smtp::Status;

    fn message(
        id: &str,
        at: u64,
        from: &str,
        rcpts: &[(&str, &str, RecipientState)],
    ) -> QueuedMessage {
        QueuedMessage {
            id: QueueId(id.into()),
            received_at: at,
            meta: NewMessage {
                mail_from: (!from.is_empty()).then(|| from.to_string()),
                envid: None,
                ret_full: Some(false),
                message_id: Some("<m@x>".into()),
                client_ip: None,
                connector: Some("In".into()),
                recipients: rcpts
                    .iter()
                    .map(|(a, c, _)| NewRecipient {
                        address: a.to_string(),
                        original: a.to_string(),
                        send_connector: c.to_string(),
                        notify: None,
                        orcpt: None,
                    })
                    .collect(),
                smtputf8: false,
                eight_bit: false,
            },
            states: rcpts.iter().map(|(_, _, s)| s.clone()).collect(),
            size: 100,
        }
    }

    fn pending(attempts: u32, next: u64, error: Option<&str>) -> RecipientState {
        RecipientState::Pending {
            attempts,
            next_attempt: next,
            last_error: error.map(str::to_string),
        }
    }

    #[test]
    fn filters_take_recipients_as_a_whole_and_states_follow_holds() {
        let a = message(
            "000000000000000A",
            100,
            "alice@example.org",
            &[
                (
                    "bob@tenant1.example.com",
                    "T1",
                    pending(2, 900, Some("451 4.4.1 down")),
                ),
                (
                    "carol@example.net",
                    "Out",
                    RecipientState::Delivered {
                        reply: "250 ok".into(),
                    },
                ),
            ],
        );
        let b = message(
            "000000000000000B",
            500,
            "",
            &[("dave@example.net", "Out", pending(0, 500, None))],
        );
        let ms = [a, b];
        let mut holds = Holds::default();
        let all = list(&ms, &holds, &Filter::default(), 1000);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].recipients[0].state, State::Deferred);
        assert_eq!(all[0].recipients[1].state, State::Delivered);
        let f = |f: Filter| {
            list(&ms, &holds, &f, 1000)
                .into_iter()
                .map(|m| m.id.0)
                .collect::<Vec<_>>()
        };
        // carol was delivered: the domain filter looks at what is pending.
        assert_eq!(
            f(Filter {
                domain: Some("example.net".into()),
                ..Filter::default()
            }),
            ["000000000000000B"]
        );
        assert_eq!(
            f(Filter {
                domain: Some("example.net".into()),
                state: Some(State::Delivered),
                ..Filter::default()
            }),
            ["000000000000000A"]
        );
        assert_eq!(
            f(Filter {
                sender: Some("<>".into()),
                ..Filter::default()
            }),
            ["000000000000000B"]
        );
        assert_eq!(
            f(Filter {
                older_than: Some(600),
                ..Filter::default()
            }),
            ["000000000000000A"]
        );
        assert!(
            f(Filter {
                connector: Some("T1".into()),
                recipient: Some("dave".into()),
                ..Filter::default()
            })
            .is_empty()
        );
        holds.hold(&HoldTarget::Connector("T1".into()));
        let held = list(
            &ms,
            &holds,
            &Filter {
                state: Some(State::Held),
                ..Filter::default()
            },
            1000,
        );
        assert_eq!(held.len(), 1);
        let s = summary(
            &list(&ms, &holds, &Filter::default(), 1000),
            &Filter::default(),
        );
        assert_eq!(s.len(), 2);
        let t1 = s.iter().find(|d| d.connector == "T1").unwrap();
        assert_eq!(
            (t1.messages, t1.recipients, t1.held, t1.oldest),
            (1, 1, 1, 100)
        );
        assert_eq!(t1.next_attempt, None, "held: no next attempt");
        let out = s.iter().find(|d| d.connector == "Out").unwrap();
        assert_eq!(
            (out.messages, out.oldest, out.next_attempt),
            (1, 500, Some(500))
        );
    }

    #[test]
    fn summary_counts_a_message_once_and_keeps_the_latest_error() {
        let m = message(
            "000000000000000C",
            10,
            "a@b",
            &[
                ("x@d.example", "Out", pending(1, 50, Some("451 first"))),
                ("y@d.example", "Out", pending(3, 90, Some("421 latest"))),
                (
                    "z@d.example",
                    "Out",
                    RecipientState::Failed(Status::new(550, "5.1.1", "no")),
                ),
            ],
        );
        let s = summary(
            &list(&[m], &Holds::default(), &Filter::default(), 100),
            &Filter::default(),
        );
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].messages, s[0].recipients), (1, 2));
        assert_eq!(s[0].last_error.as_deref(), Some("421 latest"));
        assert_eq!(s[0].next_attempt, Some(50));
    }
}
