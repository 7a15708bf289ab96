//! SMTP replies: building them for the wire ([`Reply::to_bytes`], which can never emit an
//! extra line whatever the text holds) and reading them as a client ([`parse_reply_line`],
//! [`parse_reply`]).

use super::data::DataError;

/// Longest reply line, CRLF included (RFC 5321 §4.5.3.1.5).
pub const MAX_REPLY_LINE: usize = 512;

/// A reply as it goes on the wire: code, optional enhanced status code (RFC 3463) repeated
/// on every line, and one or more lines of text. What the relay decides to answer is a
/// [`Status`](super::Status) (one line, [`Status::reply`](super::Status::reply)); a `Reply`
/// adds what only the wire has: several lines (EHLO) and no enhanced code at all (the
/// greeting, EHLO, a next hop that sends none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Basic code, 200..=599.
    pub code: u16,
    /// Enhanced status code such as `2.1.0`, without the code class check; empty when the
    /// reply has none (as in [`Status`](super::Status)).
    pub enhanced: String,
    /// Text lines; none means one empty line.
    pub lines: Vec<String>,
}

impl Reply {
    /// A single-line reply; an empty `enhanced` means none.
    pub fn new(code: u16, enhanced: &str, text: impl Into<String>) -> Self {
        Reply {
            code,
            enhanced: enhanced.to_string(),
            lines: vec![text.into()],
        }
    }

    /// A multi-line reply (e.g. EHLO's keywords); an empty `enhanced` means none.
    pub fn multi<I, S>(code: u16, enhanced: &str, lines: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Reply {
            code,
            enhanced: enhanced.to_string(),
            lines: lines.into_iter().map(Into::into).collect(),
        }
    }

    /// The wire form, `250-first\r\n250 last\r\n`. Control characters in the text (CR and
    /// LF above all) become `?`, each line is cut to 512 octets, an enhanced code that is not
    /// `class.subject.detail` is left out, and a code outside 200..=599 is sent as 451 (a
    /// programming error should delay mail, not lose it).
    pub fn to_bytes(&self) -> Vec<u8> {
        let code = if (200..=599).contains(&self.code) {
            self.code
        } else {
            451
        };
        let enhanced = Some(self.enhanced.as_str()).filter(|e| valid_enhanced(e));
        let empty = [String::new()];
        let lines: &[String] = if self.lines.is_empty() {
            &empty
        } else {
            &self.lines
        };
        let mut out = Vec::new();
        for (i, text) in lines.iter().enumerate() {
            let start = out.len();
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            out.extend_from_slice(format!("{code}{sep}").as_bytes());
            if let Some(e) = enhanced {
                out.extend_from_slice(e.as_bytes());
                if !text.is_empty() {
                    out.push(b' ');
                }
            }
            let room = MAX_REPLY_LINE.saturating_sub(out.len() - start + 2);
            let mut end = text.len().min(room);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            for c in text.get(..end).unwrap_or_default().chars() {
                let c = if c.is_control() { '?' } else { c };
                let mut tmp = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
            }
            // Trimming a trailing space keeps `250 2.0.0` tidy when the text is empty.
            if out.last() == Some(&b' ') && text.is_empty() {
                out.pop();
            }
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    /// 2xx or 3xx.
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// 4xx: try again later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx: do not retry.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// 2xx: the command did what was asked (354 is an invitation, not a completion).
    pub fn is_completion(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// The enhanced code when it is of the reply's class (RFC 3463: a `550` carries `5.x.x`),
    /// else `class.0.0`: a mismatched code says nothing a client can rely on.
    pub fn status(&self) -> String {
        match self.matching_enhanced() {
            Some(e) => e.to_string(),
            None => format!("{}.0.0", self.code / 100),
        }
    }

    /// The text, lines joined by spaces, without the enhanced code when it is the reply's
    /// status ([`Reply::status`]); a mismatched one stays part of the text.
    pub fn text(&self) -> String {
        let mut out = String::new();
        if self.matching_enhanced().is_none() {
            out.push_str(&self.enhanced);
        }
        for line in &self.lines {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(line);
        }
        out.trim().to_string()
    }

    /// Code, enhanced code and text, lines joined: `250 2.0.0 Ok: queued as 4Xyz`.
    pub fn full(&self) -> String {
        let mut out = self.code.to_string();
        let enhanced = Some(&self.enhanced).filter(|e| !e.is_empty());
        for part in enhanced.into_iter().chain(&self.lines) {
            out.push(' ');
            out.push_str(part);
        }
        out.trim_end().to_string()
    }

    fn matching_enhanced(&self) -> Option<&str> {
        let class = char::from_digit(u32::from(self.code / 100), 10)?;
        Some(self.enhanced.as_str())
            .filter(|e| e.starts_with(class) && e.as_bytes().get(1) == Some(&b'.'))
    }
}

impl From<&DataError> for Reply {
    fn from(e: &DataError) -> Self {
        e.status().into()
    }
}

/// `class.subject.detail`: class 2, 4 or 5, subject and detail 1-3 digits (RFC 3463).
fn valid_enhanced(e: &str) -> bool {
    let mut parts = e.split('.');
    let digits = |p: Option<&str>| {
        p.is_some_and(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
    };
    matches!(parts.next(), Some("2" | "4" | "5"))
        && digits(parts.next())
        && digits(parts.next())
        && parts.next().is_none()
}

/// Why a reply line could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// Not `ddd`, `ddd text` or `ddd-text` with a code 200..=599.
    #[error("malformed reply line: {0}")]
    Malformed(&'static str),
    /// The continuation lines of one reply carry different codes.
    #[error("reply lines with different codes")]
    CodeMismatch,
}

/// Reads one reply line (with or without its CRLF): the code, whether it is the last line
/// of the reply, and the text (enhanced code included; see [`split_enhanced`]).
pub fn parse_reply_line(line: &[u8]) -> Result<(u16, bool, &str), ReplyError> {
    let line = line.strip_suffix(b"\r\n").unwrap_or(line);
    let text = std::str::from_utf8(line).map_err(|_| ReplyError::Malformed("not UTF-8"))?;
    if text.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(ReplyError::Malformed("control character"));
    }
    let (digits, rest) = match (text.get(..3), text.get(3..)) {
        (Some(d), Some(r)) => (d, r),
        _ => return Err(ReplyError::Malformed("too short")),
    };
    let d = digits.as_bytes();
    let ok = matches!(d, [b'2'..=b'5', b'0'..=b'5', b'0'..=b'9']);
    if !ok {
        return Err(ReplyError::Malformed("bad code"));
    }
    let code = d.iter().fold(0u16, |acc, b| acc * 10 + u16::from(b - b'0'));
    match rest.as_bytes().first() {
        None => Ok((code, true, "")),
        Some(b' ') => Ok((code, true, rest.get(1..).unwrap_or_default())),
        Some(b'-') => Ok((code, false, rest.get(1..).unwrap_or_default())),
        Some(_) => Err(ReplyError::Malformed("bad separator")),
    }
}

/// Splits a leading enhanced status code off a reply text: `("2.1.0", "ok")`.
pub fn split_enhanced(text: &str) -> (Option<&str>, &str) {
    let (first, rest) = text.split_once(' ').unwrap_or((text, ""));
    if valid_enhanced(first) {
        (Some(first), rest)
    } else {
        (None, text)
    }
}

/// Reads a whole (possibly multi-line) reply from the start of `buf`. `Ok(None)`: not
/// complete yet. `Ok(Some((reply, n)))`: the reply and the bytes it took. The enhanced code
/// is taken from the first line and stripped from every line that repeats it. Text that is
/// not UTF-8 (a Latin-1 greeting) is read with replacement characters rather than refused:
/// the code is what a client acts on, and refusing would make such a server unreachable.
/// Line length is the reader's business: this takes the lines it is given.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, ReplyError> {
    let mut pos = 0;
    let mut code = None;
    let mut enhanced = String::new();
    let mut lines = Vec::new();
    loop {
        let rest = buf.get(pos..).unwrap_or_default();
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            return Ok(None);
        };
        let raw = rest.get(..nl).unwrap_or_default();
        let raw = raw
            .strip_suffix(b"\r")
            .ok_or(ReplyError::Malformed("bare LF"))?;
        let raw = String::from_utf8_lossy(raw);
        let (c, last, text) = parse_reply_line(raw.as_bytes())?;
        if *code.get_or_insert(c) != c {
            return Err(ReplyError::CodeMismatch);
        }
        let (e, t) = split_enhanced(text);
        if lines.is_empty() {
            enhanced = e.unwrap_or_default().to_string();
        }
        let text = if e.is_some_and(|e| e == enhanced) {
            t
        } else {
            text
        };
        lines.push(text.to_string());
        pos += nl + 1;
        if last {
            return Ok(Some((
                Reply {
                    code: c,
                    enhanced,
                    lines,
                },
                pos,
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn wire_form() {
        assert_eq!(
            Reply::new(250, "2.1.0", "ok").to_bytes(),
            b"250 2.1.0 ok\r\n"
        );
        assert_eq!(
            Reply::new(220, "", "mx ready").to_bytes(),
            b"220 mx ready\r\n"
        );
        assert_eq!(Reply::new(250, "2.0.0", "").to_bytes(), b"250 2.0.0\r\n");
        assert_eq!(
            Reply::multi(250, "", Vec::<String>::new()).to_bytes(),
            b"250\r\n"
        );
        assert_eq!(
            Reply::multi(250, "", ["mx", "PIPELINING", "SIZE 10"]).to_bytes(),
            b"250-mx\r\n250-PIPELINING\r\n250 SIZE 10\r\n"
        );
        assert_eq!(
            Reply::multi(550, "5.7.1", ["a", "b"]).to_bytes(),
            b"550-5.7.1 a\r\n550 5.7.1 b\r\n"
        );
        assert_eq!(
            Reply::new(250, "2.1.5", "x\r\n250 y\u{0}\u{85}").to_bytes(),
            b"250 2.1.5 x??250 y??\r\n"
        );
        assert_eq!(Reply::new(99, "x", "t").to_bytes(), b"451 t\r\n");
        let long = Reply::new(250, "2.0.0", "é".repeat(400)).to_bytes();
        assert!(long.len() <= 512);
        assert!(std::str::from_utf8(&long).is_ok());
        assert!(long.ends_with(b"\r\n"));
    }

    #[test]
    fn classes() {
        assert!(Reply::new(354, "", "go").is_positive());
        assert!(Reply::new(421, "4.3.2", "bye").is_transient());
        assert!(Reply::new(554, "5.0.0", "no").is_permanent());
        assert!(!Reply::new(554, "5.0.0", "no").is_positive());
    }

    #[test]
    fn reading() {
        assert_eq!(parse_reply_line(b"250-mx").unwrap(), (250, false, "mx"));
        assert_eq!(parse_reply_line(b"250 ok\r\n").unwrap(), (250, true, "ok"));
        assert_eq!(parse_reply_line(b"354").unwrap(), (354, true, ""));
        for bad in [
            &b"25"[..],
            b"2500",
            b"650 x",
            b"2x0 x",
            b"250 a\rb",
            b"\xff\xff\xff",
        ] {
            assert!(parse_reply_line(bad).is_err(), "{bad:?}");
        }
        assert_eq!(split_enhanced("2.1.0 ok"), (Some("2.1.0"), "ok"));
        assert_eq!(split_enhanced("mx ready"), (None, "mx ready"));
        let (r, n) = parse_reply(b"250-2.0.0 mx\r\n250 2.0.0 SIZE\r\nX")
            .unwrap()
            .unwrap();
        assert_eq!(n, 30);
        assert_eq!(r, Reply::multi(250, "2.0.0", ["mx", "SIZE"]));
        assert_eq!(parse_reply(b"250-mx\r\n250 S").unwrap(), None);
        assert_eq!(
            parse_reply(b"250-mx\r\n251 S\r\n"),
            Err(ReplyError::CodeMismatch)
        );
        assert!(parse_reply(b"250 mx\n").is_err());
    }

    #[test]
    fn what_a_client_reads() {
        let (r, _) = parse_reply(b"550 5.1.1 user unknown\r\n").unwrap().unwrap();
        assert_eq!(r.status(), "5.1.1");
        assert_eq!(r.text(), "user unknown");
        assert_eq!(r.full(), "550 5.1.1 user unknown");
        // An enhanced code of another class is no status: it stays in the text.
        let (r, _) = parse_reply(b"550 4.1.1 odd\r\n").unwrap().unwrap();
        assert_eq!(r.status(), "5.0.0");
        assert_eq!(r.text(), "4.1.1 odd");
        let (r, _) = parse_reply(b"250-mx\r\n250 PIPELINING\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.status().as_str(), r.text().as_str()),
            ("2.0.0", "mx PIPELINING")
        );
        assert!(r.is_completion());
        let (r, _) = parse_reply(b"354 go ahead\r\n").unwrap().unwrap();
        assert!(!r.is_completion());
        assert_eq!(r.full(), "354 go ahead");
        // What the delivery client's own parser refused, this one refuses too.
        assert!(!parse_reply_line(b"250-PIPELINING").unwrap().1);
        assert_eq!(parse_reply_line(b"250").unwrap().0, 250);
        for bad in [&b"25"[..], b"250xok", b"150 ok"] {
            assert!(parse_reply_line(bad).is_err(), "{bad:?}");
        }
        // A Latin-1 greeting is read, not refused.
        let (r, _) = parse_reply(b"220 Gr\xfc\xdfe\r\n").unwrap().unwrap();
        assert_eq!(r.code, 220);
        assert!(r.text().starts_with("Gr"));
    }
}
