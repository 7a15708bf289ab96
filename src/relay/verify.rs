//! Recipient verification for internal-relay domains with `verify-recipients` (Postfix's
//! `reject_unverified_recipient`): before a recipient that no object in the rule set knows is
//! accepted, its send connector's next hop is asked about it ([`crate::deliver::probe`]).
//! A refusal becomes `550 5.1.1` at RCPT time instead of a bounce to a sender who may be
//! forged; a probe that gets no answer becomes `450 4.1.1`, never an accept-then-bounce.
//!
//! The evaluator decides which recipients need it ([`crate::eval::RecipientVerdict::verify`]);
//! this module owns the I/O and what bounds it: answers are remembered in a cache of bounded
//! size (positive and negative answers with their own lifetimes), and probes are bounded per
//! second and at once, so a flood of RCPTs neither floods the next hop nor grows memory.

use super::Shared;
use crate::compile::Table;
use crate::deliver::{ClientConfig, ProbeOutcome, next_hops, probe};
use crate::eval::{Fate, Verdict};
use crate::model::Address;
use crate::smtp::Status;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// How recipient verification is bounded (relay options `--verify-*`).
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Answers remembered at most; the oldest goes first.
    pub cache_size: usize,
    /// How long a recipient the next hop accepted is remembered.
    pub positive_ttl: Duration,
    /// How long a recipient the next hop refused is remembered.
    pub negative_ttl: Duration,
    /// Probes started per second at most, across all sessions.
    pub rate: u32,
    /// Probes in progress at once at most.
    pub concurrency: u32,
    /// The longest a probe may take, DNS and connection included; far below the 5 minutes a
    /// client waits for the reply to RCPT (RFC 5321 4.5.3.2).
    pub timeout: Duration,
}

/// The longest `--verify-timeout` allowed: a client waits 5 minutes for a RCPT reply.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            cache_size: 50_000,
            positive_ttl: Duration::from_secs(86_400),
            negative_ttl: Duration::from_secs(3_600),
            rate: 20,
            concurrency: 8,
            timeout: Duration::from_secs(10),
        }
    }
}

/// The relay's verifier: the cache and the probe budget, shared by all sessions.
pub(crate) struct Verifier {
    options: VerifyOptions,
    cache: Mutex<Cache>,
    bucket: Mutex<Bucket>,
    slots: Arc<Semaphore>,
}

impl Verifier {
    pub(crate) fn new(options: VerifyOptions) -> Verifier {
        Verifier {
            cache: Mutex::new(Cache::new(options.cache_size)),
            bucket: Mutex::new(Bucket::new(options.rate)),
            slots: Arc::new(Semaphore::new(options.concurrency as usize)),
            options,
        }
    }
}

/// The status to refuse the first recipient of `verdict` that the evaluator marked for verification
/// and that is not verified; `None` when every recipient may be accepted.
pub(crate) async fn refusal(shared: &Shared, table: &Table, verdict: &Verdict) -> Option<Status> {
    for r in verdict.recipients.iter().filter(|r| r.verify) {
        if let Fate::Deliver { connector } = &r.fate {
            if let Some(status) = verify(shared, table, connector, &r.address).await {
                return Some(status);
            }
        }
    }
    None
}

fn unverified(why: &str) -> Status {
    Status::new(
        450,
        "4.1.1",
        format!("recipient address not verified: {why}; try again later"),
    )
}

async fn verify(
    shared: &Shared,
    table: &Table,
    connector: &str,
    address: &Address,
) -> Option<Status> {
    let v = &shared.verifier;
    // Case-insensitive, as every lookup of the organization's addresses: `NoBody@` is not a
    // new address to probe.
    let key = format!("{connector}\0{}", address.key());
    let known = lock(&v.cache).get(&key, Instant::now());
    let accepted = match known {
        Some(accepted) => accepted,
        None => {
            if !lock(&v.bucket).take(Instant::now()) {
                tracing::info!(recipient = %address, "not verified: the probe rate is spent");
                return Some(unverified("too many verifications at this moment"));
            }
            let Ok(_slot) = Arc::clone(&v.slots).try_acquire_owned() else {
                tracing::info!(recipient = %address, "not verified: every probe slot is busy");
                return Some(unverified("too many verifications at this moment"));
            };
            let outcome =
                tokio::time::timeout(v.options.timeout, ask(shared, table, connector, address))
                    .await
                    .unwrap_or_else(|_| ProbeOutcome::Unknown {
                        reason: "the probe timed out".into(),
                    });
            match outcome {
                ProbeOutcome::Accepted => {
                    lock(&v.cache).insert(key, true, Instant::now() + v.options.positive_ttl);
                    true
                }
                ProbeOutcome::Refused(status) => {
                    tracing::info!(recipient = %address, %connector, "verification: the next hop refused it: {status}");
                    lock(&v.cache).insert(key, false, Instant::now() + v.options.negative_ttl);
                    false
                }
                ProbeOutcome::Unknown { reason } => {
                    tracing::warn!(recipient = %address, %connector, "verification failed: {reason}");
                    return Some(unverified("the next hop did not answer"));
                }
            }
        }
    };
    (!accepted).then(|| {
        Status::new(
            550,
            "5.1.1",
            "recipient address rejected: the next hop does not know it",
        )
    })
}

/// One probe through `connector`, with the hops and client settings a delivery through it
/// would use (the scheduler builds the same from the same send connector).
async fn ask(shared: &Shared, table: &Table, connector: &str, address: &Address) -> ProbeOutcome {
    let Some(c) = table
        .send_connectors
        .iter()
        .find(|c| c.name.value == connector)
    else {
        return ProbeOutcome::Unknown {
            reason: format!("no send connector `{connector}`"),
        };
    };
    let mut hops = match next_hops(&shared.resolver, c, &address.domain, &shared.local).await {
        Ok(h) => h,
        Err(e) => {
            return ProbeOutcome::Unknown {
                reason: e.to_string(),
            };
        }
    };
    if c.smart_hosts.is_empty() && shared.options.mx_port != 25 {
        for a in hops.iter_mut().flat_map(|h| h.addrs.iter_mut()) {
            a.set_port(shared.options.mx_port);
        }
    }
    let limit = shared.options.verify.timeout;
    // The connector's configuration as loaded (certificates read then); only the timeouts
    // are the probe's own.
    let Some(cfg) = shared.client_config(connector) else {
        return ProbeOutcome::Unknown {
            reason: format!("send connector `{connector}` is being reloaded"),
        };
    };
    let mut cfg = ClientConfig::clone(&cfg);
    cfg.command_timeout = cfg.command_timeout.min(limit);
    cfg.connect_timeout = cfg.connect_timeout.min(limit);
    probe(&cfg, &hops, &address.to_string()).await
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Answers by key, at most `capacity` of them; when full, the oldest answer goes.
struct Cache {
    capacity: usize,
    map: HashMap<Arc<str>, Entry>,
    /// Keys in the order they were answered, with the answer's number: a key answered
    /// again has a newer number, and its older place here is skipped.
    order: VecDeque<(Arc<str>, u64)>,
    next: u64,
}

struct Entry {
    accepted: bool,
    expires: Instant,
    number: u64,
}

impl Cache {
    fn new(capacity: usize) -> Cache {
        Cache {
            capacity,
            map: HashMap::new(),
            order: VecDeque::new(),
            next: 0,
        }
    }

    /// The answer for `key`, unless it has expired.
    fn get(&mut self, key: &str, now: Instant) -> Option<bool> {
        let e = self.map.get(key)?;
        if e.expires > now {
            return Some(e.accepted);
        }
        self.map.remove(key);
        None
    }

    fn insert(&mut self, key: String, accepted: bool, expires: Instant) {
        if self.capacity == 0 {
            return;
        }
        let key: Arc<str> = key.into();
        while self.map.len() >= self.capacity && !self.map.contains_key(&key) {
            let Some((old, number)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&old).is_some_and(|e| e.number == number) {
                self.map.remove(&old);
            }
        }
        let number = self.next;
        self.next += 1;
        self.map.insert(
            Arc::clone(&key),
            Entry {
                accepted,
                expires,
                number,
            },
        );
        self.order.push_back((key, number));
        // Places of keys answered again or expired are dropped now and then, so `order`
        // stays within twice the capacity.
        if self.order.len() > 2 * self.capacity {
            let map = &self.map;
            self.order
                .retain(|(k, n)| map.get(k).is_some_and(|e| e.number == *n));
        }
    }

    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        (self.map.len(), self.order.len())
    }
}

/// A token bucket: `rate` probes per second, at most `rate` at once after a quiet moment.
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Option<Instant>,
}

impl Bucket {
    fn new(rate: u32) -> Bucket {
        Bucket {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            at: None,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        if let Some(at) = self.at {
            let elapsed = now.saturating_duration_since(at).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        }
        self.at = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_keeps_at_most_its_capacity_and_forgets_expired_answers() {
        let t0 = Instant::now();
        let mut c = Cache::new(3);
        for i in 0..10 {
            c.insert(format!("k{i}"), i % 2 == 0, t0 + Duration::from_secs(60));
        }
        assert_eq!(c.len().0, 3);
        assert_eq!(c.get("k0", t0), None);
        assert_eq!(c.get("k9", t0), Some(false));
        assert_eq!(c.get("k8", t0), Some(true));
        assert_eq!(c.get("k8", t0 + Duration::from_secs(61)), None);
        // One key answered over and over: the order list stays bounded too.
        for _ in 0..100 {
            c.insert("same".into(), true, t0 + Duration::from_secs(60));
        }
        let (map, order) = c.len();
        assert!(map <= 3 && order <= 6, "{map} {order}");
        assert_eq!(c.get("same", t0), Some(true));
        let mut none = Cache::new(0);
        none.insert("k".into(), true, t0 + Duration::from_secs(60));
        assert_eq!(none.get("k", t0), None);
    }

    #[test]
    fn the_bucket_allows_the_rate_and_refills() {
        let t0 = Instant::now();
        let mut b = Bucket::new(5);
        let first: usize = (0..20).filter(|_| b.take(t0)).count();
        assert_eq!(first, 5);
        assert!(!b.take(t0 + Duration::from_millis(100)));
        assert!(b.take(t0 + Duration::from_millis(400)));
        let later = (0..20)
            .filter(|_| b.take(t0 + Duration::from_secs(10)))
            .count();
        assert_eq!(later, 5);
    }
}
