//! Reports to senders (RFC 3464): the DSN for recipients that failed for good, the delay
//! notice for those still waiting past `--delay-warning`, and the DSN for recipients the
//! rules refused after data. Composing is [`crate::deliver::dsn`]'s; this module decides who
//! gets a report, what it returns and queues it like any message.

use super::Shared;
use super::track::{Event, EventId};
use crate::compile::route;
use crate::deliver::dsn::{self, DsnAction, DsnInput, FailedRecipient};
use crate::eval::organization::{leaves_organization, strip_organization_headers};
use crate::eval::{Fate, RecipientVerdict, Verdict};
use crate::queue::{NewMessage, NewRecipient, QueueId, QueuedMessage};
use crate::smtp::command::MailParams;
use crate::smtp::{DsnKind, Notify};

/// Reports on one attempt's outcomes: a DSN for the recipients in `failed`, a delay notice
/// for those in `delayed`, each to a sender whose `NOTIFY` asks for it. `original` is the
/// message as stored (empty when it cannot be read back).
pub(super) async fn outcomes(
    shared: &Shared,
    m: &QueuedMessage,
    failed: Vec<(usize, FailedRecipient)>,
    delayed: Vec<(usize, FailedRecipient)>,
    original: &[u8],
) {
    for (list, kind, ret_full) in [
        (failed, DsnKind::Failure, m.meta.ret_full.unwrap_or(false)),
        // A delay notice returns the header only, whatever RET says (RFC 3461 4.3).
        (delayed, DsnKind::Delay, false),
    ] {
        let wanted: Vec<FailedRecipient> = list
            .into_iter()
            .filter(|(i, _)| {
                let notify = m.meta.recipients.get(*i).and_then(|r| r.notify);
                notify.unwrap_or(Notify::ABSENT).wants(kind)
            })
            .map(|(_, f)| f)
            .collect();
        if !wanted.is_empty() {
            let report = Report {
                sender: m.meta.mail_from.as_deref(),
                envid: m.meta.envid.as_deref(),
                ret_full,
                arrival: m.received_at,
                recipients: &wanted,
                original,
                about: Some(&m.id),
            };
            queue_dsn(shared, report).await;
        }
    }
}

pub(super) fn recipient(
    r: &NewRecipient,
    status: &str,
    diagnostic: &str,
    remote: Option<String>,
    action: DsnAction,
) -> FailedRecipient {
    FailedRecipient {
        address: r.address.clone(),
        original: r.orcpt.clone(),
        status: status.to_string(),
        diagnostic: format!("smtp; {diagnostic}"),
        remote_mta: remote,
        action,
    }
}

/// The largest message a DSN returns whole (`RET=FULL`); larger ones are returned as their
/// header only. Postfix's `bounce_size_limit`.
const DSN_RETURN_LIMIT: usize = 50_000;

/// A report to send: about which recipients of which message, to whom.
struct Report<'a> {
    /// The original envelope sender; `None` (the null sender) never gets a report.
    sender: Option<&'a str>,
    envid: Option<&'a str>,
    ret_full: bool,
    arrival: u64,
    recipients: &'a [FailedRecipient],
    original: &'a [u8],
    /// The queued message reported on, for tracking.
    about: Option<&'a QueueId>,
}

/// Composes a DSN and queues it to the original sender; null senders never get one.
async fn queue_dsn(shared: &Shared, report: Report<'_>) {
    let Report {
        sender,
        envid,
        ret_full,
        arrival,
        recipients: failed,
        original,
        about,
    } = report;
    let Some(sender) = sender.filter(|s| dsn::should_bounce(Some(s))) else {
        return;
    };
    let table = shared.table();
    let domain = sender
        .rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default();
    // The returned copy leaves the organization with the report when the sender is outside.
    let stripped = leaves_organization(&table.domains, &domain)
        .then(|| strip_organization_headers(original))
        .flatten();
    let original = stripped.as_deref().unwrap_or(original);
    // RET=FULL returns the whole message only when it is small (Postfix's bounce_size_limit):
    // a sender's address is anyone's to write, and a bounce per domain would otherwise
    // reflect a large message to that address many times over.
    let ret_full = ret_full && original.len() <= DSN_RETURN_LIMIT;
    let input = DsnInput {
        reporting_mta: &shared.hostname,
        original_sender: sender,
        envid,
        ret_full,
        arrival_date: arrival,
        recipients: failed,
        original,
    };
    let body = dsn::compose(&input);
    let Some(connector) = route(&table.send_connectors, &domain, &table.domains)
        .and_then(|i| table.send_connectors.get(i))
    else {
        tracing::warn!("no route for a DSN to {sender}; dropped");
        return;
    };
    let meta = NewMessage {
        mail_from: None,
        envid: None,
        ret_full: None,
        message_id: None,
        client_ip: None,
        connector: None,
        recipients: vec![NewRecipient {
            address: sender.to_string(),
            original: sender.to_string(),
            send_connector: connector.name.value.clone(),
            notify: None,
            orcpt: None,
        }],
        smtputf8: false,
        eight_bit: !original.is_ascii(),
    };
    match shared.spool.store(meta, body).await {
        Ok(q) => {
            let mut e = Event::new(EventId::Dsn, "DSN");
            e.internal_message_id = Some(q.id.to_string());
            e.recipient_address = vec![sender.to_string()];
            e.related_recipient_address = failed.first().map(|f| f.address.clone());
            e.source_context = about.map(|id| format!("about {id}"));
            shared.tracker.log(e);
            shared.enqueue(&q);
        }
        Err(e) => tracing::error!("could not queue a DSN to {sender}: {e}"),
    }
}

impl Shared {
    /// Recipients the rules refused after data, while others of the same message were
    /// accepted: the client got 250, so the refusal travels as a DSN.
    pub(crate) async fn bounce_refused(
        &self,
        verdict: &Verdict,
        rejected: &[&RecipientVerdict],
        original: &[u8],
        params: &MailParams,
    ) {
        let failed: Vec<FailedRecipient> = rejected
            .iter()
            .filter_map(|r| match &r.fate {
                Fate::Reject(status) => Some(FailedRecipient {
                    address: r.address.to_string(),
                    original: None,
                    status: status.enhanced.clone(),
                    diagnostic: format!("smtp; {status}"),
                    remote_mta: None,
                    action: DsnAction::Failed,
                }),
                _ => None,
            })
            .collect();
        let sender = verdict.mail_from.as_ref().map(ToString::to_string);
        let report = Report {
            sender: sender.as_deref(),
            envid: params.envid.as_deref(),
            ret_full: matches!(params.ret, Some(crate::smtp::command::Ret::Full)),
            arrival: crate::clock::now_secs(),
            recipients: &failed,
            original,
            about: None,
        };
        queue_dsn(self, report).await;
    }
}
