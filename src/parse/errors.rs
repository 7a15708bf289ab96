//! Turns pest's errors into `E001` diagnostics that speak the language's words
//! ("expected an action such as `stop` or `delete`") rather than grammar rule names.

use super::Rule;
use crate::diagnostic::{Code, Diagnostic};
use crate::source::{FileId, Span};
use pest::error::{Error, ErrorVariant, InputLocation};

pub(super) fn syntax_error(
    file: FileId,
    offset: usize,
    chunk: &str,
    err: &Error<Rule>,
) -> Diagnostic {
    let pos = match err.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    let found = found_at(chunk, pos);
    // Cover at least the character at the error (which may be several bytes long).
    let first_char = chunk
        .get(pos..)
        .and_then(|r| r.chars().next())
        .map_or(0, char::len_utf8);
    let end = (pos + found.len().max(first_char))
        .min(chunk.len())
        .max(pos);
    let span = Span::new(file, offset + pos, offset + end);
    let (expected, hint) = match &err.variant {
        ErrorVariant::ParsingError { positives, .. } => describe(positives),
        ErrorVariant::CustomError { message } => (message.clone(), None),
    };
    let found_text = if found.is_empty() {
        if pos >= chunk.trim_end().len() {
            "the end of the item".to_string()
        } else {
            "the end of the line".to_string()
        }
    } else {
        format!("`{found}`")
    };
    let mut d = Diagnostic::new(
        Code::E001,
        format!("expected {expected}, found {found_text}"),
    )
    .primary(span, format!("expected {expected} here"));
    d =
        d.help(hint.unwrap_or_else(|| {
            "see docs/language.md for the syntax of this construct".to_string()
        }));
    d
}

/// The token at `pos`, up to white space (at most 30 bytes).
fn found_at(chunk: &str, pos: usize) -> &str {
    let rest = chunk.get(pos..).unwrap_or("");
    let end = rest
        .char_indices()
        .find(|(_, c)| c.is_whitespace())
        .map_or(rest.len(), |(i, _)| i);
    let mut end = end.min(30);
    while !rest.is_char_boundary(end) {
        end -= 1;
    }
    rest.get(..end).unwrap_or("")
}

#[derive(PartialEq, Eq, PartialOrd, Ord, Clone, Copy)]
enum Category {
    TopLevel,
    Action,
    Predicate,
    Expectation,
}

fn category(r: Rule) -> Option<Category> {
    use Rule::*;
    Some(match r {
        kw_include | kw_import | kw_accepted_domain | kw_receive_connector | kw_send_connector
        | kw_rewrite | kw_rule | kw_test | kw_deleted | recipient_kind | include
        | import_rewrites | accepted_domain | receive_connector | send_connector | rewrite
        | transport_rule | recipient | test | kw_dkim_key | kw_authentication | dkim_key
        | authentication => Category::TopLevel,
        kw_stop | kw_delete | kw_reject | kw_redirect_to | kw_add_recipient | kw_copy_to
        | kw_blind_copy_to | kw_set_header | kw_remove_header | kw_prepend_subject
        | kw_quarantine | kw_disconnect | kw_log => Category::Action,
        kw_sender | kw_subject | kw_size | kw_client_ip | kw_connector | address_field
        | auth_method => Category::Predicate,
        kw_delivered | kw_rejected | kw_dropped | kw_fired | kw_not_fired | kw_mail_from
        | kw_recipients | kw_auth_as | kw_no_header => Category::Expectation,
        _ => return None,
    })
}

fn phrase(r: Rule) -> String {
    use Rule::*;
    match r {
        string | name => "a quoted string".into(),
        atom => "a value".into(),
        list => "a list of values".into(),
        auth_results => {
            "a result (`pass`, `fail`, `softfail`, `neutral`, `none`, `temperror` or `permerror`)"
                .into()
        }
        arrow => "`->`".into(),
        args | group => "a value".into(),
        setting | setting_name => "a setting".into(),
        scope => "`inside` or `outside`".into(),
        text_op => "`contains`, `contains-words`, `matches` or `domain-is`".into(),
        outbound_only => "`outbound-only`".into(),
        exceptions => "`except`".into(),
        EOI => "the end of the file".into(),
        other => {
            let dbg = format!("{other:?}");
            match dbg.strip_prefix("kw_") {
                Some(k) => format!("`{}`", k.replace('_', "-")),
                None => dbg.replace('_', " "),
            }
        }
    }
}

/// A readable "expected ..." phrase and, for big choices, a hint listing them.
fn describe(positives: &[Rule]) -> (String, Option<String>) {
    let mut phrases: Vec<String> = Vec::new();
    let mut cats: Vec<Category> = Vec::new();
    // `dkim for DOMAIN` parses only so that `check` can ask for the missing results; a
    // condition cut short wants a result, not `for`.
    let results_missing = positives.contains(&Rule::auth_results);
    for &r in positives
        .iter()
        .filter(|&&r| !(results_missing && r == Rule::kw_for))
    {
        match category(r) {
            Some(c) => {
                if !cats.contains(&c) {
                    cats.push(c);
                }
            }
            None => {
                let p = phrase(r);
                if !phrases.contains(&p) {
                    phrases.push(p);
                }
            }
        }
    }
    let mut hint = None;
    cats.sort();
    for c in cats {
        let (p, h) = match c {
            Category::TopLevel => (
                "a top-level item",
                "top-level items start in column 0 with `accepted-domain`, `receive-connector`, `send-connector`, `rewrite`, `import rewrites`, `rule`, `contact`, `group`, `mail-user`, `deleted`, `test`, `include`, `dkim-key` or `authentication`",
            ),
            Category::Action => (
                "an action",
                "a rule's lines are `priority N`, `mode enforce|audit`, `if <condition>`, `except <condition>` or an action: `stop`, `delete`, `reject`, `redirect-to`, `add-recipient`, `copy-to`, `blind-copy-to`, `set-header`, `remove-header`, `prepend-subject`, `quarantine`, `disconnect`, `log`",
            ),
            Category::Predicate => (
                "a condition",
                "conditions are `sender inside|outside`, `recipient|sender contains|contains-words|matches|domain-is ...`, `header NAME contains ...`, `subject contains ...`, `size over SIZE`, `client-ip in RANGES`, `connector \"NAME\"`, `originating-org DOMAIN`, `spf|dkim|dmarc|arc RESULT, ...` (`dkim` also `for DOMAIN, ...`)",
            ),
            Category::Expectation => (
                "an expectation",
                "expectations are `delivered`, `rejected CODE`, `dropped`, `fired`, `not-fired`, `mail-from`, `recipients`, `header`, `no-header`, `auth-as`, `originating-org`",
            ),
        };
        phrases.push(p.to_string());
        hint.get_or_insert_with(|| h.to_string());
    }
    let text = match phrases.len() {
        0 => "something else".to_string(),
        1 => phrases.remove(0),
        _ => {
            let last = phrases.pop().unwrap_or_default();
            format!("{} or {last}", phrases.join(", "))
        }
    };
    (text, hint)
}
