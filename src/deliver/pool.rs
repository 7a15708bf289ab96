//! Connection reuse (Postfix's connection cache, scache): after a transaction ends cleanly
//! the connection waits here, idle, for the next message to the same next hop, instead of
//! being closed. A connection is keyed by the address it is connected to, the hop name it
//! was verified against and the identity of the [`ClientConfig`] it was opened with (EHLO
//! name, TLS policy, trust anchors, client certificate), so a reload that changes any of
//! these never sends mail over a connection opened under the old ones. A connection carries
//! at most [`ReuseOptions::limit`] transactions and is closed (QUIT) after
//! [`ReuseOptions::idle_timeout`] unused. Idle connections are bounded per key and in all;
//! connections in use are bounded by the caller (the plan's per-destination concurrency).

use super::config::ClientConfig;
use super::connection::Connection;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// How connections are reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReuseOptions {
    /// Transactions one connection carries at most (Postfix's
    /// `smtp_connection_reuse_count_limit`); 0 or 1: no reuse.
    pub limit: u32,
    /// How long a connection waits idle before it is closed (Postfix's
    /// `smtp_connection_cache_time_limit`); zero: no reuse.
    pub idle_timeout: Duration,
    /// Idle connections kept for one key.
    pub per_destination: usize,
    /// Idle connections kept in all.
    pub total: usize,
}

impl ReuseOptions {
    /// No connection is ever kept.
    pub fn off() -> ReuseOptions {
        ReuseOptions {
            limit: 0,
            idle_timeout: Duration::ZERO,
            per_destination: 0,
            total: 0,
        }
    }

    fn enabled(&self) -> bool {
        self.limit > 1 && !self.idle_timeout.is_zero() && self.per_destination > 0
    }
}

/// Which connections may carry a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct PoolKey {
    config: u64,
    host: String,
    addr: SocketAddr,
}

impl PoolKey {
    pub(super) fn new(cfg: &ClientConfig, host: &str, addr: SocketAddr) -> PoolKey {
        PoolKey {
            config: cfg.identity(),
            host: host.to_ascii_lowercase(),
            addr,
        }
    }
}

struct Idle {
    /// Tells this connection from others under the same key, for its idle timer.
    serial: u64,
    conn: Connection,
}

#[derive(Default)]
struct Inner {
    idle: HashMap<PoolKey, Vec<Idle>>,
    count: usize,
    next_serial: u64,
}

/// The idle connections of the whole relay.
pub struct Pool {
    options: ReuseOptions,
    inner: Mutex<Inner>,
}

impl Pool {
    /// An empty pool.
    pub fn new(options: ReuseOptions) -> Arc<Pool> {
        Arc::new(Pool {
            options,
            inner: Mutex::new(Inner::default()),
        })
    }

    /// Idle connections now.
    pub fn idle(&self) -> usize {
        self.lock().count
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a connection is idle for `key`.
    pub(super) fn has_idle(&self, key: &PoolKey) -> bool {
        self.lock().idle.contains_key(key)
    }

    /// The most recently used idle connection for `key` (the least likely to have been
    /// closed by the server meanwhile).
    pub(super) fn take(&self, key: &PoolKey) -> Option<Connection> {
        let mut inner = self.lock();
        let list = inner.idle.get_mut(key)?;
        let idle = list.pop()?;
        if list.is_empty() {
            inner.idle.remove(key);
        }
        inner.count -= 1;
        Some(idle.conn)
    }

    /// Keeps `conn` for the next transaction to `key`; gives it back, for the caller to
    /// close, when it has carried its share, reuse is off or the pool is full. Must be called
    /// within the Tokio runtime: the idle timer is a task of its own.
    #[must_use = "a connection the pool does not keep is to be closed"]
    pub(super) fn put(self: &Arc<Self>, key: PoolKey, conn: Connection) -> Option<Connection> {
        let o = self.options;
        if !o.enabled() || conn.transactions >= o.limit || !conn.session.in_step() {
            return Some(conn);
        }
        let serial = {
            let mut inner = self.lock();
            let here = inner.idle.get(&key).map_or(0, Vec::len);
            if here >= o.per_destination || inner.count >= o.total {
                return Some(conn);
            }
            inner.next_serial += 1;
            let serial = inner.next_serial;
            inner.count += 1;
            inner
                .idle
                .entry(key.clone())
                .or_default()
                .push(Idle { serial, conn });
            serial
        };
        let pool = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(o.idle_timeout).await;
            if let Some(conn) = pool.expire(&key, serial) {
                tracing::debug!(addr = %key.addr, "idle connection closed");
                let mut conn = conn;
                conn.session.quit().await;
            }
        });
        None
    }

    /// Closes every idle connection (QUIT, all at once, a few seconds at most): a relay
    /// that stops says goodbye rather than leaving its next hops to time out.
    pub async fn close_idle(&self) {
        let idle: Vec<Connection> = {
            let mut inner = self.lock();
            inner.count = 0;
            inner
                .idle
                .drain()
                .flat_map(|(_, list)| list.into_iter().map(|i| i.conn))
                .collect()
        };
        let mut quits = tokio::task::JoinSet::new();
        for mut conn in idle {
            quits.spawn(async move { conn.session.quit().await });
        }
        while quits.join_next().await.is_some() {}
    }

    /// Removes one connection if it is still idle.
    fn expire(&self, key: &PoolKey, serial: u64) -> Option<Connection> {
        let mut inner = self.lock();
        let list = inner.idle.get_mut(key)?;
        let at = list.iter().position(|i| i.serial == serial)?;
        let idle = list.remove(at);
        if list.is_empty() {
            inner.idle.remove(key);
        }
        inner.count -= 1;
        Some(idle.conn)
    }
}
