//! The relay's outbound side: where a message goes next ([`hop`]: smart hosts or MX), the
//! SMTP client that hands one message to that hop ([`client`]), the bounce the relay writes
//! when it cannot ([`dsn`], RFC 3464), and the recipient probe that asks a hop about an
//! address without sending a message ([`probe`]). The client in steps: how to talk to hops,
//! built once per send connector ([`config`], [`tls`]); one connection up to MAIL
//! ([`connection`]); what goes on the wire ([`envelope`]); one transaction and its outcomes
//! ([`transaction`], [`failure`]); connections kept between transactions ([`pool`]).

pub mod client;
pub mod config;
mod connection;
pub mod dsn;
mod envelope;
mod failure;
pub mod hop;
pub mod pool;
pub mod probe;
mod tls;
mod transaction;

pub use client::{Attempt, OutboundMessage, OutboundRcpt, RcptOutcome, deliver, deliver_reusing};
pub use config::{ClientConfig, load_certified_key, load_roots, webpki_roots};
pub use dsn::{DsnAction, DsnInput, FailedRecipient, compose, should_bounce};
pub(crate) use hop::one_nameserver;
pub use hop::{Hop, Resolver, next_hops};
pub use pool::{Pool, ReuseOptions};
pub use probe::{ProbeOutcome, probe};

use crate::smtp::Status;
use std::net::SocketAddr;
use std::path::PathBuf;

/// What can go wrong on the outbound side before a remote server answers. Remote replies are
/// never errors: [`deliver`] turns them into [`RcptOutcome`]s.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeliverError {
    /// The resolver could not be set up from the system configuration.
    #[error("resolver configuration: {0}")]
    ResolverConfig(String),
    /// A DNS lookup failed for a reason that may go away (timeout, SERVFAIL, refused).
    #[error("DNS lookup of {name} failed: {message}")]
    DnsTemporary {
        /// The name looked up.
        name: String,
        /// What the resolver said.
        message: String,
    },
    /// The domain does not exist, or neither it nor any of its MX hosts has an address.
    #[error("no address for {name}: {message}")]
    NoAddress {
        /// The name looked up.
        name: String,
        /// What the resolver said.
        message: String,
    },
    /// The domain publishes a null MX (RFC 7505): it accepts no mail.
    #[error("{domain} does not accept mail (null MX)")]
    NullMx {
        /// The domain.
        domain: String,
    },
    /// The next hop is this relay itself.
    #[error("mail for {domain} loops back to myself ({host} at {addr})")]
    Loop {
        /// The recipient domain.
        domain: String,
        /// The hop's name.
        host: String,
        /// The local address it resolved to.
        addr: SocketAddr,
    },
    /// A certificate, key or CA file could not be read or used.
    #[error("{path}: {message}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
}

impl DeliverError {
    /// The status the relay reports for this error, its text the error's message: e.g.
    /// `556 5.1.10` for a null MX.
    pub fn status(&self) -> Status {
        let (code, enhanced) = match self {
            DeliverError::ResolverConfig(_) => (451, "4.3.5"),
            DeliverError::DnsTemporary { .. } => (451, "4.4.3"),
            DeliverError::NoAddress { .. } => (550, "5.1.2"),
            DeliverError::NullMx { .. } => (556, "5.1.10"),
            DeliverError::Loop { .. } => (554, "5.4.4"),
            DeliverError::Certificate { .. } => (451, "4.3.5"),
        };
        Status::new(code, enhanced, self.to_string())
    }

    /// Whether retrying later cannot help (a 5xx reply).
    pub fn is_permanent(&self) -> bool {
        self.status().is_permanent()
    }
}
