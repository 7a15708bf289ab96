//! The delivery plan: which queued recipients are due when, and where each destination
//! stands. Pure bookkeeping (no I/O, no clock of its own): the scheduler feeds it arrivals
//! and outcomes and asks it what to attempt now and how long it may sleep.
//!
//! Work is proportional to what changes, never to the queue's size: a timer per pending
//! (message, destination) pair ordered by due time, and per destination a ready queue, a
//! count of attempts in flight and a backoff. A destination whose next hop cannot be reached
//! is suspended (Postfix's "dead destination"): its due items are not attempted, only moved
//! to when the suspension ends, where one probe goes first. Items of other destinations are
//! untouched by it. Keys an administrator holds are parked ([`steer`]) until released.

mod steer;

use crate::queue::holds::Holds;
use crate::queue::{QueueId, QueuedMessage, RecipientState};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// Where a group of recipients goes: one send connector, one recipient domain (Exchange's
/// per-connector, per-domain delivery queues; Postfix's transport:nexthop).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Dest {
    pub(crate) connector: Arc<str>,
    pub(crate) domain: Arc<str>,
}

impl std::fmt::Display for Dest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} via {}", self.domain, self.connector)
    }
}

/// One unit of work: every pending recipient of one message going to one destination.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Key {
    pub(crate) id: QueueId,
    pub(crate) dest: Dest,
}

/// What the scheduler is to do with a key now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Task {
    /// Deliver it.
    Attempt(Key),
    /// Its destination is suspended and the message has just crossed its delay-warning time
    /// or its lifetime: record a deferral (which warns or expires it) without connecting.
    Defer {
        /// Which.
        key: Key,
        /// Why the destination is suspended.
        reason: String,
    },
}

/// Timing policy the plan applies (from the relay's options, seconds).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Attempts in flight across all destinations.
    pub(crate) total: usize,
    /// Attempts in flight to one destination.
    pub(crate) per_destination: usize,
    /// After how long a delay notice is due (0: never).
    pub(crate) delay_warning: u64,
    /// How long a message may stay queued.
    pub(crate) lifetime: u64,
}

#[derive(Debug, Default)]
struct DestState {
    ready: VecDeque<Key>,
    active: usize,
    /// Consecutive attempts that reached no next hop.
    failures: u32,
    suspended_until: u64,
    last_error: String,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    due: u64,
    received_at: u64,
    /// In its destination's ready queue (due already), not on a timer.
    ready: bool,
    /// When it was last found due (and put off): a delay notice or expiry is due when its
    /// time falls between this and the next such moment.
    seen: u64,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Plan {
    limits: Limits,
    timers: BTreeSet<(u64, Key)>,
    /// Every key waiting (in `timers` or a ready queue), with its due time and arrival.
    waiting: HashMap<Key, Entry>,
    in_flight: HashSet<Key>,
    dests: HashMap<Dest, DestState>,
    active: usize,
    /// What an administrator holds, and the keys it covers (with their arrival time): not
    /// on a timer, not attempted, not expired, until released.
    holds: Holds,
    parked: HashMap<Key, u64>,
}

/// The destination of recipient `i`, or `None` when it is not pending.
fn dest_of(m: &QueuedMessage, i: usize) -> Option<(Dest, u64)> {
    let RecipientState::Pending { next_attempt, .. } = m.states.get(i)? else {
        return None;
    };
    let r = m.meta.recipients.get(i)?;
    let domain = r
        .address
        .rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default();
    Some((
        Dest {
            connector: Arc::from(r.send_connector.as_str()),
            domain: Arc::from(domain.as_str()),
        },
        *next_attempt,
    ))
}

/// Whether a message received at `received_at` crosses `threshold` seconds of age between
/// `from` (exclusive) and `to` (inclusive).
pub(crate) fn crosses(received_at: u64, threshold: u64, from: u64, to: u64) -> bool {
    threshold > 0 && {
        let at = received_at.saturating_add(threshold);
        from < at && at <= to
    }
}

impl Plan {
    pub(crate) fn new(limits: Limits) -> Plan {
        Plan {
            limits,
            timers: BTreeSet::new(),
            waiting: HashMap::new(),
            in_flight: HashSet::new(),
            dests: HashMap::new(),
            active: 0,
            holds: Holds::default(),
            parked: HashMap::new(),
        }
    }

    /// Adds the pending recipients of a stored (or recovered) message, each destination due
    /// at its earliest pending recipient's time.
    pub(crate) fn add(&mut self, m: &QueuedMessage) {
        let mut due: HashMap<Dest, u64> = HashMap::new();
        for i in 0..m.states.len() {
            if let Some((dest, at)) = dest_of(m, i) {
                let d = due.entry(dest).or_insert(at);
                *d = (*d).min(at);
            }
        }
        for (dest, at) in due {
            let key = Key {
                id: m.id.clone(),
                dest,
            };
            self.schedule(key, at, m.received_at);
        }
    }

    /// Puts `key` on the timer for `due`, unless it is in flight (its outcome reschedules
    /// it) or already waiting for an earlier time.
    pub(crate) fn schedule(&mut self, key: Key, due: u64, received_at: u64) {
        if self.in_flight.contains(&key) {
            return;
        }
        if self
            .holds
            .covers(&key.id, &key.dest.connector, &key.dest.domain)
        {
            self.parked.entry(key).or_insert(received_at);
            return;
        }
        if let Some(e) = self.waiting.get_mut(&key) {
            if e.ready || e.due <= due {
                return;
            }
            self.timers.remove(&(e.due, key.clone()));
            e.due = due;
        } else {
            let entry = Entry {
                due,
                received_at,
                ready: false,
                seen: due,
            };
            self.waiting.insert(key.clone(), entry);
        }
        self.timers.insert((due, key));
    }

    /// What to start now, in order: timers that are due join their destination's ready
    /// queue; each destination then gives what its concurrency allows (one probe while it
    /// is failing, none while suspended), within the total.
    pub(crate) fn take(&mut self, now: u64) -> Vec<Task> {
        while let Some((due, _)) = self.timers.first() {
            if *due > now {
                break;
            }
            let Some((_, key)) = self.timers.pop_first() else {
                break;
            };
            if let Some(e) = self.waiting.get_mut(&key) {
                e.ready = true;
            }
            self.dests
                .entry(key.dest.clone())
                .or_default()
                .ready
                .push_back(key);
        }
        let mut tasks = Vec::new();
        let mut retime = Vec::new();
        for d in self.dests.values_mut() {
            if d.ready.is_empty() {
                continue;
            }
            if d.suspended_until > now {
                retime.extend(d.ready.drain(..).map(|k| (k, d.suspended_until)));
                continue;
            }
            let cap = if d.failures > 0 {
                1
            } else {
                self.limits.per_destination.max(1)
            };
            while d.active < cap && self.active < self.limits.total {
                let Some(key) = d.ready.pop_front() else {
                    break;
                };
                d.active += 1;
                self.active += 1;
                tasks.push(key);
            }
        }
        let mut out: Vec<Task> = Vec::with_capacity(tasks.len());
        for key in tasks {
            self.waiting.remove(&key);
            self.in_flight.insert(key.clone());
            out.push(Task::Attempt(key));
        }
        for (key, until) in retime {
            self.retime(key, until, now, &mut out);
        }
        out
    }

    /// A due key of a suspended destination waits for the suspension's end, unless it has
    /// just become old enough for a delay notice or for expiry: then it is deferred now.
    fn retime(&mut self, key: Key, until: u64, now: u64, out: &mut Vec<Task>) {
        let Some(entry) = self.waiting.get(&key).copied() else {
            return;
        };
        let l = self.limits;
        let notice = crosses(entry.received_at, l.delay_warning, entry.seen, now);
        let expired = now.saturating_sub(entry.received_at) >= l.lifetime;
        if notice || expired {
            let reason = self
                .dests
                .get(&key.dest)
                .map(|d| d.last_error.clone())
                .unwrap_or_default();
            self.waiting.remove(&key);
            self.in_flight.insert(key.clone());
            if let Some(d) = self.dests.get_mut(&key.dest) {
                d.active += 1;
            }
            self.active += 1;
            out.push(Task::Defer { key, reason });
            return;
        }
        if let Some(e) = self.waiting.get_mut(&key) {
            e.due = until;
            e.ready = false;
            e.seen = now;
        }
        self.timers.insert((until, key));
    }

    /// An attempt (or a deferral) ended. `reached`: whether a next hop took the transaction
    /// (`None` for a deferral that did not try). A destination none of whose hops answered
    /// is suspended for `backoff` seconds, growing with each failure the caller counts.
    pub(crate) fn finished(
        &mut self,
        key: &Key,
        reached: Option<bool>,
        now: u64,
        backoff: impl Fn(u32) -> u64,
        error: &str,
    ) {
        self.in_flight.remove(key);
        self.active = self.active.saturating_sub(1);
        let Some(d) = self.dests.get_mut(&key.dest) else {
            return;
        };
        d.active = d.active.saturating_sub(1);
        match reached {
            Some(true) => {
                d.failures = 0;
                d.suspended_until = 0;
            }
            Some(false) => {
                d.failures = d.failures.saturating_add(1);
                d.suspended_until = now.saturating_add(backoff(d.failures).max(1));
                d.last_error = error.to_string();
            }
            None => {}
        }
        if d.ready.is_empty() && d.active == 0 && d.failures == 0 {
            self.dests.remove(&key.dest);
        }
    }

    /// When the next timer is due (unix seconds), if any.
    pub(crate) fn next_due(&self) -> Option<u64> {
        self.timers.first().map(|(due, _)| *due)
    }

    /// Keys waiting or in flight.
    pub(crate) fn len(&self) -> usize {
        self.waiting.len() + self.in_flight.len()
    }

    /// Destinations suspended at `now`, for metrics.
    pub(crate) fn suspended(&self, now: u64) -> usize {
        self.dests
            .values()
            .filter(|d| d.suspended_until > now)
            .count()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::queue::{NewMessage, NewRecipient};

    pub(in crate::relay::plan) fn msg(
        id: &str,
        received_at: u64,
        rcpts: &[(&str, &str)],
    ) -> QueuedMessage {
        QueuedMessage {
            id: QueueId(id.to_string()),
            received_at,
            meta: NewMessage {
                mail_from: Some("a@example.org".into()),
                envid: None,
                ret_full: None,
                message_id: None,
                client_ip: None,
                connector: None,
                recipients: rcpts
                    .iter()
                    .map(|(addr, conn)| NewRecipient {
                        address: addr.to_string(),
                        original: addr.to_string(),
                        send_connector: conn.to_string(),
                        notify: None,
                        orcpt: None,
                    })
                    .collect(),
                smtputf8: false,
                eight_bit: false,
            },
            states: vec![
                RecipientState::Pending {
                    attempts: 0,
                    next_attempt: received_at,
                    last_error: None,
                };
                rcpts.len()
            ],
            size: 10,
        }
    }

    pub(in crate::relay::plan) fn limits() -> Limits {
        Limits {
            total: 64,
            per_destination: 2,
            delay_warning: 100,
            lifetime: 1000,
        }
    }

    fn key(id: &str) -> Key {
        Key {
            id: QueueId(id.to_string()),
            dest: Dest {
                connector: Arc::from("Out"),
                domain: Arc::from("dead.example"),
            },
        }
    }

    fn attempts(tasks: &[Task]) -> Vec<String> {
        tasks
            .iter()
            .map(|t| match t {
                Task::Attempt(k) => format!("attempt {} {}", k.id.0, k.dest),
                Task::Defer { key, .. } => format!("defer {} {}", key.id.0, key.dest),
            })
            .collect()
    }

    #[test]
    fn groups_by_destination_and_honours_due_times() {
        let mut p = Plan::new(limits());
        p.add(&msg(
            "A",
            10,
            &[
                ("x@one.example", "Out"),
                ("y@ONE.example", "Out"),
                ("z@two.example", "Out"),
            ],
        ));
        assert!(p.take(9).is_empty());
        assert_eq!(p.next_due(), Some(10));
        let t = attempts(&p.take(10));
        assert_eq!(t.len(), 2, "{t:?}");
        assert!(t.contains(&"attempt A one.example via Out".to_string()));
        assert!(t.contains(&"attempt A two.example via Out".to_string()));
        assert_eq!(p.next_due(), None);
    }

    #[test]
    fn per_destination_concurrency_leaves_others_alone() {
        let mut p = Plan::new(limits());
        for i in 0..5 {
            p.add(&msg(&format!("D{i}"), 1, &[("a@dead.example", "Out")]));
        }
        p.add(&msg("L", 1, &[("a@live.example", "Out")]));
        let t = attempts(&p.take(1));
        assert_eq!(t.iter().filter(|s| s.contains("dead")).count(), 2, "{t:?}");
        assert!(t.contains(&"attempt L live.example via Out".to_string()));
    }

    /// What the scheduler does when an attempt reaches no next hop: tell the plan, and put
    /// the key back on its timer.
    fn unreachable(p: &mut Plan, key: &Key, now: u64, backoff: u64) {
        p.finished(key, Some(false), now, |n| backoff * u64::from(n), "refused");
        p.schedule(key.clone(), now + backoff, 1);
    }

    #[test]
    fn a_dead_destination_is_suspended_then_probed_once() {
        let mut p = Plan::new(limits());
        for i in 0..5 {
            p.add(&msg(&format!("D{i}"), 1, &[("a@dead.example", "Out")]));
        }
        let first = p.take(1);
        assert_eq!(first.len(), 2);
        let Task::Attempt(k) = &first[0] else {
            panic!("{first:?}")
        };
        unreachable(&mut p, k, 2, 10);
        // While suspended nothing of it is attempted, and nothing is lost.
        assert!(p.take(5).is_empty());
        assert_eq!(p.len(), 5);
        assert_eq!(p.suspended(5), 1);
        let Task::Attempt(k2) = &first[1] else {
            panic!()
        };
        unreachable(&mut p, k2, 3, 10);
        assert_eq!(
            p.next_due(),
            Some(12),
            "retimed to the first suspension's end"
        );
        assert!(
            p.take(12).is_empty(),
            "the second failure extended it to 23"
        );
        let probe = p.take(23);
        assert_eq!(probe.len(), 1, "one probe while failing: {probe:?}");
        let Task::Attempt(k3) = &probe[0] else {
            panic!()
        };
        p.finished(k3, Some(true), 24, |_| 10, "");
        assert_eq!(p.take(24).len(), 2, "recovered: back to its concurrency");
    }

    #[test]
    fn suspended_keys_are_deferred_when_they_cross_the_warning_time() {
        let mut p = Plan::new(limits());
        p.add(&msg("A", 1, &[("a@dead.example", "Out")]));
        let t = p.take(1);
        let Task::Attempt(a) = &t[0] else { panic!() };
        unreachable(&mut p, a, 1, 200);
        // B arrives while the destination is suspended (until 201): put off, not tried.
        p.add(&msg("B", 60, &[("a@dead.example", "Out")]));
        assert!(p.take(60).is_empty());
        // At 201 A is the one probe; it fails again and the suspension runs to 601.
        let t = p.take(201);
        assert_eq!(attempts(&t), vec!["attempt A dead.example via Out"]);
        unreachable(&mut p, a, 202, 200);
        // B, put off at 60 and found again at 203, has crossed 160 (60 + the warning time):
        // it is deferred now, without a connection, so its sender hears of the delay.
        let t = p.take(203);
        assert_eq!(attempts(&t), vec!["defer B dead.example via Out"]);
        let Task::Defer { reason, .. } = &t[0] else {
            panic!()
        };
        assert_eq!(reason, "refused");
    }

    #[test]
    fn suspended_keys_past_their_lifetime_are_deferred_to_expire() {
        let mut p = Plan::new(Limits {
            delay_warning: 0,
            ..limits()
        });
        p.add(&msg("A", 1, &[("a@dead.example", "Out")]));
        p.add(&msg("B", 1, &[("a@dead.example", "Out")]));
        p.add(&msg("C", 1, &[("a@dead.example", "Out")]));
        let t = p.take(1);
        assert_eq!(t.len(), 2);
        for task in &t {
            let Task::Attempt(k) = task else { panic!() };
            unreachable(&mut p, k, 2, 2000);
        }
        // C is put off behind the suspension (until 4002); A is the probe then.
        assert!(p.take(3).is_empty());
        let probe = p.take(4002);
        assert_eq!(attempts(&probe), vec!["attempt A dead.example via Out"]);
        unreachable(&mut p, &key("A"), 4003, 2000);
        // B and C are past their lifetime (1000 s) when next looked at: deferred, without a
        // connection, so that the deferral expires them and their senders get a DSN.
        assert_eq!(
            attempts(&p.take(4004)),
            vec![
                "defer B dead.example via Out",
                "defer C dead.example via Out"
            ]
        );
    }

    #[test]
    fn rescheduling_keeps_the_earlier_time_and_skips_keys_in_flight() {
        let mut p = Plan::new(limits());
        let m = msg("R", 5, &[("a@x.example", "Out")]);
        p.add(&m);
        let key = Key {
            id: m.id.clone(),
            dest: Dest {
                connector: Arc::from("Out"),
                domain: Arc::from("x.example"),
            },
        };
        p.schedule(key.clone(), 50, 5);
        assert_eq!(p.next_due(), Some(5));
        p.schedule(key.clone(), 2, 5);
        assert_eq!(p.next_due(), Some(2));
        assert_eq!(p.take(2).len(), 1);
        p.schedule(key.clone(), 3, 5);
        assert_eq!(p.next_due(), None, "in flight: its outcome reschedules it");
        p.finished(&key, Some(true), 3, |_| 1, "");
        assert_eq!(p.len(), 0);
    }

    #[test]
    fn crossing_is_half_open() {
        assert!(crosses(0, 10, 9, 10));
        assert!(!crosses(0, 10, 10, 20));
        assert!(!crosses(0, 0, 0, 100));
        assert!(crosses(0, 10, 0, 100));
    }
}
