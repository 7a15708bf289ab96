//! Concurrent connection limits: per receive connector (Exchange's `MaxInboundConnection`), per
//! source address on a connector (`MaxInboundConnectionPerSource`), and one ceiling for the
//! whole relay. Each connector is counted on its own, so a flood on the public MX cannot take
//! the tenants' connector's places.

use super::metrics::Metrics;
use crate::model::ReceiveLimits;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// The relay's default ceiling on connections across all connectors: twice Exchange's
/// per-connector default, so one connector at its default limit leaves room for the others.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10_000;

#[derive(Default)]
struct Open {
    total: u32,
    per_connector: HashMap<String, u32>,
    per_source: HashMap<(String, IpAddr), u32>,
}

/// The open connections, counted for every limit at once.
#[derive(Default)]
pub(crate) struct Connections {
    open: Mutex<Open>,
}

/// Why a connection is refused; the reply says which limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The relay's ceiling.
    Relay,
    /// The connector's `max-connections`.
    Connector,
    /// The connector's `max-connections-per-source`.
    Source,
}

impl Refusal {
    /// The reply: 4.3.2 for a system limit (as Exchange), 4.7.0 for one source's.
    pub(crate) fn reply(self) -> crate::smtp::reply::Reply {
        use crate::smtp::reply::Reply;
        match self {
            Refusal::Relay => Reply::new(421, "4.3.2", "too many connections, try again later"),
            Refusal::Connector => Reply::new(
                421,
                "4.3.2",
                "too many connections to this connector, try again later",
            ),
            Refusal::Source => Reply::new(421, "4.7.0", "too many connections from your address"),
        }
    }
}

/// One counted connection; dropping it gives its places back.
pub(crate) struct Slot {
    shared: Arc<super::Shared>,
    connector: String,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let shared = &self.shared;
        let mut open = match shared.connections.open.lock() {
            Ok(o) => o,
            Err(p) => p.into_inner(),
        };
        open.total = open.total.saturating_sub(1);
        decrement(&mut open.per_connector, &self.connector);
        decrement(&mut open.per_source, &(self.connector.clone(), self.ip));
        shared.metrics.sessions.fetch_sub(1, Ordering::Relaxed);
    }
}

fn decrement<K: std::hash::Hash + Eq + Clone>(m: &mut HashMap<K, u32>, k: &K) {
    if let Some(n) = m.get_mut(k) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            m.remove(k);
        }
    }
}

/// Counts a new connection from `ip` on `connector` (empty: none accepts it) and says
/// whether a limit refuses it. The slot is returned either way: a refused connection holds
/// its places until its `421` is written.
pub(crate) fn admit(
    shared: &Arc<super::Shared>,
    connector: &str,
    limits: &ReceiveLimits,
    ip: IpAddr,
) -> (Slot, Option<Refusal>) {
    let ceiling = shared.options.max_connections;
    let mut open = match shared.connections.open.lock() {
        Ok(o) => o,
        Err(p) => p.into_inner(),
    };
    open.total += 1;
    let total = open.total;
    let on_connector = bump(&mut open.per_connector, connector.to_string());
    let from_source = bump(&mut open.per_source, (connector.to_string(), ip));
    drop(open);
    Metrics::inc(&shared.metrics.connections);
    shared.metrics.sessions.fetch_add(1, Ordering::Relaxed);
    let refusal = if total > ceiling {
        Some(Refusal::Relay)
    } else if on_connector > limits.max_connections {
        Some(Refusal::Connector)
    } else if from_source > limits.max_connections_per_source {
        Some(Refusal::Source)
    } else {
        None
    };
    let slot = Slot {
        shared: Arc::clone(shared),
        connector: connector.to_string(),
        ip,
    };
    (slot, refusal)
}

fn bump<K: std::hash::Hash + Eq>(m: &mut HashMap<K, u32>, k: K) -> u32 {
    let n = m.entry(k).or_insert(0);
    *n += 1;
    *n
}
