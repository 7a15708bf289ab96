//! Contacts, groups, mail users and their tombstones.

use super::settings::{Arity, Schema, Settings};
use super::values;
use super::{RefKind, Resolver};
use crate::ast::{Block, Text};
use crate::diagnostic::{Code, Diagnostic};
use crate::model::{Member, Recipient, RecipientKind, Spanned};
use crate::source::Span;

pub(super) const CONTACT: Schema = &[
    ("address", Arity::List),
    ("external", Arity::One),
    ("hidden", Arity::Flag),
];

pub(super) const GROUP: Schema = &[
    ("address", Arity::List),
    ("members", Arity::List),
    ("authenticated-senders-only", Arity::Flag),
    ("hidden", Arity::Flag),
];

impl Resolver<'_> {
    pub(super) fn recipient(&mut self, deleted: Option<Span>, kind: &Text, block: &Block) {
        let (kind, schema, what) = match kind.value.as_str() {
            "group" => (RecipientKind::Group, GROUP, "group"),
            "mail-user" => (RecipientKind::MailUser, CONTACT, "mail user"),
            _ => (RecipientKind::Contact, CONTACT, "contact"),
        };
        let s = Settings::read(what, &block.settings, schema, &mut self.diags);
        let addresses: Vec<_> = s
            .list("address")
            .into_iter()
            .filter_map(|t| {
                self.check(values::address(t))
                    .map(|a| Spanned::new(a, t.span))
            })
            .collect();
        if !s.has("address") {
            self.missing(block, what, "address", "address name@example.com");
        }
        let external = s.one("external").and_then(|t| {
            self.check(values::address(t))
                .map(|a| Spanned::new(a, t.span))
        });
        if kind != RecipientKind::Group && !s.has("external") {
            self.missing(
                block,
                what,
                "external",
                "external name@tenant.mail.onmicrosoft.com",
            );
        }
        let mut members = Vec::new();
        for t in s.list("members") {
            if t.quoted {
                self.reference(RefKind::Recipient, t);
                members.push(Spanned::new(Member::Name(t.value.clone()), t.span));
            } else if let Some(a) = self.check(values::address(t)) {
                members.push(Spanned::new(Member::Address(a), t.span));
            }
        }
        self.set.recipients.push(Recipient {
            kind,
            name: Spanned::new(block.name.value.clone(), block.name.span),
            span: block.span,
            deleted: deleted.is_some(),
            addresses,
            external,
            hidden: s.flag("hidden").is_some(),
            members,
            authenticated_senders_only: s.flag("authenticated-senders-only").is_some(),
        });
    }

    pub(super) fn missing(&mut self, block: &Block, what: &str, setting: &str, example: &str) {
        // A misspelt setting already reported is usually the missing one.
        if self.had_errors_in(block) {
            return;
        }
        self.diags.push(
            Diagnostic::new(
                Code::E017,
                format!("{what} `{}` has no `{setting}`", block.name.value),
            )
            .primary(block.name.span, format!("`{setting}` is required here"))
            .help(format!("add a line such as `{example}`")),
        );
    }
}
