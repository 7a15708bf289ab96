//! The formatter's safety net: the output must parse to the same syntax tree as the input
//! (spans aside) and carry the same comments in the same order, or nothing is written.

use super::comments::comments;
use crate::ast::{
    Action, ActionKind, Block, Expectation, ExpectationKind, File, Item, Predicate, PredicateKind,
    Rewrite, Rule, RuleStatement, Setting, Test, Text,
};
use crate::parse::parse_file;
use crate::source::{FileId, Span};

/// Why an output was refused, in words for a bug report.
pub(super) fn check(input: &str, tree: &File, output: &str) -> Result<(), String> {
    let (out_tree, diags) = parse_file(FileId(0), output);
    if let Some(d) = diags.first() {
        return Err(format!("the output does not parse: {}", d.message));
    }
    let before = without_spans(tree);
    let after = without_spans(&out_tree);
    if before.len() != after.len() {
        return Err(format!(
            "the output has {} items instead of {}",
            after.len(),
            before.len()
        ));
    }
    if let Some((i, _)) = before
        .iter()
        .zip(&after)
        .enumerate()
        .find(|(_, (a, b))| a != b)
    {
        return Err(format!("item {} reads differently after formatting", i + 1));
    }
    let a: Vec<&str> = comments(input).iter().map(|c| c.text(input)).collect();
    let b: Vec<&str> = comments(output).iter().map(|c| c.text(output)).collect();
    if a != b {
        let first = a
            .iter()
            .zip(&b)
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(b.len()));
        return Err(format!(
            "the comments changed ({} before, {} after; first difference at comment {})",
            a.len(),
            b.len(),
            first + 1
        ));
    }
    Ok(())
}

/// A file's items with every span cleared: two texts that say the same thing give equal
/// results, however they are laid out.
pub fn without_spans(file: &File) -> Vec<Item> {
    let mut items = file.items.clone();
    for item in &mut items {
        clear_item(item);
    }
    items
}

const NOWHERE: Span = Span {
    file: FileId(0),
    start: 0,
    end: 0,
};

fn clear(t: &mut Text) {
    t.span = NOWHERE;
}

fn clear_all(ts: &mut [Text]) {
    ts.iter_mut().for_each(clear);
}

fn clear_item(item: &mut Item) {
    match item {
        Item::Include(t) | Item::ImportRewrites(t) => clear(t),
        Item::AcceptedDomain {
            domain,
            kind,
            verify,
            span,
        } => {
            clear(domain);
            kind.iter_mut().for_each(clear);
            if let Some(v) = verify {
                *v = NOWHERE;
            }
            *span = NOWHERE;
        }
        Item::ReceiveConnector(b) | Item::SendConnector(b) | Item::DkimKey(b) => clear_block(b),
        Item::Authentication { settings, span } => {
            settings.iter_mut().for_each(clear_setting);
            *span = NOWHERE;
        }
        Item::Recipient {
            deleted,
            kind,
            block,
        } => {
            if let Some(d) = deleted {
                *d = NOWHERE;
            }
            clear(kind);
            clear_block(block);
        }
        Item::Rewrite(r) => clear_rewrite(r),
        Item::Rule(r) => clear_rule(r),
        Item::Test(t) => clear_test(t),
    }
}

fn clear_block(b: &mut Block) {
    let Block {
        name,
        settings,
        span,
    } = b;
    clear(name);
    settings.iter_mut().for_each(clear_setting);
    *span = NOWHERE;
}

fn clear_setting(s: &mut Setting) {
    let Setting { name, groups, span } = s;
    clear(name);
    for g in groups {
        clear_all(g);
    }
    *span = NOWHERE;
}

fn clear_rewrite(r: &mut Rewrite) {
    let Rewrite {
        name,
        internal,
        external,
        outbound_only,
        exceptions,
        span,
    } = r;
    name.iter_mut().for_each(clear);
    clear(internal);
    clear(external);
    if let Some(o) = outbound_only {
        *o = NOWHERE;
    }
    clear_all(exceptions);
    *span = NOWHERE;
}

fn clear_rule(r: &mut Rule) {
    let Rule {
        name,
        statements,
        span,
    } = r;
    clear(name);
    for st in statements {
        match st {
            RuleStatement::Priority(t) | RuleStatement::Mode(t) => clear(t),
            RuleStatement::Condition(p) | RuleStatement::Exception(p) => clear_predicate(p),
            RuleStatement::Action(a) => clear_action(a),
        }
    }
    *span = NOWHERE;
}

fn clear_predicate(p: &mut Predicate) {
    let Predicate { kind, span } = p;
    match kind {
        PredicateKind::SenderScope(t) | PredicateKind::SizeOver(t) => clear(t),
        PredicateKind::Address { field, op, values } => {
            clear(field);
            clear(op);
            clear_all(values);
        }
        PredicateKind::Header { name, op, values } => {
            clear(name);
            clear(op);
            clear_all(values);
        }
        PredicateKind::Subject { op, values } => {
            clear(op);
            clear_all(values);
        }
        PredicateKind::ClientIp(v)
        | PredicateKind::Connector(v)
        | PredicateKind::OriginatingOrg(v) => clear_all(v),
        PredicateKind::Auth {
            method,
            results,
            domains,
            for_kw,
        } => {
            clear(method);
            clear_all(results);
            clear_all(domains);
            if let Some(f) = for_kw {
                *f = NOWHERE;
            }
        }
    }
    *span = NOWHERE;
}

fn clear_action(a: &mut Action) {
    let Action { kind, span } = a;
    match kind {
        ActionKind::Stop | ActionKind::Delete | ActionKind::Disconnect => {}
        ActionKind::Reject {
            code,
            enhanced,
            text,
        } => {
            code.iter_mut().for_each(clear);
            enhanced.iter_mut().for_each(clear);
            text.iter_mut().for_each(clear);
        }
        ActionKind::RedirectTo(v)
        | ActionKind::AddRecipient(v)
        | ActionKind::CopyTo(v)
        | ActionKind::BlindCopyTo(v) => clear_all(v),
        ActionKind::SetHeader(a, b) => {
            clear(a);
            clear(b);
        }
        ActionKind::RemoveHeader(t)
        | ActionKind::PrependSubject(t)
        | ActionKind::Quarantine(t)
        | ActionKind::Log(t) => clear(t),
    }
    *span = NOWHERE;
}

fn clear_test(t: &mut Test) {
    let Test {
        name,
        settings,
        expectations,
        span,
    } = t;
    clear(name);
    settings.iter_mut().for_each(clear_setting);
    expectations.iter_mut().for_each(clear_expectation);
    *span = NOWHERE;
}

fn clear_expectation(e: &mut Expectation) {
    let Expectation { kind, span } = e;
    match kind {
        ExpectationKind::Delivered { recipients, via } => {
            clear_all(recipients);
            via.iter_mut().for_each(clear);
        }
        ExpectationKind::Rejected {
            code,
            enhanced,
            recipients,
        } => {
            clear(code);
            enhanced.iter_mut().for_each(clear);
            clear_all(recipients);
        }
        ExpectationKind::Dropped(v)
        | ExpectationKind::Fired(v)
        | ExpectationKind::NotFired(v)
        | ExpectationKind::Recipients(v) => clear_all(v),
        ExpectationKind::MailFrom(t)
        | ExpectationKind::NoHeader(t)
        | ExpectationKind::AuthAs(t)
        | ExpectationKind::OriginatingOrg(t) => clear(t),
        ExpectationKind::Header(a, b) => {
            clear(a);
            clear(b);
        }
    }
    *span = NOWHERE;
}
