//! `mailflow relay`: listeners for the receive connectors, one session per connection
//! ([`session`]), the durable spool ([`crate::queue`]), the delivery scheduler
//! ([`scheduler`]), the tracking log ([`track`]), metrics and reload. Every decision about a
//! message is the evaluator's; this module only moves bytes and keeps promises about them.

pub mod capture;
pub mod config;
pub mod control;
pub mod drain;
pub mod limits;
pub mod memory;
pub mod metrics;
mod plan;
pub mod privileges;
mod report;
mod scheduler;
mod session;
pub mod shadow;
pub mod sign;
pub mod tls;
pub mod track;
pub mod verify;

use crate::auth::keys::KeyStore;
use crate::compile::Table;
use crate::compile::select_receive;
use crate::deliver::{ClientConfig, Pool, Resolver, ReuseOptions};
use crate::queue::{QueuedMessage, Spool, SpoolOptions};
use config::{LoadFailure, RelayOptions, load};
use metrics::Metrics;
use rustls::RootCertStore;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use track::Tracker;

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The rule set did not load.
    #[error("{0}")]
    Rules(#[from] LoadFailure),
    /// TLS or DKIM keys could not be set up.
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    /// The spool could not be opened.
    #[error("spool: {0}")]
    Spool(#[from] crate::queue::QueueError),
    /// A listener could not be bound, or another I/O failure at start.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The resolver could not be set up.
    #[error("resolver: {0}")]
    Resolver(String),
    /// `--user` or the spool's ownership and permissions.
    #[error(transparent)]
    Service(#[from] privileges::ServiceError),
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RelayError {
    let what = what.into();
    move |source| RelayError::Io { what, source }
}

/// The TLS each connector runs with and the DKIM keys the relay signs and seals with, built
/// when the rules are loaded: certificates and keys are read then, never per session or
/// attempt. A reload builds a new set or none.
#[derive(Default)]
struct Credentials {
    /// Receive connector name → its server configuration (connectors that offer TLS).
    inbound: HashMap<String, tls::ConnectorTls>,
    /// Send connector name → how to talk to its next hops, client certificate included.
    outbound: HashMap<String, Arc<ClientConfig>>,
    /// The `dkim-key` files, read.
    dkim: Arc<KeyStore>,
    /// When each certificate presented expires, for `/metrics`.
    expiry: Vec<metrics::CertificateExpiry>,
}

/// Why the credentials of a rule set could not be built.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// A certificate or TLS key.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// A DKIM key.
    #[error(transparent)]
    Dkim(#[from] crate::auth::keys::LoadError),
}

/// What every session and the scheduler share.
pub(crate) struct Shared {
    table: RwLock<Arc<Table>>,
    /// The candidate rule set of `--shadow`, reloaded with the live one.
    shadow: RwLock<shadow::ShadowTable>,
    tls: RwLock<Arc<Credentials>>,
    roots: Arc<RootCertStore>,
    pub(crate) spool: Spool,
    pub(crate) tracker: Tracker,
    /// What the evaluator saw of each message, when `--capture` is on.
    pub(crate) capture: capture::Capture,
    pub(crate) metrics: Metrics,
    pub(crate) hostname: String,
    pub(crate) wake: Notify,
    /// What is due when, per destination ([`plan`]).
    plan: Mutex<plan::Plan>,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Message data held in memory by all sessions (`--max-message-memory`).
    pub(crate) memory: Arc<memory::MemoryBudget>,
    /// Message data held in memory by deliveries and DSNs, a budget of the same size as the
    /// sessions' ([`memory::DeliveryBudget`]).
    pub(crate) delivery_memory: memory::DeliveryBudget,
    options: RelayOptions,
    resolver: Resolver,
    /// Verifies Internet mail (SPF, DKIM, DMARC, ARC) against the same DNS as `resolver`.
    pub(crate) authenticator: crate::auth::verify::Verifier,
    /// The addresses the listeners are bound to, for loop detection.
    local: Vec<SocketAddr>,
    connections: limits::Connections,
    reload_lock: tokio::sync::Mutex<()>,
    /// Recipient verification's cache and probe budget.
    verifier: verify::Verifier,
    /// Connections to next hops kept between deliveries.
    pool: Arc<Pool>,
}

impl Shared {
    pub(crate) fn plan(&self) -> std::sync::MutexGuard<'_, plan::Plan> {
        match self.plan.lock() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn queue_gauges(&self) -> metrics::QueueGauges {
        let now = crate::clock::now_secs();
        let plan = self.plan();
        metrics::QueueGauges {
            messages: self.spool.len(),
            deliveries: plan.len() + plan.held(),
            suspended: plan.suspended(now),
            held: plan.held(),
            oldest_age: self.spool.oldest().map_or(0, |t| now.saturating_sub(t)),
        }
    }

    /// Hands a newly stored message to the scheduler.
    pub(crate) fn enqueue(&self, message: &QueuedMessage) {
        self.plan().add(message);
        self.wake.notify_one();
    }

    /// The current table; a session keeps the one it got for a whole message.
    pub(crate) fn table(&self) -> Arc<Table> {
        match self.table.read() {
            Ok(t) => Arc::clone(&t),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// The `--shadow` candidate, as last loaded.
    pub(crate) fn shadow_table(&self) -> shadow::ShadowTable {
        match self.shadow.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn tls(&self) -> Arc<Credentials> {
        match self.tls.read() {
            Ok(t) => Arc::clone(&t),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// The DKIM keys of the last successful load.
    pub(crate) fn dkim_keys(&self) -> Arc<KeyStore> {
        Arc::clone(&self.tls().dkim)
    }

    pub(crate) fn tls_config(&self, connector: &str) -> Option<tls::ConnectorTls> {
        self.tls().inbound.get(connector).cloned()
    }

    /// How deliveries and probes through send connector `connector` talk to next hops, as
    /// the last successful load built it. A reload stores these before the table, so a table
    /// read after them never names a connector they lack.
    pub(crate) fn client_config(&self, connector: &str) -> Option<Arc<ClientConfig>> {
        self.tls().outbound.get(connector).cloned()
    }

    /// Recompiles the rules; on any error the current table stays. The swap is one pointer
    /// store: sessions in the middle of a message finish with the table they started with.
    pub(crate) async fn reload(&self) -> Result<String, LoadFailure> {
        let _one_at_a_time = self.reload_lock.lock().await;
        // Reading and compiling is blocking work (files, certificates, CPU): it runs on a
        // blocking thread, so a slow or stuck file never holds a runtime worker that
        // sessions, the admin port and shutdown need.
        let (options, roots) = (self.options.clone(), Arc::clone(&self.roots));
        let result = tokio::task::spawn_blocking(move || {
            load(&options.rules, &options.overrides).and_then(|loaded| {
                let configs =
                    credentials(&loaded.table, &roots, &options).map_err(|e| LoadFailure {
                        message: e.to_string(),
                    })?;
                Ok((loaded, configs))
            })
        })
        .await
        .unwrap_or_else(|e| {
            Err(LoadFailure {
                message: format!("the reload stopped: {e}"),
            })
        });
        let outcome = match result {
            Ok((loaded, configs)) => {
                let listen_before = listen_set(&self.table());
                if listen_set(&loaded.table) != listen_before {
                    tracing::warn!(
                        "reload: listen addresses changed; they take effect at the next restart"
                    );
                }
                warn_unknown_held_connectors(&loaded.table, self.plan().holds());
                self.metrics.set_certificates(configs.expiry.clone());
                self.metrics.set_rules_digest(&loaded.digest);
                if let Ok(mut t) = self.tls.write() {
                    *t = Arc::new(configs);
                }
                if let Ok(mut t) = self.table.write() {
                    *t = loaded.table;
                }
                Metrics::inc(&self.metrics.reloads_ok);
                tracing::info!(
                    "rules reloaded from {} (rules digest {})",
                    self.options.rules.display(),
                    loaded.digest
                );
                if !loaded.warnings.is_empty() {
                    tracing::warn!("rule warnings:\n{}", loaded.warnings);
                }
                Ok(loaded.warnings)
            }
            Err(e) => {
                Metrics::inc(&self.metrics.reloads_failed);
                tracing::error!(
                    "reload refused; the current rules (digest {}) stay:\n{}",
                    self.metrics.rules_digest(),
                    e.message
                );
                Err(e)
            }
        };
        // The candidate is reloaded whether or not the live rules were: an operator trying
        // a change edits the candidate, not the live file.
        self.reload_shadow().await;
        outcome
    }
}

impl Shared {
    /// Reloads the `--shadow` candidate after the live rules, whatever became of them: a
    /// candidate that does not load is logged and the previous one stays (the live rules are
    /// what matter).
    async fn reload_shadow(&self) {
        let Some(path) = self.options.shadow.clone() else {
            return;
        };
        let overrides = self.options.overrides.clone();
        let loaded = tokio::task::spawn_blocking(move || load(&path, &overrides)).await;
        match loaded {
            Ok(Ok(l)) => {
                self.metrics.shadow.set_digest(&l.digest);
                if let Ok(mut t) = self.shadow.write() {
                    *t = Some(l.table);
                }
                tracing::info!("shadow rules reloaded (rules digest {})", l.digest);
            }
            Ok(Err(e)) => tracing::error!(
                "shadow rules refused; the previous candidate stays:\n{}",
                e.message
            ),
            Err(e) => tracing::error!("shadow reload stopped: {e}"),
        }
    }
}

/// A send connector held (`queue hold --connector`, which a stopped spool takes without
/// the rules to check it against) that the rules do not have holds nothing: its mail flows.
/// Said at the start and at each reload, which may have renamed it.
fn warn_unknown_held_connectors(t: &Table, holds: &crate::queue::holds::Holds) {
    for held in &holds.connectors {
        if !t
            .send_connectors
            .iter()
            .any(|c| c.name.value.eq_ignore_ascii_case(held))
        {
            tracing::warn!(
                "send connector `{held}` is held (queue hold --connector) but the rules have \
                 no send connector by that name: the hold holds nothing; \
                 `mailflow queue release --connector {held:?}` removes it"
            );
        }
    }
}

fn listen_set(t: &Table) -> Vec<SocketAddr> {
    let mut v: Vec<SocketAddr> = t
        .receive_connectors
        .iter()
        .flat_map(|c| c.listen.iter().map(|l| l.value))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// A reload reads the rules, certificates and keys again as the user the relay runs as:
/// what only root could read at the start would make every reload fail (or, for the
/// `--shadow` candidate, keep the one loaded at the start), which is better told at the
/// start than at the first change. Each is warned about on its own.
fn warn_unreadable_for_reload(
    options: &RelayOptions,
    roots: &Arc<RootCertStore>,
    run_as: &privileges::RunAs,
) {
    let live = load(&options.rules, &options.overrides)
        .map_err(|e| e.message)
        .and_then(|l| credentials(&l.table, roots, options).map_err(|e| e.to_string()));
    if let Err(why) = live {
        tracing::warn!(
            "as user `{}` a reload would fail: {why}; make the rule files, certificates and \
             keys readable by its group (docs/operations.md)",
            run_as.name()
        );
    }
    if let Some(path) = &options.shadow {
        if let Err(e) = load(path, &options.overrides) {
            tracing::warn!(
                "as user `{}` a reload would keep the shadow rule set loaded at the start: \
                 {}: {}; make it readable by its group",
                run_as.name(),
                path.display(),
                e.message
            );
        }
    }
}

fn credentials(
    t: &Table,
    roots: &Arc<RootCertStore>,
    options: &RelayOptions,
) -> Result<Credentials, CredentialError> {
    let mut out = Credentials {
        dkim: Arc::new(KeyStore::load(&t.dkim_keys)?),
        ..Credentials::default()
    };
    for c in &t.receive_connectors {
        if let Some(cfg) = tls::server_config(c, roots)? {
            out.inbound.insert(c.name.value.clone(), cfg);
            out.expiry
                .extend(expiry(&c.name.value, "server", &c.certificate));
        }
    }
    for c in &t.send_connectors {
        out.expiry
            .extend(expiry(&c.name.value, "client", &c.certificate));
        let mut cfg = ClientConfig::for_connector(c, &options.hostname, Arc::clone(roots))
            .map_err(|e| tls::TlsError::Config {
                connector: c.name.value.clone(),
                why: e.to_string(),
            })?;
        cfg.set_timeouts(options.smtp_timeout);
        out.outbound.insert(c.name.value.clone(), Arc::new(cfg));
    }
    Ok(out)
}

/// The expiry of a certificate file the credentials were just built from. A leaf rustls took
/// but x509-parser cannot read costs only its series, never the load.
fn expiry(
    connector: &str,
    kind: &'static str,
    file: &Option<crate::model::Spanned<std::path::PathBuf>>,
) -> Option<metrics::CertificateExpiry> {
    let path = &file.as_ref()?.value;
    match crate::x509::read_leaf(path) {
        Ok(leaf) => Some(metrics::CertificateExpiry {
            connector: connector.to_string(),
            kind,
            path: path.display().to_string(),
            not_after: leaf.not_after,
        }),
        Err(why) => {
            tracing::warn!("{}: no expiry for /metrics: {why}", path.display());
            None
        }
    }
}

/// One bound listener and the connectors that listen on its address.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listener {
    /// The address as configured (port 0 allowed).
    pub configured: SocketAddr,
    /// The address actually bound.
    pub address: SocketAddr,
    /// Receive connectors on it.
    pub connectors: Vec<String>,
}

/// A running relay.
pub struct Relay {
    /// The listeners.
    pub listeners: Vec<Listener>,
    /// The admin port, when enabled.
    pub admin: Option<SocketAddr>,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    sessions: Arc<Mutex<JoinSet<()>>>,
}

/// Opens the spool, waiting up to 10 seconds for its lock: `mailflow queue` run on the
/// stopped spool holds it while it reads, and a relay (re)started at that moment must not
/// fail because an administrator looked. A second relay on the spool holds it for good and
/// is still refused, 10 seconds later.
async fn open_spool(
    dir: &std::path::Path,
    options: SpoolOptions,
) -> Result<(Spool, Vec<crate::queue::QueuedMessage>), crate::queue::QueueError> {
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Spool::open(dir, options.clone()) {
            Err(crate::queue::QueueError::Locked { .. }) if std::time::Instant::now() < give_up => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

impl Relay {
    /// Loads the rules, opens the spool (recovering what a crash left), binds every listener
    /// and starts the scheduler.
    pub async fn start(options: RelayOptions) -> Result<Relay, RelayError> {
        Relay::start_as(options, None).await
    }

    /// As [`Relay::start`], switching to `run_as` once every listener and the admin port are
    /// bound and before the spool is opened, so every file in it is written as that user.
    pub async fn start_as(
        options: RelayOptions,
        run_as: Option<&privileges::RunAs>,
    ) -> Result<Relay, RelayError> {
        let loaded = load(&options.rules, &options.overrides)?;
        if !loaded.warnings.is_empty() {
            tracing::warn!("rule warnings:\n{}", loaded.warnings);
        }
        let shadow_loaded = match &options.shadow {
            Some(path) => Some(load(path, &options.overrides).map_err(|e| LoadFailure {
                message: format!("the shadow rule set {}: {}", path.display(), e.message),
            })?),
            None => None,
        };
        let roots =
            Arc::new(tls::roots(options.ca_file.as_deref()).map_err(CredentialError::from)?);
        let configs = credentials(&loaded.table, &roots, &options)?;
        let owner = privileges::owner(run_as);
        privileges::check_spool(&options.spool, owner)?;
        let (listeners, bound) = bind(&loaded.table).await?;
        let admin_listener = match options.admin {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(io_error(format!("admin port {addr}")))?,
            ),
            None => None,
        };
        if let Some(run_as) = run_as {
            privileges::drop_to(run_as)?;
            warn_unreadable_for_reload(&options, &roots, run_as);
        }
        privileges::prepare_spool(&options.spool, owner)?;
        let largest = loaded
            .table
            .receive_connectors
            .iter()
            .map(|c| c.limits.max_message_size)
            .max()
            .unwrap_or(36 << 20);
        let spool_options = SpoolOptions {
            retry: options.retry,
            min_free_bytes: largest.saturating_mul(3) / 2,
            ..SpoolOptions::default()
        };
        // MAIL is refused (452 4.3.1) below the floor plus the connector's message size; the
        // tracking log stops a reserve above that for the largest connector (by default room
        // for one more largest message), so logging never takes the space a message needs and
        // mail is still taken for a while after the log has stopped.
        let track_stop = spool_options
            .min_free_bytes
            .saturating_add(largest)
            .saturating_add(options.tracking.reserve.unwrap_or(largest));
        let (spool, recovered) = open_spool(&options.spool.join("queue"), spool_options).await?;
        if !recovered.is_empty() {
            tracing::info!(
                "{} queued messages recovered from the spool",
                recovered.len()
            );
        }
        // Holds outlive restarts; those of messages no longer queued are dropped.
        let mut holds = crate::queue::holds::Holds::load(&options.spool)
            .map_err(io_error("the queue's holds"))?;
        holds.retain_messages(|id| recovered.iter().any(|m| m.id == *id));
        warn_unknown_held_connectors(&loaded.table, &holds);
        // Without its socket the relay still relays (a spool path past the 108 bytes a
        // socket's name may have, say): the queue commands then cannot reach it, and the
        // log says so rather than the relay refusing to start.
        let socket = control::socket_path(&options.spool);
        let control = control::socket::bind(&socket)
            .map_err(|e| {
                tracing::warn!(
                    "admin socket {}: {e}; `mailflow queue` cannot reach this relay (a shorter --spool path avoids it)",
                    socket.display()
                );
            })
            .ok();
        let metrics = Metrics::default();
        let shadow_table = shadow_loaded.map(|l| {
            metrics.shadow.set_digest(&l.digest);
            l.table
        });
        metrics.set_certificates(configs.expiry.clone());
        metrics.set_rules_digest(&loaded.digest);
        tracing::info!(
            "rules loaded from {} (rules digest {})",
            options.rules.display(),
            loaded.digest
        );
        let tracker = Tracker::open(
            &options.spool.join("tracking"),
            options.tracking,
            track_stop,
            Arc::clone(&metrics.tracking_dropped),
        )
        .map_err(io_error("tracking log"))?;
        let capture = match options.capture {
            Some(limits) => capture::Capture::open(
                &options.spool.join(capture::STEM),
                limits,
                track_stop,
                Arc::clone(&metrics.capture_dropped),
            )
            .map_err(io_error("captured traffic"))?,
            None => capture::Capture::disabled(),
        };
        let resolver = match options.dns {
            Some(addr) => Resolver::with_nameserver(addr),
            None => Resolver::system().map_err(|e| RelayError::Resolver(e.to_string()))?,
        };
        let authenticator = match options.dns {
            Some(addr) => crate::auth::verify::Verifier::with_nameserver(addr),
            None => crate::auth::verify::Verifier::system().map_err(RelayError::Resolver)?,
        };

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            table: RwLock::new(loaded.table),
            shadow: RwLock::new(shadow_table),
            tls: RwLock::new(Arc::new(configs)),
            roots,
            spool,
            tracker,
            capture,
            metrics,
            hostname: options.hostname.clone(),
            wake: Notify::new(),
            plan: Mutex::new(plan::Plan::new(plan::Limits {
                total: options.delivery_concurrency.max(1),
                per_destination: options.destination_concurrency.max(1),
                delay_warning: options.delay_warning.as_secs(),
                lifetime: options.retry.lifetime.as_secs(),
            })),
            shutdown: shutdown_rx,
            memory: memory::MemoryBudget::new(options.max_message_memory),
            delivery_memory: memory::DeliveryBudget::new(options.max_message_memory),
            resolver,
            authenticator,
            local: listeners.iter().map(|l| l.address).collect(),
            connections: limits::Connections::default(),
            reload_lock: tokio::sync::Mutex::new(()),
            verifier: verify::Verifier::new(options.verify.clone()),
            pool: Pool::new(ReuseOptions {
                limit: options.connection_reuse_limit,
                idle_timeout: options.connection_idle_timeout,
                // Idle connections never outnumber what may be in use.
                per_destination: options.destination_concurrency.max(1),
                total: options.delivery_concurrency.max(1),
            }),
            options,
        });
        let mut tasks = JoinSet::new();
        let sessions = Arc::new(Mutex::new(JoinSet::new()));
        for (configured, l) in bound {
            tasks.spawn(accept_loop(
                Arc::clone(&shared),
                l,
                configured,
                Arc::clone(&sessions),
            ));
        }
        {
            let mut plan = shared.plan();
            plan.set_holds(holds, crate::clock::now_secs());
            for m in &recovered {
                plan.add(m);
            }
        }
        drop(recovered);
        tasks.spawn(scheduler::run(Arc::clone(&shared)));
        if let Some(control) = control {
            tasks.spawn(control::socket::serve(Arc::clone(&shared), control));
        }
        let admin = match admin_listener {
            Some(l) => {
                let a = l.local_addr().map_err(io_error("local address"))?;
                tasks.spawn(admin_loop(Arc::clone(&shared), l));
                Some(a)
            }
            None => None,
        };
        Ok(Relay {
            listeners,
            admin,
            shared,
            shutdown: shutdown_tx,
            tasks,
            sessions,
        })
    }

    /// Recompiles the rules (SIGHUP, `mailflow reload`).
    pub async fn reload(&self) -> Result<String, LoadFailure> {
        self.shared.reload().await
    }

    /// Messages in the queue.
    pub fn queued(&self) -> Vec<QueuedMessage> {
        self.shared.spool.live()
    }

    /// The digest of the rules in use ([`crate::compile::artifact::digest`]): relays that
    /// run one compiled rule set report the same.
    pub fn rules_digest(&self) -> String {
        self.shared.metrics.rules_digest()
    }

    /// The metrics text.
    pub fn metrics(&self) -> String {
        self.shared.metrics.render(self.shared.queue_gauges())
    }

    /// Stops accepting, tells sessions to finish (they answer 421 at their next command),
    /// waits up to the drain timeout, then closes the spool.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        let drain = self.shared.options.drain_timeout;
        let sessions = match self.sessions.lock() {
            Ok(mut s) => std::mem::take(&mut *s),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        };
        let mut sessions = sessions;
        let _ = tokio::time::timeout(drain, async {
            while sessions.join_next().await.is_some() {}
        })
        .await;
        sessions.abort_all();
        self.shared.pool.close_idle().await;
        let _ = std::fs::remove_file(control::socket_path(&self.shared.options.spool));
        let shared = self.shared;
        // The spool's writer stops when its last handle goes; close it explicitly when this
        // is the last one so every record is flushed.
        let spool = shared.spool.clone();
        let tracker = shared.tracker.clone();
        let capture = shared.capture.clone();
        drop(shared);
        if let Err(e) = spool.close().await {
            tracing::warn!("closing the spool: {e}");
        }
        // The refusals being counted are written now, not lost with the process.
        let _ = tokio::task::spawn_blocking(move || {
            tracker.flush();
            capture.flush();
        })
        .await;
    }
}

/// Binds one listener per distinct address; connectors sharing it are told apart by range.
async fn bind(
    table: &Table,
) -> Result<(Vec<Listener>, Vec<(SocketAddr, TcpListener)>), RelayError> {
    let mut by_addr: Vec<(SocketAddr, Vec<String>)> = Vec::new();
    for c in &table.receive_connectors {
        for l in &c.listen {
            match by_addr.iter_mut().find(|(a, _)| *a == l.value) {
                Some((_, names)) => names.push(c.name.value.clone()),
                None => by_addr.push((l.value, vec![c.name.value.clone()])),
            }
        }
    }
    let mut bound = Vec::new();
    let mut listeners = Vec::new();
    for (addr, connectors) in by_addr {
        let l = TcpListener::bind(addr)
            .await
            .map_err(io_error(format!("listen on {addr}")))?;
        let address = l.local_addr().map_err(io_error("local address"))?;
        listeners.push(Listener {
            configured: addr,
            address,
            connectors,
        });
        bound.push((addr, l));
    }
    Ok((listeners, bound))
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    configured: SocketAddr,
    sessions: Arc<Mutex<JoinSet<()>>>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("accept on {configured}: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        // The one choice of the connector for this connection: its limits admit it here,
        // and the session serves it on the same connector.
        let table = shared.table();
        let chosen = select_receive(&table.receive_connectors, Some(configured), peer.ip());
        let connector = chosen.and_then(|i| table.receive_connectors.get(i));
        let (name, limits) = connector.map_or_else(
            || (String::new(), crate::model::ReceiveLimits::default()),
            |c| (c.name.value.clone(), c.limits.clone()),
        );
        let (slot, too_many) = limits::admit(&shared, &name, &limits, peer.ip());
        let chosen = session::Chosen {
            table,
            connector: chosen,
        };
        let shared2 = Arc::clone(&shared);
        let task = async move {
            if let Some(refusal) = too_many {
                use tokio::io::AsyncWriteExt;
                let mut tcp = tcp;
                Metrics::inc(&shared2.metrics.rejected);
                tracing::info!(client = %peer, connector = %name, "refused: {refusal:?} connection limit");
                let _ = tcp.write_all(&refusal.reply().to_bytes()).await;
                // The places are given back before the client sees the close.
                drop(slot);
                drop(tcp);
                return;
            }
            session::serve(shared2, tcp, peer, configured, slot, chosen).await;
        };
        if let Ok(mut s) = sessions.lock() {
            // Finished sessions are reaped here so the set does not grow without bound.
            while s.try_join_next().is_some() {}
            s.spawn(task);
        }
    }
}

/// `GET /metrics` and `POST /reload` on the admin port.
async fn admin_loop(shared: Arc<Shared>, listener: TcpListener) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut tcp, _)) = listener.accept().await else {
            // Out of file descriptors, the waiting client stays in the backlog and every
            // accept fails at once: back off instead of spinning.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
                    match tcp.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            })
            .await;
            if read.is_err() {
                return;
            }
            let head = String::from_utf8_lossy(&buf);
            let first = head.lines().next().unwrap_or_default().to_string();
            let (status, body) = if first.starts_with("GET /metrics ") {
                ("200 OK", shared.metrics.render(shared.queue_gauges()))
            } else if first.starts_with("POST /reload ") {
                match shared.reload().await {
                    Ok(w) => ("200 OK", format!("reloaded\n{w}")),
                    Err(e) => ("422 Unprocessable Entity", e.message),
                }
            } else {
                ("404 Not Found", "not found\n".to_string())
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tcp.write_all(resp.as_bytes()).await;
            let _ = tcp.shutdown().await;
        });
    }
}
