//! The delivery scheduler: finds queued recipients that are due, groups them by send
//! connector and domain, hands each group to [`crate::deliver`], records every outcome in the
//! spool before acting on it, retries with backoff, and bounces what fails for good.

use super::Shared;
use super::metrics::Metrics;
use super::track::{Event, EventId};
use crate::compile::route;
use crate::deliver::dsn::{self, DsnAction, DsnInput, FailedRecipient};
use crate::deliver::{
    Attempt, ClientConfig, DeliverError, OutboundMessage, OutboundRcpt, RcptOutcome, deliver,
    next_hops,
};
use crate::eval::organization::{leaves_organization, strip_organization_headers};
use crate::eval::{Fate, RecipientVerdict, Verdict};
use crate::queue::{NewMessage, NewRecipient, QueueId, QueuedMessage, RecipientState};
use crate::smtp::command::MailParams;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;

/// Deliveries in flight at once.
const CONCURRENCY: usize = 64;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A group of one message's recipients that go to the same place in one transaction.
struct Job {
    message: QueuedMessage,
    connector: String,
    domain: String,
    indexes: Vec<usize>,
}

type InFlight = Arc<Mutex<HashSet<(QueueId, usize)>>>;

/// Runs until shutdown. Messages recovered from the spool at start are in its live set, so
/// the first pass picks them up.
pub(super) async fn run(shared: Arc<Shared>) {
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let in_flight: InFlight = Arc::new(Mutex::new(HashSet::new()));
    let mut shutdown = shared.shutdown.clone();
    loop {
        let due = due_jobs(&shared, &in_flight);
        for job in due {
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                return;
            };
            let shared = Arc::clone(&shared);
            let in_flight = Arc::clone(&in_flight);
            tokio::spawn(async move {
                let keys: Vec<(QueueId, usize)> = job
                    .indexes
                    .iter()
                    .map(|&i| (job.message.id.clone(), i))
                    .collect();
                attempt(&shared, job).await;
                if let Ok(mut f) = in_flight.lock() {
                    for k in keys {
                        f.remove(&k);
                    }
                }
                drop(permit);
                // A finished attempt may have made room or produced a DSN to send.
                shared.wake.notify_one();
            });
        }
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(shared.options.queue_interval) => {}
            _ = shutdown.changed() => return,
        }
    }
}

fn due_jobs(shared: &Shared, in_flight: &InFlight) -> Vec<Job> {
    let t = now();
    let mut jobs: BTreeMap<(QueueId, String, String), Job> = BTreeMap::new();
    let Ok(mut flying) = in_flight.lock() else {
        return Vec::new();
    };
    for m in shared.spool.live() {
        for (i, state) in m.states.iter().enumerate() {
            let RecipientState::Pending { next_attempt, .. } = state else {
                continue;
            };
            if *next_attempt > t || flying.contains(&(m.id.clone(), i)) {
                continue;
            }
            let Some(r) = m.meta.recipients.get(i) else {
                continue;
            };
            let domain = r
                .address
                .rsplit_once('@')
                .map(|(_, d)| d.to_ascii_lowercase())
                .unwrap_or_default();
            flying.insert((m.id.clone(), i));
            jobs.entry((m.id.clone(), r.send_connector.clone(), domain.clone()))
                .or_insert_with(|| Job {
                    message: m.clone(),
                    connector: r.send_connector.clone(),
                    domain,
                    indexes: Vec::new(),
                })
                .indexes
                .push(i);
        }
    }
    jobs.into_values().collect()
}

fn temporary(code: u16, enhanced: &str, text: impl Into<String>) -> RcptOutcome {
    RcptOutcome::Temporary {
        code,
        enhanced: enhanced.to_string(),
        text: text.into(),
    }
}

fn permanent(code: u16, enhanced: &str, text: impl Into<String>) -> RcptOutcome {
    RcptOutcome::Permanent {
        code,
        enhanced: enhanced.to_string(),
        text: text.into(),
    }
}

async fn attempt(shared: &Shared, job: Job) {
    let table = shared.table();
    let n = job.indexes.len();
    let all = |o: RcptOutcome| -> Attempt {
        Attempt {
            outcomes: vec![o; n],
            tls: None,
            host: String::new(),
            addr: None,
        }
    };
    // The connector by name; if a reload removed it, route again with the current rules.
    let connector = table
        .send_connectors
        .iter()
        .find(|c| c.name.value == job.connector)
        .or_else(|| {
            route(&table.send_connectors, &job.domain, &table.domains)
                .and_then(|i| table.send_connectors.get(i))
        });
    let result = match connector {
        None => all(permanent(
            550,
            "5.4.4",
            format!("no send connector covers {}", job.domain),
        )),
        Some(c) => match next_hops(&shared.resolver, c, &job.domain, &shared.local).await {
            Err(DeliverError::Loop { .. }) => all(permanent(
                554,
                "5.4.4",
                format!("the next hop for {} is this relay: mail loop", job.domain),
            )),
            Err(e) => {
                let (code, enhanced) = e.reply();
                if e.is_permanent() {
                    all(permanent(code, enhanced, e.to_string()))
                } else {
                    all(temporary(code, enhanced, e.to_string()))
                }
            }
            Ok(mut hops) => {
                if c.smart_hosts.is_empty() && shared.options.mx_port != 25 {
                    for h in &mut hops {
                        for a in &mut h.addrs {
                            a.set_port(shared.options.mx_port);
                        }
                    }
                }
                let t = shared.options.smtp_timeout;
                let cfg =
                    ClientConfig::for_connector(c, &shared.hostname, Arc::clone(&shared.roots))
                        .map(|mut cfg| {
                            cfg.command_timeout = t;
                            cfg.data_timeout = t.saturating_mul(2);
                            cfg.connect_timeout = cfg.connect_timeout.min(t);
                            cfg
                        });
                // Held until the attempt ends: the body, its stripped and stuffed copies.
                let _memory = shared.delivery_memory.reserve(job.message.size).await;
                match cfg {
                    Err(e) => all(temporary(451, "4.7.5", e.to_string())),
                    Ok(cfg) => match read_body(shared, &job.message.id).await {
                        Err(e) => unreadable_body(&job.message.id, &e, all),
                        Ok(body) => {
                            let body = outbound_body(&table, &job.domain, body);
                            let rcpts: Vec<OutboundRcpt> = job
                                .indexes
                                .iter()
                                .filter_map(|&i| job.message.meta.recipients.get(i))
                                .map(|r| OutboundRcpt {
                                    address: r.address.clone(),
                                    notify: r.notify.clone(),
                                    orcpt: r.orcpt.clone(),
                                })
                                .collect();
                            let meta = &job.message.meta;
                            let msg = OutboundMessage {
                                mail_from: meta.mail_from.as_deref(),
                                recipients: &rcpts,
                                body: &body,
                                envid: meta.envid.as_deref(),
                                ret_full: meta.ret_full,
                                smtputf8: meta.smtputf8,
                                eight_bit: meta.eight_bit,
                            };
                            deliver(&cfg, &hops, &msg).await
                        }
                    },
                }
            }
        },
    };
    record(shared, &job, result).await;
}

/// A body the spool cannot give back: damaged on disk (it fails its checksum) is final, as
/// retrying reads the same bytes, so its recipients bounce; anything else is retried.
fn unreadable_body(
    id: &QueueId,
    e: &crate::queue::QueueError,
    all: impl Fn(RcptOutcome) -> Attempt,
) -> Attempt {
    if let crate::queue::QueueError::Corrupt { .. } = e {
        tracing::error!("message {id} is damaged in the spool and is bounced: {e}");
        return all(permanent(
            554,
            "5.3.0",
            "message damaged in the relay's spool; not delivered",
        ));
    }
    all(temporary(451, "4.3.0", format!("spool: {e}")))
}

/// The bytes that go to `domain`: without the organization's headers when it is outside the
/// organization (Exchange's header firewall on send), else as stored.
fn outbound_body(table: &crate::compile::Table, domain: &str, body: Vec<u8>) -> Vec<u8> {
    if !leaves_organization(&table.domains, domain) {
        return body;
    }
    strip_organization_headers(&body).unwrap_or(body)
}

/// Writes the outcomes to the spool, then logs, counts and bounces.
async fn record(shared: &Shared, job: &Job, result: Attempt) {
    let t = now();
    let m = &job.message;
    let lifetime = shared.options.retry.lifetime.as_secs();
    let expired = t.saturating_sub(m.received_at) >= lifetime;
    let mut updates = Vec::new();
    let mut failed: Vec<FailedRecipient> = Vec::new();
    let remote = if result.host.is_empty() {
        None
    } else {
        Some(result.host.clone())
    };
    for (k, &i) in job.indexes.iter().enumerate() {
        let Some(r) = m.meta.recipients.get(i) else {
            continue;
        };
        let outcome = result
            .outcomes
            .get(k)
            .cloned()
            .unwrap_or_else(|| temporary(451, "4.3.0", "no outcome"));
        let attempts = match m.states.get(i) {
            Some(RecipientState::Pending { attempts, .. }) => *attempts,
            _ => 0,
        };
        let event = |id: EventId, status: String| {
            let mut e = Event::new(id, "SMTP");
            e.internal_message_id = Some(m.id.to_string());
            e.message_id = m.meta.message_id.clone();
            e.sender_address = m.meta.mail_from.clone();
            e.recipient_address = vec![r.address.clone()];
            e.recipient_status = vec![status];
            e.connector_id = Some(job.connector.clone());
            e.server_hostname = remote.clone();
            e.server_ip = result.addr.map(|a| a.ip().to_string());
            e.total_bytes = Some(m.size);
            shared.tracker.log(e);
        };
        match outcome {
            RcptOutcome::Delivered { reply } => {
                Metrics::inc(&shared.metrics.delivered);
                event(EventId::Send, reply.clone());
                updates.push((i, RecipientState::Delivered { reply }));
            }
            RcptOutcome::Permanent {
                code,
                enhanced,
                text,
            } => {
                Metrics::inc(&shared.metrics.bounced);
                let status = format!("{code} {enhanced} {text}");
                event(EventId::Fail, status.clone());
                failed.push(failed_rcpt(r, &enhanced, &status, remote.clone()));
                updates.push((
                    i,
                    RecipientState::Failed {
                        code,
                        enhanced,
                        text,
                    },
                ));
            }
            RcptOutcome::Temporary {
                code,
                enhanced,
                text,
            } if expired => {
                Metrics::inc(&shared.metrics.bounced);
                let status = format!(
                    "{code} 4.4.7 message expired after {} attempts; last error: {code} {enhanced} {text}",
                    attempts + 1
                );
                event(EventId::Fail, status.clone());
                failed.push(failed_rcpt(r, "4.4.7", &status, remote.clone()));
                updates.push((
                    i,
                    RecipientState::Failed {
                        code: 550,
                        enhanced: "4.4.7".into(),
                        text: status,
                    },
                ));
            }
            RcptOutcome::Temporary {
                code,
                enhanced,
                text,
            } => {
                Metrics::inc(&shared.metrics.deferred);
                let status = format!("{code} {enhanced} {text}");
                event(EventId::Defer, status.clone());
                let delay = shared.options.retry.delay(attempts + 1);
                updates.push((
                    i,
                    RecipientState::Pending {
                        attempts: attempts + 1,
                        next_attempt: t + delay.as_secs().max(1),
                        last_error: Some(status),
                    },
                ));
            }
        }
    }
    // The copy a DSN returns is read first: once every recipient is final, the update lets
    // the message go from the spool. Reading it back counts against the delivery budget.
    let _memory = if failed.is_empty() {
        None
    } else {
        shared.delivery_memory.reserve(m.size).await
    };
    let original = if failed.is_empty() {
        Vec::new()
    } else {
        read_body(shared, &m.id).await.unwrap_or_default()
    };
    if let Err(e) = shared.spool.update(&m.id, updates).await {
        tracing::error!("spool update for {}: {e}", m.id);
        return;
    }
    if !failed.is_empty() {
        let wanted: Vec<FailedRecipient> = failed
            .into_iter()
            .filter(|f| {
                let notify = m
                    .meta
                    .recipients
                    .iter()
                    .find(|r| r.address == f.address)
                    .and_then(|r| r.notify.as_deref());
                wants_failure_dsn(notify)
            })
            .collect();
        if !wanted.is_empty() {
            queue_dsn(
                shared,
                m.meta.mail_from.as_deref(),
                m.meta.envid.as_deref(),
                m.meta.ret_full.unwrap_or(false),
                m.received_at,
                &wanted,
                &original,
                Some(&m.id),
            )
            .await;
        }
    }
}

/// The spool reads bodies with blocking file I/O: off the async workers.
async fn read_body(shared: &Shared, id: &QueueId) -> Result<Vec<u8>, crate::queue::QueueError> {
    let spool = shared.spool.clone();
    let id = id.clone();
    tokio::task::spawn_blocking(move || spool.read_body(&id))
        .await
        .unwrap_or(Err(crate::queue::QueueError::Closed))
}

fn failed_rcpt(
    r: &NewRecipient,
    status: &str,
    diagnostic: &str,
    remote: Option<String>,
) -> FailedRecipient {
    FailedRecipient {
        address: r.address.clone(),
        original: r.orcpt.clone(),
        status: status.to_string(),
        diagnostic: format!("smtp; {diagnostic}"),
        remote_mta: remote,
        action: DsnAction::Failed,
    }
}

/// RFC 3461: no NOTIFY means failures are reported; NOTIFY without FAILURE means they are not.
fn wants_failure_dsn(notify: Option<&str>) -> bool {
    notify.is_none_or(|n| {
        n.split(',')
            .any(|k| k.trim().eq_ignore_ascii_case("FAILURE"))
    })
}

/// The largest message a DSN returns whole (`RET=FULL`); larger ones are returned as their
/// header only. Postfix's `bounce_size_limit`.
const DSN_RETURN_LIMIT: usize = 50_000;

/// Composes a DSN and queues it to the original sender; null senders never get one.
#[allow(clippy::too_many_arguments)]
async fn queue_dsn(
    shared: &Shared,
    sender: Option<&str>,
    envid: Option<&str>,
    ret_full: bool,
    arrival: u64,
    failed: &[FailedRecipient],
    original: &[u8],
    about: Option<&QueueId>,
) {
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
            shared.wake.notify_one();
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
                Fate::Reject {
                    code,
                    enhanced,
                    text,
                } => Some(FailedRecipient {
                    address: r.address.to_string(),
                    original: None,
                    status: enhanced.clone(),
                    diagnostic: format!("smtp; {code} {enhanced} {text}"),
                    remote_mta: None,
                    action: DsnAction::Failed,
                }),
                _ => None,
            })
            .collect();
        let sender = verdict.mail_from.as_ref().map(ToString::to_string);
        queue_dsn(
            self,
            sender.as_deref(),
            params.envid.as_deref(),
            matches!(params.ret, Some(crate::smtp::command::Ret::Full)),
            now(),
            &failed,
            original,
            None,
        )
        .await;
    }
}
