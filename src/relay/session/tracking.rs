//! Message tracking of received mail: the RECEIVE event (with what verifying Internet mail
//! found, as its source context), the transport rules that fired
//! (AGENTINFO), each recipient whose address changed (EXPAND, RESOLVE or REDIRECT, as the
//! evaluator says why) and each one dropped (DROP).

use super::Session;
use crate::auth::AuthResults;
use crate::eval::{Change, Fate, Message, Verdict};
use crate::model::AuthAs;
use crate::relay::metrics::Metrics;
use crate::relay::track::{Event, EventId};

impl Session {
    fn base_event(&self, id: EventId, source: &str, verdict: &Verdict, message: &Message) -> Event {
        let mut e = Event::new(id, source);
        e.client_ip = Some(self.peer.ip().to_string());
        e.server_ip = Some(self.listen.ip().to_string());
        e.connector_id = verdict.connector.clone();
        e.message_id = message.get("Message-ID");
        e.sender_address = verdict.mail_from.as_ref().map(ToString::to_string);
        e.message_subject = message.text("Subject");
        e.tenant_id = verdict.originating_org.clone();
        e.directionality = Some(
            if verdict.auth_as == AuthAs::Internal {
                "Originating"
            } else {
                "Incoming"
            }
            .to_string(),
        );
        e
    }

    pub(super) fn track_rules(&self, verdict: &Verdict, message: &Message) {
        for rule in &verdict.rules_fired {
            let mut e = self.base_event(EventId::AgentInfo, "AGENT", verdict, message);
            e.source_context = Some(format!("transport rule `{rule}`"));
            e.recipient_address = verdict
                .recipients
                .iter()
                .map(|r| r.address.to_string())
                .collect();
            self.shared.tracker.log(e);
        }
    }

    pub(super) fn track_received(
        &self,
        verdict: &Verdict,
        message: &Message,
        id: Option<&str>,
        size: u64,
        auth: Option<&AuthResults>,
    ) {
        let mut e = self.base_event(EventId::Receive, "SMTP", verdict, message);
        e.internal_message_id = id.map(str::to_string);
        e.source_context = auth.map(AuthResults::summary);
        e.total_bytes = Some(size);
        e.recipient_address = verdict
            .recipients
            .iter()
            .map(|r| r.original.to_string())
            .collect();
        e.recipient_count = Some(verdict.recipients.len());
        self.shared.tracker.log(e);
        self.track_rules(verdict, message);
        for r in &verdict.recipients {
            if r.address.key() != r.original.key() {
                let mut e = self.base_event(event_id(r.change), "ROUTING", verdict, message);
                e.internal_message_id = id.map(str::to_string);
                e.recipient_address = vec![r.address.to_string()];
                e.related_recipient_address = Some(r.original.to_string());
                self.shared.tracker.log(e);
            }
            if let Fate::Drop { reason } = &r.fate {
                Metrics::inc(&self.shared.metrics.dropped);
                let mut e = self.base_event(EventId::Drop, "AGENT", verdict, message);
                e.internal_message_id = id.map(str::to_string);
                e.recipient_address = vec![r.address.to_string()];
                e.source_context = Some(reason.clone());
                self.shared.tracker.log(e);
            }
        }
    }
}

/// Exchange's word for why a recipient's address changed. INVARIANT: the evaluator names
/// every change it makes; an address changed without a reason would be a rewrite's.
fn event_id(change: Option<Change>) -> EventId {
    match change {
        Some(Change::Expand) => EventId::Expand,
        Some(Change::Redirect) => EventId::Redirect,
        Some(Change::Resolve) | None => EventId::Resolve,
    }
}
