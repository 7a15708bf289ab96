//! The running relay's side of the queue commands: each request carried out on the spool
//! and the delivery plan together, so the scheduler never attempts what was just deleted,
//! bounced or held. Requests arrive through [`super::socket`].

use super::{Reply, Report, Request, Skipped, Who, change_holds, event, read, retried, select};
use crate::clock::now_secs;
use crate::queue::QueuedMessage;
use crate::queue::holds::HoldTarget;
use crate::relay::Shared;
use crate::smtp::Status;
use std::sync::Arc;

/// The status a bounced recipient gets (its DSN says the administrator returned it).
fn returned() -> Status {
    Status::new(
        550,
        "5.3.0",
        "returned to the sender by the mail administrator",
    )
}

/// Carries out one request on the running relay.
pub(super) async fn handle(shared: &Arc<Shared>, req: Request, who: &Who) -> Reply {
    let now = now_secs();
    let holds = shared.plan().holds().clone();
    let messages = shared.spool.live();
    let spool = shared.spool.clone();
    if let Some(mut reply) = read(&req, &messages, &holds, |id| spool.read_body(id), now) {
        suspensions(shared, &mut reply, now);
        return reply;
    }
    let mut report = Report {
        action: req.action().to_string(),
        ..Report::default()
    };
    match &req {
        Request::Hold { .. } | Request::Release { .. } => {
            let (req, mut skipped) = known_connectors(shared, req.clone());
            let mut changed = holds.clone();
            let (done, more) = change_holds(&req, &mut changed, |id| {
                messages.iter().any(|m| m.id == *id)
            });
            skipped.extend(more);
            if !done.is_empty() {
                if let Err(e) = save_holds(shared, &changed).await {
                    return Reply::error(e);
                }
                shared.plan().set_holds(changed, now);
                shared.wake.notify_one();
                for what in &done {
                    let m = what
                        .strip_prefix("message ")
                        .and_then(|id| messages.iter().find(|m| m.id.0 == id));
                    shared
                        .tracker
                        .log(event(&format!("{} {what}", req.action()), who, m));
                }
            }
            report.done = done;
            report.skipped = skipped;
        }
        Request::Retry { select: s } => {
            let (chosen, missing) = select(s, &messages, &holds, now);
            report.skipped = missing;
            // The destinations (delivery keys) of the recipients the filter takes.
            let mut due = std::collections::HashSet::new();
            for m in &chosen {
                for i in retried(m, &holds, s.filter.as_ref()) {
                    if let Some(r) = m.meta.recipients.get(i) {
                        let domain = r.address.rsplit_once('@').map_or("", |(_, d)| d);
                        due.insert((
                            m.id.clone(),
                            r.send_connector.clone(),
                            domain.to_ascii_lowercase(),
                        ));
                    }
                }
            }
            let n = shared.plan().retry(
                |k| {
                    due.contains(&(
                        k.id.clone(),
                        k.dest.connector.to_string(),
                        k.dest.domain.to_string(),
                    ))
                },
                now,
            );
            shared.wake.notify_one();
            report.done = chosen.iter().map(|m| m.id.to_string()).collect();
            report.deliveries = Some(n);
            if !chosen.is_empty() {
                let what = format!("retry of {} messages ({n} deliveries)", chosen.len());
                shared.tracker.log(event(&what, who, None));
            }
        }
        Request::Delete { select: s } | Request::Bounce { select: s } => {
            let (chosen, missing) = select(s, &messages, &holds, now);
            report.skipped = missing;
            let bounce = matches!(req, Request::Bounce { .. });
            for m in &chosen {
                match remove(shared, m, bounce, who).await {
                    Ok(id) => report.done.push(id),
                    Err(skip) => report.skipped.push(skip),
                }
            }
            forget_message_holds(shared, now).await;
        }
        Request::List { .. } | Request::Summary { .. } | Request::Show { .. } => {}
    }
    report.holds = shared.plan().holds().clone();
    Reply::Done(report)
}

/// A hold on a send connector the rules do not have would hold nothing (a typo during a
/// cut-over, and the tenant's mail flows): it is left out, and the answer says so.
fn known_connectors(shared: &Shared, req: Request) -> (Request, Vec<Skipped>) {
    let Request::Hold { targets } = req else {
        return (req, Vec::new());
    };
    let table = shared.table();
    let known = |c: &str| {
        table
            .send_connectors
            .iter()
            .any(|s| s.name.value.eq_ignore_ascii_case(c))
    };
    let (kept, unknown): (Vec<HoldTarget>, Vec<HoldTarget>) = targets
        .into_iter()
        .partition(|t| !matches!(t, HoldTarget::Connector(c) if !known(c)));
    let skipped = unknown
        .into_iter()
        .map(|t| Skipped {
            what: t.to_string(),
            why: "the rules have no send connector by this name".into(),
        })
        .collect();
    (Request::Hold { targets: kept }, skipped)
}

/// A recipient of a suspended destination (its next hops did not answer) is not attempted
/// before the suspension ends, whatever its own time says: the answer says so.
fn suspensions(shared: &Shared, reply: &mut Reply, now: u64) {
    let plan = shared.plan();
    let later = |next: &mut Option<u64>, connector: &str, domain: &str| {
        if let (Some(at), Some(until)) = (*next, plan.suspended_until(connector, domain, now)) {
            *next = Some(at.max(until));
        }
    };
    let views = |ms: &mut [crate::queue::listing::MessageView]| {
        for m in ms {
            for r in &mut m.recipients {
                let domain = r.domain();
                later(&mut r.next_attempt, &r.connector, &domain);
            }
        }
    };
    match reply {
        Reply::Messages { messages, .. } => views(messages),
        Reply::Message { message, .. } => views(std::slice::from_mut(message.as_mut())),
        Reply::Destinations { destinations, .. } => {
            for d in destinations {
                later(&mut d.next_attempt, &d.connector, &d.domain);
            }
        }
        _ => {}
    }
}

/// Deletes or bounces one message, unless an attempt for it is under way.
async fn remove(
    shared: &Arc<Shared>,
    m: &QueuedMessage,
    bounce: bool,
    who: &Who,
) -> Result<String, Skipped> {
    let id = m.id.to_string();
    let m = {
        let mut plan = shared.plan();
        if plan.in_flight(&m.id) {
            return Err(Skipped {
                what: id,
                why: "being delivered now; try again in a moment".into(),
            });
        }
        // The request's snapshot may be older than an attempt that has ended since: with no
        // attempt in flight (an attempt records its outcome before it leaves the plan) and
        // its keys forgotten, the spool's copy is the one that stays true. Bouncing the
        // snapshot would report delivered recipients as failed, or a delivered message as
        // bounced.
        let Some(now) = shared.spool.get(&m.id) else {
            return Err(Skipped {
                what: id,
                why: "no longer queued: its delivery ended meanwhile".into(),
            });
        };
        plan.forget(&now);
        now
    };
    let action = if bounce { "bounce" } else { "delete" };
    let result = if bounce {
        if crate::relay::scheduler::fail_pending(shared, m.clone(), returned()).await {
            Ok(())
        } else {
            Err("the spool did not take the update; the relay's log says why".to_string())
        }
    } else {
        shared.spool.remove(&m.id).await.map_err(|e| e.to_string())
    };
    match result {
        Ok(()) => {
            shared.tracker.log(event(action, who, Some(&m)));
            Ok(id)
        }
        Err(e) => {
            // Still queued: the plan takes it back.
            shared.plan().add(&m);
            Err(Skipped { what: id, why: e })
        }
    }
}

/// Message holds of messages gone from the queue are dropped from the file.
async fn forget_message_holds(shared: &Arc<Shared>, now: u64) {
    let mut holds = shared.plan().holds().clone();
    let before = holds.messages.len();
    holds.retain_messages(|id| shared.spool.get(id).is_some());
    if holds.messages.len() != before && save_holds(shared, &holds).await.is_ok() {
        shared.plan().set_holds(holds, now);
    }
}

async fn save_holds(
    shared: &Arc<Shared>,
    holds: &crate::queue::holds::Holds,
) -> Result<(), String> {
    let dir = shared.options.spool.clone();
    let holds = holds.clone();
    tokio::task::spawn_blocking(move || holds.save(&dir))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| format!("saving the holds: {e}")))
}
