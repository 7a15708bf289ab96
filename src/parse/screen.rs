//! Characters that make rule text read differently to a person than to mailflow: a carriage
//! return without a line feed (git, grep and editors show no line break; a rule could hide in
//! a comment) is refused (`E006`), and invisible or bidirectional control characters (names
//! that look alike, "Trojan Source" comments) are warned about (`W050`), as rustc does. A byte
//! order mark at the very start is accepted: the grammar skips it.

use crate::diagnostic::{Code, Diagnostic};
use crate::source::{FileId, Span};

/// At most this many findings of each code per file: a file of nothing but zero-width spaces
/// must not become millions of findings.
const MAX_PER_CODE: usize = 20;

/// The characters `W050` is about, and what each is called in its finding.
fn invisible(c: char) -> Option<&'static str> {
    Some(match c {
        // Some terminals and viewers break the line at a form feed, so a rule after one in a
        // comment looks like a line of its own.
        '\u{000C}' => "a form feed (U+000C), which some viewers show as a line break",
        '\u{00AD}' => "a soft hyphen (U+00AD)",
        '\u{200B}' => "a zero-width space (U+200B)",
        '\u{200C}' => "a zero-width non-joiner (U+200C)",
        '\u{200D}' => "a zero-width joiner (U+200D)",
        '\u{200E}' | '\u{200F}' => "a direction mark (U+200E/U+200F)",
        '\u{2028}' => "a line separator (U+2028)",
        '\u{2029}' => "a paragraph separator (U+2029)",
        '\u{202A}'..='\u{202E}' => "a bidirectional embedding or override (U+202A..U+202E)",
        '\u{2060}' => "a word joiner (U+2060)",
        '\u{2066}'..='\u{2069}' => "a bidirectional isolate (U+2066..U+2069)",
        '\u{FEFF}' => "a byte order mark (U+FEFF) after the start of the file",
        _ => return None,
    })
}

/// The `E006` and `W050` findings of one file's text.
pub fn screen(file: FileId, text: &str) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let (mut bare_cr, mut hidden) = (0usize, 0usize);
    let bytes = text.as_bytes();
    for (i, c) in text.char_indices() {
        if c == '\r' && bytes.get(i + 1) != Some(&b'\n') {
            bare_cr += 1;
            if bare_cr <= MAX_PER_CODE {
                out.push(
                    Diagnostic::new(
                        Code::E006,
                        "a carriage return is not followed by a line feed",
                    )
                    .primary(
                        Span::new(file, i, i + 1),
                        "git, grep and editors do not end the line here",
                    )
                    .help("end lines with a line feed (or CR LF); `mailflow fmt` does"),
                );
            }
            continue;
        }
        // A byte order mark is welcome only as the file's first character.
        let Some(what) = invisible(c).filter(|_| !(i == 0 && c == '\u{FEFF}')) else {
            continue;
        };
        hidden += 1;
        if hidden <= MAX_PER_CODE {
            out.push(
                Diagnostic::new(Code::W050, format!("{what} is hidden here"))
                    .primary(
                        Span::new(file, i, i + c.len_utf8()),
                        "this character shows as nothing or reorders the text around it",
                    )
                    .help("delete it: names and addresses holding it match something else than they seem"),
            );
        }
    }
    for (code, n) in [(Code::E006, bare_cr), (Code::W050, hidden)] {
        if n > MAX_PER_CODE {
            if let Some(last) = out.iter_mut().rev().find(|d| d.code == code) {
                last.notes.push(format!(
                    "{} more like it in this file are not listed",
                    n - MAX_PER_CODE
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(text: &str) -> Vec<(Code, u32)> {
        screen(FileId(0), text)
            .iter()
            .map(|d| (d.code, d.primary_span().map_or(0, |s| s.start)))
            .collect()
    }

    #[test]
    fn bare_cr_is_an_error_and_crlf_is_not() {
        assert_eq!(codes("a\r\nb\n"), []);
        assert_eq!(codes("# x\rrule"), [(Code::E006, 3)]);
        assert_eq!(codes("a\r"), [(Code::E006, 1)]);
    }

    #[test]
    fn invisible_characters_warn_but_a_leading_bom_does_not() {
        assert_eq!(codes("\u{feff}rule"), []);
        assert_eq!(codes("a\u{feff}"), [(Code::W050, 1)]);
        assert_eq!(
            codes("\"x\u{202e}y\" \u{200b}"),
            [(Code::W050, 2), (Code::W050, 8)]
        );
        assert_eq!(codes("caf\u{e9} \u{2014}"), []);
        assert_eq!(codes("# x\u{c}rule"), [(Code::W050, 3)]);
    }

    #[test]
    fn findings_are_capped_per_file() {
        let d = screen(FileId(0), &"\u{200b}".repeat(1000));
        assert_eq!(d.len(), MAX_PER_CODE);
        assert!(d.last().unwrap().notes[0].starts_with("980 more"));
    }
}
