//! The relay's budget for message data held in memory, across all sessions
//! (`--max-message-memory`). A session takes a [`Lease`] on it before its receiver keeps a
//! byte, grows the lease as the message grows, and gives it back when the message ends
//! (the lease is dropped). A session that cannot grow its lease stops keeping and answers
//! `452 4.3.1`; it never aborts, and nobody else is affected.
//!
//! Evaluating a message that has arrived keeps one buffer: the parsed body, the evaluator's
//! and the spooled form are slices of the received bytes. What it copies is the header
//! ([`HEADER_COPIES`] times) and, only when the header is malformed (a line that is no
//! field ends it), the body once, charged to every message as [`EVALUATION_COPIES`]. So that
//! this can never find the budget spent by messages still arriving, and no session ever
//! waits for another, arriving data may grow the budget's use only up to
//! `1 / (1 + EVALUATION_COPIES)` of it: whatever all sessions then evaluate at once fits in
//! the rest, but for the header copies, which the header limit bounds per session.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// What evaluating a received message may hold besides the received bytes, in multiples of
/// their size: the body copied once when a malformed header moves a line into it.
pub const EVALUATION_COPIES: u64 = 1;

/// Copies of the header evaluating a message makes: the parsed fields (their bytes and their
/// text), the evaluator's copy of both, and the stamped header that is queued.
pub const HEADER_COPIES: u64 = 5;

/// Octets of message data held in memory by all sessions, and the most there may be.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    used: AtomicU64,
}

impl MemoryBudget {
    /// A budget of `limit` octets.
    pub fn new(limit: u64) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            limit,
            used: AtomicU64::new(0),
        })
    }

    /// Octets held now by all leases.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// Whether arriving data could not grow now: a new transaction is refused at MAIL.
    pub fn is_spent(&self) -> bool {
        self.used() >= self.receiving_ceiling()
    }

    /// What all sessions may hold while data arrives.
    fn receiving_ceiling(&self) -> u64 {
        self.limit / (1 + EVALUATION_COPIES)
    }
}

/// One session's share of the budget; what it holds is given back when it is dropped.
#[derive(Debug)]
pub struct Lease {
    budget: Arc<MemoryBudget>,
    held: u64,
}

impl Lease {
    /// An empty lease on `budget`.
    pub fn new(budget: &Arc<MemoryBudget>) -> Lease {
        Lease {
            budget: Arc::clone(budget),
            held: 0,
        }
    }

    /// Octets this lease holds.
    pub fn held(&self) -> u64 {
        self.held
    }

    /// Grows the lease to `total` octets for data still arriving, up to the receiving
    /// share of the budget.
    pub fn grow_for_receiving(&mut self, total: u64) -> bool {
        let ceiling = self.budget.receiving_ceiling();
        self.grow_to(total, ceiling)
    }

    /// Grows the lease by what evaluating `size` received octets, `header` of them the
    /// header, copies; within the whole budget this fits (see the module's note), so nobody
    /// waits for it.
    pub fn grow_for_evaluation(&mut self, size: u64, header: u64) -> bool {
        let total = self
            .held
            .saturating_add(size.saturating_mul(EVALUATION_COPIES))
            .saturating_add(header.saturating_mul(HEADER_COPIES));
        self.grow_to(total, self.budget.limit)
    }

    /// Grows the lease to `total` octets unless the budget's use would pass `ceiling`;
    /// except when this lease is all that is in use: one message alone is always served,
    /// so a limit below what one message needs slows the relay to one message at a time
    /// rather than refusing everything.
    fn grow_to(&mut self, total: u64, ceiling: u64) -> bool {
        let Some(extra) = total.checked_sub(self.held).filter(|&e| e > 0) else {
            return true;
        };
        let used = &self.budget.used;
        let mut current = used.load(Ordering::Acquire);
        loop {
            let next = current.saturating_add(extra);
            if next > ceiling && current != self.held {
                return false;
            }
            match used.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    self.held = total;
                    return true;
                }
                Err(now) => current = now,
            }
        }
    }

    /// Gives back what is held over `total`.
    pub fn shrink_to(&mut self, total: u64) {
        if let Some(back) = self.held.checked_sub(total).filter(|&b| b > 0) {
            self.budget.used.fetch_sub(back, Ordering::AcqRel);
            self.held = total;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.shrink_to(0);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn arriving_data_takes_half_and_evaluation_the_rest() {
        let b = MemoryBudget::new(400);
        let mut a = Lease::new(&b);
        let mut c = Lease::new(&b);
        assert!(a.grow_for_receiving(120));
        assert!(c.grow_for_receiving(80));
        assert!(b.is_spent());
        assert!(!c.grow_for_receiving(81));
        assert_eq!(c.held(), 80);
        // Both evaluate at once: 120 + 120 + 80 + 80 = 400, within the budget.
        assert!(a.grow_for_evaluation(120, 0));
        assert!(c.grow_for_evaluation(80, 0));
        assert_eq!(b.used(), 400);
        assert!(!c.grow_for_evaluation(81, 0));
        a.shrink_to(10);
        assert_eq!(b.used(), 170);
        drop(a);
        drop(c);
        assert_eq!(b.used(), 0);
        assert!(!b.is_spent());
    }

    #[test]
    fn a_lease_alone_may_pass_the_limit() {
        let b = MemoryBudget::new(100);
        let mut a = Lease::new(&b);
        assert!(a.grow_for_receiving(500));
        assert!(a.grow_for_evaluation(500, 10));
        // The body once, the header five times.
        assert_eq!(a.held(), 500 + 500 + 50);
        let mut c = Lease::new(&b);
        assert!(!c.grow_for_receiving(1));
        drop(a);
        assert!(c.grow_for_receiving(1));
    }
}

/// What a delivery holds besides the stored bytes, in multiples of their size: the copy
/// read from the spool, the copy without organization headers, the dot-stuffed copy.
pub const DELIVERY_COPIES: u64 = 3;

/// The budget for message data that deliveries and DSNs read back from the spool. A message
/// with recipients in many domains is delivered (and may bounce) once per domain, each
/// attempt with copies of its own; without a bound, one message to 100 domains held a
/// gigabyte. An attempt waits for its share before it reads the body (deliveries are not a
/// client waiting for a reply, and hold nothing else while they wait, so waiting cannot
/// deadlock); one message larger than the whole budget waits for all of it and goes alone.
#[derive(Debug)]
pub struct DeliveryBudget {
    kib: Arc<tokio::sync::Semaphore>,
    limit_kib: u32,
}

impl DeliveryBudget {
    /// A budget of `limit` octets.
    pub fn new(limit: u64) -> DeliveryBudget {
        let limit_kib = u32::try_from(limit / 1024)
            .unwrap_or(u32::MAX)
            .clamp(1, tokio::sync::Semaphore::MAX_PERMITS as u32);
        DeliveryBudget {
            kib: Arc::new(tokio::sync::Semaphore::new(limit_kib as usize)),
            limit_kib,
        }
    }

    /// Waits until a message of `size` octets may be read back for one attempt; the share is
    /// given back when the returned permit is dropped.
    pub async fn reserve(&self, size: u64) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let need = size.saturating_mul(DELIVERY_COPIES).div_ceil(1024);
        let kib = u32::try_from(need)
            .unwrap_or(u32::MAX)
            .clamp(1, self.limit_kib);
        Arc::clone(&self.kib).acquire_many_owned(kib).await.ok()
    }

    /// KiB not reserved now (for tests and metrics).
    pub fn available_kib(&self) -> usize {
        self.kib.available_permits()
    }
}
