//! From logical lines and comments to text: lists filled up to [`WIDTH`] columns, comments put
//! back where they were (above the line that followed them, or at the end of the line they
//! ended), and blank lines kept (one at most) or added around blocks.

use super::comments::Comment;
use super::layout::{Kind, Logical};

/// Lists wrap before a value that would end past this column.
pub const WIDTH: usize = 100;
/// Spaces per level: a block's statements, and a list's continuation lines.
pub const INDENT: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The first line of an item (`block` when it opens or is a block) or of a statement.
    First { block: bool },
    /// A list's continuation line.
    Cont,
    /// A closing brace.
    Close,
    /// A comment on a line of its own.
    Comment,
}

#[derive(Debug)]
struct Line {
    indent: usize,
    text: String,
    /// A comment at the end of the line (an index into the comments).
    trailing: Option<usize>,
    /// The source had a blank line before it.
    blank_before: bool,
    role: Role,
    /// 0 at top level, 1 inside a block.
    depth: usize,
    /// For an item's first line: whether a block's brace stays open after it.
    opens: bool,
}

struct Printer<'a> {
    text: &'a str,
    comments: &'a [Comment],
    next_comment: usize,
    last_end: usize,
    lines: Vec<Line>,
}

/// Lays out and prints. `eol` is the line ending to write.
pub(super) fn print(text: &str, logical: &[Logical], comments: &[Comment], eol: &str) -> String {
    let mut p = Printer {
        text,
        comments,
        next_comment: 0,
        last_end: 0,
        lines: Vec::new(),
    };
    for (i, l) in logical.iter().enumerate() {
        // A block item followed by its statements or brace, rather than written `{}`.
        let opens = matches!(l.kind, Kind::Item { block: true })
            && logical
                .get(i + 1)
                .is_some_and(|n| !matches!(n.kind, Kind::Item { .. }));
        p.logical(l, opens);
    }
    p.flush_comments(usize::MAX, None);
    let blanks = blank_lines(&p.lines);
    let mut out = String::new();
    for (line, blank) in p.lines.iter().zip(blanks) {
        if blank {
            out.push_str(eol);
        }
        out.extend(std::iter::repeat_n(' ', line.indent));
        out.push_str(&line.text);
        if let Some(c) = line.trailing.and_then(|i| comments.get(i)) {
            out.push(' ');
            out.push_str(c.text(text));
        }
        out.push_str(eol);
    }
    out
}

impl Printer<'_> {
    fn logical(&mut self, l: &Logical, opens: bool) {
        let base = l.depth * INDENT;
        let role = match l.kind {
            Kind::Item { block } => Role::First { block },
            Kind::Statement => Role::First { block: false },
            Kind::Close => Role::Close,
        };
        let mut current: Option<(Line, usize)> = None;
        for seg in &l.segs {
            let width = seg.text.chars().count();
            if let Some((line, end)) = current.as_mut() {
                let forced = self.comment_between(*end, seg.start);
                let used = line.indent + line.text.chars().count();
                if !forced && used + 1 + width <= WIDTH {
                    line.text.push(' ');
                    line.text.push_str(&seg.text);
                    *end = seg.end;
                    continue;
                }
            }
            let (indent, role) = match current.take() {
                Some((line, end)) => {
                    self.push(line, end);
                    (base + INDENT, Role::Cont)
                }
                None => (base, role),
            };
            // Comments above a brace or inside a list belong to the block or the statement.
            let at = match role {
                Role::Close => (base + INDENT, 1),
                Role::Cont => (indent, 1),
                _ => (indent, l.depth),
            };
            self.flush_comments(seg.start, Some(at));
            let blank_before = self.blank_between(self.last_end, seg.start);
            current = Some((
                Line {
                    indent,
                    text: seg.text.clone(),
                    trailing: None,
                    blank_before,
                    role,
                    depth: l.depth,
                    opens,
                },
                seg.end,
            ));
        }
        if let Some((line, end)) = current {
            self.push(line, end);
        }
    }

    fn push(&mut self, line: Line, end: usize) {
        self.lines.push(line);
        self.last_end = end;
    }

    /// Puts out the comments before `offset`: a trailing one at the end of the last line, one
    /// on its own line at `at` (indent, depth), or at top level after the last item.
    fn flush_comments(&mut self, offset: usize, at: Option<(usize, usize)>) {
        while let Some(c) = self.comments.get(self.next_comment) {
            if c.start >= offset {
                break;
            }
            let index = self.next_comment;
            self.next_comment += 1;
            let free_line = self
                .lines
                .last_mut()
                .filter(|l| l.trailing.is_none() && l.role != Role::Comment);
            if c.trailing {
                if let Some(line) = free_line {
                    line.trailing = Some(index);
                    self.last_end = c.end;
                    continue;
                }
            }
            let (indent, depth) = at.unwrap_or((0, 0));
            let blank_before = self.blank_between(self.last_end, c.start);
            self.lines.push(Line {
                indent,
                text: c.text(self.text).to_string(),
                trailing: None,
                blank_before,
                role: Role::Comment,
                depth,
                opens: false,
            });
            self.last_end = c.end;
        }
    }

    fn comment_between(&self, from: usize, to: usize) -> bool {
        self.comments
            .get(self.next_comment..)
            .unwrap_or(&[])
            .iter()
            .take_while(|c| c.start < to)
            .any(|c| c.start >= from)
    }

    /// Whether the source has an empty line between two offsets.
    fn blank_between(&self, from: usize, to: usize) -> bool {
        let gap = self.text.get(from..to).unwrap_or("");
        let breaks =
            gap.matches('\n').count() + gap.matches('\r').count() - gap.matches("\r\n").count();
        breaks >= 2
    }
}

/// Which lines get a blank line above them. Inside blocks the source's blank lines are kept
/// (one at most; none after `{` or before `}`); at top level a block also always gets one
/// before its leading comments and one after it.
fn blank_lines(lines: &[Line]) -> Vec<bool> {
    // Whether a top-level line starts a run of comments (or is the item) leading up to a
    // block without a blank line between.
    let mut leads_block = vec![false; lines.len()];
    let mut next: Option<(bool, bool)> = None; // (leads a block, had a blank before it)
    for (i, line) in lines.iter().enumerate().rev() {
        if line.depth != 0 {
            continue;
        }
        let leads = match line.role {
            Role::First { block } => block,
            Role::Comment => next.is_some_and(|(leads, blank)| leads && !blank),
            Role::Cont | Role::Close => continue,
        };
        if let Some(slot) = leads_block.get_mut(i) {
            *slot = leads;
        }
        next = Some((leads, line.blank_before));
    }
    // The role of the first line at or after each line that is not a comment.
    let mut following = vec![None; lines.len()];
    let mut code = None;
    for (i, line) in lines.iter().enumerate().rev() {
        if line.role != Role::Comment {
            code = Some(line.role);
        }
        if let Some(slot) = following.get_mut(i) {
            *slot = code;
        }
    }
    let mut out = Vec::with_capacity(lines.len());
    // The last top-level unit: Some(block) for an item, None for a comment.
    let mut previous_unit: Option<Option<bool>> = None;
    let mut after_open = false;
    for (i, line) in lines.iter().enumerate() {
        let following_code = following.get(i).copied().flatten();
        let blank = match line.role {
            _ if i == 0 || after_open => false,
            Role::Cont | Role::Close => false,
            Role::Comment if following_code == Some(Role::Cont) => false,
            _ if line.depth == 1 => line.blank_before,
            _ => {
                let forced = match previous_unit {
                    Some(Some(true)) => true,
                    Some(Some(false)) => leads_block.get(i).copied().unwrap_or(false),
                    _ => false,
                };
                line.blank_before || forced
            }
        };
        out.push(blank);
        after_open = matches!(line.role, Role::First { block: true }) && line.opens;
        if line.depth == 0 {
            match line.role {
                Role::First { block } => previous_unit = Some(Some(block)),
                Role::Comment => previous_unit = Some(None),
                Role::Cont | Role::Close => {}
            }
        }
    }
    out
}
