//! The queue commands on a stopped relay's spool: the spool is opened as the relay opens it
//! (its lock keeps a relay from starting meanwhile), read, changed and closed; a command
//! that only reads opens it without writing a record ([`Inspection`]). Bounces need the
//! rules to route the report, so only a running relay makes them.

use super::{Reply, Report, Request, Who, change_holds, event, read, retried, select};
use crate::clock::now_secs;
use crate::queue::holds::Holds;
use crate::queue::{Inspection, QueueError, RecipientState, Spool, SpoolOptions};
use crate::relay::track::{self, Event};
use std::path::Path;

/// Carries out `req` on the stopped relay's spool folder `spool` (the relay's `--spool`).
pub fn handle(spool: &Path, req: &Request, who: &Who) -> Reply {
    let queue = spool.join("queue");
    if !queue.join("journal").is_dir() {
        return Reply::error(format!(
            "{}: no spool here (a relay's --spool folder has queue/journal)",
            spool.display()
        ));
    }
    if let Err(why) = owned_by_caller(&queue) {
        return Reply::error(why);
    }
    let holds = match Holds::load(spool) {
        Ok(h) => h,
        Err(e) => return Reply::error(e.to_string()),
    };
    if matches!(
        req,
        Request::List { .. } | Request::Summary { .. } | Request::Show { .. }
    ) {
        return match Inspection::open(&queue) {
            Ok(spool_now) => {
                let live = spool_now.live();
                read(req, &live, &holds, |id| spool_now.read_body(id), now_secs())
                    .unwrap_or_else(|| Reply::error("not a reading request"))
            }
            Err(QueueError::Locked { .. }) => running(spool),
            Err(e) => Reply::error(e.to_string()),
        };
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(r) => r,
        Err(e) => return Reply::error(e.to_string()),
    };
    let (reply, events) = runtime.block_on(async {
        let (store, live) = match Spool::open(&queue, SpoolOptions::default()) {
            Ok(s) => s,
            Err(QueueError::Locked { .. }) => return (running(spool), Vec::new()),
            Err(e) => return (Reply::error(e.to_string()), Vec::new()),
        };
        let out = act(spool, &store, &live, holds, req, who).await;
        let _ = store.close().await;
        out
    });
    if !events.is_empty() {
        if let Err(e) = track::append(&spool.join("tracking"), &events) {
            return Reply::error(format!(
                "done, but the tracking log could not record it: {e}"
            ));
        }
    }
    reply
}

/// The answer when the spool's lock is held but the socket did not answer.
fn running(spool: &Path) -> Reply {
    Reply::error(format!(
        "a relay is running on {} but its socket {} does not answer",
        spool.display(),
        super::socket_path(spool).display()
    ))
}

async fn act(
    spool: &Path,
    store: &Spool,
    live: &[crate::queue::QueuedMessage],
    mut holds: Holds,
    req: &Request,
    who: &Who,
) -> (Reply, Vec<Event>) {
    let now = now_secs();
    if let Some(reply) = read(req, live, &holds, |id| store.read_body(id), now) {
        return (reply, Vec::new());
    }
    let mut report = Report {
        action: req.action().to_string(),
        ..Report::default()
    };
    let mut events = Vec::new();
    match req {
        Request::Bounce { .. } => {
            return (
                Reply::error(
                    "bounce needs the running relay (it routes the report to the sender through \
                     the rules); start it, or `delete` to remove messages without a report",
                ),
                events,
            );
        }
        Request::Hold { .. } | Request::Release { .. } => {
            let (done, skipped) =
                change_holds(req, &mut holds, |id| live.iter().any(|m| m.id == *id));
            for what in &done {
                events.push(event(&format!("{} {what}", req.action()), who, None));
            }
            report.done = done;
            report.skipped = skipped;
        }
        Request::Retry { select: s } => {
            let (chosen, missing) = select(s, live, &holds, now);
            report.skipped = missing;
            let mut n = 0;
            for m in &chosen {
                let updates: Vec<(usize, RecipientState)> = retried(m, &holds, s.filter.as_ref())
                    .into_iter()
                    .filter_map(|i| match m.states.get(i) {
                        Some(RecipientState::Pending {
                            attempts,
                            last_error,
                            ..
                        }) => Some((
                            i,
                            RecipientState::Pending {
                                attempts: *attempts,
                                next_attempt: now,
                                last_error: last_error.clone(),
                            },
                        )),
                        _ => None,
                    })
                    .collect();
                n += updates.len();
                if let Err(e) = store.update(&m.id, updates).await {
                    return (Reply::error(format!("{}: {e}", m.id)), events);
                }
                report.done.push(m.id.to_string());
            }
            report.deliveries = Some(n);
            if !chosen.is_empty() {
                let what = format!("retry of {} messages ({n} recipients)", chosen.len());
                events.push(event(&what, who, None));
            }
        }
        Request::Delete { select: s } => {
            let (chosen, missing) = select(s, live, &holds, now);
            report.skipped = missing;
            for m in chosen {
                if let Err(e) = store.remove(&m.id).await {
                    return (Reply::error(format!("{}: {e}", m.id)), events);
                }
                events.push(event("delete", who, Some(&m)));
                report.done.push(m.id.to_string());
            }
            holds.retain_messages(|id| store.get(id).is_some());
        }
        Request::List { .. } | Request::Summary { .. } | Request::Show { .. } => {}
    }
    if let Err(e) = holds.save(spool) {
        return (Reply::error(format!("saving the holds: {e}")), events);
    }
    report.holds = holds;
    (Reply::Done(report), events)
}

/// Files this command writes (a new journal segment, the holds) must stay the relay's: run
/// by another user (root, say) they would be that user's, and the relay could not replace
/// them. The caller must be the spool's owner.
pub(crate) fn owned_by_caller(queue: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(queue)
        .map_err(|e| format!("{}: {e}", queue.display()))?
        .uid();
    let me = rustix::process::geteuid().as_raw();
    if owner == me {
        Ok(())
    } else {
        Err(format!(
            "{} belongs to uid {owner}: with the relay stopped, run this as the relay's user \
             (sudo -u '#{owner}' mailflow queue ...), so the files it writes stay the relay's",
            queue.display()
        ))
    }
}
