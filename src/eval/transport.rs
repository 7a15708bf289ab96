//! The transport rules stage: the facts rules test (the sender and its scope, the recipients
//! as addressed, the subject and the headers some rule reads), the rules that fire, and
//! their actions applied to the message and the recipients.

use super::address_list::each_address;
use super::run::{Run, address_text, auth_word, parse_address};
use super::stages::Pending;
use super::{Change, Envelope, Fate, Stage};
use crate::compile::{Facts, Outcome, RuleIndex};
use crate::model::{Action, Address, AuthAs, DomainKind, ReceiveConnector, RuleMode, Scope};
use std::borrow::Cow;

/// Runs the transport rules and applies the actions of those that fire. Returns the names of
/// the rules that fired and whether the connection is to be dropped.
pub(super) fn transport_rules(
    run: &mut Run<'_>,
    env: &Envelope,
    auth: AuthAs,
    originating_org: Option<&str>,
    connector: &ReceiveConnector,
    recipients: &mut Vec<Pending>,
) -> (Vec<String>, bool) {
    if run.table.rules.rules().is_empty() {
        return (Vec::new(), false);
    }
    if recipients.iter().all(|p| p.fate.is_some()) {
        trace!(
            run,
            Stage::Rules,
            "not run: no recipient was accepted, so the message is refused before its data is sent"
        );
        return (Vec::new(), false);
    }
    let (sender_text, scope) = sender_and_scope(run, env, auth);
    let subject = run.message.text("Subject");
    // Only the headers some rule tests are unfolded.
    let unfolded: Vec<(String, String)> = run
        .message
        .headers
        .iter()
        .filter(|h| run.table.rules.tests_header(h.name()))
        .map(|h| (h.name().to_string(), h.text()))
        .collect();
    let facts = Facts {
        // Rules see the recipients as addressed (after inbound rewriting), as on an Edge
        // server, not what contacts and groups resolve them to.
        recipients: {
            let mut seen: Vec<&Address> = Vec::with_capacity(recipients.len());
            for p in recipients.iter().filter(|p| p.fate.is_none()) {
                let a: &Address = &p.addressed;
                if !seen.contains(&a) {
                    seen.push(a);
                }
            }
            seen.into_iter().map(address_text).collect()
        },
        sender: &sender_text,
        subject: subject.as_deref(),
        headers: unfolded
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect(),
        size: run.message.size(),
        client_ip: env.client_ip,
        connector: Some(connector.name.value.as_str()),
        originating_org,
        scope,
        auth: env.auth.as_ref(),
    };
    if run.table.rules.tests_auth() {
        // What the rules' `if dmarc fail` and the like are tested against.
        match &env.auth {
            Some(found) => trace!(run, Stage::Rules, "verification found {}", found.summary()),
            None => trace!(
                run,
                Stage::Rules,
                "the message was not verified (not Internet mail, or no `authserv-id`): spf, dkim, dmarc and arc read as none"
            ),
        }
    }
    let fired = matching_rules(run, &facts);
    drop(facts);
    apply_fired(run, &fired, recipients)
}

/// The sender rules see (the From header's address when there is one, else MAIL FROM), as
/// text, and whether it is inside the organization.
fn sender_and_scope(run: &mut Run<'_>, env: &Envelope, auth: AuthAs) -> (String, Scope) {
    let header_from = run.message.get("From").and_then(|v| {
        let mut first = None;
        each_address(v.as_bytes(), |_, a| {
            first.get_or_insert_with(|| parse_address(a));
        });
        first.flatten()
    });
    let sender = header_from.or_else(|| env.mail_from.clone());
    let sender_text = sender.as_ref().map(address_text).unwrap_or_default();
    let sender_domain_internal = sender.as_ref().is_some_and(|s| {
        matches!(
            run.table.domains.kind(&s.domain),
            Some(DomainKind::Authoritative | DomainKind::InternalRelay)
        )
    });
    let scope = if auth == AuthAs::Internal && sender_domain_internal {
        Scope::Inside
    } else {
        Scope::Outside
    };
    trace!(
        run,
        Stage::Rules,
        "the sender {} is {} the organization ({})",
        if sender_text.is_empty() {
            "<>"
        } else {
            &sender_text
        },
        if scope == Scope::Inside {
            "inside"
        } else {
            "outside"
        },
        match (auth == AuthAs::Internal, sender_domain_internal) {
            (true, true) => "internal connector, sender domain accepted".to_string(),
            (false, _) => format!("AuthAs {}", auth_word(auth)),
            (true, false) =>
                "the sender's domain is not authoritative or internal-relay".to_string(),
        }
    );
    (sender_text, scope)
}

/// The rules that match, in priority order: with a trace, every rule is evaluated and
/// explained; without, only those the index says can match are looked at.
fn matching_rules(run: &mut Run<'_>, facts: &Facts<'_>) -> Vec<usize> {
    let table = run.table;
    let index: &RuleIndex = &table.rules;
    if !run.explain {
        return index.run(facts);
    }
    let all = index.run_all(facts);
    for e in &all {
        let Some(rule) = index.rules().get(e.rule) else {
            continue;
        };
        let text = match &e.outcome {
            Outcome::Matched => format!("`{}` matched", rule.name),
            Outcome::ConditionFailed(i) => format!(
                "`{}` did not match: `{}` is not true",
                rule.name,
                rule.condition_text.get(*i).map_or("", String::as_str)
            ),
            Outcome::Excepted(i) => format!(
                "`{}` did not apply: the exception `{}` is true",
                rule.name,
                rule.exception_text.get(*i).map_or("", String::as_str)
            ),
        };
        run.step(Stage::Rules, text);
    }
    if all.len() < index.rules().len() {
        trace!(
            run,
            Stage::Rules,
            "{} later rule(s) not run: rule processing stopped",
            index.rules().len() - all.len(),
        );
    }
    all.into_iter()
        .filter(|e| e.outcome == Outcome::Matched)
        .map(|e| e.rule)
        .collect()
}

/// Applies the actions of the rules that fired (audit-mode rules only say what they would
/// do). Returns their names and whether the connection is to be dropped.
fn apply_fired(
    run: &mut Run<'_>,
    fired_ids: &[usize],
    recipients: &mut Vec<Pending>,
) -> (Vec<String>, bool) {
    let table = run.table;
    let index: &RuleIndex = &table.rules;
    let mut fired = Vec::new();
    let mut disconnect = false;
    for &id in fired_ids {
        let Some(rule) = index.rules().get(id) else {
            continue;
        };
        fired.push(rule.name.clone());
        let audit = rule.mode == RuleMode::Audit;
        for action in &rule.actions {
            if audit {
                trace!(
                    run,
                    Stage::Rules,
                    "`{}` (audit mode) would: {}",
                    rule.name,
                    describe(action),
                );
                continue;
            }
            apply(run, &rule.name, action, recipients, &mut disconnect);
        }
    }
    (fired, disconnect)
}

fn describe(a: &Action) -> String {
    let list = |v: &[Address]| {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    match a {
        Action::Stop => "stop processing rules".into(),
        Action::Delete => "delete the message".into(),
        Action::Reject(status) => format!("reject the message with {status}"),
        Action::RedirectTo(v) => format!("redirect the message to {}", list(v)),
        Action::AddRecipient(v) => format!("add {} to To", list(v)),
        Action::CopyTo(v) => format!("add {} to Cc", list(v)),
        Action::BlindCopyTo(v) => format!("blind-copy {}", list(v)),
        Action::SetHeader { name, value } => format!("set {name}: {value}"),
        Action::RemoveHeader(n) => format!("remove {n}"),
        Action::PrependSubject(t) => format!("prepend \"{t}\" to the subject"),
        Action::Quarantine(a) => format!("quarantine the message to {a}"),
        Action::Disconnect => "drop the connection".into(),
        Action::Log(t) => format!("log \"{t}\""),
    }
}

fn apply(
    run: &mut Run<'_>,
    rule: &str,
    action: &Action,
    recipients: &mut Vec<Pending>,
    disconnect: &mut bool,
) {
    trace!(run, Stage::Rules, "`{rule}`: {}", describe(action));
    let open = |recipients: &mut Vec<Pending>, fate: Fate| {
        for p in recipients.iter_mut().filter(|p| p.fate.is_none()) {
            p.fate = Some(fate.clone());
        }
    };
    let add = |recipients: &mut Vec<Pending>, list: &[Address]| {
        for a in list {
            recipients.push(Pending {
                original: Cow::Owned(a.clone()),
                addressed: Cow::Owned(a.clone()),
                forwarded: None,
                fate: None,
                verify: false,
                change: Some(Change::Redirect),
            });
        }
    };
    match action {
        Action::Stop | Action::Log(_) => {}
        Action::Delete => open(
            recipients,
            Fate::Drop {
                reason: format!("deleted by rule `{rule}`"),
            },
        ),
        Action::Reject(status) => open(recipients, Fate::Reject(status.clone())),
        Action::Disconnect => {
            *disconnect = true;
            open(
                recipients,
                Fate::Drop {
                    reason: format!("connection dropped by rule `{rule}`"),
                },
            );
        }
        Action::RedirectTo(list) => {
            recipients.retain(|p| p.fate.is_some());
            add(recipients, list);
        }
        Action::Quarantine(a) => {
            recipients.retain(|p| p.fate.is_some());
            add(recipients, std::slice::from_ref(a));
        }
        Action::AddRecipient(list) | Action::CopyTo(list) => {
            let header = if matches!(action, Action::AddRecipient(_)) {
                "To"
            } else {
                "Cc"
            };
            let extra = list
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            let after = match run.message.get(header) {
                Some(v) if !v.is_empty() => format!("{v}, {extra}"),
                _ => extra.clone(),
            };
            run.replace_header(header, |h| h.append_to_list(&extra), after);
            add(recipients, list);
        }
        Action::BlindCopyTo(list) => add(recipients, list),
        Action::SetHeader { name, value } => run.set_header(name, value),
        Action::RemoveHeader(name) => {
            run.remove_header(name);
        }
        Action::PrependSubject(text) => {
            let subject = run.message.get("Subject").unwrap_or_default();
            run.replace_header("Subject", |h| h.prepend(text), format!("{text}{subject}"));
        }
    }
}
