//! `mailflow fmt`: one canonical layout for rule files (docs/fmt.md). Tokens are copied as
//! written and only the space between them changes; comments are recovered from the text and
//! put back in place; the output is re-parsed and compared with the input before it is used.

mod comments;
mod layout;
mod print;
mod verify;

pub use comments::{Comment, comments};
pub use print::{INDENT, WIDTH};
pub use verify::without_spans;

use crate::diagnostic::Diagnostic;
use crate::parse::parse_file;
use crate::source::FileId;

/// Why a text was not formatted.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The text does not parse; the diagnostics are those `check` reports (`E001`).
    #[error("the file does not parse")]
    Syntax(Vec<Diagnostic>),
    /// The formatter's own check failed: its output would not say what the input says. A bug
    /// in mailflow, never in the file.
    #[error("formatting would change what the file says: {0}")]
    Unsafe(String),
}

/// Formats one rule file's text. `file` is the id the text has in the caller's
/// [`crate::source::SourceMap`], so that syntax errors can be rendered against it.
///
/// ```
/// let messy = "rule \"Stop\" {  if sender outside ; stop }\n";
/// let tidy = mailflow::fmt::format_source(mailflow::source::FileId(0), messy).unwrap();
/// assert_eq!(tidy, "rule \"Stop\" {\n  if sender outside\n  stop\n}\n");
/// ```
pub fn format_source(file: FileId, text: &str) -> Result<String, FormatError> {
    // A lone carriage return is refused as `check` refuses it: which line would it end?
    let mut diags: Vec<Diagnostic> = crate::parse::screen::screen(file, text)
        .into_iter()
        .filter(|d| d.severity() == crate::diagnostic::Severity::Error)
        .collect();
    let (tree, syntax) = parse_file(file, text);
    diags.extend(syntax);
    if !diags.is_empty() {
        return Err(FormatError::Syntax(diags));
    }
    // The canonical layout has no byte order mark (UTF-8 needs none): it is dropped, so
    // `fmt --check` reports a file that has one.
    if let Some(rest) = text.strip_prefix('\u{feff}') {
        return format_source(file, rest);
    }
    let comments = comments(text);
    let logical = layout::logical_lines(text, &comments).map_err(FormatError::Unsafe)?;
    let out = print::print(text, &logical, &comments, line_ending(text));
    verify::check(text, &tree, &out).map_err(FormatError::Unsafe)?;
    Ok(out)
}

/// The line ending of the file's first line: a file written with CRLF keeps CRLF (Windows
/// checkouts), anything else gets LF.
fn line_ending(text: &str) -> &'static str {
    match text.find(['\n', '\r']) {
        Some(i) if text.get(i..i + 2) == Some("\r\n") => "\r\n",
        _ => "\n",
    }
}

#[cfg(test)]
mod tests;
