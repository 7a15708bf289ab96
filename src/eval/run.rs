//! One evaluation's working state: the table, whether a trace is wanted, the message as the
//! stages change it and the record of each header change; the header edits every stage
//! shares go through here, so each one is recorded the same way.

use super::message::{Header, Message, fold};
use super::{Stage, Step};
use crate::compile::Table;
use crate::model::{Address, AuthAs};

/// What the stages share while one message is evaluated.
pub(super) struct Run<'t> {
    pub(super) table: &'t Table,
    pub(super) explain: bool,
    pub(super) trace: Vec<Step>,
    pub(super) message: Message,
    pub(super) header_changes: Vec<(String, Option<String>, Option<String>)>,
}

impl<'t> Run<'t> {
    /// A run over a copy of `message` (the verdict carries the changed message; without one,
    /// at RCPT time, an empty one).
    pub(super) fn new(table: &'t Table, explain: bool, message: Option<&Message>) -> Self {
        Run {
            table,
            explain,
            trace: Vec::new(),
            message: message.cloned().unwrap_or_default(),
            header_changes: Vec::new(),
        }
    }

    pub(super) fn step(&mut self, stage: Stage, text: impl Into<String>) {
        self.trace.push(Step {
            stage,
            text: text.into(),
        });
    }

    /// Sets a header where it stands (or at the end when absent); later copies are removed.
    /// The value is folded to keep lines within the limit (it is often an unfolded one, made
    /// longer).
    pub(super) fn set_header(&mut self, name: &str, value: &str) {
        let new = Header::new(name, &fold(name, &format!(" {value}")));
        self.replace_header(name, |_| new, value.to_string());
    }

    /// Replaces the first field called `name` with what `change` makes of it (or of a new
    /// empty field when there is none, added at the end) and removes later copies; records
    /// the change with `after` as the new value.
    pub(super) fn replace_header(
        &mut self,
        name: &str,
        change: impl FnOnce(&Header) -> Header,
        after: String,
    ) {
        let before = self.message.get(name);
        let headers = &mut self.message.headers;
        match headers
            .iter()
            .position(|h| h.name().eq_ignore_ascii_case(name))
        {
            Some(i) => {
                let mut seen = 0;
                headers.retain(|h| {
                    let same = h.name().eq_ignore_ascii_case(name);
                    seen += usize::from(same);
                    !same || seen == 1
                });
                if let Some(slot) = headers.get_mut(i) {
                    *slot = change(slot);
                }
            }
            None => headers.push(change(&Header::new(name, ""))),
        }
        self.header_changes
            .push((name.to_string(), before, Some(after)));
    }

    pub(super) fn remove_header(&mut self, name: &str) -> bool {
        let before = self.message.get(name);
        let n = self.message.headers.len();
        self.message
            .headers
            .retain(|h| !h.name().eq_ignore_ascii_case(name));
        let removed = self.message.headers.len() != n;
        if removed {
            self.header_changes.push((name.to_string(), before, None));
        }
        removed
    }

    /// Rewrites the addresses in some headers with `f`, recording each change. Only the
    /// addr-specs change; every other byte of the field stays as it arrived.
    pub(super) fn rewrite_headers(
        &mut self,
        names: &[&str],
        stage: Stage,
        mut f: impl FnMut(&Address) -> Option<(Address, String)>,
    ) {
        let mut notes = Vec::new();
        let explain = self.explain;
        for h in &mut self.message.headers {
            if !names.iter().any(|n| h.name().eq_ignore_ascii_case(n)) {
                continue;
            }
            let rewritten = h.rewrite_addresses(|a| {
                let addr = parse_address(a)?;
                let (new, entry) = f(&addr)?;
                if explain {
                    notes.push(format!("{}: {a} -> {new} (entry `{entry}`)", h.name()));
                }
                Some(address_text(&new))
            });
            if let Some((new, _)) = rewritten {
                let before = h.unfolded();
                *h = new;
                self.header_changes
                    .push((h.name().to_string(), Some(before), Some(h.unfolded())));
            }
        }
        for n in notes {
            self.step(stage, format!("header {n}"));
        }
    }
}

/// Reads `local@domain` from header text (a quoted local part in its canonical form, as
/// SMTP's: `"John.Smith"` is `John.Smith`).
pub(super) fn parse_address(text: &str) -> Option<Address> {
    let (local, domain) = text.rsplit_once('@')?;
    if local.is_empty() || domain.is_empty() || domain.contains(['<', '>', ' ', '\r', '\n']) {
        return None;
    }
    Some(Address {
        local: Address::canonical_local(local).into_owned(),
        domain: domain.to_ascii_lowercase(),
    })
}

/// `local@domain` in one allocation of the right size (`to_string` grows its buffer part by
/// part, and this runs for every address a message's rules or rewrites look at).
pub(super) fn address_text(a: &Address) -> String {
    let mut text = String::with_capacity(a.local.len() + 1 + a.domain.len());
    text.push_str(&a.local);
    text.push('@');
    text.push_str(&a.domain);
    text
}

/// An AuthAs level as Exchange writes it in its header.
pub(super) fn auth_word(a: AuthAs) -> &'static str {
    match a {
        AuthAs::Internal => "Internal",
        AuthAs::Anonymous => "Anonymous",
        AuthAs::Partner => "Partner",
    }
}
