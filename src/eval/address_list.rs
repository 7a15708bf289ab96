//! The RFC 5322 address-list scanner: where the addr-specs are in the bytes of a header value
//! (quoted strings, comments, angle addresses, obsolete routes and groups understood), and
//! the splice that replaces some of them and keeps every other byte.

use std::ops::Range;

/// What an address rewrite changed: (old address, new address) pairs, in order.
pub type AddressChanges = Vec<(String, String)>;

/// The byte ranges of the addr-specs in an address-list header value, with the address text
/// (an addr-spec that is not UTF-8 is left out: no address can be made of it).
pub fn addresses(value: impl AsRef<[u8]>) -> Vec<(Range<usize>, String)> {
    let bytes = value.as_ref();
    let text = |r: Range<usize>| {
        bytes
            .get(r)
            .and_then(|t| std::str::from_utf8(t).ok())
            .map(str::to_string)
    };
    let mut out = Vec::new();
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
                    .filter(|r| bytes.get((*r).clone()).is_some_and(|t| t.contains(&b'@')));
                if let (Some(r), None) = (with_at.next(), with_at.next()) {
                    if let Some(t) = text(r.clone()) {
                        out.push((r.clone(), t));
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
                    if let Some(spec) = angle_addr_spec(bytes, s..i) {
                        if let Some(t) = text(spec.clone()) {
                            out.push((spec, t));
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
        out.extend_from_slice(value.get(last..range.start).unwrap_or_default());
        out.extend_from_slice(new.as_bytes());
        last = range.end;
        changes.push((addr, new));
    }
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
