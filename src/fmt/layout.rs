//! From the pest parse tree to logical lines: each item, block header, statement and closing
//! brace becomes one line of tokens copied verbatim from the source, cut into segments after
//! each list comma (the only places a line may break).

use super::comments::Comment;
use crate::parse::{Grammar, Rule};
use pest::Parser;
use pest::iterators::{Pair, Pairs};

/// A run of tokens that stays on one line: joined by single spaces, a list comma glued on.
#[derive(Debug, Clone)]
pub(super) struct Seg {
    pub text: String,
    /// Source byte range, first token to last (or to a block's brace).
    pub start: usize,
    pub end: usize,
}

/// What a logical line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A top-level item's first line; `block` for connectors, recipients, rules, tests,
    /// `dkim-key` and `authentication`.
    Item { block: bool },
    /// A statement inside a block.
    Statement,
    /// A block's closing brace.
    Close,
}

/// One logical line: it breaks into several physical lines only between segments.
#[derive(Debug, Clone)]
pub(super) struct Logical {
    pub kind: Kind,
    /// 0 at top level, 1 inside a block.
    pub depth: usize,
    pub segs: Vec<Seg>,
}

#[derive(Debug, Clone, Copy)]
struct Tok {
    start: usize,
    end: usize,
    /// Followed by a list comma.
    comma: bool,
}

/// The logical lines of a text that `parse_file` accepted. The text is parsed in one go and,
/// should that fail, chunk by chunk as `parse_file` may have done; an error means the two
/// parsers disagree.
pub(super) fn logical_lines(text: &str, comments: &[Comment]) -> Result<Vec<Logical>, String> {
    let mut out = Vec::new();
    match Grammar::parse(Rule::chunk, text) {
        Ok(pairs) => collect(text, 0, pairs, comments, &mut out),
        Err(_) => {
            for (start, end) in crate::parse::chunks(text) {
                let chunk = text.get(start..end).unwrap_or("");
                let pairs = Grammar::parse(Rule::chunk, chunk).map_err(|e| {
                    format!("the item at byte {start} no longer parses: {}", e.variant)
                })?;
                collect(text, start, pairs, comments, &mut out);
            }
        }
    }
    Ok(out)
}

fn collect(
    text: &str,
    offset: usize,
    mut pairs: Pairs<'_, Rule>,
    comments: &[Comment],
    out: &mut Vec<Logical>,
) {
    let Some(chunk) = pairs.next() else { return };
    for item in chunk.into_inner() {
        if item.as_rule() != Rule::EOI {
            self::item(text, offset, item, comments, out);
        }
    }
}

fn is_leaf(pair: &Pair<'_, Rule>) -> bool {
    pair.as_rule() == Rule::string || pair.clone().into_inner().next().is_none()
}

fn item(
    text: &str,
    offset: usize,
    pair: Pair<'_, Rule>,
    comments: &[Comment],
    out: &mut Vec<Logical>,
) {
    let block = matches!(
        pair.as_rule(),
        Rule::receive_connector
            | Rule::send_connector
            | Rule::recipient
            | Rule::transport_rule
            | Rule::test
            | Rule::dkim_key
            | Rule::authentication
    );
    if !block {
        let mut toks = Vec::new();
        flatten(offset, pair, &mut toks);
        out.push(Logical {
            kind: Kind::Item { block: false },
            depth: 0,
            segs: segments(text, &toks),
        });
        return;
    }
    let end = offset + pair.as_span().end();
    // INVARIANT: a block item's text ends with its closing brace.
    let close = end.saturating_sub(1);
    let mut header = Vec::new();
    let mut statements = Vec::new();
    for child in pair.into_inner() {
        if statements.is_empty() && is_leaf(&child) {
            flatten(offset, child, &mut header);
        } else {
            statements.push(child);
        }
    }
    let header_end = header.last().map_or(offset, |t| t.end);
    // Between the name and the first statement there is only white space and the brace.
    let open = text
        .get(header_end..close)
        .and_then(|gap| gap.find('{'))
        .map_or(header_end, |i| header_end + i);
    let mut seg = segments(text, &header).into_iter().next().unwrap_or(Seg {
        text: String::new(),
        start: offset,
        end: header_end,
    });
    let first_after = comments.partition_point(|c| c.start <= open);
    let comment_inside = comments.get(first_after).is_some_and(|c| c.start < close);
    if statements.is_empty() && !comment_inside {
        seg.text.push_str(" {}");
        seg.end = end;
        out.push(Logical {
            kind: Kind::Item { block: true },
            depth: 0,
            segs: vec![seg],
        });
        return;
    }
    seg.text.push_str(" {");
    seg.end = open + 1;
    out.push(Logical {
        kind: Kind::Item { block: true },
        depth: 0,
        segs: vec![seg],
    });
    for st in statements {
        let mut toks = Vec::new();
        flatten(offset, st, &mut toks);
        out.push(Logical {
            kind: Kind::Statement,
            depth: 1,
            segs: segments(text, &toks),
        });
    }
    out.push(Logical {
        kind: Kind::Close,
        depth: 0,
        segs: vec![Seg {
            text: "}".to_string(),
            start: close,
            end,
        }],
    });
}

/// The tokens of a pair in order; the elements of a list or of a setting's arguments are
/// followed by commas (all but the last).
fn flatten(offset: usize, pair: Pair<'_, Rule>, toks: &mut Vec<Tok>) {
    if is_leaf(&pair) {
        let s = pair.as_span();
        toks.push(Tok {
            start: offset + s.start(),
            end: offset + s.end(),
            comma: false,
        });
        return;
    }
    let separated = matches!(pair.as_rule(), Rule::list | Rule::args | Rule::auth_results);
    let mut children = pair.into_inner().peekable();
    while let Some(child) = children.next() {
        flatten(offset, child, toks);
        if separated && children.peek().is_some() {
            if let Some(last) = toks.last_mut() {
                last.comma = true;
            }
        }
    }
}

fn segments(text: &str, toks: &[Tok]) -> Vec<Seg> {
    let mut segs: Vec<Seg> = Vec::new();
    let mut open = false;
    for t in toks {
        let word = text.get(t.start..t.end).unwrap_or("");
        match segs.last_mut() {
            Some(seg) if open => {
                seg.text.push(' ');
                seg.text.push_str(word);
                seg.end = t.end;
            }
            _ => segs.push(Seg {
                text: word.to_string(),
                start: t.start,
                end: t.end,
            }),
        }
        open = true;
        if t.comma {
            if let Some(seg) = segs.last_mut() {
                seg.text.push(',');
            }
            open = false;
        }
    }
    segs
}
