//! The checks of the `smtp_command` fuzz target, shared with the stable replay test
//! (`tests/it/fuzz_replay.rs`), so that a saved input is held to exactly what the fuzzer held it
//! to. Plain `assert!`s: a failed invariant is a crash to the fuzzer and a failure to the test.
//!
//! Input layout: byte 0 picks where the stream is split for the receivers, byte 1 the size
//! cap (high bit clear: none; set: `(b & 0x7f) * 4` octets); the rest is the stream.

use mailflow::smtp::{
    BdatReceiver, Command, DataReceiver, LineEnd, MAX_COMMAND_LINE, MAX_DOMAIN, MAX_LOCAL_PART,
    MAX_MAIL_RCPT_LINE, MAX_REPLY_LINE, Reply, dot_stuff, find_line, parse_command, parse_reply,
    parse_reply_line, xtext_encode,
};

/// Runs every check on one input.
pub fn run(data: &[u8]) {
    let (cut_byte, limit_byte, stream) = match data {
        [a, b, rest @ ..] => (*a, *b, rest),
        _ => (0, 0, data),
    };
    let cut = usize::from(cut_byte) * stream.len() / 255;
    let limit = if limit_byte & 0x80 == 0 {
        u64::MAX
    } else {
        u64::from(limit_byte & 0x7f) * 4
    };
    commands(stream);
    replies(stream);
    data_receiver(stream, cut, limit);
    bdat_receiver(stream, cut, limit);
    stuffing(stream);
}

/// The session's command loop without I/O: split lines as the session does, parse each
/// complete one, render the error replies.
fn commands(stream: &[u8]) {
    let mut buf = stream;
    while !buf.is_empty() {
        let end = find_line(buf, MAX_MAIL_RCPT_LINE);
        let window = &buf[..buf.len().min(MAX_MAIL_RCPT_LINE)];
        let first_lf = window.iter().position(|&b| b == b'\n');
        match end {
            LineEnd::Complete(n) => {
                assert!((2..=MAX_MAIL_RCPT_LINE).contains(&n), "{end:?}");
                assert_eq!(&buf[n - 2..n], b"\r\n");
                assert_eq!(first_lf, Some(n - 1));
                command(&buf[..n - 2]);
                buf = &buf[n..];
            }
            LineEnd::BareLf(n) => {
                assert!((1..=MAX_MAIL_RCPT_LINE).contains(&n), "{end:?}");
                assert_eq!(first_lf, Some(n - 1));
                assert!(n == 1 || buf[n - 2] != b'\r');
                buf = &buf[n..];
            }
            LineEnd::TooLong => {
                assert_eq!(first_lf, None);
                assert!(buf.len() >= MAX_MAIL_RCPT_LINE);
                // The session discards up to the next LF.
                buf = match buf.iter().position(|&b| b == b'\n') {
                    Some(i) => &buf[i + 1..],
                    None => &[],
                };
            }
            LineEnd::Incomplete => {
                assert_eq!(first_lf, None);
                assert!(buf.len() < MAX_MAIL_RCPT_LINE);
                // What is left is also a line to the parser (the fuzzer finds more this way).
                command(buf);
                break;
            }
        }
    }
}

/// Parses one line (without CRLF) and checks the result.
fn command(line: &[u8]) {
    let parsed = parse_command(line);
    assert_eq!(parsed, parse_command(line), "not deterministic");
    match parsed {
        Ok(cmd) => accepted(line, &cmd),
        Err(e) => {
            assert!(
                matches!(e.code, 500 | 501 | 553 | 555),
                "{line:?}: unexpected code {e:?}"
            );
            let wire = Reply::from(&e).to_bytes();
            one_reply_line(&wire);
            let (code, last, text) = parse_reply_line(&wire).expect("own reply unreadable");
            assert_eq!((code, last), (e.code, true));
            assert!(text.starts_with(e.enhanced.as_str()), "{text:?}");
        }
    }
}

/// A rendered single-line reply: exactly one CRLF, at the end, within the line limit.
fn one_reply_line(wire: &[u8]) {
    assert!(wire.len() <= MAX_REPLY_LINE, "{} octets", wire.len());
    assert!(wire.ends_with(b"\r\n"));
    let body = &wire[..wire.len() - 2];
    assert!(
        !body.iter().any(|&b| b == b'\r' || b == b'\n'),
        "{wire:?}: a reply must not contain a line break"
    );
    assert!(std::str::from_utf8(wire).is_ok());
}

/// What an accepted command must satisfy, and that the outbound form of it (what the relay
/// sends to the next hop) parses back to the same command.
fn accepted(line: &[u8], cmd: &Command) {
    let text = std::str::from_utf8(line).expect("accepted non-UTF-8");
    assert!(!text.chars().any(char::is_control), "{text:?}");
    let limit = match cmd {
        Command::Mail { .. } | Command::Rcpt { .. } => MAX_MAIL_RCPT_LINE,
        _ => MAX_COMMAND_LINE,
    };
    assert!(line.len() + 2 <= limit, "{} octets accepted", line.len());
    let printable = |s: &str| s.bytes().all(|b| (b' '..=b'~').contains(&b));
    let rebuilt = match cmd {
        Command::Helo(d) | Command::Ehlo(d) => {
            assert!(!d.is_empty() && !d.contains(' '), "{d:?}");
            let verb = if matches!(cmd, Command::Helo(_)) {
                "HELO"
            } else {
                "EHLO"
            };
            format!("{verb} {d}")
        }
        Command::Mail { from, params } => {
            if let Some(a) = from {
                address(a);
                assert!(params.smtputf8 || (a.local.is_ascii() && a.domain.is_ascii()));
            }
            let mut l = format!(
                "MAIL FROM:<{}>",
                from.as_ref().map(path).unwrap_or_default()
            );
            if let Some(s) = params.size {
                l.push_str(&format!(" SIZE={s}"));
            }
            if let Some(b) = params.body {
                l.push_str(match b {
                    mailflow::smtp::Body::SevenBit => " BODY=7BIT",
                    mailflow::smtp::Body::EightBitMime => " BODY=8BITMIME",
                    mailflow::smtp::Body::BinaryMime => " BODY=BINARYMIME",
                });
            }
            if params.smtputf8 {
                l.push_str(" SMTPUTF8");
            }
            if let Some(r) = params.ret {
                l.push_str(match r {
                    mailflow::smtp::Ret::Full => " RET=FULL",
                    mailflow::smtp::Ret::Hdrs => " RET=HDRS",
                });
            }
            if let Some(e) = &params.envid {
                assert!(printable(e), "ENVID {e:?}");
                l.push_str(&format!(" ENVID={}", xtext_encode(e)));
            }
            if let Some(o) = &params.xoorg {
                assert!(!o.is_empty() && o.len() <= MAX_DOMAIN, "XOORG {o:?}");
                assert!(!o.chars().any(|c| c.is_control() || c == ' '));
                l.push_str(&format!(" XOORG={o}"));
            }
            if let Some(a) = &params.auth {
                assert!(printable(a), "AUTH {a:?}");
                l.push_str(&format!(" AUTH={}", xtext_encode(a)));
            }
            l
        }
        Command::Rcpt { to, params } => {
            address(to);
            let mut l = format!("RCPT TO:<{}>", path(to));
            if let Some(n) = params.notify {
                assert!(!(n.never && (n.success || n.failure || n.delay)));
                assert!(n.never || n.success || n.failure || n.delay);
                let words: Vec<&str> = [
                    (n.never, "NEVER"),
                    (n.success, "SUCCESS"),
                    (n.failure, "FAILURE"),
                    (n.delay, "DELAY"),
                ]
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, w)| *w)
                .collect();
                l.push_str(&format!(" NOTIFY={}", words.join(",")));
            }
            if let Some(o) = &params.orcpt {
                assert!(printable(o), "ORCPT {o:?}");
                let (kind, addr) = o.split_once(';').expect("ORCPT without ';'");
                l.push_str(&format!(" ORCPT={kind};{}", xtext_encode(addr)));
            }
            l
        }
        Command::Bdat { size, last } => {
            format!("BDAT {size}{}", if *last { " LAST" } else { "" })
        }
        Command::Vrfy(a) | Command::Expn(a) | Command::Auth(a) => {
            assert!(!a.is_empty() && !a.starts_with(' ') && !a.ends_with(' '));
            let verb = match cmd {
                Command::Vrfy(_) => "VRFY",
                Command::Expn(_) => "EXPN",
                _ => "AUTH",
            };
            format!("{verb} {a}")
        }
        Command::Data => "DATA".into(),
        Command::Rset => "RSET".into(),
        Command::Noop => "NOOP".into(),
        Command::Quit => "QUIT".into(),
        Command::StartTls => "STARTTLS".into(),
        Command::Help => "HELP".into(),
    };
    let again = parse_command(rebuilt.as_bytes())
        .unwrap_or_else(|e| panic!("{text:?} accepted, but its outbound form {rebuilt:?}: {e}"));
    assert_eq!(&again, cmd, "{text:?} -> {rebuilt:?}");
    if let (
        Command::Mail { from: Some(a), .. } | Command::Rcpt { to: a, .. },
        Command::Mail { from: Some(b), .. } | Command::Rcpt { to: b, .. },
    ) = (cmd, &again)
    {
        assert_eq!(a.local, b.local, "{text:?} -> {rebuilt:?}");
    }
}

fn path(a: &mailflow::model::Address) -> String {
    if a.domain.is_empty() {
        a.local.clone()
    } else {
        a.to_string()
    }
}

/// An address the parser accepted: within the limits, nothing that could end a line or a path.
fn address(a: &mailflow::model::Address) {
    assert!(!a.local.is_empty(), "{a:?}");
    assert!(a.local.len() <= MAX_LOCAL_PART, "{a:?}");
    assert!(a.domain.len() <= MAX_DOMAIN, "{a:?}");
    for part in [&a.local, &a.domain] {
        assert!(!part.chars().any(char::is_control), "{a:?}");
    }
    assert!(!a.domain.contains(['<', '>', ' ', '@', '"']), "{a:?}");
    if !a.local.starts_with('"') {
        assert!(!a.local.contains(['<', '>', ' ', '@', '"']), "{a:?}");
    }
    if a.domain.is_empty() {
        assert_eq!(a.local, "postmaster");
    }
}

/// Replies: reading arbitrary bytes as a client must not panic, and any text echoed in a
/// reply the server builds stays on its line.
fn replies(stream: &[u8]) {
    let _ = parse_reply(stream);
    let _ = parse_reply_line(stream);
    let text = String::from_utf8_lossy(stream);
    let echo = Reply::new(250, "2.1.5", text.as_ref());
    one_reply_line(&echo.to_bytes());
    let lines: Vec<&str> = text.split('\n').take(8).collect();
    let multi = Reply::multi(550, "5.7.1", lines.iter().copied());
    let wire = multi.to_bytes();
    let (back, used) = parse_reply(&wire)
        .expect("own reply unreadable")
        .expect("own reply incomplete");
    assert_eq!(used, wire.len());
    assert_eq!(back.code, 550);
    assert_eq!(back.lines.len(), lines.len().max(1));
    for l in wire.split_inclusive(|&b| b == b'\n') {
        one_reply_line(l);
    }
}

/// `true` when every CR is followed by LF and every LF preceded by CR (the crate's claim for
/// what it stores and sends; `tests/it/smtp_protocol.rs` has the same function).
pub fn has_no_bare_endings(msg: &[u8]) -> bool {
    msg.iter().enumerate().all(|(i, &b)| match b {
        b'\r' => msg.get(i + 1) == Some(&b'\n'),
        b'\n' => i > 0 && msg[i - 1] == b'\r',
        _ => true,
    })
}

/// CRLF, bare CR and bare LF all become CRLF; a non-empty result ends with CRLF (as in
/// `tests/it/smtp_protocol.rs`). Also returns how many bare endings there were.
pub fn normalise(x: &[u8]) -> (Vec<u8>, u64) {
    let mut out = Vec::new();
    let mut bare = 0;
    let mut i = 0;
    while i < x.len() {
        match x[i] {
            b'\r' if x.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 2;
            }
            b'\r' | b'\n' => {
                out.extend_from_slice(b"\r\n");
                bare += 1;
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    (out, bare)
}

/// The naive reference (also `tests/it/smtp_protocol.rs`'s): the first CRLF.CRLF (with a CRLF
/// assumed before the stream) ends the data; lines before it lose one dot if they start with
/// two; every CR or LF not part of a CRLF becomes CRLF. (consumed, message, bare count), or
/// `None` when there is no end.
pub fn reference_receive(stream: &[u8]) -> Option<(usize, Vec<u8>, u64)> {
    let mut p = b"\r\n".to_vec();
    p.extend_from_slice(stream);
    let k = p.windows(5).position(|w| w == b"\r\n.\r\n")?;
    let mut out = Vec::new();
    let mut bare = 0;
    let mut rest = &stream[..k];
    while let Some(i) = rest.windows(2).position(|w| w == b"\r\n") {
        let line = &rest[..i];
        rest = &rest[i + 2..];
        let line = if line.starts_with(b"..") {
            &line[1..]
        } else {
            line
        };
        for &b in line {
            if b == b'\r' || b == b'\n' {
                bare += 1;
                out.extend_from_slice(b"\r\n");
            } else {
                out.push(b);
            }
        }
        out.extend_from_slice(b"\r\n");
    }
    assert!(rest.is_empty());
    Some((k + 3, out, bare))
}

/// Feeds `stream` in two pieces; (consumed, done, receiver).
fn receive(stream: &[u8], cut: usize, limit: u64) -> (usize, bool, DataReceiver) {
    let mut r = DataReceiver::new(limit);
    let mut consumed = 0;
    for piece in [&stream[..cut], &stream[cut..]] {
        let p = r.feed(piece);
        assert!(p.consumed <= piece.len());
        consumed += p.consumed;
        assert_eq!(p.done, r.is_done());
        if p.done {
            return (consumed, true, r);
        }
        assert_eq!(
            p.consumed,
            piece.len(),
            "must consume everything until the end"
        );
    }
    (consumed, false, r)
}

fn data_receiver(stream: &[u8], cut: usize, limit: u64) {
    let (consumed, done, r) = receive(stream, cut, limit);
    let reference = reference_receive(stream);
    assert_eq!(
        done,
        reference.is_some(),
        "end of data seen by one side only"
    );
    let size = r.size();
    let bare = r.bare_line_endings();
    let too_large = r.is_too_large();
    let result = r.finish();
    let Some((want_consumed, want, want_bare)) = reference else {
        assert!(result.is_err());
        return;
    };
    assert_eq!(consumed, want_consumed);
    assert_eq!(size, want.len() as u64);
    assert_eq!(bare, want_bare);
    assert_eq!(too_large, size > limit);
    let msg = match result {
        Ok(m) => m,
        Err(e) => {
            assert!(size > limit, "{e:?} at {size} of {limit}");
            let wire = Reply::from(&e).to_bytes();
            one_reply_line(&wire);
            return;
        }
    };
    assert_eq!(msg, want);
    assert!(
        has_no_bare_endings(&msg),
        "accepted message with a bare line ending: {msg:?}"
    );
    assert!(msg.is_empty() || msg.ends_with(b"\r\n"));
    // Sending it on: the next hop's receiver (ours) gets exactly the same message, and the
    // wire form ends exactly at its end marker.
    let wire = dot_stuff(&msg);
    assert!(has_no_bare_endings(&wire));
    let (c, d, again) = receive(&wire, wire.len() / 2, u64::MAX);
    assert!(d, "stuffed message never ends");
    assert_eq!(c, wire.len(), "stuffed message ends early");
    assert_eq!(again.bare_line_endings(), 0);
    assert_eq!(again.finish().expect("no limit"), msg);
}

fn bdat_receiver(stream: &[u8], cut: usize, limit: u64) {
    let mut b = BdatReceiver::new(limit);
    b.feed(&stream[..cut]);
    b.feed(&[]);
    b.feed(&stream[cut..]);
    let (want, want_bare) = normalise(stream);
    // A CR at the very end is only known to be bare at `finish`.
    let pending = u64::from(stream.last() == Some(&b'\r'));
    assert_eq!(b.bare_line_endings() + pending, want_bare);
    let too_large = b.is_too_large();
    match b.finish() {
        Ok(msg) => {
            assert!(!too_large);
            assert!(msg.len() as u64 <= limit);
            assert_eq!(msg, want);
            assert!(has_no_bare_endings(&msg));
        }
        Err(e) => {
            assert!(want.len() as u64 > limit, "{e:?}");
            one_reply_line(&Reply::from(&e).to_bytes());
        }
    }
}

/// Outbound: any bytes, stuffed, arrive as the normalised bytes and end exactly at the marker.
fn stuffing(stream: &[u8]) {
    let wire = dot_stuff(stream);
    assert!(has_no_bare_endings(&wire));
    assert!(wire.ends_with(b".\r\n"));
    let (c, d, r) = receive(&wire, wire.len() / 3, u64::MAX);
    assert!(d);
    assert_eq!(c, wire.len());
    assert_eq!(r.bare_line_endings(), 0);
    assert_eq!(r.finish().expect("no limit"), normalise(stream).0);
}
