//! Finding the comments of a rule file. The grammar skips them (`COMMENT` is silent), so they
//! are recovered from the text itself: a `#` outside a string starts one, up to the line break.

/// One `#` comment as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    /// Byte offset of the `#`.
    pub start: usize,
    /// One past its last byte (before the line break; trailing blanks excluded).
    pub end: usize,
    /// Whether code comes before it on its line (`stop # why`), rather than the comment
    /// standing on a line of its own.
    pub trailing: bool,
}

impl Comment {
    /// The comment's text, `#` included, without trailing blanks.
    pub fn text<'t>(&self, source: &'t str) -> &'t str {
        source.get(self.start..self.end).unwrap_or("")
    }
}

/// Every comment of `text`, in order. Strings are skipped with the grammar's escapes (a
/// backslash takes the next character), and a string never runs past a line break, so a
/// stray quote cannot hide the comments of later lines.
pub fn comments(text: &str) -> Vec<Comment> {
    let mut out = Vec::new();
    let mut in_string = false;
    let mut code_on_line = false;
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\n' | '\r' => {
                in_string = false;
                code_on_line = false;
            }
            '\\' if in_string => {
                // The escaped character, unless it is a line break (which ends the string).
                if let Some((_, '\n' | '\r')) = chars.clone().next() {
                    continue;
                }
                chars.next();
            }
            '"' => {
                in_string = !in_string;
                code_on_line = true;
            }
            '#' if !in_string => {
                let rest = text.get(i..).unwrap_or("");
                let len = rest.find(['\n', '\r']).unwrap_or(rest.len());
                let body = rest.get(..len).unwrap_or("").trim_end_matches([' ', '\t']);
                out.push(Comment {
                    start: i,
                    end: i + body.len(),
                    trailing: code_on_line,
                });
                // Skip to the line break, which the loop then sees.
                let stop = i + len;
                while chars.clone().next().is_some_and(|(j, _)| j < stop) {
                    chars.next();
                }
            }
            ' ' | '\t' => {}
            _ => code_on_line = true,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(src: &str) -> Vec<(&str, bool)> {
        comments(src)
            .iter()
            .map(|c| (c.text(src), c.trailing))
            .collect()
    }

    #[test]
    fn own_line_and_trailing() {
        let src = "# head\nrule \"a # not\" { # open\n  stop  # why  \n\t# inner\n}\n";
        assert_eq!(
            texts(src),
            vec![
                ("# head", false),
                ("# open", true),
                ("# why", true),
                ("# inner", false)
            ]
        );
    }

    #[test]
    fn escapes_and_crlf() {
        let src = "log \"a \\\" # b\" # c\r\n# d\r\nx \"\\\\\" # e";
        assert_eq!(
            texts(src),
            vec![("# c", true), ("# d", false), ("# e", true)]
        );
    }

    #[test]
    fn an_unterminated_string_ends_at_the_line_break() {
        let src = "log \"oops\n# seen\n";
        assert_eq!(texts(src), vec![("# seen", false)]);
    }
}
