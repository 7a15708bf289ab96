//! PowerShell command lines as administrators paste them: prompts (`[PS] C:\>`, `PS C:\>`)
//! stripped, backtick and pipe continuations joined, curly quotes and en-dashes read as
//! PowerShell reads them, and each statement split into commands, parameters and values
//! whose spans point into the original file. No command is run; meaning is `exchange`'s.

use crate::diagnostic::{Code, Diagnostic};
use crate::source::{FileId, Span};

/// What kind of value a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// A bare word: `fctest`, `0.0.0.0:25`, `*`.
    Bare,
    /// A quoted string; `expandable` when it is double-quoted and mentions `$`.
    Quoted {
        /// Holds `$variable` or `$(...)` references to expand.
        expandable: bool,
    },
    /// `$name`, possibly with a member access (`$cert.Issuer`).
    Variable {
        /// `$x.Property`: the value of a property mailflow cannot know.
        member: bool,
    },
    /// `$(...)`, `(...)` or `@(...)`: an expression mailflow does not evaluate.
    Subexpression,
    /// `@{add=...}`: a hashtable.
    Hashtable,
    /// Template text such as `[EOP remote Ranges]` or `<ServerName>`.
    Placeholder,
}

/// One value as written, decoded (quotes and escapes removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Its kind.
    pub kind: TokenKind,
    /// The decoded text (for variables, the name without `$`).
    pub text: String,
    /// Where it is.
    pub span: Span,
}

/// A parameter value: one token or a comma-separated list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// The tokens, in order.
    pub items: Vec<Token>,
    /// The whole value.
    pub span: Span,
}

/// A command's argument, before binding to parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Element {
    /// `-Name`, `-Name:value`.
    Param {
        /// The name without the dash.
        name: String,
        /// The dash and the name.
        span: Span,
        /// The value after a colon.
        value: Option<Value>,
    },
    /// A value (positional, or the value of the parameter before it).
    Value(Value),
}

/// One command of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The cmdlet name as written.
    pub name: String,
    /// Where the name is.
    pub name_span: Span,
    /// Its arguments.
    pub elements: Vec<Element>,
}

/// What a statement does.
#[derive(Debug, Clone)]
pub enum Body {
    /// `Get-X id | Set-X ...`: one or more commands.
    Pipeline(Vec<Command>),
    /// A value on its own, such as `$group.EmailAddresses` (PowerShell prints it).
    Expression(Value),
    /// Lines that cannot be read; the finding says why.
    Broken(Box<Diagnostic>),
}

/// One statement: a line (or lines joined by continuations) up to `;` or the end.
#[derive(Debug, Clone)]
pub struct Statement {
    /// `$x = ...`: the variable assigned.
    pub assign: Option<Token>,
    /// The commands or the expression.
    pub body: Body,
    /// The whole statement.
    pub span: Span,
    /// The statement's text with prompts removed and lines joined by spaces.
    pub text: String,
    /// The first and last line (1-based) of the file it spans.
    pub lines: (usize, usize),
    /// The original lines, verbatim (prompts included).
    pub original: Vec<String>,
}

/// A file read as statements.
#[derive(Debug, Default)]
pub struct Script {
    /// The statements in order.
    pub statements: Vec<Statement>,
    /// Lines that could not be read, and notes about how lines were joined.
    pub diagnostics: Vec<Diagnostic>,
}

#[derive(Debug, Clone, PartialEq)]
enum Raw {
    Tok(Token),
    Param {
        name: String,
        span: Span,
        value: Option<Token>,
    },
    Comma(Span),
    Pipe(Span),
    Semi,
    Assign(Span),
}

/// A logical line being gathered: its raw tokens and where it came from.
struct Logical {
    raw: Vec<Raw>,
    /// The first error met while reading its lines.
    broken: Option<Diagnostic>,
    start: usize,
    end: usize,
    text: String,
    lines: (usize, usize),
    original: Vec<String>,
}

const DOUBLE_QUOTES: [char; 4] = ['"', '“', '”', '„'];
const SINGLE_QUOTES: [char; 4] = ['\'', '‘', '’', '‚'];
const DASHES: [char; 4] = ['-', '–', '—', '―'];

/// The most statements one file may hold. Importing costs about 1.5 KB of memory per
/// statement (its tokens, its finding, its place in the rendered and re-checked rule set), and
/// a statement can be two bytes (`)` and a newline): without a count, a 128 MiB file could
/// take 100 GB. 200,000 statements (four times the largest benchmark) stay near 300 MB.
pub const MAX_STATEMENTS: usize = 200_000;

/// Reads `text` (the contents of `file`) as PowerShell statements.
pub fn parse(file: FileId, text: &str) -> Script {
    let mut script = Script::default();
    let mut logical: Vec<Logical> = Vec::new();
    let mut continuing = false;
    let mut offset = 0;
    for (index, raw_line) in text.split_inclusive('\n').enumerate() {
        let line_no = index + 1;
        let line_start = offset;
        offset += raw_line.len();
        let line = raw_line.trim_end_matches(['\n', '\r']);
        let (body_start, prompted) = strip_prompt(line);
        let body = line.get(body_start..).unwrap_or("");
        let trimmed = body.trim_start();
        let lead = body.len() - trimmed.len();
        let at = line_start + body_start + lead;
        if trimmed.is_empty() || (trimmed.starts_with('#') && !continuing) {
            continuing = false;
            continue;
        }
        // A blog or a terminal wrapped a long command: the next line starts with the
        // value or parameter that belongs to it. PowerShell would not join them.
        // A new prompt always starts a new command.
        if prompted {
            continuing = false;
        }
        let wrapped = !continuing
            && !prompted
            && trimmed.starts_with(|c: char| {
                DOUBLE_QUOTES.contains(&c)
                    || SINGLE_QUOTES.contains(&c)
                    || DASHES.contains(&c)
                    || c == ','
            })
            && logical.last().is_some_and(|l| l.lines.1 + 1 == line_no);
        if wrapped {
            script.diagnostics.push(
                Diagnostic::new(
                    Code::W042,
                    "this line continues the command above without a backtick",
                )
                .primary(
                    Span::new(file, at, at + trimmed.len()),
                    "read as part of the line above",
                )
                .help("end the line above with a backtick (`) or join the lines"),
            );
        }
        let mut lexer = Lexer {
            file,
            text: trimmed,
            base: at,
            out: Vec::new(),
            diags: Vec::new(),
            continued: false,
        };
        lexer.run();
        let error = lexer.diags.first().cloned();
        let next_is_command = text
            .get(offset..)
            .and_then(|rest| rest.lines().next())
            .is_some_and(|next| {
                starts_with_command(next.get(strip_prompt(next).0..).unwrap_or(""))
            });
        // A trailing comma continues a list, unless the next line is plainly a new command
        // (a list item never looks like `New-Thing`).
        let ends_open = lexer.continued
            || matches!(lexer.out.last(), Some(Raw::Pipe(_)))
            || (matches!(lexer.out.last(), Some(Raw::Comma(_))) && !next_is_command);
        let full = logical.len() >= MAX_STATEMENTS;
        match logical.last_mut() {
            Some(l) if continuing || wrapped => {
                if l.broken.is_none() {
                    l.broken = error;
                }
                l.raw.append(&mut lexer.out);
                l.end = at + trimmed.len();
                l.text.push(' ');
                l.text.push_str(trimmed.trim_end_matches('`').trim_end());
                l.lines.1 = line_no;
                l.original.push(line.to_string());
            }
            _ if full => {
                script.diagnostics.push(
                    Diagnostic::new(
                        Code::E076,
                        format!("the file holds more than {MAX_STATEMENTS} statements"),
                    )
                    .primary(
                        Span::new(file, at, at + trimmed.len()),
                        "nothing from here on is read",
                    )
                    .help("split the file and import the parts one by one"),
                );
                break;
            }
            _ => logical.push(Logical {
                raw: lexer.out,
                broken: error,
                start: at,
                end: at + trimmed.len(),
                text: trimmed.trim_end_matches('`').trim_end().to_string(),
                lines: (line_no, line_no),
                original: vec![line.to_string()],
            }),
        }
        continuing = ends_open;
    }
    for l in logical {
        let span = Span::new(file, l.start, l.end);
        let mut push = |assign, body| {
            script.statements.push(Statement {
                assign,
                body,
                span,
                text: l.text.clone(),
                lines: l.lines,
                original: l.original.clone(),
            })
        };
        if let Some(d) = l.broken {
            push(None, Body::Broken(Box::new(d)));
            continue;
        }
        for part in l.raw.split(|r| *r == Raw::Semi) {
            if part.is_empty() {
                continue;
            }
            match statement(part, span) {
                Ok((assign, body)) => push(assign, body),
                Err(d) => push(None, Body::Broken(Box::new(d))),
            }
        }
    }
    script
}

/// The byte where the command starts after a prompt, and whether there was one.
fn strip_prompt(line: &str) -> (usize, bool) {
    let trimmed = line.trim_start();
    let lead = line.len() - trimmed.len();
    let rest = if let Some(r) = trimmed.strip_prefix("[PS]") {
        r
    } else if let Some(r) = trimmed.strip_prefix("PS") {
        r
    } else {
        return (0, false);
    };
    // `PS>` or `PS C:\Users\admin>`: a path without spaces (or nothing) and `>`.
    let after_ps = rest.trim_start();
    let Some(gt) = after_ps.find('>') else {
        return (0, false);
    };
    let path = after_ps.get(..gt).unwrap_or("");
    let looks_like_path = path.is_empty()
        || (path.len() >= 2 && path.as_bytes().get(1) == Some(&b':') && !path.contains(' '));
    if !looks_like_path || (rest.len() == after_ps.len() && !path.is_empty()) {
        return (0, false);
    }
    let consumed = trimmed.len() - after_ps.len() + gt + 1;
    (lead + consumed, true)
}

struct Lexer<'a> {
    file: FileId,
    text: &'a str,
    base: usize,
    out: Vec<Raw>,
    diags: Vec<Diagnostic>,
    continued: bool,
}

impl Lexer<'_> {
    fn span(&self, start: usize, end: usize) -> Span {
        Span::new(self.file, self.base + start, self.base + end)
    }

    fn char_at(&self, i: usize) -> Option<char> {
        self.text.get(i..).and_then(|s| s.chars().next())
    }

    fn run(&mut self) {
        let mut i = 0;
        while let Some(c) = self.char_at(i) {
            if c.is_whitespace() {
                i += c.len_utf8();
                continue;
            }
            match c {
                '#' => return,
                '`' if self.text.get(i + 1..).is_some_and(|r| r.trim().is_empty()) => {
                    self.continued = true;
                    return;
                }
                '|' => {
                    self.out.push(Raw::Pipe(self.span(i, i + 1)));
                    i += 1;
                }
                ',' => {
                    self.out.push(Raw::Comma(self.span(i, i + 1)));
                    i += 1;
                }
                ';' => {
                    self.out.push(Raw::Semi);
                    i += 1;
                }
                '=' => {
                    self.out.push(Raw::Assign(self.span(i, i + 1)));
                    i += 1;
                }
                c if DASHES.contains(&c)
                    && self
                        .char_at(i + c.len_utf8())
                        .is_some_and(|n| n.is_ascii_alphabetic()) =>
                {
                    i = self.param(i, c.len_utf8());
                }
                // A closing bracket here closes nothing: `value` would read an empty word
                // and stop before it again, and the line would never end (`)` alone once
                // filled 23 GB with empty tokens).
                ')' | '}' => {
                    self.diags.push(
                        Diagnostic::new(Code::E076, format!("`{c}` closes nothing"))
                            .primary(self.span(i, i + 1), "no bracket before it is open")
                            .help("remove it, or open the bracket it closes"),
                    );
                    return;
                }
                _ => match self.value(i) {
                    // Every value read moves on; one that did not would loop forever.
                    Some((tok, next)) if next > i => {
                        self.out.push(Raw::Tok(tok));
                        i = next;
                    }
                    _ => return,
                },
            }
        }
    }

    fn param(&mut self, start: usize, dash: usize) -> usize {
        let mut i = start + dash;
        while let Some(c) = self.char_at(i) {
            if c.is_ascii_alphanumeric() || c == '_' {
                i += 1;
            } else {
                break;
            }
        }
        let name = self.text.get(start + dash..i).unwrap_or("").to_string();
        let span = self.span(start, i);
        let mut value = None;
        if self.char_at(i) == Some(':') {
            i += 1;
            while self.char_at(i).is_some_and(|c| c == ' ' || c == '\t') {
                i += 1;
            }
            if let Some((tok, next)) = self.value(i) {
                value = Some(tok);
                i = next;
            }
        }
        self.out.push(Raw::Param { name, span, value });
        i
    }

    /// Reads one value starting at `i`; `None` ends the line (after an error).
    fn value(&mut self, i: usize) -> Option<(Token, usize)> {
        let c = self.char_at(i)?;
        if DOUBLE_QUOTES.contains(&c) || SINGLE_QUOTES.contains(&c) {
            return self.quoted(i, c);
        }
        if c == '$' {
            return Some(self.variable(i));
        }
        if c == '@' && matches!(self.char_at(i + 1), Some('{' | '(')) {
            let kind = if self.char_at(i + 1) == Some('{') {
                TokenKind::Hashtable
            } else {
                TokenKind::Subexpression
            };
            return self.balanced(i, i + 1, kind);
        }
        if c == '(' {
            return self.balanced(i, i, TokenKind::Subexpression);
        }
        if c == '[' || c == '<' {
            let close = if c == '[' { ']' } else { '>' };
            if let Some(rel) = self.text.get(i..).and_then(|r| r.find(close)) {
                let inner = self.text.get(i + 1..i + rel).unwrap_or("");
                if c == '<' || inner.contains(' ') {
                    let end = i + rel + 1;
                    return Some((
                        Token {
                            kind: TokenKind::Placeholder,
                            text: self.text.get(i..end).unwrap_or("").to_string(),
                            span: self.span(i, end),
                        },
                        end,
                    ));
                }
            }
        }
        Some(self.bare(i))
    }

    fn bare(&mut self, start: usize) -> (Token, usize) {
        let mut i = start;
        let mut text = String::new();
        while let Some(c) = self.char_at(i) {
            if c.is_whitespace() || matches!(c, '|' | ',' | ';' | ')' | '}') {
                break;
            }
            if c == '`' {
                if let Some(n) = self.char_at(i + 1) {
                    text.push(n);
                    i += 1 + n.len_utf8();
                    continue;
                }
            }
            // `$group=Get-UnifiedGroup`: an assignment right after a word ends it.
            if c == '=' && text.is_empty() {
                break;
            }
            text.push(c);
            i += c.len_utf8();
        }
        (
            Token {
                kind: TokenKind::Bare,
                text,
                span: self.span(start, i),
            },
            i,
        )
    }

    fn variable(&mut self, start: usize) -> (Token, usize) {
        if self.char_at(start + 1) == Some('(') {
            if let Some(found) = self.balanced(start, start + 1, TokenKind::Subexpression) {
                return found;
            }
        }
        let mut i = start + 1;
        let name_start = i;
        while let Some(c) = self.char_at(i) {
            if c.is_alphanumeric() || c == '_' || c == ':' {
                i += c.len_utf8();
            } else {
                break;
            }
        }
        let name = self.text.get(name_start..i).unwrap_or("").to_string();
        let mut member = false;
        while self.char_at(i) == Some('.') && self.char_at(i + 1).is_some_and(|c| c.is_alphabetic())
        {
            member = true;
            i += 1;
            while self
                .char_at(i)
                .is_some_and(|c| c.is_alphanumeric() || c == '_')
            {
                i += 1;
            }
        }
        (
            Token {
                kind: TokenKind::Variable { member },
                text: name,
                span: self.span(start, i),
            },
            i,
        )
    }

    /// A bracketed expression from `start` whose opening bracket is at `open`.
    fn balanced(&mut self, start: usize, open: usize, kind: TokenKind) -> Option<(Token, usize)> {
        let (o, c) = match self.char_at(open) {
            Some('{') => ('{', '}'),
            _ => ('(', ')'),
        };
        let mut depth = 0usize;
        let mut i = open;
        while let Some(ch) = self.char_at(i) {
            if ch == o {
                depth += 1;
            } else if ch == c {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    let end = i + 1;
                    return Some((
                        Token {
                            kind,
                            text: self.text.get(start..end).unwrap_or("").to_string(),
                            span: self.span(start, end),
                        },
                        end,
                    ));
                }
            }
            i += ch.len_utf8();
        }
        self.diags.push(
            Diagnostic::new(Code::E076, format!("`{o}` is never closed"))
                .primary(self.span(start, self.text.len()), "opened here")
                .help(format!("close it with `{c}` on the same line")),
        );
        None
    }

    fn quoted(&mut self, start: usize, open: char) -> Option<(Token, usize)> {
        let double = DOUBLE_QUOTES.contains(&open);
        let quotes: &[char] = if double {
            &DOUBLE_QUOTES
        } else {
            &SINGLE_QUOTES
        };
        let mut i = start + open.len_utf8();
        let mut text = String::new();
        let mut expandable = false;
        while let Some(c) = self.char_at(i) {
            if quotes.contains(&c) {
                // A doubled quote is one quote character.
                if let Some(n) = self
                    .char_at(i + c.len_utf8())
                    .filter(|n| quotes.contains(n))
                {
                    text.push(n);
                    i += c.len_utf8() + n.len_utf8();
                    continue;
                }
                let end = i + c.len_utf8();
                return Some((
                    Token {
                        kind: TokenKind::Quoted { expandable },
                        text,
                        span: self.span(start, end),
                    },
                    end,
                ));
            }
            if double && c == '`' {
                if let Some(n) = self.char_at(i + 1) {
                    text.push(match n {
                        'n' => '\n',
                        't' => '\t',
                        other => other,
                    });
                    i += 1 + n.len_utf8();
                    continue;
                }
            }
            if double
                && c == '$'
                && self
                    .char_at(i + 1)
                    .is_some_and(|n| n.is_alphabetic() || n == '(' || n == '{' || n == '_')
            {
                expandable = true;
            }
            text.push(c);
            i += c.len_utf8();
        }
        self.diags.push(
            Diagnostic::new(Code::E076, "this string is never closed")
                .primary(self.span(start, self.text.len()), "the quote opened here")
                .help("close the string on the same line"),
        );
        None
    }
}

fn statement(raw: &[Raw], line: Span) -> Result<(Option<Token>, Body), Diagnostic> {
    let (assign, rest) = match raw {
        [Raw::Tok(t), Raw::Assign(_), rest @ ..]
            if matches!(t.kind, TokenKind::Variable { member: false }) =>
        {
            (Some(t.clone()), rest)
        }
        _ => (None, raw),
    };
    let mut commands = Vec::new();
    for part in rest.split(|r| matches!(r, Raw::Pipe(_))) {
        match part.first() {
            Some(Raw::Tok(t)) if t.kind == TokenKind::Bare && is_command_name(&t.text) => {
                commands.push(Command {
                    name: t.text.clone(),
                    name_span: t.span,
                    elements: elements(part.get(1..).unwrap_or(&[]))?,
                });
            }
            Some(Raw::Tok(_)) if commands.is_empty() && rest.len() == part.len() => {
                let els = elements(part)?;
                if let [Element::Value(v)] = els.as_slice() {
                    return Ok((assign, Body::Expression(v.clone())));
                }
                return Err(not_a_command(part, line));
            }
            _ => return Err(not_a_command(part, line)),
        }
    }
    Ok((assign, Body::Pipeline(commands)))
}

fn not_a_command(part: &[Raw], line: Span) -> Diagnostic {
    let span = part
        .iter()
        .find_map(|r| match r {
            Raw::Tok(t) => Some(t.span),
            Raw::Param { span, .. } | Raw::Comma(span) | Raw::Pipe(span) | Raw::Assign(span) => {
                Some(*span)
            }
            Raw::Semi => None,
        })
        .unwrap_or(line);
    Diagnostic::new(Code::E076, "this is not a powershell command")
        .primary(
            span,
            "a command starts with a cmdlet name such as `New-TransportRule`",
        )
        .help("keep only command lines in the file; output and prose can go in `#` comments")
}

/// Whether a line starts with a cmdlet name followed by a space or its end.
fn starts_with_command(line: &str) -> bool {
    let first = line.split_whitespace().next().unwrap_or("");
    first.contains('-') && is_command_name(first)
}

/// `Verb-Noun`, or one of the formatting aliases people pipe into.
fn is_command_name(word: &str) -> bool {
    const ALIASES: [&str; 9] = [
        "fl", "ft", "select", "where", "sort", "?", "%", "foreach", "gm",
    ];
    if ALIASES.iter().any(|a| a.eq_ignore_ascii_case(word)) {
        return true;
    }
    let mut parts = word.splitn(2, '-');
    let verb = parts.next().unwrap_or("");
    let noun = parts.next().unwrap_or("");
    !verb.is_empty()
        && !noun.is_empty()
        && verb.chars().all(|c| c.is_ascii_alphabetic())
        && noun.chars().all(|c| c.is_ascii_alphanumeric())
}

fn elements(raw: &[Raw]) -> Result<Vec<Element>, Diagnostic> {
    let mut out: Vec<Element> = Vec::new();
    let mut i = 0;
    while let Some(r) = raw.get(i) {
        match r {
            Raw::Param { name, span, value } => {
                let mut value = value.clone().map(|t| Value {
                    span: t.span,
                    items: vec![t],
                });
                i += 1;
                // `-Param:a,b`: the list continues after the colon value.
                if let Some(v) = value.as_mut() {
                    i = list_tail(raw, i, v)?;
                }
                out.push(Element::Param {
                    name: name.clone(),
                    span: *span,
                    value,
                });
            }
            Raw::Tok(t) => {
                let mut v = Value {
                    span: t.span,
                    items: vec![t.clone()],
                };
                i = list_tail(raw, i + 1, &mut v)?;
                out.push(Element::Value(v));
            }
            Raw::Comma(span) | Raw::Assign(span) | Raw::Pipe(span) => {
                return Err(Diagnostic::new(
                    Code::E076,
                    format!("`{}` does not follow a value", raw_char(r)),
                )
                .primary(*span, "nothing before it to list or assign")
                .help("remove it, or put a value before it"));
            }
            Raw::Semi => i += 1,
        }
    }
    Ok(out)
}

fn raw_char(r: &Raw) -> &'static str {
    match r {
        Raw::Comma(_) => ",",
        Raw::Assign(_) => "=",
        Raw::Pipe(_) => "|",
        _ => ";",
    }
}

/// Appends `, value` pairs starting at `i` to `v`; returns the index after them.
fn list_tail(raw: &[Raw], mut i: usize, v: &mut Value) -> Result<usize, Diagnostic> {
    while let Some(Raw::Comma(comma)) = raw.get(i) {
        match raw.get(i + 1) {
            Some(Raw::Tok(t)) => {
                v.span = v.span.to(t.span);
                v.items.push(t.clone());
                i += 2;
            }
            _ => {
                return Err(Diagnostic::new(Code::E076, "a list ends with `,`")
                    .primary(*comma, "no value after this comma")
                    .help("remove the comma, or add the missing value"));
            }
        }
    }
    Ok(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Statement {
        let s = parse(FileId(0), text);
        assert!(s.diagnostics.is_empty(), "{:?}", s.diagnostics);
        assert_eq!(s.statements.len(), 1, "{:?}", s.statements);
        s.statements.into_iter().next().unwrap()
    }

    fn commands(s: &Statement) -> &[Command] {
        match &s.body {
            Body::Pipeline(c) => c,
            _ => panic!("not a pipeline"),
        }
    }

    #[test]
    fn prompts_curly_quotes_dashes_and_colon_values() {
        let s = one("[PS] C:\\>Set-MailContact x –Name “From EOP” -Hidden:$TRUE");
        let c = &commands(&s)[0];
        assert_eq!(c.name, "Set-MailContact");
        assert_eq!(c.elements.len(), 4);
        let Element::Param { name, value, .. } = &c.elements[3] else {
            panic!()
        };
        assert_eq!(name, "Hidden");
        assert_eq!(value.as_ref().unwrap().items[0].text, "TRUE");
        let Element::Value(v) = &c.elements[2] else {
            panic!()
        };
        assert_eq!(v.items[0].text, "From EOP");
    }

    #[test]
    fn lists_pipelines_continuations_and_assignments() {
        let s = one(
            "PS C:\\> Get-ReceiveConnector \"From EOP\" | Set-ReceiveConnector `\n  -AuthMechanism ExternalAuthoritative, Tls",
        );
        assert_eq!(s.lines, (1, 2));
        let c = commands(&s);
        assert_eq!(c.len(), 2);
        let Element::Value(v) = &c[1].elements[1] else {
            panic!()
        };
        assert_eq!(v.items.len(), 2);
        let s = one("$group=Get-UnifiedGroup -Identity Officers");
        assert_eq!(s.assign.unwrap().text, "group");
    }

    #[test]
    fn placeholders_hashtables_and_errors() {
        let s = one("New-X -RemoteIPRanges [EOP remote Ranges] -E:@{add=a@b.c}");
        let c = &commands(&s)[0];
        let Element::Value(v) = &c.elements[1] else {
            panic!()
        };
        assert_eq!(v.items[0].kind, TokenKind::Placeholder);
        let s = parse(
            FileId(0),
            "New-X -Name \"open\nName Alias\nNew-Y -A b,\nNew-Z\n",
        );
        let broken: Vec<Code> = s
            .statements
            .iter()
            .filter_map(|s| match &s.body {
                Body::Broken(d) => Some(d.code),
                _ => None,
            })
            .collect();
        assert_eq!(broken, [Code::E076, Code::E076, Code::E076]);
        assert_eq!(s.statements.len(), 4);
    }

    #[test]
    fn a_stray_closing_bracket_ends_the_line_with_an_error() {
        for text in [")", "x }", "New-X -A:) -B c", "New-X -A }", "  )\n)\n"] {
            let s = parse(FileId(0), text);
            assert!(
                s.statements
                    .iter()
                    .all(|st| matches!(&st.body, Body::Broken(d) if d.code == Code::E076)),
                "{text:?}: {:?}",
                s.statements
            );
            assert!(!s.statements.is_empty(), "{text:?}");
        }
    }

    #[test]
    fn statements_are_counted() {
        let s = parse(FileId(0), &")\n".repeat(MAX_STATEMENTS + 10));
        assert_eq!(s.statements.len(), MAX_STATEMENTS);
        assert!(
            s.diagnostics[0]
                .message
                .contains("more than 200000 statements")
        );
    }

    #[test]
    fn a_wrapped_line_joins_with_a_warning() {
        let s = parse(FileId(0), "New-X -A\n\"v\" -B c\n");
        assert_eq!(s.statements.len(), 1);
        assert_eq!(s.diagnostics[0].code, Code::W042);
    }
}
