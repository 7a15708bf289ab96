//! A message as the evaluator sees it: each header field kept as the bytes that arrived
//! (folding, 8-bit bytes and all) next to the decoded text rules read, and the body kept as
//! bytes, untouched. A field the evaluator does not change is written back byte for byte; a
//! changed one is spliced (an address rewrite replaces only the addr-spec, a prefix goes in
//! after the colon), so a legacy 8-bit header or a DKIM signature over fields mailflow did
//! not mean to touch survives the relay. Addresses inside a header are found by an RFC 5322
//! address-list scanner that knows quoted strings, comments, angle addresses and groups.

pub use super::address_list::{AddressChanges, addresses, rewrite_addresses};
use bytes::Bytes;

/// One header field, kept as the bytes it is written with: its name and value are read out
/// of them, so copying a message (the evaluator's verdict carries one) costs one allocation
/// per field, not three.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The field as it is written: from the name through the final CRLF.
    written: Written,
    /// Where the colon is in the bytes.
    colon: usize,
    /// How long the name is (blanks before the colon, obsolete syntax, left out).
    name_len: usize,
}

/// A field's bytes: as a string when they are UTF-8 (nearly always), so its name and value
/// are slices of them; else the bytes and the value's text with each bad sequence replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Written {
    Text(String),
    Bytes { raw: Vec<u8>, value: Box<str> },
}

impl Header {
    /// A new field `name:value` (the value as it follows the colon, a leading blank and
    /// any folding included), written with a final CRLF.
    pub fn new(name: &str, value: &str) -> Header {
        let mut raw = String::with_capacity(name.len() + value.len() + 3);
        raw.push_str(name);
        raw.push(':');
        raw.push_str(value);
        raw.push_str("\r\n");
        Header {
            written: Written::Text(raw),
            colon: name.len(),
            name_len: name.len(),
        }
    }

    /// A field from its bytes (through the final CRLF), checked for UTF-8 once.
    fn from_raw(raw: Vec<u8>, colon: usize, name_len: usize) -> Header {
        let written = match String::from_utf8(raw) {
            Ok(text) => Written::Text(text),
            Err(e) => {
                let raw = e.into_bytes();
                let end = raw.len().saturating_sub(2);
                let value = raw.get(colon + 1..end).unwrap_or_default();
                let value = String::from_utf8_lossy(value).into();
                Written::Bytes { raw, value }
            }
        };
        Header {
            written,
            colon,
            name_len,
        }
    }

    /// The field with the bytes after the colon replaced by `value` (without the final line
    /// break); the name is kept as it was written.
    fn with_raw_value(&self, value: &[u8]) -> Header {
        let head = self.raw().get(..=self.colon).unwrap_or_default();
        let mut raw = Vec::with_capacity(head.len() + value.len() + 2);
        raw.extend_from_slice(head);
        raw.extend_from_slice(value);
        raw.extend_from_slice(b"\r\n");
        Header::from_raw(raw, self.colon, self.name_len)
    }

    /// The name as written.
    pub fn name(&self) -> &str {
        match &self.written {
            Written::Text(text) => text.get(..self.name_len).unwrap_or_default(),
            // A parsed name is printable ASCII.
            Written::Bytes { raw, .. } => raw
                .get(..self.name_len)
                .and_then(|n| std::str::from_utf8(n).ok())
                .unwrap_or_default(),
        }
    }

    /// Everything after the colon, folding included, as text (bytes that are not UTF-8
    /// replaced).
    pub fn value(&self) -> &str {
        match &self.written {
            Written::Text(text) => {
                let end = text.len().saturating_sub(2);
                text.get(self.colon + 1..end).unwrap_or_default()
            }
            Written::Bytes { value, .. } => value,
        }
    }

    /// The field as it is written: the bytes that arrived, unless the evaluator changed it.
    pub fn raw(&self) -> &[u8] {
        match &self.written {
            Written::Text(text) => text.as_bytes(),
            Written::Bytes { raw, .. } => raw,
        }
    }

    /// The bytes after the colon, without the final line break.
    pub fn raw_value(&self) -> &[u8] {
        let raw = self.raw();
        let end = raw.len().saturating_sub(2);
        raw.get(self.colon + 1..end).unwrap_or_default()
    }

    /// The field with the addr-specs `rewrite` has a new address for replaced in its bytes
    /// (see [`rewrite_addresses`]), and the changes; `None` when nothing changed. Display
    /// names, comments, other addresses and folding stay as they were; a line the new
    /// address makes too long is folded.
    pub fn rewrite_addresses(
        &self,
        rewrite: impl FnMut(&str) -> Option<String>,
    ) -> Option<(Header, AddressChanges)> {
        let (value, changes) = rewrite_addresses(self.raw_value(), rewrite)?;
        let value = fold_bytes(self.colon + 1, &value);
        Some((self.with_raw_value(&value), changes))
    }

    /// The field with `text` put in front of its value (after the blanks that follow the
    /// colon), the rest of its bytes kept; folded where that makes the first line too long.
    pub fn prepend(&self, text: &str) -> Header {
        let old = self.raw_value();
        let blanks = old.iter().take_while(|b| matches!(b, b' ' | b'\t')).count();
        let mut value = Vec::with_capacity(old.len() + text.len() + 1);
        match old.get(..blanks) {
            Some(lead) if !lead.is_empty() => value.extend_from_slice(lead),
            _ => value.push(b' '),
        }
        value.extend_from_slice(text.as_bytes());
        value.extend_from_slice(old.get(blanks..).unwrap_or_default());
        self.with_raw_value(&fold_bytes(self.colon + 1, &value))
    }

    /// The field with `text` added to the end of its value after a comma (a list of
    /// addresses grown by one), or as the value when it is blank.
    pub fn append_to_list(&self, text: &str) -> Header {
        let old = self.raw_value();
        let mut value = old.to_vec();
        if old
            .iter()
            .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        {
            value = format!(" {text}").into_bytes();
        } else {
            value.extend_from_slice(b", ");
            value.extend_from_slice(text.as_bytes());
        }
        self.with_raw_value(&fold_bytes(self.colon + 1, &value))
    }

    /// The value as text: unfolded, with RFC 2047 encoded words (`=?UTF-8?B?...?=`) decoded
    /// by mail-parser. This is what rules compare against.
    pub fn text(&self) -> String {
        let value = self.value();
        if !value.contains("=?") {
            return self.unfolded();
        }
        // Any header is decoded as unstructured text, which is how Subject is parsed.
        let mut raw = Vec::with_capacity(value.len() + 16);
        raw.extend_from_slice(b"Subject:");
        raw.extend_from_slice(value.as_bytes());
        raw.extend_from_slice(b"\r\n\r\n");
        mail_parser::MessageParser::default()
            .parse_headers(&raw)
            .and_then(|m| m.subject().map(str::to_string))
            .unwrap_or_else(|| self.unfolded())
    }

    /// The value unfolded and trimmed.
    pub fn unfolded(&self) -> String {
        let value = self.value();
        // Most fields are one line: no searching for line breaks, one allocation.
        if !value.contains('\r') {
            return value.trim_matches([' ', '\t']).trim().to_string();
        }
        let mut out = String::with_capacity(value.len());
        for (i, line) in value.split("\r\n").enumerate() {
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
    /// Everything after the blank line that ends the header (bytes, untouched). Shared, so a
    /// message parsed from the received buffer ([`Message::parse_shared`]) and every clone of
    /// it hold one copy of the body: the received one.
    pub body: Bytes,
}

impl Message {
    /// Splits a message into header fields and body. Each field keeps its bytes; bare LF
    /// line ends in the header are read as CRLF (the relay's receivers have made every line
    /// end CRLF already), and the body is kept as is.
    ///
    /// The header ends at the first line that is not a field (no colon, a name that is not
    /// printable ASCII, a continuation with no field before it), as Postfix's cleanup and
    /// Python's parser read it: that line and everything after it are body, behind a blank
    /// line. Kept in the header, `X-MS-Exchange-Organization-AuthAs` folded before its colon
    /// would be no field to this relay's firewall and `AuthAs: Internal` to a parser that
    /// unfolds first.
    pub fn parse(raw: &[u8]) -> Message {
        Message::split(raw, Bytes::copy_from_slice)
    }

    /// [`Message::parse`] that keeps the body as a slice of `raw` instead of a copy (when the
    /// header ends at a blank line, as it does but for a malformed header).
    pub fn parse_shared(raw: &Bytes) -> Message {
        Message::split(raw, |body| raw.slice_ref(body))
    }

    /// The header's length in `raw`: where [`Message::parse`]'s body starts, blank line
    /// excluded, as a quick scan that copies nothing (what a copy of the header will cost).
    pub fn header_len(raw: &[u8]) -> usize {
        split_head(raw).0.len()
    }

    fn split(raw: &[u8], body_of: impl FnOnce(&[u8]) -> Bytes) -> Message {
        let (raw_head, body) = split_head(raw);
        let mut headers: Vec<Parsed> = Vec::new();
        let mut start = 0;
        while start < raw_head.len() {
            let rest = raw_head.get(start..).unwrap_or_default();
            let (line, next) = match rest.iter().position(|&b| b == b'\n') {
                Some(lf) => (rest.get(..lf).unwrap_or_default(), start + lf + 1),
                None => (rest, raw_head.len()),
            };
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                start = next;
                continue;
            }
            if line.starts_with(b" ") || line.starts_with(b"\t") {
                if let Some(last) = headers.last_mut() {
                    last.raw.extend_from_slice(line);
                    last.raw.extend_from_slice(b"\r\n");
                    start = next;
                    continue;
                }
            } else if let Some(field) = field(line) {
                headers.push(field);
                start = next;
                continue;
            }
            let mut rest = rest.to_vec();
            if !rest.ends_with(b"\n") {
                rest.extend_from_slice(b"\r\n");
            }
            rest.extend_from_slice(b"\r\n");
            rest.extend_from_slice(body);
            return Message {
                headers: settled(headers),
                body: Bytes::from(rest),
            };
        }
        Message {
            headers: settled(headers),
            body: body_of(body),
        }
    }

    /// The message as bytes: each field as it arrived or as the evaluator changed it, the
    /// blank line (CRLF), the body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.header_bytes(&[]);
        out.reserve_exact(self.body.len());
        out.extend_from_slice(&self.body);
        out
    }

    /// `before`, then every field as [`Message::to_bytes`] writes it and the blank line: the
    /// message without its body, which goes after it as it is.
    pub fn header_bytes(&self, before: &[u8]) -> Vec<u8> {
        let head: usize = self.headers.iter().map(|h| h.raw().len()).sum();
        let mut out = Vec::with_capacity(before.len() + head + 2);
        out.extend_from_slice(before);
        for h in &self.headers {
            out.extend_from_slice(h.raw());
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    /// The first field with this name (case-insensitive), unfolded.
    pub fn get(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|h| h.name().eq_ignore_ascii_case(name))
            .map(Header::unfolded)
    }

    /// The first field with this name as text, encoded words decoded (see [`Header::text`]).
    pub fn text(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|h| h.name().eq_ignore_ascii_case(name))
            .map(Header::text)
    }

    /// Size in bytes as it would be sent.
    pub fn size(&self) -> u64 {
        let head: usize = self.headers.iter().map(|h| h.raw().len()).sum();
        (head + 2 + self.body.len()) as u64
    }
}

/// A field being read: its continuation lines may still follow.
struct Parsed {
    raw: Vec<u8>,
    colon: usize,
    name_len: usize,
}

/// The field a header line (without its line break) starts, when it starts one: `Name:`, or
/// obsolete `Name :` (blanks before the colon, RFC 5322 §4.5.3, are dropped from the name;
/// nothing else is: `Bcc\u{a0}:` is not `Bcc:`, and not a field).
fn field(line: &[u8]) -> Option<Parsed> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = line.get(..colon)?;
    let trimmed = name.len()
        - name
            .iter()
            .rev()
            .take_while(|b| matches!(b, b' ' | b'\t'))
            .count();
    let name = name.get(..trimmed)?;
    if name.is_empty() || !name.iter().all(u8::is_ascii_graphic) {
        return None;
    }
    let mut raw = Vec::with_capacity(line.len() + 2);
    raw.extend_from_slice(line);
    raw.extend_from_slice(b"\r\n");
    Some(Parsed {
        raw,
        colon,
        name_len: name.len(),
    })
}

/// The parsed fields, each checked for UTF-8 once its continuation lines are all there (not
/// once per line, which would cost the square of a long header).
fn settled(headers: Vec<Parsed>) -> Vec<Header> {
    headers
        .into_iter()
        .map(|h| Header::from_raw(h.raw, h.colon, h.name_len))
        .collect()
}

/// The longest header line RFC 5322 §2.1.1 allows, CRLF excluded.
pub const MAX_LINE: usize = 998;

/// Folds a field value (everything after the colon) so that no line of `name:value` is longer
/// than [`MAX_LINE`] octets: a line break goes in before the last space or tab that fits (or,
/// failing that, the first one after), never where a line would be left blank. Unfolding
/// removes the break again, so the value means what it meant. Lines that fit are left alone;
/// a run with no blank in it cannot be folded and stays as long as it is.
pub fn fold(name: &str, value: &str) -> String {
    let folded = fold_bytes(name.len() + 1, value.as_bytes());
    // Breaks go in before ASCII blanks only, so UTF-8 stays UTF-8.
    String::from_utf8(folded).unwrap_or_else(|_| value.to_string())
}

/// [`fold`] on the bytes of a value that follows `lead` octets (the name and colon) on its
/// first line; bytes that are not UTF-8 are carried through.
fn fold_bytes(lead: usize, value: &[u8]) -> Vec<u8> {
    if lead + value.len() <= MAX_LINE {
        // Every line fits: the usual case, without looking for blanks.
        return value.to_vec();
    }
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let mut out = Vec::with_capacity(value.len() + 8);
    for (i, line) in split_crlf(value).enumerate() {
        if i > 0 {
            out.extend_from_slice(b"\r\n");
        }
        let mut used = if i == 0 { lead } else { 0 };
        let mut rest = line;
        while used + rest.len() > MAX_LINE {
            let Some(first) = rest.iter().position(|c| !blank(c)) else {
                break;
            };
            let Some(last) = rest.iter().rposition(|c| !blank(c)) else {
                break;
            };
            // Blanks with text before them (on this line) and after them.
            let mut at = (first + 1..last).filter(|&p| rest.get(p).is_some_and(blank));
            let fits = at.clone().take_while(|&p| used + p <= MAX_LINE).last();
            let Some(p) = fits.or_else(|| at.find(|&p| used + p > MAX_LINE)) else {
                break;
            };
            out.extend_from_slice(rest.get(..p).unwrap_or_default());
            out.extend_from_slice(b"\r\n");
            rest = rest.get(p..).unwrap_or_default();
            used = 0;
        }
        out.extend_from_slice(rest);
    }
    out
}

/// The lines of a value, split at each CRLF.
fn split_crlf(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(value);
    std::iter::from_fn(move || {
        let r = rest?;
        match r.windows(2).position(|w| w == b"\r\n") {
            Some(p) => {
                rest = r.get(p + 2..);
                r.get(..p)
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The header lines of `raw` (CRLF excluded) in order, up to the blank line.
    fn head_lines(raw: &[u8]) -> Vec<&[u8]> {
        let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 2;
        raw[..end]
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| l.strip_suffix(b"\r").unwrap())
            .collect()
    }

    #[test]
    fn a_shared_parse_keeps_the_body_in_the_received_buffer() {
        let raw = Bytes::from_static(b"Subject: s\r\nTo: a@x.example\r\n\r\nbody\r\n");
        let m = Message::parse_shared(&raw);
        assert_eq!(m, Message::parse(&raw));
        assert_eq!(Message::header_len(&raw), 29);
        // The very bytes received, not a copy of them; the header is written in front.
        assert_eq!(m.body.as_ptr(), raw[31..].as_ptr());
        let mut stored = m.header_bytes(b"Received: x\r\n");
        stored.extend_from_slice(&m.body);
        assert_eq!(stored, [b"Received: x\r\n".as_slice(), &raw[..]].concat());
    }

    #[test]
    fn untouched_fields_are_written_back_byte_for_byte() {
        // Latin-1, Shift_JIS, a lone continuation byte, obsolete `Name :`, folding with tabs,
        // trailing blanks: none of it is decoded on the way out.
        let raw: &[u8] = b"Subject: caf\xe9 au lait\r\nX-Sjis: \x93\xfa\x96\x7b\x8c\xea\r\n\t\x83\x65\x83\x58\x83\x67 \r\nTo : \"M\xfcller, J\" <j@x.example>\r\nX-Odd: \x80\xff\r\n\r\nbody \xe9\r\n";
        let m = Message::parse(raw);
        assert_eq!(m.headers.len(), 4);
        assert_eq!(m.to_bytes(), raw);
        assert_eq!(m.size(), raw.len() as u64);
        // Rules read text; the bytes are not that text.
        assert_eq!(m.get("subject").as_deref(), Some("caf\u{fffd} au lait"));
        assert_eq!(m.headers[0].raw_value(), b" caf\xe9 au lait");
        assert_eq!(m.headers[2].name(), "To");
    }

    #[test]
    fn a_rewrite_splices_only_the_addr_spec() {
        // A group, display names with 8-bit bytes and quoted commas, comments (one holding an
        // address look-alike), folding, and an address that stays.
        let raw: &[u8] = b"To: Team \xc4rger: \"Smith, J\xf6hn\" <John.Smith@tenant1.example.com> (work <x@tenant1.example.com>),\r\n\tmary@tenant1.example.com (M\xe4ry), other@else.example;,\r\n Bob <bob@else.example>\r\n";
        let m = Message::parse(&[raw, b"\r\n"].concat());
        let (h, changes) = m.headers[0]
            .rewrite_addresses(|a| {
                a.strip_suffix("@tenant1.example.com")
                    .map(|l| format!("{l}@example.com"))
            })
            .unwrap();
        assert_eq!(
            h.raw(),
            b"To: Team \xc4rger: \"Smith, J\xf6hn\" <John.Smith@example.com> (work <x@tenant1.example.com>),\r\n\tmary@example.com (M\xe4ry), other@else.example;,\r\n Bob <bob@else.example>\r\n"
        );
        assert_eq!(changes.len(), 2);
        assert_eq!(h.name(), "To");
        assert!(h.value().contains("mary@example.com"));
        // Nothing to rewrite: no new field.
        assert!(m.headers[0].rewrite_addresses(|_| None).is_none());
        // A longer address that pushes a line past 998 octets: that line is folded, at a blank.
        let long = format!(
            "To: a@x.example, {}, b@x.example\r\n\r\n",
            "c@y.example,".repeat(80).trim_end_matches(',')
        );
        let m = Message::parse(long.as_bytes());
        let (h, _) = m.headers[0]
            .rewrite_addresses(|a| {
                (a == "b@x.example").then(|| format!("{}@x.example", "b".repeat(60)))
            })
            .unwrap();
        assert!(
            head_lines(&[h.raw(), b"\r\n"].concat())
                .iter()
                .all(|l| l.len() <= MAX_LINE)
        );
    }

    #[test]
    fn prepending_and_appending_keep_the_bytes_that_were_there() {
        let m = Message::parse(
            b"Subject:\tcaf\xe9\r\n au lait\r\nTo: \"J\xfcrg\" <j@x.example>\r\n\r\n",
        );
        assert_eq!(
            m.headers[0].prepend("[EXT] ").raw(),
            b"Subject:\t[EXT] caf\xe9\r\n au lait\r\n"
        );
        assert_eq!(
            Header::new("Subject", "").prepend("[EXT] ").raw(),
            b"Subject: [EXT] \r\n"
        );
        assert_eq!(
            m.headers[1].append_to_list("add@y.example").raw(),
            b"To: \"J\xfcrg\" <j@x.example>, add@y.example\r\n"
        );
        assert_eq!(
            Header::new("Cc", "").append_to_list("a@y.example").raw(),
            b"Cc: a@y.example\r\n"
        );
        // What was written reads back as the same field.
        let h = m.headers[1].append_to_list("add@y.example");
        assert_eq!(Message::parse(&[h.raw(), b"\r\n"].concat()).headers, [h]);
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
        assert_eq!(&lf.body[..], b"body\n");
        // An empty first line: no header at all, whatever the body looks like.
        let none = Message::parse(b"\r\nBcc: x@y.example\r\n\r\nbody\r\n");
        assert!(none.headers.is_empty());
        assert_eq!(&none.body[..], b"Bcc: x@y.example\r\n\r\nbody\r\n");
        let mixed = Message::parse(b"A: b\n\r\nBcc: x@y.example\r\n\r\n");
        assert_eq!(mixed.headers.len(), 1);
        assert_eq!(&mixed.body[..], b"Bcc: x@y.example\r\n\r\n");
        // The header ends at the first line that is not a field; it and the rest are body,
        // byte for byte, behind a blank line (as Postfix and Python read it).
        let raw = "To: a@x.example\r\n: b@y.example\r\nBcc\u{a0}: c@z.example\r\nX-Ok \t: d\r\n\r\nbody\r\n";
        let odd = Message::parse(raw.as_bytes());
        let names: Vec<&str> = odd.headers.iter().map(Header::name).collect();
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
