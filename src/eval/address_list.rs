//! The RFC 5322 address-list scanner: where the addr-specs are in the bytes of a header value
//! (quoted strings, comments, angle addresses, obsolete routes and groups understood), and
//! the splice that replaces some of them and keeps every other byte.

use std::ops::Range;

/// What an address rewrite changed: (old address, new address) pairs, in order.
pub type AddressChanges = Vec<(String, String)>;

/// The byte ranges of the addr-specs in an address-list header value, with the address text
/// (an addr-spec that is not UTF-8 is left out: no address can be made of it).
pub fn addresses(value: impl AsRef<[u8]>) -> Vec<(Range<usize>, String)> {
    let mut out = Vec::new();
    each_address(value.as_ref(), |r, text| out.push((r, text.to_string())));
    out
}

/// The text of the mailbox being read, outside comments, as runs of adjacent non-blank
/// bytes: a bare addr-spec is the one run that holds an `@`. Only the last run and the one
/// with an `@` are kept, so reading a header allocates nothing.
#[derive(Default)]
struct Mailbox {
    last: Option<Range<usize>>,
    with_at: usize,
    found: Option<Range<usize>>,
}

impl Mailbox {
    fn extend(&mut self, bytes: &[u8], r: Range<usize>) {
        match &mut self.last {
            Some(last) if last.end == r.start => last.end = r.end,
            _ => {
                self.close(bytes);
                self.last = Some(r);
            }
        }
    }

    fn close(&mut self, bytes: &[u8]) {
        if let Some(r) = self.last.take() {
            if bytes.get(r.clone()).is_some_and(|t| t.contains(&b'@')) {
                self.with_at += 1;
                self.found = Some(r);
            }
        }
    }

    /// The bare addr-spec of the mailbox just ended, if it has exactly one; starts the next.
    fn end(&mut self, bytes: &[u8]) -> Option<Range<usize>> {
        self.close(bytes);
        let bare = if self.with_at == 1 {
            self.found.take()
        } else {
            None
        };
        *self = Mailbox::default();
        bare
    }
}

/// Calls `visit` with the byte range and text of each addr-spec of an address-list header
/// value, in order (one that is not UTF-8 is skipped).
pub(super) fn each_address(bytes: &[u8], mut visit: impl FnMut(Range<usize>, &str)) {
    let mut emit = |r: Range<usize>| {
        if let Some(t) = bytes
            .get(r.clone())
            .and_then(|t| std::str::from_utf8(t).ok())
        {
            visit(r, t);
        }
    };
    let mut i = 0;
    let mut mailbox = Mailbox::default();
    let mut in_angle: Option<usize> = None;
    let mut saw_angle = false;
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
                    mailbox.extend(bytes, start..i.min(bytes.len()));
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
                if let Some(spec) = in_angle.take().and_then(|s| angle_addr_spec(bytes, s..i)) {
                    emit(spec);
                }
            }
            b',' | b';' if in_angle.is_none() => {
                let bare = mailbox.end(bytes);
                if let Some(r) = bare.filter(|_| !saw_angle) {
                    emit(r);
                }
                saw_angle = false;
            }
            b':' if in_angle.is_none() => {
                // A group's display name ends here; its members follow.
                mailbox = Mailbox::default();
                saw_angle = false;
            }
            b' ' | b'\t' | b'\r' | b'\n' => {}
            _ if in_angle.is_none() => mailbox.extend(bytes, i..i + 1),
            _ => {}
        }
        i += 1;
    }
    if let Some(r) = mailbox.end(bytes).filter(|_| !saw_angle) {
        emit(r);
    }
}

/// The addr-spec inside `<...>` (the range between the brackets): without an obsolete
/// source route (`@a,@b:user@domain`) and the blanks around it; `None` when empty.
fn angle_addr_spec(bytes: &[u8], inner: Range<usize>) -> Option<Range<usize>> {
    let text = bytes.get(inner.clone())?;
    let from = match text.iter().rposition(|&b| b == b':') {
        Some(p) if text.first() == Some(&b'@') => inner.start + p + 1,
        _ => inner.start,
    };
    let blank = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    let spec = bytes.get(from..inner.end)?;
    let lead = spec.iter().take_while(|b| blank(b)).count();
    let trail = spec.iter().rev().take_while(|b| blank(b)).count();
    let start = from + lead;
    let end = inner.end.saturating_sub(trail).max(start);
    (end > start).then_some(start..end)
}

/// Replaces the addr-specs for which `rewrite` returns a new address in the bytes of a header
/// value; returns the new bytes and what changed, or `None` when nothing did. Every other
/// byte is kept. A replacement with a CR or LF in it is refused, so no rewrite can add a
/// header line.
pub fn rewrite_addresses(
    value: &[u8],
    mut rewrite: impl FnMut(&str) -> Option<String>,
) -> Option<(Vec<u8>, AddressChanges)> {
    let mut out = Vec::new();
    let mut changes = Vec::new();
    let mut last = 0;
    each_address(value, |range, addr| {
        let Some(new) = rewrite(addr) else {
            return;
        };
        if new.contains(['\r', '\n']) || new == addr {
            return;
        }
        if out.is_empty() {
            out.reserve(value.len() + new.len());
        }
        out.extend_from_slice(value.get(last..range.start).unwrap_or_default());
        out.extend_from_slice(new.as_bytes());
        last = range.end;
        changes.push((addr.to_string(), new));
    });
    if changes.is_empty() {
        return None;
    }
    out.extend_from_slice(value.get(last..).unwrap_or_default());
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
        let (new, changes) = rewrite_addresses(v.as_bytes(), |a| {
            a.strip_suffix("@tenant1.example.com")
                .map(|l| format!("{l}@example.com"))
        })
        .unwrap();
        assert_eq!(
            new,
            b" \"Smith, John\" <John.Smith@example.com> (work),\r\n\tMary <mary@tenant2.example.com>"
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
        let result = rewrite_addresses(b" a@x.com", |_| Some("b@y.com\r\nBcc: evil@z.com".into()));
        assert!(result.is_none(), "{result:?}");
    }
}
