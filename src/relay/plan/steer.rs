//! An administrator's hand on the plan (`mailflow queue hold/release/retry/delete/bounce`):
//! parking what a hold covers, releasing it, making keys due now, forgetting a message.
//! Every change touches only the keys it names (a hold walks the waiting keys once).

use super::{Dest, Key, Plan, dest_of};
use crate::queue::holds::Holds;
use crate::queue::{QueueId, QueuedMessage};
use std::collections::{HashMap, HashSet};

impl Plan {
    /// The holds in force.
    pub(crate) fn holds(&self) -> &Holds {
        &self.holds
    }

    /// Puts `holds` in force: waiting keys they cover are parked, parked keys they no longer
    /// cover are due at `now`. Keys in flight finish their attempt; their outcome parks them
    /// if still covered. Returns how many keys were released.
    pub(crate) fn set_holds(&mut self, holds: Holds, now: u64) -> usize {
        self.holds = holds;
        let covers = |h: &Holds, k: &Key| h.covers(&k.id, &k.dest.connector, &k.dest.domain);
        let newly: Vec<Key> = self
            .waiting
            .keys()
            .filter(|k| covers(&self.holds, k))
            .cloned()
            .collect();
        for (key, received_at) in self.unwait(newly) {
            self.parked.insert(key, received_at);
        }
        let freed: Vec<Key> = self
            .parked
            .keys()
            .filter(|k| !covers(&self.holds, k))
            .cloned()
            .collect();
        for key in &freed {
            if let Some(received_at) = self.parked.remove(key) {
                self.schedule(key.clone(), now, received_at);
            }
        }
        freed.len()
    }

    /// Takes waiting keys off their timers or their destinations' ready queues; each with
    /// its arrival time (keys not waiting are left out). A destination's ready queue is
    /// walked once however many of its keys go (a hold on a backlogged connector takes
    /// them all at once, under the plan's lock).
    fn unwait(&mut self, keys: Vec<Key>) -> Vec<(Key, u64)> {
        let mut out = Vec::with_capacity(keys.len());
        let mut ready: HashMap<Dest, HashSet<Key>> = HashMap::new();
        for key in keys {
            let Some(e) = self.waiting.remove(&key) else {
                continue;
            };
            if e.ready {
                ready
                    .entry(key.dest.clone())
                    .or_default()
                    .insert(key.clone());
            } else {
                self.timers.remove(&(e.due, key.clone()));
            }
            out.push((key, e.received_at));
        }
        for (dest, gone) in ready {
            if let Some(d) = self.dests.get_mut(&dest) {
                d.ready.retain(|k| !gone.contains(k));
            }
        }
        out
    }

    /// Makes the waiting keys `pick` takes due at `now`, and ends the suspension of their
    /// destinations (one probe goes first while a destination is failing, as after any
    /// suspension). Held keys stay held. Returns how many keys were made due.
    pub(crate) fn retry(&mut self, pick: impl Fn(&Key) -> bool, now: u64) -> usize {
        let keys: Vec<Key> = self.waiting.keys().filter(|k| pick(k)).cloned().collect();
        let n = keys.len();
        for key in &keys {
            if let Some(d) = self.dests.get_mut(&key.dest) {
                d.suspended_until = d.suspended_until.min(now);
            }
        }
        for (key, received_at) in self.unwait(keys) {
            self.schedule(key, now, received_at);
        }
        n
    }

    /// Forgets every waiting or parked key of message `m` (deleted or bounced): its keys
    /// are its pending recipients' destinations, so the work is the message's, not the
    /// plan's. A key in flight stays: its attempt ends and finds the message gone.
    pub(crate) fn forget(&mut self, m: &QueuedMessage) {
        let keys: HashSet<Key> = (0..m.states.len())
            .filter_map(|i| dest_of(m, i))
            .map(|(dest, _)| Key {
                id: m.id.clone(),
                dest,
            })
            .collect();
        for key in &keys {
            self.parked.remove(key);
        }
        self.unwait(keys.into_iter().collect());
    }

    /// Whether an attempt for message `id` is under way.
    pub(crate) fn in_flight(&self, id: &QueueId) -> bool {
        self.in_flight.iter().any(|k| k.id == *id)
    }

    /// Until when the destination (`connector`, `domain`) is suspended, if it is at `now`.
    pub(crate) fn suspended_until(&self, connector: &str, domain: &str, now: u64) -> Option<u64> {
        let dest = super::Dest {
            connector: std::sync::Arc::from(connector),
            domain: std::sync::Arc::from(domain.to_ascii_lowercase().as_str()),
        };
        self.dests
            .get(&dest)
            .map(|d| d.suspended_until)
            .filter(|&until| until > now)
    }

    /// Keys parked by holds, for metrics.
    pub(crate) fn held(&self) -> usize {
        self.parked.len()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{limits, msg};
    use super::super::{Plan, Task};
    use crate::queue::QueueId;
    use crate::queue::holds::{HoldTarget, Holds};

    fn ids(tasks: &[Task]) -> Vec<String> {
        let mut v: Vec<String> = tasks
            .iter()
            .map(|t| match t {
                Task::Attempt(k) | Task::Defer { key: k, .. } => {
                    format!("{} {}", k.id.0, k.dest.domain)
                }
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_hold_parks_until_released_and_covers_later_mail() {
        let mut p = Plan::new(limits());
        p.add(&msg(
            "A",
            1,
            &[("a@t1.example", "T1"), ("b@other.example", "Out")],
        ));
        let mut holds = Holds::default();
        holds.hold(&HoldTarget::Connector("T1".into()));
        p.set_holds(holds.clone(), 1);
        assert_eq!(p.held(), 1);
        p.add(&msg("B", 2, &[("c@t1.example", "T1")]));
        assert_eq!(p.held(), 2, "mail arriving later is held too");
        assert_eq!(ids(&p.take(1000)), ["A other.example"]);
        assert!(
            p.take(100_000).is_empty(),
            "held keys never come due, nor expire"
        );
        holds.release(&HoldTarget::Connector("T1".into()));
        assert_eq!(p.set_holds(holds, 100_001), 2);
        assert_eq!(ids(&p.take(100_001)), ["A t1.example", "B t1.example"]);
    }

    #[test]
    fn retry_makes_keys_due_and_ends_a_suspension() {
        let mut p = Plan::new(limits());
        p.add(&msg("A", 1, &[("a@dead.example", "Out")]));
        let t = p.take(1);
        let Task::Attempt(k) = &t[0] else { panic!() };
        p.finished(k, Some(false), 1, |_| 3000, "refused");
        p.schedule(k.clone(), 3001, 1);
        p.add(&msg("B", 2, &[("b@dead.example", "Out")]));
        assert!(p.take(10).is_empty(), "suspended");
        assert_eq!(p.suspended(10), 1);
        assert_eq!(p.retry(|k| k.dest.domain.as_ref() == "dead.example", 10), 2);
        assert_eq!(p.suspended(10), 0);
        let t = p.take(10);
        assert_eq!(t.len(), 1, "one probe first while failing: {t:?}");
    }

    #[test]
    fn forget_drops_waiting_and_parked_keys_but_not_one_in_flight() {
        let mut p = Plan::new(limits());
        let a = msg("A", 1, &[("a@x.example", "Out"), ("b@y.example", "T1")]);
        p.add(&a);
        let mut holds = Holds::default();
        holds.hold(&HoldTarget::Connector("T1".into()));
        p.set_holds(holds, 1);
        p.add(&msg("C", 1, &[("c@x.example", "Out")]));
        let first = p.take(1);
        assert_eq!(first.len(), 2);
        assert!(p.in_flight(&QueueId("A".into())));
        p.forget(&a);
        assert_eq!(p.held(), 0);
        assert!(p.in_flight(&QueueId("A".into())));
        assert!(!p.in_flight(&QueueId("B".into())));
    }
}
