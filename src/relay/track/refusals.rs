//! Refused recipients, counted instead of written one by one. A client that sends RCPT after
//! RCPT to addresses that are refused (a dictionary attack, a spam run, a misconfigured
//! application) would otherwise write a line per refusal: 377,074 of them in 10 s once added
//! 287 MB. Each client's refusals of one kind (same connector, same reply) become one `FAIL`
//! event per minute, with the count in `recipient-count` and the first recipients named;
//! accepted mail keeps its own events.

use super::{Event, EventId, rfc3339};
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

/// How long one client's refusals of one kind are counted before the event is written.
pub const INTERVAL: Duration = Duration::from_secs(60);
/// Recipients named in an aggregated event; the count says how many there were in all.
pub const NAMED: usize = 10;
/// Clients counted apart at once; past it, new clients' refusals are counted together (one
/// event per connector and reply, without a client address) until the next events are
/// written, so many addresses cannot bring back a line per refusal.
pub const MAX_CLIENTS: usize = 4096;

/// One refused RCPT, as the session saw it.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// The client's address.
    pub client: IpAddr,
    /// The receive connector.
    pub connector: String,
    /// MAIL FROM of the transaction.
    pub sender: Option<String>,
    /// The refused recipient.
    pub recipient: String,
    /// The reply the client got (`550 5.7.54 unable to relay`).
    pub status: String,
}

/// Client (`None`: the overflow past [`MAX_CLIENTS`]), connector, reply.
type Key = (Option<IpAddr>, String, String);

struct Counted {
    event: Event,
    first: SystemTime,
    last: SystemTime,
    count: u64,
}

/// The refusals being counted; owned by the tracking-log thread.
#[derive(Default)]
pub(crate) struct Refusals {
    counting: HashMap<Key, Counted>,
}

impl Refusals {
    /// Whether nothing is being counted.
    pub(crate) fn is_empty(&self) -> bool {
        self.counting.is_empty()
    }

    /// Counts one refusal.
    pub(crate) fn add(&mut self, r: Refusal, now: SystemTime) {
        let mut key: Key = (Some(r.client), r.connector, r.status);
        if !self.counting.contains_key(&key) && self.counting.len() >= MAX_CLIENTS {
            key.0 = None;
        }
        let c = self.counting.entry(key.clone()).or_insert_with(|| {
            let mut e = Event::new(EventId::Fail, "SMTP");
            e.date_time = rfc3339(now);
            e.client_ip = key.0.map(|ip| ip.to_string());
            e.connector_id = Some(key.1.clone());
            e.sender_address = r.sender;
            e.recipient_status = vec![key.2.clone()];
            Counted {
                event: e,
                first: now,
                last: now,
                count: 0,
            }
        });
        c.count += 1;
        c.last = now;
        if c.event.recipient_address.len() < NAMED {
            c.event.recipient_address.push(r.recipient);
        }
    }

    /// The events of the counts that have run for [`INTERVAL`]; those counts end.
    pub(crate) fn due(&mut self, now: SystemTime) -> Vec<Event> {
        let due: Vec<Key> = self
            .counting
            .iter()
            .filter(|(_, c)| now.duration_since(c.first).unwrap_or_default() >= INTERVAL)
            .map(|(k, _)| k.clone())
            .collect();
        let mut out: Vec<Counted> = due
            .into_iter()
            .filter_map(|k| self.counting.remove(&k))
            .collect();
        out.sort_by_key(|c| c.first);
        out.into_iter().map(finish).collect()
    }

    /// Every count's event now (at shutdown), oldest first.
    pub(crate) fn drain(&mut self) -> Vec<Event> {
        let mut out: Vec<Counted> = self.counting.drain().map(|(_, c)| c).collect();
        out.sort_by_key(|c| c.first);
        out.into_iter().map(finish).collect()
    }
}

fn finish(c: Counted) -> Event {
    let mut e = c.event;
    e.recipient_count = usize::try_from(c.count).ok();
    let named = e.recipient_address.len();
    let who = if e.client_ip.is_some() {
        "this client"
    } else {
        "clients past the per-client count limit"
    };
    e.source_context = Some(format!(
        "{} recipients refused from {who} from {} to {} (aggregated; the first {named} named)",
        c.count,
        rfc3339(c.first),
        rfc3339(c.last),
    ));
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(client: &str, rcpt: usize, status: &str) -> Refusal {
        Refusal {
            client: client.parse().unwrap(),
            connector: "Internet".into(),
            sender: Some("spammer@outside.example".into()),
            recipient: format!("user{rcpt}@example.com"),
            status: status.into(),
        }
    }

    #[test]
    fn one_event_per_client_and_reply_with_the_count() {
        let mut r = Refusals::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        for i in 0..100_000 {
            r.add(refusal("192.0.2.1", i, "550 5.1.1 unknown"), t0);
        }
        r.add(refusal("192.0.2.1", 0, "550 5.7.54 unable to relay"), t0);
        r.add(refusal("192.0.2.2", 0, "550 5.1.1 unknown"), t0);
        assert!(r.due(t0 + Duration::from_secs(59)).is_empty());
        let events = r.due(t0 + INTERVAL);
        assert_eq!(events.len(), 3);
        let flood = events
            .iter()
            .find(|e| e.recipient_count == Some(100_000))
            .unwrap();
        assert_eq!(flood.client_ip.as_deref(), Some("192.0.2.1"));
        assert_eq!(flood.recipient_address.len(), NAMED);
        assert_eq!(flood.recipient_address[0], "user0@example.com");
        assert_eq!(flood.recipient_status, ["550 5.1.1 unknown"]);
        assert!(r.drain().is_empty());
    }

    #[test]
    fn many_clients_are_counted_together_past_the_limit() {
        let mut r = Refusals::default();
        let t0 = SystemTime::UNIX_EPOCH;
        for i in 0..(MAX_CLIENTS as u32 + 5000) {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            r.add(refusal(&ip.to_string(), 0, "550 5.1.1 unknown"), t0);
        }
        let events = r.drain();
        assert_eq!(events.len(), MAX_CLIENTS + 1);
        let rest = events.iter().find(|e| e.client_ip.is_none()).unwrap();
        assert_eq!(rest.recipient_count, Some(5000));
        let total: usize = events.iter().filter_map(|e| e.recipient_count).sum();
        assert_eq!(total, MAX_CLIENTS + 5000);
    }
}
