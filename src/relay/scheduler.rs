//! The delivery scheduler: takes what the [`super::plan`] says is due (queued recipients
//! grouped by send connector and domain), hands each group to [`crate::deliver`], records
//! every outcome in the spool before acting on it, retries with backoff, warns senders of
//! delays and bounces what fails for good. Each attempt signs what it sends
//! ([`super::sign`]) and sends forwarded mail with an SRS envelope sender; the spool keeps
//! the original sender, to whom reports go.

use super::Shared;
use super::metrics::Metrics;
use super::plan::{Dest, Key, Task, crosses};
use super::report;
use super::track::{Event, EventId};
use crate::clock::now_secs;
use crate::compile::route;
use crate::deliver::dsn::{DsnAction, FailedRecipient};
use crate::deliver::{
    Attempt, DeliverError, OutboundMessage, OutboundRcpt, RcptOutcome, deliver_reusing, next_hops,
};
use crate::eval::organization::{leaves_organization, strip_organization_headers};
use crate::eval::srs_sender;
use crate::model::Address;
use crate::queue::{QueueId, QueuedMessage, RecipientState};
use crate::smtp::Status;
use std::sync::Arc;
use std::time::Duration;

/// A group of one message's recipients that go to the same place in one transaction.
struct Job {
    message: QueuedMessage,
    connector: String,
    domain: String,
    indexes: Vec<usize>,
    /// The SRS envelope sender these recipients get (forwarded mail from an outside
    /// sender); `None`: the stored sender.
    srs_sender: Option<String>,
}

/// Runs until shutdown: starts what the plan says is due, then sleeps until the next due
/// time, an arrival or a finished attempt. Work per wake is what is due, not the queue.
pub(super) async fn run(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        let t = now_secs();
        let (tasks, next) = {
            let mut plan = shared.plan();
            (plan.take(t), plan.next_due())
        };
        for task in tasks {
            tracing::debug!(?task, "scheduler");
            tokio::spawn(run_task(Arc::clone(&shared), task));
        }
        // `queue_interval` only caps the sleep (a cheap wake that finds nothing due); due
        // times are whole seconds, so sleeping until the next one is at most a second late.
        let until_due = next.map_or(shared.options.queue_interval, |d| {
            Duration::from_secs(d.saturating_sub(t))
        });
        let sleep = until_due.min(shared.options.queue_interval);
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// One task from the plan: attempt (or defer) the key's recipients, record the outcome,
/// tell the plan, and put what is still pending back on its timer.
async fn run_task(shared: Arc<Shared>, task: Task) {
    let (key, suspended) = match task {
        Task::Attempt(key) => (key, None),
        Task::Defer { key, reason } => (key, Some(reason)),
    };
    let job = shared
        .spool
        .get(&key.id)
        .and_then(|m| job_for(m, &key, &shared.table()));
    let mut reached = None;
    let mut error = String::new();
    let mut next = None;
    if let Some(job) = job {
        let (result, body) = match &suspended {
            Some(reason) => (deferred(job.indexes.len(), &key.dest, reason), None),
            None => attempt(&shared, &job).await,
        };
        if suspended.is_none() {
            reached = Some(!result.unreachable);
        }
        if let Some(RcptOutcome::Temporary(status)) = result.outcomes.first() {
            error = status.to_string();
        }
        next = record(&shared, &job, result, body, Outcomes::Attempted).await;
    }
    let backoff = |failures: u32| shared.options.retry.delay(failures).as_secs();
    {
        let mut plan = shared.plan();
        plan.finished(&key, reached, now_secs(), backoff, &error);
        if let (Some(due), Some(m)) = (next, shared.spool.get(&key.id)) {
            plan.schedule(key, due, m.received_at);
        }
    }
    // A finished attempt may have made room for another to the same destination.
    shared.wake.notify_one();
}

/// The message's pending recipients for the key's destination, and the envelope sender they
/// get; `None` when there are none left (delivered, bounced or deleted meanwhile).
fn job_for(message: QueuedMessage, key: &Key, table: &crate::compile::Table) -> Option<Job> {
    let indexes: Vec<usize> = (0..message.states.len())
        .filter(|&i| {
            matches!(message.states.get(i), Some(RecipientState::Pending { .. }))
                && message.meta.recipients.get(i).is_some_and(|r| {
                    *r.send_connector == *key.dest.connector
                        && r.address
                            .rsplit_once('@')
                            .is_some_and(|(_, d)| d.eq_ignore_ascii_case(&key.dest.domain))
                })
        })
        .collect();
    if indexes.is_empty() {
        return None;
    }
    // One transaction has one sender: forwarded mail for any of its recipients (a contact's
    // next to one addressed directly) makes it SRS for all, and a bounce to it is reversed
    // to the same original sender either way.
    let sender = message.meta.mail_from.as_deref().and_then(stored_address);
    let day = crate::clock::days_since_epoch();
    let srs = indexes.iter().find_map(|&i| {
        let r = message.meta.recipients.get(i)?;
        let original = stored_address(&r.original)?;
        let recipient = stored_address(&r.address)?;
        srs_sender(table, sender.as_ref(), &original, &recipient, day)
    });
    Some(Job {
        message,
        connector: key.dest.connector.to_string(),
        domain: key.dest.domain.to_string(),
        indexes,
        srs_sender: srs.map(|a| a.to_string()),
    })
}

/// A stored address (`local@domain`, as the session wrote it) as an address.
fn stored_address(text: &str) -> Option<Address> {
    let (local, domain) = text.rsplit_once('@')?;
    Some(Address {
        local: local.to_string(),
        domain: domain.to_ascii_lowercase(),
    })
}

/// The outcome of a deferral that did not connect: the destination is suspended.
fn deferred(n: usize, dest: &Dest, reason: &str) -> Attempt {
    let text = format!("delivery to {dest} temporarily suspended: {reason}");
    every(n, temporary(451, "4.4.1", text))
}

fn temporary(code: u16, enhanced: &str, text: impl Into<String>) -> RcptOutcome {
    RcptOutcome::Temporary(Status::new(code, enhanced, text))
}

fn permanent(code: u16, enhanced: &str, text: impl Into<String>) -> RcptOutcome {
    RcptOutcome::Permanent(Status::new(code, enhanced, text))
}

/// The body one attempt read, kept for the report on its outcome, with its share of the
/// delivery memory budget.
struct Body {
    /// `None`: the spool could not give it back; a report then returns no copy.
    bytes: Option<Vec<u8>>,
    _memory: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Delivers the job, and hands back the body when it was read.
async fn attempt(shared: &Shared, job: &Job) -> (Attempt, Option<Body>) {
    let table = shared.table();
    let all = |o: RcptOutcome| (every(job.indexes.len(), o), None);
    // The connector by name; if a reload removed it, route again with the current rules.
    let connector = table
        .send_connectors
        .iter()
        .find(|c| c.name.value == job.connector)
        .or_else(|| {
            route(&table.send_connectors, &job.domain, &table.domains)
                .and_then(|i| table.send_connectors.get(i))
        });
    let Some(c) = connector else {
        let text = format!("no send connector covers {}", job.domain);
        return all(permanent(550, "5.4.4", text));
    };
    match next_hops(&shared.resolver, c, &job.domain, &shared.local).await {
        Err(DeliverError::Loop { .. }) => {
            let text = format!("the next hop for {} is this relay: mail loop", job.domain);
            all(permanent(554, "5.4.4", text))
        }
        Err(e) => {
            let status = e.status();
            if status.is_permanent() {
                all(RcptOutcome::Permanent(status))
            } else {
                // No next hop to try (DNS failing): the destination is unreachable.
                let failed = every(job.indexes.len(), RcptOutcome::Temporary(status));
                let attempt = Attempt {
                    unreachable: true,
                    ..failed
                };
                (attempt, None)
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
            send(shared, &table, c, &hops, job).await
        }
    }
}

/// The same outcome for each of `n` recipients, without a connection.
fn every(n: usize, o: RcptOutcome) -> Attempt {
    Attempt {
        outcomes: vec![o; n],
        tls: None,
        host: String::new(),
        addr: None,
        unreachable: false,
    }
}

/// Reads the body and hands the job to the delivery client for these hops, over a kept
/// connection where there is one.
async fn send(
    shared: &Shared,
    table: &crate::compile::Table,
    c: &crate::model::SendConnector,
    hops: &[crate::deliver::Hop],
    job: &Job,
) -> (Attempt, Option<Body>) {
    let all = |o: RcptOutcome| every(job.indexes.len(), o);
    let Some(cfg) = shared.client_config(&c.name.value) else {
        // Only a reload racing this attempt gets here; the next attempt finds it.
        let text = format!("send connector `{}` is being reloaded", c.name.value);
        return (all(temporary(451, "4.3.5", text)), None);
    };
    // Held until the outcome is recorded: the body, its stripped and stuffed copies.
    let memory = shared.delivery_memory.reserve(job.message.size).await;
    let original = match read_body(shared, &job.message.id).await {
        Ok(body) => body,
        Err(e) => {
            let body = Body {
                bytes: None,
                _memory: memory,
            };
            return (unreadable_body(&job.message.id, &e, all), Some(body));
        }
    };
    let stripped = outbound_body(table, &job.domain, &original);
    let Some((original, stripped, signatures)) =
        super::sign::for_attempt(shared, c, &job.message.id, original, stripped).await
    else {
        let text = "the DKIM signer failed; retried later";
        let body = Body {
            bytes: None,
            _memory: memory,
        };
        return (all(temporary(451, "4.3.0", text)), Some(body));
    };
    let outgoing = stripped.as_deref().unwrap_or(&original);
    if job.srs_sender.is_some() {
        Metrics::inc(&shared.metrics.srs_rewrites);
    }
    let rcpts: Vec<OutboundRcpt> = job
        .indexes
        .iter()
        .filter_map(|&i| job.message.meta.recipients.get(i))
        .map(|r| OutboundRcpt {
            address: r.address.clone(),
            notify: r.notify,
            orcpt: r.orcpt.clone(),
        })
        .collect();
    let meta = &job.message.meta;
    let msg = OutboundMessage {
        mail_from: job.srs_sender.as_deref().or(meta.mail_from.as_deref()),
        recipients: &rcpts,
        body: outgoing,
        prepend: signatures.as_bytes(),
        envid: meta.envid.as_deref(),
        ret_full: meta.ret_full,
        smtputf8: meta.smtputf8,
        eight_bit: meta.eight_bit,
    };
    let attempt = deliver_reusing(&cfg, &shared.pool, hops, &msg).await;
    drop(stripped);
    let body = Body {
        bytes: Some(original),
        _memory: memory,
    };
    (attempt, Some(body))
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

/// The bytes that go to `domain` when they are not the body as stored: without the
/// organization's headers when it is outside the organization (Exchange's header firewall
/// on send). `None`: send it as stored.
fn outbound_body(table: &crate::compile::Table, domain: &str, body: &[u8]) -> Option<Vec<u8>> {
    if !leaves_organization(&table.domains, domain) {
        return None;
    }
    strip_organization_headers(body)
}

/// What one attempt's outcomes mean: the spool updates, who gets a report, and when the
/// recipients still pending are due again.
#[derive(Default)]
struct Judgement {
    updates: Vec<(usize, RecipientState)>,
    /// Failed for good, with the recipient's index (for its NOTIFY).
    failed: Vec<(usize, FailedRecipient)>,
    /// Deferred past the delay-warning time for the first time.
    delayed: Vec<(usize, FailedRecipient)>,
    next: Option<u64>,
    /// A SEND, DEFER or FAIL tracking event for each recipient, and the counter it adds to.
    events: Vec<(Event, Counted)>,
}

/// Which delivery counter of `/metrics` an outcome adds to.
#[derive(Clone, Copy)]
enum Counted {
    Delivered,
    Bounced,
    Deferred,
}

/// Logs the outcomes' tracking events and counts them.
fn settle(shared: &Shared, events: Vec<(Event, Counted)>) {
    for (e, counted) in events {
        shared.tracker.log(e);
        Metrics::inc(match counted {
            Counted::Delivered => &shared.metrics.delivered,
            Counted::Bounced => &shared.metrics.bounced,
            Counted::Deferred => &shared.metrics.deferred,
        });
    }
}

/// Where the outcomes [`record`] writes come from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcomes {
    /// An attempt: they happened, and are logged and counted at once, whatever the spool
    /// then does (and before waiting for it).
    Attempted,
    /// The administrator's (`queue bounce`): they happen by being recorded, and are
    /// logged and counted only once the spool has taken them.
    Decided,
}

/// Writes the outcomes to the spool, then logs them and reports failures and delays to the
/// sender, with the body the attempt read (`body`), else one read now. Returns when the
/// recipients still pending are due again.
async fn record(
    shared: &Shared,
    job: &Job,
    result: Attempt,
    body: Option<Body>,
    from: Outcomes,
) -> Option<u64> {
    let m = &job.message;
    let mut j = judge(shared, job, &result, now_secs());
    if from == Outcomes::Attempted {
        settle(shared, std::mem::take(&mut j.events));
    }
    // The copy a report returns is in hand before the update: once every recipient is final,
    // the update lets the message go from the spool. Reading it back counts against the
    // delivery budget.
    let reporting = !j.failed.is_empty() || !j.delayed.is_empty();
    let (original, _memory) = match body {
        Some(Body { bytes, _memory }) => (bytes.unwrap_or_default(), _memory),
        None if reporting => {
            let memory = shared.delivery_memory.reserve(m.size).await;
            (read_body(shared, &m.id).await.unwrap_or_default(), memory)
        }
        None => (Vec::new(), None),
    };
    let updated = shared.spool.update(&m.id, j.updates).await;
    if updated.is_ok() {
        settle(shared, j.events);
    }
    if let Err(e) = updated {
        tracing::error!("spool update for {}: {e}", m.id);
        return j.next;
    }
    report::outcomes(shared, m, j.failed, j.delayed, &original).await;
    j.next
}

/// Fails every pending recipient of `message` with `status`, as a permanent failure at
/// delivery would: recorded in the spool, then a FAIL event each (with the recipient's own
/// send connector) and a DSN to the sender as NOTIFY asks (`mailflow queue bounce`). False,
/// with nothing logged or sent, when the spool did not take the update.
pub(super) async fn fail_pending(shared: &Shared, message: QueuedMessage, status: Status) -> bool {
    let indexes: Vec<usize> = (0..message.states.len())
        .filter(|&i| matches!(message.states.get(i), Some(RecipientState::Pending { .. })))
        .collect();
    let Some(first) = indexes
        .first()
        .and_then(|&i| message.meta.recipients.get(i))
    else {
        return true;
    };
    let (connector, id, n) = (
        first.send_connector.clone(),
        message.id.clone(),
        indexes.len(),
    );
    // The first pending recipient's connector names the job; each FAIL event carries its
    // own recipient's.
    let job = Job {
        message,
        connector,
        domain: String::new(),
        indexes,
        srs_sender: None,
    };
    let outcomes = every(n, RcptOutcome::Permanent(status));
    record(shared, &job, outcomes, None, Outcomes::Decided).await;
    shared.spool.get(&id).is_none_or(|m| {
        !m.states
            .iter()
            .any(|s| matches!(s, RecipientState::Pending { .. }))
    })
}

/// Sorts each recipient's outcome into an update, a failure or a deferral (logging and
/// counting each), and notes which deferrals have just crossed the delay-warning time.
fn judge(shared: &Shared, job: &Job, result: &Attempt, t: u64) -> Judgement {
    let m = &job.message;
    let lifetime = shared.options.retry.lifetime.as_secs();
    let expired = t.saturating_sub(m.received_at) >= lifetime;
    let warning = shared.options.delay_warning.as_secs();
    let mut j = Judgement::default();
    let remote = (!result.host.is_empty()).then(|| result.host.clone());
    for (k, &i) in job.indexes.iter().enumerate() {
        let Some(r) = m.meta.recipients.get(i) else {
            continue;
        };
        let outcome = result
            .outcomes
            .get(k)
            .cloned()
            .unwrap_or_else(|| temporary(451, "4.3.0", "no outcome"));
        let (attempts, due) = match m.states.get(i) {
            Some(RecipientState::Pending {
                attempts,
                next_attempt,
                ..
            }) => (*attempts, *next_attempt),
            _ => (0, m.received_at),
        };
        let mut event = |id: EventId, status: String| {
            let mut e = Event::new(id, "SMTP");
            e.internal_message_id = Some(m.id.to_string());
            e.message_id = m.meta.message_id.clone();
            e.sender_address = m.meta.mail_from.clone();
            e.srs_sender_address = job.srs_sender.clone();
            e.recipient_address = vec![r.address.clone()];
            e.recipient_status = vec![status];
            // The job's connector for an attempt; a bounce's recipients may have several.
            e.connector_id = Some(r.send_connector.clone());
            e.server_hostname = remote.clone();
            e.server_ip = result.addr.map(|a| a.ip().to_string());
            e.total_bytes = Some(m.size);
            let counted = match id {
                EventId::Send => Counted::Delivered,
                EventId::Defer => Counted::Deferred,
                _ => Counted::Bounced,
            };
            j.events.push((e, counted));
        };
        match outcome {
            RcptOutcome::Delivered { reply } => {
                event(EventId::Send, reply.clone());
                j.updates.push((i, RecipientState::Delivered { reply }));
            }
            RcptOutcome::Permanent(failure) => {
                let status = failure.to_string();
                event(EventId::Fail, status.clone());
                let f = report::recipient(
                    r,
                    &failure.enhanced,
                    &status,
                    remote.clone(),
                    DsnAction::Failed,
                );
                j.failed.push((i, f));
                j.updates.push((i, RecipientState::Failed(failure)));
            }
            RcptOutcome::Temporary(last) if expired => {
                let status = format!(
                    "{} 4.4.7 message expired after {} attempts; last error: {last}",
                    last.code,
                    attempts + 1
                );
                event(EventId::Fail, status.clone());
                let f = report::recipient(r, "4.4.7", &status, remote.clone(), DsnAction::Failed);
                j.failed.push((i, f));
                // 550 with 4.4.7, as spooled since the first version: the class mismatch is
                // kept so that records and DSNs read as they always have.
                let state = RecipientState::Failed(Status::new(550, "4.4.7", status));
                j.updates.push((i, state));
            }
            RcptOutcome::Temporary(last) => {
                let status = last.to_string();
                event(EventId::Defer, status.clone());
                // The previous attempt was at `due` less the delay it set (or at arrival):
                // the warning time falls between it and now for exactly one deferral, so
                // the notice goes once, restart or not.
                let previous = if attempts == 0 {
                    m.received_at
                } else {
                    due.saturating_sub(shared.options.retry.delay(attempts).as_secs().max(1))
                };
                if crosses(m.received_at, warning, previous, t) {
                    let f = report::recipient(
                        r,
                        &last.enhanced,
                        &status,
                        remote.clone(),
                        DsnAction::Delayed,
                    );
                    j.delayed.push((i, f));
                }
                let next = t + shared.options.retry.delay(attempts + 1).as_secs().max(1);
                j.next = Some(j.next.map_or(next, |n| n.min(next)));
                let state = RecipientState::Pending {
                    attempts: attempts + 1,
                    next_attempt: next,
                    last_error: Some(status),
                };
                j.updates.push((i, state));
            }
        }
    }
    j
}

/// The spool reads bodies with blocking file I/O: off the async workers.
async fn read_body(shared: &Shared, id: &QueueId) -> Result<Vec<u8>, crate::queue::QueueError> {
    let spool = shared.spool.clone();
    let id = id.clone();
    tokio::task::spawn_blocking(move || spool.read_body(&id))
        .await
        .unwrap_or(Err(crate::queue::QueueError::Closed))
}
