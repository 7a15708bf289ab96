//! What the language server knows about one open file: the `check` report of its rule set
//! (rooted at it, or at a nearby file that includes it; open files as their buffers hold
//! them, the others from disk), and the answers drawn from it: LSP diagnostics, definitions
//! and hover text.
//! Nothing here speaks the protocol's framing.

use super::position::LineIndex;
use crate::ast::Item;
use crate::check::{Report, check_text_with};
use crate::diagnostic::{Code, Diagnostic, Severity};
use crate::keywords;
pub use crate::load::canonical;
use crate::resolve::RefKind;
use crate::source::{FileId, Span};
use lsp_types::{
    DiagnosticRelatedInformation, DiagnosticSeverity, Location, NumberOrString, Position, Range,
    Url,
};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// At most this many rule files near a document are looked at for one that includes it.
const MAX_CANDIDATES: usize = 64;

/// One checked open document.
#[derive(Debug)]
pub struct Analysis {
    uri: Url,
    report: Report,
    /// The document's file in the report.
    doc: FileId,
    index: LineIndex,
    /// The other files its rule set read, canonical ([`Analysis::reads`]).
    read: HashSet<PathBuf>,
}

/// Where a name is defined: its name's span and the whole item's.
#[derive(Debug, Clone, Copy)]
struct Definition {
    name: Span,
    item: Span,
}

impl Analysis {
    /// Checks `text` as `mailflow check` would check the file it is the buffer of: as part of
    /// the rule set of a nearby file that includes it (one in its folder or the folder
    /// above), else as a rule set of its own. A `file:` URI makes includes resolve against
    /// the document's folder; other URIs (unsaved buffers) against the current one. `open`
    /// holds the text of the editor's other open files, read instead of the disk's copy.
    /// `nearby` remembers which rule files on disk include others, between calls.
    pub fn new(
        uri: &Url,
        text: &str,
        open: &HashMap<PathBuf, String>,
        nearby: &mut IncludeCache,
    ) -> Analysis {
        let (report, doc) = file_path(uri)
            .and_then(|path| within_including_rule_set(&path, text, open, nearby))
            .unwrap_or_else(|| {
                let name =
                    file_path(uri).map_or_else(|| uri.to_string(), |p| p.display().to_string());
                // The text checked is always the first file read.
                (check_text_with(&name, text, open.clone()), FileId(0))
            });
        let read = report
            .sources
            .iter()
            .filter(|(id, _)| *id != doc)
            .map(|(_, f)| canonical(&f.path))
            .collect();
        Analysis {
            uri: uri.clone(),
            report,
            doc,
            index: LineIndex::new(text),
            read,
        }
    }

    /// Whether the report read `path` (canonical) as part of the document's rule set.
    pub fn reads(&self, path: &Path) -> bool {
        self.read.contains(path)
    }

    /// The document's text, as checked.
    pub fn text(&self) -> &str {
        self.root_text()
    }

    fn root_text(&self) -> &str {
        self.report
            .sources
            .get(self.doc)
            .map_or("", |f| f.text.as_str())
    }

    /// The byte offset of a position in the document.
    pub fn offset(&self, pos: Position) -> usize {
        self.index.offset(self.root_text(), pos)
    }

    /// The LSP range of a span, in whichever file it is.
    fn range(&self, span: Span) -> Range {
        if span.file == self.doc {
            let text = self.root_text();
            return Range::new(
                self.index.position(text, span.start as usize),
                self.index.position(text, span.end as usize),
            );
        }
        let text = self
            .report
            .sources
            .get(span.file)
            .map_or("", |f| f.text.as_str());
        let index = LineIndex::new(text);
        Range::new(
            index.position(text, span.start as usize),
            index.position(text, span.end as usize),
        )
    }

    fn uri_of(&self, file: FileId) -> Option<Url> {
        if file == self.doc {
            return Some(self.uri.clone());
        }
        let path = self.report.sources.path(file);
        let path = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir().ok()?.join(path)
        };
        Url::from_file_path(path).ok()
    }

    fn location(&self, span: Span) -> Option<Location> {
        Some(Location::new(self.uri_of(span.file)?, self.range(span)))
    }

    /// The findings of `check` that concern the document, as LSP diagnostics. Findings in a
    /// file the document includes are shown on the `include` line that brings it in, with
    /// the real place as related information. When the document is part of another file's
    /// rule set, findings about the rest of that rule set are left to that file.
    pub fn diagnostics(&self) -> Vec<lsp_types::Diagnostic> {
        let entry_points = self.entry_points();
        self.report
            .diagnostics
            .iter()
            .filter(|d| {
                d.primary_span()
                    .is_none_or(|s| s.file == self.doc || entry_points.contains_key(&s.file))
            })
            .map(|d| self.convert(d, &entry_points))
            .collect()
    }

    fn convert(
        &self,
        d: &Diagnostic,
        entry_points: &HashMap<FileId, Span>,
    ) -> lsp_types::Diagnostic {
        let main = d.primary_label();
        let primary = d.primary_span();
        let mut related = Vec::new();
        let mut message = d.message.clone();
        let range = match primary {
            Some(s) if s.file == self.doc => self.range(s),
            Some(s) => {
                let (line, column) = self
                    .report
                    .sources
                    .get(s.file)
                    .map_or((0, 0), |f| f.line_col(s.start as usize));
                message = format!("{}:{line}:{column}: {message}", self.display_path(s.file));
                entry_points
                    .get(&s.file)
                    .map_or_else(Range::default, |inc| self.range(*inc))
            }
            None => Range::default(),
        };
        for (i, l) in d.labels.iter().enumerate() {
            if Some(i) == main && l.span.file == self.doc {
                if !l.message.is_empty() {
                    message.push_str(&format!("\n{}", l.message));
                }
                continue;
            }
            if let Some(location) = self.location(l.span) {
                related.push(DiagnosticRelatedInformation {
                    location,
                    message: if l.message.is_empty() {
                        "here".to_string()
                    } else {
                        l.message.clone()
                    },
                });
            }
        }
        if let Some(h) = &d.help {
            message.push_str(&format!("\nhelp: {h}"));
        }
        for n in &d.notes {
            message.push_str(&format!("\nnote: {n}"));
        }
        lsp_types::Diagnostic {
            range,
            severity: Some(match d.severity() {
                Severity::Error => DiagnosticSeverity::ERROR,
                Severity::Warning => DiagnosticSeverity::WARNING,
            }),
            code: Some(NumberOrString::String(d.code.id().to_string())),
            code_description: None,
            source: Some("mailflow".to_string()),
            message,
            related_information: (!related.is_empty()).then_some(related),
            tags: None,
            data: None,
        }
    }

    /// A file's path as shown in messages: relative to the document's folder when inside it.
    fn display_path(&self, file: FileId) -> String {
        let path = self.report.sources.path(file);
        let root = self.report.sources.path(self.doc);
        root.parent()
            .and_then(|base| path.strip_prefix(base).ok())
            .unwrap_or(path)
            .display()
            .to_string()
    }

    /// For each file read besides the document, the `include` or `import rewrites` in the
    /// document through which it came in (directly or through other included files).
    fn entry_points(&self) -> HashMap<FileId, Span> {
        let sources = &self.report.sources;
        // Who first names each file; the source map holds files in the order they were read.
        let mut named_by: HashMap<PathBuf, (FileId, Span)> = HashMap::new();
        for (id, f) in sources.iter() {
            if f.path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
            {
                continue;
            }
            let base = f.path.parent().unwrap_or(Path::new(""));
            let (parsed, _) = crate::parse::parse_file(id, &f.text);
            for item in &parsed.items {
                if let Item::Include(t) | Item::ImportRewrites(t) = item {
                    named_by
                        .entry(canonical(&base.join(&t.value)))
                        .or_insert((id, t.span));
                }
            }
        }
        let mut out = HashMap::new();
        for (id, f) in sources.iter().filter(|(id, _)| *id != self.doc) {
            let mut path = canonical(&f.path);
            // Bounded: include cycles are reported by `check`, not followed here.
            for _ in 0..=sources.iter().count() {
                let Some(&(by, span)) = named_by.get(&path) else {
                    break;
                };
                if by == self.doc {
                    out.insert(id, span);
                    break;
                }
                path = canonical(sources.path(by));
            }
        }
        out
    }

    /// The reference (`connector "X"`, `members "A"`, ...) at `offset` in the document.
    fn reference_at(&self, offset: usize) -> Option<(RefKind, &crate::ast::Text)> {
        self.report
            .rule_sets
            .iter()
            .flat_map(|s| s.references.iter())
            .find(|(_, t)| {
                t.span.file == self.doc
                    && (t.span.start as usize) <= offset
                    && offset < t.span.end as usize
            })
            .map(|(k, t)| (*k, t))
    }

    fn definitions(&self, kind: RefKind, name: &str) -> Vec<Definition> {
        let mut out = Vec::new();
        for set in &self.report.rule_sets {
            let r = &set.rules;
            let mut add = |n: &crate::model::Spanned<String>, item: Span| {
                if n.value == name {
                    out.push(Definition { name: n.span, item });
                }
            };
            match kind {
                RefKind::ReceiveConnector => r
                    .receive_connectors
                    .iter()
                    .for_each(|c| add(&c.name, c.span)),
                RefKind::SendConnector => {
                    r.send_connectors.iter().for_each(|c| add(&c.name, c.span))
                }
                RefKind::Recipient => r.recipients.iter().for_each(|c| add(&c.name, c.span)),
                RefKind::Rule => r.rules.iter().for_each(|c| add(&c.name, c.span)),
            }
        }
        out
    }

    /// Where the name at `pos` is defined (empty when there is no reference there).
    pub fn definition(&self, pos: Position) -> Vec<Location> {
        let Some((kind, text)) = self.reference_at(self.offset(pos)) else {
            return Vec::new();
        };
        self.definitions(kind, &text.value)
            .into_iter()
            .filter_map(|d| self.location(d.name))
            .collect()
    }

    /// Markdown for the thing at `pos`: a name reference, a diagnostic code or a keyword.
    pub fn hover(&self, pos: Position) -> Option<(String, Range)> {
        let offset = self.offset(pos);
        if let Some((kind, text)) = self.reference_at(offset) {
            return Some((
                self.reference_hover(kind, &text.value),
                self.range(text.span),
            ));
        }
        let text = self.root_text();
        let (start, end) = word_at(text, offset)?;
        let word = text.get(start..end)?;
        let range = self.range(Span::new(self.doc, start, end));
        if let Some(code) = diagnostic_code(word) {
            let i = code.info();
            let md = format!(
                "**{}** `{}`: {}\n\n{}",
                i.id, i.name, i.summary, i.explanation
            );
            return Some((md, range));
        }
        if context_at(text, start) != Context::Code {
            return None;
        }
        let k = keywords::lookup(word)?;
        Some((keywords::hover_markdown(k), range))
    }

    fn reference_hover(&self, kind: RefKind, name: &str) -> String {
        let defs = self.definitions(kind, name);
        let Some(d) = defs.first() else {
            return format!("no {} is named `{name}`", kind.describe());
        };
        let path = self.report.sources.path(d.item.file);
        let line = self.range(d.name).start.line + 1;
        let snippet = self.report.sources.snippet(d.item);
        const MAX_LINES: usize = 12;
        let mut shown: String = snippet
            .lines()
            .take(MAX_LINES)
            .collect::<Vec<_>>()
            .join("\n");
        if snippet.lines().count() > MAX_LINES {
            shown.push_str("\n  ...");
        }
        let file = path.file_name().map_or_else(
            || path.display().to_string(),
            |f| f.to_string_lossy().into_owned(),
        );
        format!(
            "{} `{name}`, defined in `{file}` line {line}\n```mailflow\n{shown}\n```",
            kind.describe()
        )
    }
}

/// The report of the largest rule set near `doc` that includes it (with `text` as its
/// content, and open files as `open` holds them), and the document's file in it.
fn within_including_rule_set(
    doc: &Path,
    text: &str,
    open: &HashMap<PathBuf, String>,
    nearby: &mut IncludeCache,
) -> Option<(Report, FileId)> {
    let key = canonical(doc);
    let folder = doc.parent()?;
    let mut candidates = Vec::new();
    for dir in [Some(folder), folder.parent()].into_iter().flatten() {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == crate::load::EXTENSION))
            .filter(|p| p.is_file() && canonical(p) != key)
            .collect();
        files.sort();
        candidates.extend(files);
    }
    let mut best: Option<(Report, FileId)> = None;
    for candidate in candidates.into_iter().take(MAX_CANDIDATES) {
        // Only a file with an include can bring the document in; most have none.
        let includes = match open.get(&canonical(&candidate)) {
            Some(t) => has_include(t),
            None => nearby.has_include(&candidate),
        };
        if !includes {
            continue;
        }
        let mut overlay = open.clone();
        overlay.insert(doc.to_path_buf(), text.to_string());
        let Ok(report) = crate::check::check_paths_with(&[candidate], overlay) else {
            continue;
        };
        let Some(id) = report
            .sources
            .iter()
            .find(|(_, f)| canonical(&f.path) == key)
            .map(|(id, _)| id)
        else {
            continue;
        };
        let files = report.sources.iter().count();
        if best
            .as_ref()
            .is_none_or(|(b, _)| b.sources.iter().count() < files)
        {
            best = Some((report, id));
        }
    }
    best
}

fn has_include(text: &str) -> bool {
    text.lines().any(|l| l.trim_start().starts_with("include"))
}

/// Whether rule files on disk have an `include`, remembered by size and modification time:
/// without it every keystroke would read every rule file in the folder and the one above.
#[derive(Debug, Default)]
pub struct IncludeCache {
    seen: HashMap<PathBuf, (Option<std::time::SystemTime>, u64, bool)>,
}

impl IncludeCache {
    /// At most this many files are remembered; past it the cache starts afresh.
    const MAX: usize = 4096;

    fn has_include(&mut self, path: &Path) -> bool {
        let Ok(md) = std::fs::metadata(path) else {
            return false;
        };
        let stamp = (md.modified().ok(), md.len());
        if let Some(&(modified, len, includes)) = self.seen.get(path) {
            if (modified, len) == stamp {
                return includes;
            }
        }
        let includes = crate::input::read_limited_string(path).is_ok_and(|t| has_include(&t));
        if self.seen.len() >= Self::MAX {
            self.seen.clear();
        }
        self.seen
            .insert(path.to_path_buf(), (stamp.0, stamp.1, includes));
        includes
    }
}

/// The path of a `file:` URI.
pub fn file_path(uri: &Url) -> Option<PathBuf> {
    if uri.scheme() == "file" {
        uri.to_file_path().ok()
    } else {
        None
    }
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// The bounds of the word (letters, digits, `-`, `_`) around `offset`.
fn word_at(text: &str, offset: usize) -> Option<(usize, usize)> {
    let offset = offset.min(text.len());
    let before = text.get(..offset)?;
    let after = text.get(offset..)?;
    let start = before
        .char_indices()
        .rev()
        .take_while(|(_, c)| is_word_char(*c))
        .last()
        .map_or(offset, |(i, _)| i);
    let end = offset
        + after
            .char_indices()
            .find(|(_, c)| !is_word_char(*c))
            .map_or(after.len(), |(i, _)| i);
    (start < end).then_some((start, end))
}

/// `E012` or `W030` as a registry code.
fn diagnostic_code(word: &str) -> Option<Code> {
    let b = word.as_bytes();
    let shaped = b.len() == 4
        && matches!(b.first(), Some(b'E' | b'W'))
        && b.iter().skip(1).all(u8::is_ascii_digit);
    if shaped { Code::lookup(word) } else { None }
}

#[derive(Debug, PartialEq, Eq)]
enum Context {
    Code,
    String,
    Comment,
}

/// Whether `offset` is in a string, a comment or plain code, judged from its line.
fn context_at(text: &str, offset: usize) -> Context {
    let line_start = text
        .get(..offset)
        .and_then(|t| t.rfind('\n'))
        .map_or(0, |i| i + 1);
    let mut in_string = false;
    let mut escaped = false;
    for c in text.get(line_start..offset).unwrap_or("").chars() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
        } else if c == '#' {
            return Context::Comment;
        }
    }
    if in_string {
        Context::String
    } else {
        Context::Code
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    const RULES: &str = "\
receive-connector \"Inbound from Office 365\" { tls off }
send-connector \"Out\" { address-space * }
accepted-domain contoso.com
contact \"Officers\" { address officers@contoso.com; external o@contoso.mail.onmicrosoft.com }
group \"Board\" { address board@contoso.com; members \"Officers\" }
# E012 is about addresses
rule \"Only O365\" {
  if connector \"Inbound from Office 365\"
  stop
}
accepted-domain contoso.mail.onmicrosoft.com internal-relay
";

    fn pos_of(text: &str, needle: &str, extra: usize) -> Position {
        let off = text.find(needle).unwrap() + extra;
        LineIndex::new(text).position(text, off)
    }

    fn analysis(text: &str) -> Analysis {
        Analysis::new(
            &Url::parse("untitled:rules.mailflow").unwrap(),
            text,
            &HashMap::new(),
            &mut IncludeCache::default(),
        )
    }

    #[test]
    fn include_cache_sees_a_file_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.mailflow");
        let mut cache = IncludeCache::default();
        std::fs::write(&path, "accepted-domain contoso.com\n").unwrap();
        assert!(!cache.has_include(&path));
        assert!(!cache.has_include(&path), "remembered");
        std::fs::write(&path, "include \"main.mailflow\"\n").unwrap();
        assert!(cache.has_include(&path), "a changed file is read again");
        std::fs::remove_file(&path).unwrap();
        assert!(!cache.has_include(&path));
    }

    #[test]
    fn clean_text_has_no_diagnostics() {
        assert!(analysis(RULES).diagnostics().is_empty());
    }

    #[test]
    fn definition_of_a_connector_and_a_member() {
        let a = analysis(RULES);
        let defs = a.definition(pos_of(RULES, "if connector \"Inb", 15));
        assert_eq!(defs.len(), 1);
        assert_eq!(defs[0].range.start, Position::new(0, 18));
        let defs = a.definition(pos_of(RULES, "members \"Off", 10));
        assert_eq!(defs[0].range.start, Position::new(3, 8));
        assert!(a.definition(Position::new(2, 3)).is_empty());
    }

    #[test]
    fn hover_on_keyword_code_and_reference() {
        let a = analysis(RULES);
        let (md, _) = a.hover(pos_of(RULES, "stop", 1)).unwrap();
        assert!(md.contains("No later rule runs"), "{md}");
        let (md, range) = a.hover(pos_of(RULES, "E012", 2)).unwrap();
        assert!(md.starts_with("**E012**"), "{md}");
        assert_eq!(range.start, Position::new(5, 2));
        let (md, _) = a.hover(pos_of(RULES, "members \"Off", 10)).unwrap();
        assert!(md.contains("contact \"Officers\""), "{md}");
        // A keyword-like word inside a comment or a string is not a keyword.
        assert!(a.hover(pos_of(RULES, "about", 1)).is_none());
        assert!(a.hover(pos_of(RULES, "from Office", 1)).is_none());
    }

    #[test]
    fn words_and_contexts() {
        assert_eq!(word_at("ab cd-e", 4), Some((3, 7)));
        assert_eq!(word_at("ab cd-e", 7), Some((3, 7)));
        assert_eq!(word_at("a  b", 2), None);
        assert_eq!(context_at("x \"a # b\" c", 10), Context::Code);
        assert_eq!(context_at("x \"a # b", 6), Context::String);
        assert_eq!(context_at("x # \"", 5), Context::Comment);
        assert_eq!(diagnostic_code("E012"), Some(Code::E012));
        assert_eq!(diagnostic_code("E9999"), None);
    }

    #[test]
    fn an_error_maps_to_its_utf16_range() {
        let text = "contact \"Zoé😀\" { address not-an-address; external z@fabrikam.com }\n";
        let d = analysis(text).diagnostics();
        let e = d
            .iter()
            .find(|d| d.code == Some(NumberOrString::String("E012".into())))
            .unwrap();
        let col = "contact \"Zoé😀\" { address ".encode_utf16().count() as u32;
        assert_eq!(e.range.start, Position::new(0, col));
        assert_eq!(
            e.range.end,
            Position::new(0, col + "not-an-address".len() as u32)
        );
        assert_eq!(e.severity, Some(DiagnosticSeverity::ERROR));
        assert_eq!(e.source.as_deref(), Some("mailflow"));
    }
}
