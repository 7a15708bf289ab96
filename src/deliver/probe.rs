//! Recipient probes: asks a next hop whether it would take a recipient, without sending a
//! message (`MAIL FROM:<>`, `RCPT TO`, `QUIT` before `DATA`), as Postfix's address
//! verification does. It talks to a hop through the same connection set-up as deliveries
//! ([`super::client`]: EHLO, STARTTLS and certificates as the send connector says), so a
//! probe sees what a delivery would see. The relay decides what to do with the answer.

use super::config::ClientConfig;
use super::connection::open;
use super::failure;
use super::hop::Hop;
use crate::smtp::Status;

/// What a next hop said about one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// It accepted `RCPT TO` (2xx).
    Accepted,
    /// It refused the recipient permanently (5xx to `RCPT TO`): its reply.
    Refused(Status),
    /// No answer about the recipient: every hop was down, slow, refused the session or the
    /// null sender, or answered 4xx. Ask again later.
    Unknown {
        /// What went wrong, for the log.
        reason: String,
    },
}

/// Asks the hops, in order, about `address` until one answers `RCPT TO`. A hop that cannot
/// be reached or will not start a transaction is skipped, as deliveries skip it. The caller
/// bounds the whole probe with its own timeout.
pub async fn probe(cfg: &ClientConfig, hops: &[Hop], address: &str) -> ProbeOutcome {
    if address.is_empty()
        || address
            .chars()
            .any(|c| c.is_control() || c == '<' || c == '>')
    {
        return ProbeOutcome::Refused(Status::new(553, "5.1.3", "invalid recipient address"));
    }
    let mut last = Status::new(451, "4.4.0", "no next hop");
    for hop in hops {
        for addr in &hop.addrs {
            let mut tls = None;
            let (mut s, ext) = match open(cfg, hop, *addr, &mut tls).await {
                Ok(c) => (c.session, c.ext),
                Err(f) => {
                    last = f;
                    continue;
                }
            };
            let t = cfg.command_timeout;
            let utf8 = !address.is_ascii() && ext.contains_key("SMTPUTF8");
            let mail = if utf8 {
                "MAIL FROM:<> SMTPUTF8"
            } else {
                "MAIL FROM:<>"
            };
            let reply = match s.command(mail, t).await {
                Ok(r) => r,
                Err(e) => {
                    last = failure::io("MAIL", &e);
                    continue;
                }
            };
            if !reply.is_completion() {
                // A hop that refuses the null sender says nothing about the recipient.
                last = failure::from_reply(&reply, "MAIL FROM:<>");
                tokio::spawn(async move { s.quit().await });
                continue;
            }
            let reply = match s.command(&format!("RCPT TO:<{address}>"), t).await {
                Ok(r) => r,
                Err(e) => {
                    last = failure::io("RCPT", &e);
                    continue;
                }
            };
            // QUIT is a courtesy: the answer does not wait for it.
            tokio::spawn(async move { s.quit().await });
            let status = Status::from_reply(&reply);
            return match reply.code {
                200..=299 => ProbeOutcome::Accepted,
                500..=599 => ProbeOutcome::Refused(status),
                _ => ProbeOutcome::Unknown {
                    reason: status.to_string(),
                },
            };
        }
    }
    ProbeOutcome::Unknown {
        reason: last.to_string(),
    }
}
