//! Counters for the Prometheus text endpoint, and the small admin HTTP server that serves
//! `GET /metrics` and `POST /reload`. Two fixed routes on a loopback port do not justify an
//! HTTP framework: requests are read with a size cap and a timeout, and anything else is a 404.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The relay's counters; shared by every session and the scheduler.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Sessions open now.
    pub sessions: AtomicI64,
    /// Messages accepted (250 at end of data).
    pub received: AtomicU64,
    /// Messages or recipients refused by the relay (5xx/4xx to the client).
    pub rejected: AtomicU64,
    /// Recipients delivered to a next hop.
    pub delivered: AtomicU64,
    /// Delivery attempts deferred.
    pub deferred: AtomicU64,
    /// Recipients failed permanently (bounced).
    pub bounced: AtomicU64,
    /// Recipients dropped by rules.
    pub dropped: AtomicU64,
    /// Delivery attempts that carried our DKIM signatures (a retry signs again).
    pub dkim_signed: AtomicU64,
    /// Delivery attempts whose envelope sender was rewritten with SRS.
    pub srs_rewrites: AtomicU64,
    /// Recipients that were our SRS addresses, reversed to the original sender at RCPT.
    pub srs_reversals: AtomicU64,
    /// Recipients that looked like our SRS addresses and were refused at RCPT (forged,
    /// expired or malformed).
    pub srs_refused: AtomicU64,
    /// Rule set reloads that succeeded and failed.
    pub reloads_ok: AtomicU64,
    /// Rule set reloads that failed (the old table stayed).
    pub reloads_failed: AtomicU64,
    /// Tracking-log events not written: short of space above the spool's floor and reserve,
    /// a failed write, or a full backlog (shared with the tracking log's writer).
    pub tracking_dropped: Arc<AtomicU64>,
    /// Captured-traffic records not written (as for the tracking log).
    pub capture_dropped: Arc<AtomicU64>,
    /// The `--shadow` rule set's evaluations and differences.
    pub shadow: super::shadow::ShadowCounts,
    rule_hits: Mutex<BTreeMap<String, u64>>,
    /// The certificates of the last successful load.
    certificates: Mutex<Vec<CertificateExpiry>>,
    /// The digest of the rules in use ([`crate::compile::artifact::digest`]).
    rules_digest: Mutex<String>,
}

/// When one certificate the relay presents expires: the
/// `mailflow_certificate_expiry_timestamp_seconds` gauge, one series per connector and file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateExpiry {
    /// The connector presenting it.
    pub connector: String,
    /// `server` (a receive connector's) or `client` (a send connector's).
    pub kind: &'static str,
    /// The file, as resolved from the rule file's folder.
    pub path: String,
    /// The leaf's `notAfter`, seconds since the Unix epoch.
    pub not_after: i64,
}

/// The queue's gauges at the moment of rendering.
#[derive(Clone, Copy, Debug, Default)]
pub struct QueueGauges {
    /// Messages in the spool.
    pub messages: usize,
    /// (message, destination) deliveries waiting or in flight.
    pub deliveries: usize,
    /// Destinations suspended after their next hops did not answer.
    pub suspended: usize,
    /// (message, destination) deliveries parked by an administrator's hold.
    pub held: usize,
    /// Seconds since the oldest queued message arrived (0: none queued).
    pub oldest_age: u64,
}

impl Metrics {
    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts the rules that fired for one message.
    pub fn rules_fired(&self, names: &[String]) {
        if names.is_empty() {
            return;
        }
        if let Ok(mut hits) = self.rule_hits.lock() {
            for n in names {
                *hits.entry(n.clone()).or_default() += 1;
            }
        }
    }

    /// Replaces the certificates exported, at load and at every successful reload (a
    /// renewed certificate shows its new expiry; a removed connector's series goes).
    pub fn set_certificates(&self, certificates: Vec<CertificateExpiry>) {
        match self.certificates.lock() {
            Ok(mut c) => *c = certificates,
            Err(poisoned) => *poisoned.into_inner() = certificates,
        }
    }

    /// Records the digest of the rules now in use, at start and at every successful reload.
    pub fn set_rules_digest(&self, digest: &str) {
        match self.rules_digest.lock() {
            Ok(mut d) => digest.clone_into(&mut d),
            Err(poisoned) => digest.clone_into(&mut poisoned.into_inner()),
        }
    }

    /// The digest of the rules in use.
    pub fn rules_digest(&self) -> String {
        match self.rules_digest.lock() {
            Ok(d) => d.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self, queue: QueueGauges) -> String {
        let QueueGauges {
            messages: queue_size,
            deliveries,
            suspended,
            held,
            oldest_age,
        } = queue;
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = write!(
                out,
                "# HELP mailflow_{name} {help}\n# TYPE mailflow_{name} counter\nmailflow_{name} {v}\n"
            );
        };
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        counter(
            "connections_total",
            "SMTP connections accepted.",
            get(&self.connections),
        );
        counter(
            "messages_received_total",
            "Messages accepted.",
            get(&self.received),
        );
        counter(
            "rejected_total",
            "Commands, recipients or messages refused.",
            get(&self.rejected),
        );
        counter(
            "recipients_delivered_total",
            "Recipients delivered to a next hop.",
            get(&self.delivered),
        );
        counter(
            "deliveries_deferred_total",
            "Delivery attempts deferred for a retry.",
            get(&self.deferred),
        );
        counter(
            "recipients_bounced_total",
            "Recipients failed permanently.",
            get(&self.bounced),
        );
        counter(
            "recipients_dropped_total",
            "Recipients dropped by transport rules.",
            get(&self.dropped),
        );
        counter(
            "dkim_signed_total",
            "Delivery attempts that carried the relay's DKIM signatures.",
            get(&self.dkim_signed),
        );
        counter(
            "srs_rewrites_total",
            "Delivery attempts whose envelope sender was rewritten with SRS.",
            get(&self.srs_rewrites),
        );
        counter(
            "srs_reversals_total",
            "Bounces to SRS addresses accepted and returned to the original sender.",
            get(&self.srs_reversals),
        );
        counter(
            "srs_refused_total",
            "Recipients refused as forged, expired or malformed SRS addresses.",
            get(&self.srs_refused),
        );
        counter(
            "reloads_total",
            "Rule set reloads that took effect.",
            get(&self.reloads_ok),
        );
        counter(
            "reloads_failed_total",
            "Rule set reloads refused (the old rules stayed).",
            get(&self.reloads_failed),
        );
        counter(
            "capture_records_dropped_total",
            "Captured-traffic records not written (--capture; short of space, a failed write, a full backlog).",
            get(&self.capture_dropped),
        );
        counter(
            "tracking_events_dropped_total",
            "Tracking-log events not written (short of space above the spool's floor and reserve, a failed write, a full backlog).",
            get(&self.tracking_dropped),
        );
        let _ = write!(
            out,
            "# HELP mailflow_sessions SMTP sessions open.\n# TYPE mailflow_sessions gauge\nmailflow_sessions {}\n",
            self.sessions.load(Ordering::Relaxed)
        );
        let _ = write!(
            out,
            "# HELP mailflow_queue_size Messages in the queue.\n# TYPE mailflow_queue_size gauge\nmailflow_queue_size {queue_size}\n"
        );
        let _ = write!(
            out,
            "# HELP mailflow_queue_deliveries Deliveries queued or in flight (a message counts once per destination).\n# TYPE mailflow_queue_deliveries gauge\nmailflow_queue_deliveries {deliveries}\n"
        );
        let _ = write!(
            out,
            "# HELP mailflow_destinations_suspended Destinations none of whose next hops answered, waiting out a backoff.\n# TYPE mailflow_destinations_suspended gauge\nmailflow_destinations_suspended {suspended}\n"
        );
        let _ = write!(
            out,
            "# HELP mailflow_queue_held_deliveries Deliveries an administrator holds (mailflow queue hold).\n# TYPE mailflow_queue_held_deliveries gauge\nmailflow_queue_held_deliveries {held}\n"
        );
        let _ = write!(
            out,
            "# HELP mailflow_queue_oldest_message_age_seconds Age of the oldest queued message (0 when the queue is empty).\n# TYPE mailflow_queue_oldest_message_age_seconds gauge\nmailflow_queue_oldest_message_age_seconds {oldest_age}\n"
        );
        // An info metric (value 1, the fact in a label), as Prometheus's own `*_build_info`:
        // relays running one compiled rule set show one digest.
        let _ = write!(
            out,
            "# HELP mailflow_rules_info The rule set in use: SHA-256 of its compiled form.\n# TYPE mailflow_rules_info gauge\nmailflow_rules_info{{digest=\"{}\"}} 1\n",
            label(&self.rules_digest())
        );
        self.shadow.render(&mut out);
        out.push_str("# HELP mailflow_certificate_expiry_timestamp_seconds When each certificate the relay presents expires (notAfter, Unix time).\n# TYPE mailflow_certificate_expiry_timestamp_seconds gauge\n");
        if let Ok(certs) = self.certificates.lock() {
            for c in certs.iter() {
                let _ = writeln!(
                    out,
                    "mailflow_certificate_expiry_timestamp_seconds{{connector=\"{}\",kind=\"{}\",path=\"{}\"}} {}",
                    label(&c.connector),
                    c.kind,
                    label(&c.path),
                    c.not_after
                );
            }
        }
        out.push_str("# HELP mailflow_rule_hits_total Messages each transport rule fired on.\n# TYPE mailflow_rule_hits_total counter\n");
        if let Ok(hits) = self.rule_hits.lock() {
            for (rule, n) in hits.iter() {
                let _ = writeln!(
                    out,
                    "mailflow_rule_hits_total{{rule=\"{}\"}} {n}",
                    label(rule)
                );
            }
        }
        out
    }
}

/// A label value in the exposition format's escaping.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_escaped_rule_names() {
        let m = Metrics::default();
        Metrics::inc(&m.received);
        Metrics::inc(&m.srs_refused);
        m.rules_fired(&["drop \"relay\"".to_string()]);
        let text = m.render(QueueGauges {
            messages: 3,
            deliveries: 4,
            suspended: 1,
            held: 2,
            oldest_age: 70,
        });
        assert!(text.contains("mailflow_messages_received_total 1\n"));
        assert!(text.contains("mailflow_queue_size 3\n"));
        assert!(text.contains("mailflow_srs_refused_total 1\n"));
        assert!(text.contains("mailflow_dkim_signed_total 0\n"));
        assert!(text.contains("mailflow_queue_deliveries 4\n"));
        assert!(text.contains("mailflow_destinations_suspended 1\n"));
        assert!(text.contains("mailflow_queue_held_deliveries 2\n"));
        assert!(text.contains("mailflow_queue_oldest_message_age_seconds 70\n"));
        assert!(text.contains("mailflow_rule_hits_total{rule=\"drop \\\"relay\\\"\"} 1\n"));
        m.set_rules_digest("ab12");
        let text = m.render(QueueGauges::default());
        assert!(text.contains(
            "# TYPE mailflow_rules_info gauge\nmailflow_rules_info{digest=\"ab12\"} 1\n"
        ));
        m.set_rules_digest("cd34");
        let text = m.render(QueueGauges::default());
        assert_eq!(text.matches("mailflow_rules_info{").count(), 1);
        assert!(text.contains("mailflow_rules_info{digest=\"cd34\"} 1\n"));
    }

    #[test]
    fn renders_one_expiry_series_per_certificate_and_replaces_them_on_reload() {
        let m = Metrics::default();
        let cert = |connector: &str, kind, path: &str, not_after| CertificateExpiry {
            connector: connector.into(),
            kind,
            path: path.into(),
            not_after,
        };
        m.set_certificates(vec![
            cert(
                "Internet",
                "server",
                "/etc/mailflow/edge.pem",
                1_803_859_200,
            ),
            cert("To \"T1\"", "client", "C:\\certs\\t1.pem", 1_900_000_000),
        ]);
        let text = m.render(QueueGauges::default());
        assert!(text.contains("# TYPE mailflow_certificate_expiry_timestamp_seconds gauge\n"));
        assert!(text.contains("mailflow_certificate_expiry_timestamp_seconds{connector=\"Internet\",kind=\"server\",path=\"/etc/mailflow/edge.pem\"} 1803859200\n"), "{text}");
        assert!(text.contains("mailflow_certificate_expiry_timestamp_seconds{connector=\"To \\\"T1\\\"\",kind=\"client\",path=\"C:\\\\certs\\\\t1.pem\"} 1900000000\n"), "{text}");
        m.set_certificates(vec![cert(
            "Internet",
            "server",
            "/etc/mailflow/edge.pem",
            1_900_000_000,
        )]);
        let text = m.render(QueueGauges::default());
        assert_eq!(
            text.matches("mailflow_certificate_expiry_timestamp_seconds{")
                .count(),
            1
        );
        assert!(text.contains("path=\"/etc/mailflow/edge.pem\"} 1900000000\n"));
    }
}
