//! A message as the evaluator sees it: the header fields kept raw (folding and all) so that a
//! rewrite changes only the address it rewrites, and the body kept as bytes, untouched.
//! Addresses inside a header are found by an RFC 5322 address-list scanner that knows quoted
//! strings, comments, angle addresses and groups.

use std::ops::Range;

/// One header field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The name as written.
    pub name: String,
    /// Everything after the colon, folding included, without the final line break.
    pub value: String,
}

impl Header {
    /// The value as text: unfolded, with RFC 2047 encoded words (`=?UTF-8?B?...?=`) decoded
    /// by mail-parser. This is what rules compare against.
    pub fn text(&self) -> String {
        if !self.value.contains("=?") {
            return self.unfolded();
        }
        // Any header is decoded as unstructured text, which is how Subject is parsed.
        let mut raw = Vec::with_capacity(self.value.len() + 16);
        raw.extend_from_slice(b"Subject:");
        raw.extend_from_slice(self.value.as_bytes());
        raw.extend_from_slice(b"\r\n\r\n");
        mail_parser::MessageParser::default()
            .parse_headers(&raw)
            .and_then(|m| m.subject().map(str::to_string))
            .unwrap_or_else(|| self.unfolded())
    }

    /// The value unfolded and trimmed.
    pub fn unfolded(&self) -> String {
        let mut out = String::with_capacity(self.value.len());
        for (i, line) in self.value.split("\r\n").enumerate() {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(line.trim_matches([' ', '\t']));
        }
        out.trim().to_string()
    }
}

/// A parsed message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// Header fields in order.
    pub headers: Vec<Header>,
    /// Everything after the blank line that ends the header (bytes, untouched).
    pub body: Vec<u8>,
}

impl Message {
    /// Splits a message into header fields and body. Bare LF line ends are read as CRLF;
    /// bytes that are not UTF-8 in the header are replaced (the body is kept as is).
    ///
    /// The header ends at the first line that is not a field (no colon, a name that is not
    /// printable ASCII, a continuation with no field before it), as Postfix's cleanup and
    /// Python's parser read it: that line and everything after it are body, behind a blank
    /// line. Kept in the header, `X-MS-Exchange-Organization-AuthAs` folded before its colon
    /// would be no field to this relay's firewall and `AuthAs: Internal` to a parser that
    /// unfolds first.
    pub fn parse(raw: &[u8]) -> Message {
        let (raw_head, body) = split_head(raw);
        let head = String::from_utf8_lossy(raw_head)
            .replace("\r\n", "\n")
            .replace('\n', "\r\n");
        let mut headers: Vec<Header> = Vec::new();
        for (i, line) in head.split("\r\n").enumerate() {
            if line.is_empty() {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                if let Some(last) = headers.last_mut() {
                    last.value.push_str("\r\n");
                    last.value.push_str(line);
                    continue;
                }
            } else if let Some((name, value)) = line.split_once(':') {
                // Blanks before the colon are obsolete syntax (RFC 5322 §4.5.3) and dropped;
                // nothing else is (`Bcc\u{a0}:` is not `Bcc:`, and not a field).
                let name = name.trim_end_matches([' ', '\t']);
                if !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic()) {
                    headers.push(Header {
                        name: name.to_string(),
                        value: value.to_string(),
                    });
                    continue;
                }
            }
            // Lines are counted in the raw header too: decoding and line-end repair change
            // bytes within lines, never their number.
            let start = raw_head
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .nth(i.wrapping_sub(1))
                .map_or(0, |(at, _)| at + 1);
            let mut rest = raw_head.get(start..).unwrap_or_default().to_vec();
            if !rest.ends_with(b"\n") {
                rest.extend_from_slice(b"\r\n");
            }
            rest.extend_from_slice(b"\r\n");
            rest.extend_from_slice(body);
            return Message {
                headers,
                body: rest,
            };
        }
        Message {
            headers,
            body: body.to_vec(),
        }
    }

    /// The message as bytes, CRLF line ends in the header.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 1024);
        for h in &self.headers {
            if h.name.is_empty() {
                out.extend_from_slice(h.value.as_bytes());
            } else {
                out.extend_from_slice(h.name.as_bytes());
                out.push(b':');
                out.extend_from_slice(h.value.as_bytes());
            }
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }

    /// The first field with this name (case-insensitive), unfolded.
    pub fn get(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(Header::unfolded)
    }

    /// The first field with this name as text, encoded words decoded (see [`Header::text`]).
    pub fn text(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(Header::text)
    }

    /// Size in bytes as it would be sent.
    pub fn size(&self) -> u64 {
        let head: usize = self
            .headers
            .iter()
            .map(|h| h.name.len() + 1 + h.value.len() + 2)
            .sum();
        (head + 2 + self.body.len()) as u64
    }
}

/// The longest header line RFC 5322 §2.1.1 allows, CRLF excluded.
pub const MAX_LINE: usize = 998;

/// Folds a field value (everything after the colon) so that no line of `name:value` is longer
/// than [`MAX_LINE`] octets: a line break goes in before the last space or tab that fits (or,
/// failing that, the first one after), never where a line would be left blank. Unfolding
/// removes the break again, so the value means what it meant. Lines that fit are left alone;
/// a run with no blank in it cannot be folded and stays as long as it is.
pub fn fold(name: &str, value: &str) -> String {
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let mut out = String::with_capacity(value.len() + 8);
    for (i, line) in value.split("\r\n").enumerate() {
        if i > 0 {
            out.push_str("\r\n");
        }
        let mut used = if i == 0 { name.len() + 1 } else { 0 };
        let mut rest = line;
        while used + rest.len() > MAX_LINE {
            let b = rest.as_bytes();
            let Some(first) = b.iter().position(|c| !blank(c)) else {
                break;
            };
            let Some(last) = b.iter().rposition(|c| !blank(c)) else {
                break;
            };
            // Blanks with text before them (on this line) and after them.
            let mut at = (first + 1..last).filter(|&p| b.get(p).is_some_and(blank));
            let fits = at.clone().take_while(|&p| used + p <= MAX_LINE).last();
            let Some(p) = fits.or_else(|| at.find(|&p| used + p > MAX_LINE)) else {
                break;
            };
            out.push_str(rest.get(..p).unwrap_or_default());
            out.push_str("\r\n");
            rest = rest.get(p..).unwrap_or_default();
            used = 0;
        }
        out.push_str(rest);
    }
    out
}

/// The header ends at the first empty line, CRLF or bare LF (RFC 5322 §2.1). Looking for the
/// first `\n\n` or `\r\n\r\n` instead would miss an empty line at the very start (no header
/// at all) or one after a bare LF, and read body lines as header fields.
fn split_head(raw: &[u8]) -> (&[u8], &[u8]) {
    let mut start = 0;
    while let Some(rest) = raw.get(start..) {
        let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
            break;
        };
        if matches!(rest.get(..lf), Some(b"" | b"\r")) {
            return (
                raw.get(..start).unwrap_or(raw),
                rest.get(lf + 1..).unwrap_or(&[]),
            );
        }
        start += lf + 1;
    }
    (raw, &[])
}

/// The byte ranges of the addr-specs in an address-list header value, with the address text.
pub fn addresses(value: &str) -> Vec<(Range<usize>, String)> {
    let mut out = Vec::new();
    let bytes = value.as_bytes();
    let mut i = 0;
    // The start of the current mailbox's bare text (outside comments and quotes), if any.
    let mut element: Vec<Range<usize>> = Vec::new();
    let mut in_angle: Option<usize> = None;
    let mut saw_angle = false;
    // The current mailbox's text outside comments, as runs of adjacent non-blank bytes; a
    // bare addr-spec is the one run that holds an `@`.
    let flush =
        |runs: &mut Vec<Range<usize>>, saw_angle: bool, out: &mut Vec<(Range<usize>, String)>| {
            if !saw_angle {
                let mut with_at = runs
                    .iter()
                    .filter(|r| value.get((*r).clone()).is_some_and(|t| t.contains('@')));
                if let (Some(r), None) = (with_at.next(), with_at.next()) {
                    if let Some(t) = value.get(r.clone()) {
                        out.push((r.clone(), t.to_string()));
                    }
                }
            }
            runs.clear();
        };
    let extend = |runs: &mut Vec<Range<usize>>, r: Range<usize>| match runs.last_mut() {
        Some(last) if last.end == r.start => last.end = r.end,
        _ => runs.push(r),
    };
    while let Some(&b) = bytes.get(i) {
        match b {
            b'"' => {
                let start = i;
                i += 1;
                while let Some(&c) = bytes.get(i) {
                    if c == b'\\' {
                        i += 2;
                        continue;
                    }
                    i += 1;
                    if c == b'"' {
                        break;
                    }
                }
                if in_angle.is_none() {
                    extend(&mut element, start..i.min(bytes.len()));
                }
                continue;
            }
            b'(' if in_angle.is_none() => {
                let mut depth = 0usize;
                while let Some(&c) = bytes.get(i) {
                    match c {
                        b'\\' => i += 1,
                        b'(' => depth += 1,
                        b')' => {
                            depth = depth.saturating_sub(1);
                            if depth == 0 {
                                i += 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
                continue;
            }
            b'<' => {
                in_angle = Some(i + 1);
                saw_angle = true;
            }
            b'>' => {
                if let Some(s) = in_angle.take() {
                    if let Some(inner) = value.get(s..i) {
                        // Drop an obsolete source route (`@a,@b:user@domain`).
                        let (skip, spec) = match inner.rfind(':') {
                            Some(p) if inner.starts_with('@') => {
                                (p + 1, inner.get(p + 1..).unwrap_or(""))
                            }
                            _ => (0, inner),
                        };
                        let t = spec.trim();
                        if !t.is_empty() {
                            let lead = spec.len() - spec.trim_start().len();
                            let off = s + skip + lead;
                            out.push((off..off + t.len(), t.to_string()));
                        }
                    }
                }
            }
            b',' | b';' if in_angle.is_none() => {
                flush(&mut element, saw_angle, &mut out);
                saw_angle = false;
            }
            b':' if in_angle.is_none() => {
                // A group's display name ends here; its members follow.
                element.clear();
                saw_angle = false;
            }
            b' ' | b'\t' | b'\r' | b'\n' => {}
            _ if in_angle.is_none() => extend(&mut element, i..i + 1),
            _ => {}
        }
        i += 1;
    }
    flush(&mut element, saw_angle, &mut out);
    out
}

/// Replaces the addr-specs for which `rewrite` returns a new address; returns the new value
/// and what changed, or `None` when nothing did. A replacement with a CR or LF in it is
/// refused, so no rewrite can add a header line.
pub fn rewrite_addresses(
    value: &str,
    mut rewrite: impl FnMut(&str) -> Option<String>,
) -> Option<(String, Vec<(String, String)>)> {
    let mut out = String::new();
    let mut changes = Vec::new();
    let mut last = 0;
    for (range, addr) in addresses(value) {
        let Some(new) = rewrite(&addr) else {
            continue;
        };
        if new.contains(['\r', '\n']) || new == addr {
            continue;
        }
        if out.is_empty() {
            out.reserve(value.len() + new.len());
        }
        out.push_str(value.get(last..range.start).unwrap_or(""));
        out.push_str(&new);
        last = range.end;
        changes.push((addr, new));
    }
    if changes.is_empty() {
        return None;
    }
    out.push_str(value.get(last..).unwrap_or(""));
    Some((out, changes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(v: &str) -> Vec<String> {
        addresses(v).into_iter().map(|(_, a)| a).collect()
    }

    #[test]
    fn finds_addresses_in_every_form() {
        assert_eq!(addrs(" john@example.com"), ["john@example.com"]);
        assert_eq!(
            addrs(" John Smith <john@example.com>"),
            ["john@example.com"]
        );
        assert_eq!(
            addrs(" \"Smith, John\" <john@example.com>, mary@example.com (Mary)"),
            ["john@example.com", "mary@example.com"]
        );
        assert_eq!(
            addrs(" team: a@x.com, \"B\" <b@x.com>;, c@y.com"),
            ["a@x.com", "b@x.com", "c@y.com"]
        );
        assert_eq!(
            addrs(" (comment <not@this.com>) real@x.com"),
            ["real@x.com"]
        );
        assert_eq!(addrs(" <@relay.example:user@x.com>"), ["user@x.com"]);
        assert_eq!(addrs(" \"quoted local\"@x.com"), ["\"quoted local\"@x.com"]);
        assert_eq!(addrs(" undisclosed-recipients:;"), Vec::<String>::new());
    }

    #[test]
    fn rewriting_keeps_display_names_comments_and_folding() {
        let v = " \"Smith, John\" <John.Smith@tenant1.example.com> (work),\r\n\tMary <mary@tenant2.example.com>";
        let (new, changes) = rewrite_addresses(v, |a| {
            a.strip_suffix("@tenant1.example.com")
                .map(|l| format!("{l}@example.com"))
        })
        .unwrap();
        assert_eq!(
            new,
            " \"Smith, John\" <John.Smith@example.com> (work),\r\n\tMary <mary@tenant2.example.com>"
        );
        assert_eq!(
            changes,
            [(
                "John.Smith@tenant1.example.com".to_string(),
                "John.Smith@example.com".to_string()
            )]
        );
    }

    #[test]
    fn a_rewrite_can_never_inject_a_header() {
        let result = rewrite_addresses(" a@x.com", |_| Some("b@y.com\r\nBcc: evil@z.com".into()));
        assert!(result.is_none(), "{result:?}");
    }

    #[test]
    fn folding_keeps_lines_legal_and_the_value_unchanged() {
        let short = " a@x.example, b@y.example";
        assert_eq!(fold("To", short), short);
        let long = format!(" {}", vec!["word"; 400].join(" "));
        let folded = fold("Subject", &long);
        let field = format!("Subject:{folded}");
        assert!(field.split("\r\n").all(|l| l.len() <= MAX_LINE));
        assert!(field.split("\r\n").count() > 1);
        assert!(folded.split("\r\n").skip(1).all(|l| l.starts_with(' ')));
        assert_eq!(folded.replace("\r\n", ""), long);
        // Nothing to fold at: left as it is; a blank only at the end is no place either.
        let run = format!(" {}  ", "x".repeat(1200));
        assert_eq!(fold("To", &run), run);
        let late = format!(" {} y", "x".repeat(1200));
        assert_eq!(fold("To", &late), format!(" {}\r\n y", "x".repeat(1200)));
    }

    #[test]
    fn parse_and_serialise_round_trip() {
        let raw =
            b"From: John <j@x.com>\r\nSubject: a\r\n  folded\r\nX-Empty:\r\n\r\nbody\r\n.\r\n";
        let m = Message::parse(raw);
        assert_eq!(m.headers.len(), 3);
        assert_eq!(m.get("subject").as_deref(), Some("a folded"));
        assert_eq!(m.to_bytes(), raw.to_vec());
        assert_eq!(m.size(), raw.len() as u64);
        let encoded = Message::parse(b"Subject: =?UTF-8?B?UmVjaG51bmcgZsO8ciBNw6Ryeg==?=\r\nX-Plain: =?iso-8859-1?q?caf=E9?=\r\n  au lait\r\n\r\n");
        assert_eq!(
            encoded.text("subject").as_deref(),
            Some("Rechnung f\u{fc}r M\u{e4}rz")
        );
        assert_eq!(encoded.headers[1].text(), "caf\u{e9} au lait");
        let lf = Message::parse(b"From: a@x.com\nSubject: s\n\nbody\n");
        assert_eq!(lf.get("From").as_deref(), Some("a@x.com"));
        assert_eq!(lf.body, b"body\n");
        // An empty first line: no header at all, whatever the body looks like.
        let none = Message::parse(b"\r\nBcc: x@y.example\r\n\r\nbody\r\n");
        assert!(none.headers.is_empty());
        assert_eq!(none.body, b"Bcc: x@y.example\r\n\r\nbody\r\n");
        let mixed = Message::parse(b"A: b\n\r\nBcc: x@y.example\r\n\r\n");
        assert_eq!(mixed.headers.len(), 1);
        assert_eq!(mixed.body, b"Bcc: x@y.example\r\n\r\n");
        // The header ends at the first line that is not a field; it and the rest are body,
        // byte for byte, behind a blank line (as Postfix and Python read it).
        let raw = "To: a@x.example\r\n: b@y.example\r\nBcc\u{a0}: c@z.example\r\nX-Ok \t: d\r\n\r\nbody\r\n";
        let odd = Message::parse(raw.as_bytes());
        let names: Vec<&str> = odd.headers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["To"]);
        assert_eq!(
            odd.to_bytes(),
            "To: a@x.example\r\n\r\n: b@y.example\r\nBcc\u{a0}: c@z.example\r\nX-Ok \t: d\r\n\r\nbody\r\n".as_bytes()
        );
        // A trust header folded before its colon is no field, and no longer in the header.
        let folded = Message::parse(
            b"X-MS-Exchange-Organization-AuthAs\r\n : Internal\r\nX\x00-MS-Exchange-Organization-Nul: x\r\nSubject: s\r\n\r\nb\r\n",
        );
        assert!(folded.headers.is_empty(), "{:?}", folded.headers);
        assert!(
            folded
                .body
                .starts_with(b"X-MS-Exchange-Organization-AuthAs\r\n : Internal")
        );
        assert!(folded.body.ends_with(b"\r\n\r\nb\r\n"));
    }
}
