//! SMTP command lines: logos lexers for the verb, the path and the ESMTP parameters, and a
//! strict RFC 5321 parser on top of them that turns one line (without its CRLF) into a
//! [`Command`] or the exact error reply. Also [`find_line`], the session's line splitter.
//!
//! Choices a caller must know:
//! - `MAIL FROM: <a@b>` (one space after the colon) is tolerated because common clients send
//!   it; two spaces, or a space anywhere inside `<>`, is a syntax error.
//! - UTF-8 local parts and domains are accepted by the grammar (RFC 6531). `MAIL` refuses a
//!   non-ASCII sender without the `SMTPUTF8` parameter on the same line (553 5.6.7); for
//!   `RCPT` the session must check [`is_ascii`] against what the transaction's `MAIL` said.
//! - Source routes are accepted and dropped (RFC 5321 §4.1.2, appendix C). A quoted local
//!   part that needs no quotes loses them (`"John.Smith"@d` is `John.Smith@d`, one mailbox);
//!   nothing else is rewritten: `%`, `!` and quoted `@` stay in the local part for the relay
//!   check to see.
//! - `RCPT TO:<postmaster>` (any case) gives `Address { local: "postmaster", domain: "" }`.
//! - The decoded value of `ENVID`, `ORCPT` and `AUTH` must be printable ASCII: a `+0D+0A`
//!   would otherwise reach a DSN header.

use super::{Notify, Status};
use crate::model::Address;
use logos::{Lexer, Logos};
use std::net::{Ipv4Addr, Ipv6Addr};

/// Longest command line, CRLF included (RFC 5321 §4.5.3.1.4).
pub const MAX_COMMAND_LINE: usize = 512;
/// Longest `MAIL`/`RCPT` line, CRLF included: parameters may extend it (RFC 1869 §4.1.2).
/// Call [`find_line`] with this; [`parse_command`] applies the 512 limit to other verbs.
pub const MAX_MAIL_RCPT_LINE: usize = 1024;
/// Longest local part, in octets as written (RFC 5321 §4.5.3.1.1).
pub const MAX_LOCAL_PART: usize = 64;
/// Longest domain, in octets (RFC 5321 §4.5.3.1.2).
pub const MAX_DOMAIN: usize = 255;
/// Longest path, `<` and `>` included (RFC 5321 §4.5.3.1.3).
pub const MAX_PATH: usize = 256;
/// Longest raw `ENVID` value (RFC 3461 §4.4).
const MAX_ENVID: usize = 100;
/// Longest raw `ORCPT` value (RFC 3461 §4.2).
const MAX_ORCPT: usize = 500;

/// One parsed SMTP command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `HELO` with the domain or address literal, as sent.
    Helo(String),
    /// `EHLO` with the domain or address literal, as sent.
    Ehlo(String),
    /// `MAIL FROM:`; `from` is `None` for the null reverse-path `<>`.
    Mail {
        /// The reverse-path.
        from: Option<Address>,
        /// The ESMTP parameters.
        params: MailParams,
    },
    /// `RCPT TO:`.
    Rcpt {
        /// The forward-path, source route dropped.
        to: Address,
        /// The ESMTP parameters.
        params: RcptParams,
    },
    /// `DATA`.
    Data,
    /// `BDAT size [LAST]` (RFC 3030).
    Bdat {
        /// Octets in the chunk that follows the command line.
        size: u64,
        /// Whether this is the last chunk.
        last: bool,
    },
    /// `RSET`.
    Rset,
    /// `NOOP` (any argument ignored).
    Noop,
    /// `QUIT`.
    Quit,
    /// `STARTTLS`.
    StartTls,
    /// `VRFY` with its argument, as sent.
    Vrfy(String),
    /// `EXPN` with its argument, as sent.
    Expn(String),
    /// `HELP` (any argument ignored).
    Help,
    /// `AUTH` with everything after the verb (mechanism and optional initial response).
    Auth(String),
}

/// The ESMTP parameters of `MAIL FROM`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    /// `SIZE=` (RFC 1870).
    pub size: Option<u64>,
    /// `BODY=` (RFC 6152, RFC 3030).
    pub body: Option<Body>,
    /// `SMTPUTF8` (RFC 6531).
    pub smtputf8: bool,
    /// `RET=` (RFC 3461).
    pub ret: Option<Ret>,
    /// `ENVID=`, xtext-decoded (RFC 3461).
    pub envid: Option<String>,
    /// `XOORG=` (Exchange), lowercased domain.
    pub xoorg: Option<String>,
    /// `AUTH=`, xtext-decoded (RFC 4954); `<>` when the client claims no identity.
    pub auth: Option<String>,
}

/// `BODY=` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// `7BIT`.
    SevenBit,
    /// `8BITMIME`.
    EightBitMime,
    /// `BINARYMIME` (needs BDAT).
    BinaryMime,
}

/// `RET=` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    /// Return the full message in a DSN.
    Full,
    /// Return only the headers.
    Hdrs,
}

/// The ESMTP parameters of `RCPT TO`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RcptParams {
    /// `NOTIFY=` (RFC 3461).
    pub notify: Option<Notify>,
    /// `ORCPT=` as `type;address`, the address xtext-decoded, the type as written.
    pub orcpt: Option<String>,
}

/// A 501 5.5.4: the command's arguments are malformed.
fn syntax(message: impl Into<String>) -> Status {
    Status::new(501, "5.5.4", message)
}

/// Where the first line in a buffer ends; see [`find_line`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineEnd {
    /// A line ending in CRLF; the count includes the CRLF.
    Complete(usize),
    /// A line ending in a LF without CR; the count includes the LF. Answer 500 5.5.2 and drop
    /// those bytes: treating it as a line end is what SMTP smuggling relies on.
    BareLf(usize),
    /// No line end within `max` bytes: answer 500 5.5.2 and discard up to the next LF.
    TooLong,
    /// No line end yet; read more.
    Incomplete,
}

/// Finds the end of the first line in `buf`, looking at no more than `max` bytes (the line
/// limit, CRLF included; use [`MAX_MAIL_RCPT_LINE`]).
pub fn find_line(buf: &[u8], max: usize) -> LineEnd {
    let window = &buf[..buf.len().min(max)];
    match window.iter().position(|&b| b == b'\n') {
        Some(i) if i > 0 && window.get(i - 1) == Some(&b'\r') => LineEnd::Complete(i + 1),
        Some(i) => LineEnd::BareLf(i + 1),
        None if !buf.is_empty() && buf.len() >= max => LineEnd::TooLong,
        None => LineEnd::Incomplete,
    }
}

/// Whether an address is all ASCII, i.e. usable without SMTPUTF8.
pub fn is_ascii(addr: &Address) -> bool {
    addr.local.is_ascii() && addr.domain.is_ascii()
}

/// The command verb, the first token of a line. `MAIL FROM:` and `RCPT TO:` are single
/// tokens so that the path lexer can take over right after the colon.
#[derive(Logos, Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    #[token("helo", ignore(ascii_case))]
    Helo,
    #[token("ehlo", ignore(ascii_case))]
    Ehlo,
    #[token("mail from:", ignore(ascii_case))]
    MailFrom,
    #[token("mail", ignore(ascii_case))]
    Mail,
    #[token("rcpt to:", ignore(ascii_case))]
    RcptTo,
    #[token("rcpt", ignore(ascii_case))]
    Rcpt,
    #[token("data", ignore(ascii_case))]
    Data,
    #[token("bdat", ignore(ascii_case))]
    Bdat,
    #[token("rset", ignore(ascii_case))]
    Rset,
    #[token("noop", ignore(ascii_case))]
    Noop,
    #[token("quit", ignore(ascii_case))]
    Quit,
    #[token("starttls", ignore(ascii_case))]
    StartTls,
    #[token("vrfy", ignore(ascii_case))]
    Vrfy,
    #[token("expn", ignore(ascii_case))]
    Expn,
    #[token("help", ignore(ascii_case))]
    Help,
    #[token("auth", ignore(ascii_case))]
    Auth,
}

/// Tokens of a path (RFC 5321 §4.1.2 with RFC 6531's UTF-8). Anything else, a space
/// included, is a lexing error, which is how spaces inside `<>` are refused.
#[derive(Logos, Debug, Clone, Copy, PartialEq, Eq)]
enum PathTok {
    #[token(" ")]
    Space,
    #[token("<")]
    Open,
    #[token(">")]
    Close,
    #[token("@")]
    At,
    #[token(",")]
    Comma,
    #[token(":")]
    Colon,
    #[token(".")]
    Dot,
    /// atext (RFC 5322) plus any non-ASCII character.
    #[regex(r"([A-Za-z0-9!#$%&'*+/=?^_`{|}~-]|[^\x00-\x7F])+")]
    Atom,
    /// qtextSMTP / quoted-pairSMTP plus any non-ASCII character.
    #[regex(r#""([ !#-\[\]-~]|[^\x00-\x7F]|\\[ -~])*""#)]
    Quoted,
    /// dtext (RFC 5321 §4.1.3); the content is checked afterwards.
    #[regex(r"\[[!-Z^-~]*\]")]
    Literal,
}

/// Tokens after the path: ` KEY[=VALUE]` repeated (RFC 5321 §4.1.2 esmtp-param).
#[derive(Logos, Debug, Clone, Copy, PartialEq, Eq)]
enum ParamTok {
    #[regex(" +")]
    Space,
    #[regex("[A-Za-z0-9][A-Za-z0-9-]*")]
    Keyword,
    #[regex(r"=([!-<>-~]|[^\x00-\x7F])+")]
    Value,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PathKind {
    Mail,
    Rcpt,
}

impl PathKind {
    fn error(self, detail: &str) -> Status {
        match self {
            PathKind::Mail => {
                Status::new(501, "5.1.7", format!("bad sender address syntax: {detail}"))
            }
            PathKind::Rcpt => Status::new(
                501,
                "5.1.3",
                format!("bad recipient address syntax: {detail}"),
            ),
        }
    }
}

/// Parses one command line, given without its trailing CRLF.
pub fn parse_command(line: &[u8]) -> Result<Command, Status> {
    let too_long = || Status::new(500, "5.5.2", "line too long");
    if line.len().saturating_add(2) > MAX_MAIL_RCPT_LINE {
        return Err(too_long());
    }
    let text = std::str::from_utf8(line)
        .map_err(|_| Status::new(500, "5.5.2", "invalid UTF-8 in command"))?;
    if text.chars().any(char::is_control) {
        return Err(Status::new(500, "5.5.2", "control character in command"));
    }
    let mut lex = Verb::lexer(text);
    let verb = match lex.next() {
        Some(Ok(v)) => Some(v),
        _ => None,
    };
    let long_verb = matches!(
        verb,
        Some(Verb::MailFrom | Verb::Mail | Verb::RcptTo | Verb::Rcpt)
    );
    if !long_verb && line.len() + 2 > MAX_COMMAND_LINE {
        return Err(too_long());
    }
    let rest = lex.remainder();
    // A verb must be followed by a space or the end ("HELOX" is not HELO); `MAIL FROM:` and
    // `RCPT TO:` end in a colon, so the path may follow directly.
    let verb = match verb {
        Some(v @ (Verb::MailFrom | Verb::RcptTo)) => v,
        Some(v) if rest.is_empty() || rest.starts_with(' ') => v,
        _ => return Err(Status::new(500, "5.5.1", "command unrecognized")),
    };
    let args: Vec<&str> = rest.split(' ').filter(|a| !a.is_empty()).collect();
    let no_args = |cmd: Command, name: &str| {
        if args.is_empty() {
            Ok(cmd)
        } else {
            Err(syntax(format!("syntax: {name} takes no argument")))
        }
    };
    match verb {
        Verb::Helo | Verb::Ehlo => {
            let [domain] = args.as_slice() else {
                let name = if verb == Verb::Helo { "HELO" } else { "EHLO" };
                return Err(syntax(format!("syntax: {name} domain")));
            };
            let domain = (*domain).to_string();
            Ok(if verb == Verb::Helo {
                Command::Helo(domain)
            } else {
                Command::Ehlo(domain)
            })
        }
        Verb::Mail => Err(syntax("syntax: MAIL FROM:<address>")),
        Verb::Rcpt => Err(syntax("syntax: RCPT TO:<address>")),
        Verb::MailFrom => {
            let (from, lex) = lex_path(lex.morph(), PathKind::Mail)?;
            let params = mail_params(&lex_params(lex.morph())?)?;
            if let Some(addr) = &from {
                if !params.smtputf8 && !is_ascii(addr) {
                    return Err(Status::new(
                        553,
                        "5.6.7",
                        "non-ASCII sender address needs SMTPUTF8",
                    ));
                }
            }
            Ok(Command::Mail { from, params })
        }
        Verb::RcptTo => {
            let (to, lex) = lex_path(lex.morph(), PathKind::Rcpt)?;
            let to = to.ok_or_else(|| PathKind::Rcpt.error("empty path"))?;
            let params = rcpt_params(&lex_params(lex.morph())?)?;
            Ok(Command::Rcpt { to, params })
        }
        Verb::Data => no_args(Command::Data, "DATA"),
        Verb::Rset => no_args(Command::Rset, "RSET"),
        Verb::Quit => no_args(Command::Quit, "QUIT"),
        Verb::StartTls => no_args(Command::StartTls, "STARTTLS"),
        Verb::Noop => Ok(Command::Noop),
        Verb::Help => Ok(Command::Help),
        Verb::Bdat => parse_bdat(&args),
        Verb::Vrfy | Verb::Expn | Verb::Auth => {
            let arg = rest.trim_matches(' ');
            if arg.is_empty() {
                return Err(syntax("syntax: argument required"));
            }
            let arg = arg.to_string();
            Ok(match verb {
                Verb::Vrfy => Command::Vrfy(arg),
                Verb::Expn => Command::Expn(arg),
                _ => Command::Auth(arg),
            })
        }
    }
}

fn parse_bdat(args: &[&str]) -> Result<Command, Status> {
    let bad = || syntax("syntax: BDAT size [LAST]");
    let (size, last) = match args {
        [size] => (*size, false),
        [size, last] if last.eq_ignore_ascii_case("last") => (*size, true),
        _ => return Err(bad()),
    };
    let size = parse_decimal(size).ok_or_else(bad)?;
    Ok(Command::Bdat { size, last })
}

/// A non-empty run of ASCII digits that fits a u64 (`str::parse` would also take a `+`).
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Lexes `[SP] "<" ... ">"` and parses it. Returns the address (`None` for `<>`) and the
/// lexer positioned right after `>`.
fn lex_path<'a>(
    mut lex: Lexer<'a, PathTok>,
    kind: PathKind,
) -> Result<(Option<Address>, Lexer<'a, PathTok>), Status> {
    let mut toks: Vec<(PathTok, &'a str)> = Vec::new();
    let mut start = None;
    let mut spaced = false;
    loop {
        let tok = match lex.next() {
            None => return Err(kind.error("missing <> around the address")),
            Some(Err(())) => return Err(kind.error("invalid character in address")),
            Some(Ok(t)) => t,
        };
        match (start, tok) {
            // The one space after the colon that common clients send.
            (None, PathTok::Space) if !spaced => spaced = true,
            (None, PathTok::Open) => start = Some(lex.span().start),
            (None, _) => return Err(kind.error("missing <> around the address")),
            (Some(_), PathTok::Open | PathTok::Space) => {
                return Err(kind.error("invalid character in address"));
            }
            (Some(s), PathTok::Close) => {
                if lex.span().end - s > MAX_PATH {
                    return Err(kind.error("path longer than 256 octets"));
                }
                let addr = parse_path(&toks, kind)?;
                return Ok((addr, lex));
            }
            (Some(_), t) => toks.push((t, lex.slice())),
        }
    }
}

/// The tokens between `<` and `>`.
fn parse_path(toks: &[(PathTok, &str)], kind: PathKind) -> Result<Option<Address>, Status> {
    if toks.is_empty() {
        return match kind {
            PathKind::Mail => Ok(None),
            PathKind::Rcpt => Err(kind.error("empty path")),
        };
    }
    let mailbox = if toks[0].0 == PathTok::At {
        // A source route: check it, then ignore it (RFC 5321 §4.1.2, appendix C).
        let colon = toks
            .iter()
            .position(|(t, _)| *t == PathTok::Colon)
            .ok_or_else(|| kind.error("source route without ':'"))?;
        for hop in toks[..colon].split(|(t, _)| *t == PathTok::Comma) {
            match hop {
                [(PathTok::At, _), domain @ ..] => {
                    parse_domain_toks(domain).map_err(|e| kind.error(e))?;
                }
                _ => return Err(kind.error("bad source route")),
            }
        }
        &toks[colon + 1..]
    } else {
        toks
    };
    let mut ats = mailbox
        .iter()
        .enumerate()
        .filter(|(_, (t, _))| *t == PathTok::At);
    let at = match (ats.next(), ats.next()) {
        (Some((i, _)), None) => i,
        (Some(_), Some(_)) => return Err(kind.error("more than one '@'")),
        (None, _) => {
            if kind == PathKind::Rcpt
                && matches!(mailbox, [(PathTok::Atom, s)] if s.eq_ignore_ascii_case("postmaster"))
            {
                return Ok(Some(Address {
                    local: "postmaster".to_string(),
                    domain: String::new(),
                }));
            }
            return Err(kind.error("missing '@domain'"));
        }
    };
    let local = parse_local(&mailbox[..at]).map_err(|e| kind.error(e))?;
    let domain = parse_domain_toks(&mailbox[at + 1..]).map_err(|e| kind.error(e))?;
    Ok(Some(Address { local, domain }))
}

/// A dot-string, or a quoted string in its canonical form ([`Address::canonical_local`]:
/// `"John.Smith"` is `John.Smith`, quotes stay where they are needed). The length limit
/// applies to the local part as written.
fn parse_local(toks: &[(PathTok, &str)]) -> Result<String, &'static str> {
    let local = match toks {
        [] => return Err("empty local part"),
        [(PathTok::Quoted, q)] => {
            if q.len() <= 2 {
                return Err("empty local part");
            }
            if q.len() > MAX_LOCAL_PART {
                return Err("local part longer than 64 octets");
            }
            Address::canonical_local(q).into_owned()
        }
        _ => {
            if !dot_separated(toks) {
                return Err("bad local part");
            }
            toks.iter().map(|(_, s)| *s).collect()
        }
    };
    if local.len() > MAX_LOCAL_PART {
        return Err("local part longer than 64 octets");
    }
    Ok(local)
}

/// Whether the tokens are `Atom (Dot Atom)*`.
fn dot_separated(toks: &[(PathTok, &str)]) -> bool {
    toks.len() % 2 == 1
        && toks.iter().enumerate().all(|(i, (t, _))| {
            *t == if i % 2 == 0 {
                PathTok::Atom
            } else {
                PathTok::Dot
            }
        })
}

/// A domain or an address literal from path tokens, lowercased.
fn parse_domain_toks(toks: &[(PathTok, &str)]) -> Result<String, &'static str> {
    match toks {
        [] => Err("empty domain"),
        [(PathTok::Literal, lit)] => parse_address_literal(lit),
        _ if dot_separated(toks) => {
            let text: String = toks.iter().map(|(_, s)| *s).collect();
            parse_domain(&text).ok_or("bad domain")
        }
        _ => Err("bad domain"),
    }
}

/// `[1.2.3.4]` or `[IPv6:…]`, at most 255 octets, lowercased. General address literals
/// (`[tag:…]`, RFC 5321 §4.1.3) have no registered tags in use and are refused.
fn parse_address_literal(lit: &str) -> Result<String, &'static str> {
    if lit.len() > MAX_DOMAIN {
        return Err("domain longer than 255 octets");
    }
    let inner = lit
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .ok_or("bad address literal")?;
    let ok = match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("ipv6:") => inner
            .get(5..)
            .is_some_and(|ip| ip.parse::<Ipv6Addr>().is_ok()),
        _ => inner.parse::<Ipv4Addr>().is_ok(),
    };
    if ok {
        Ok(lit.to_ascii_lowercase())
    } else {
        Err("bad address literal")
    }
}

/// Checks a hostname (RFC 5321 `Domain`, labels of letters, digits and inner hyphens, or
/// RFC 6531 U-labels) of at most 255 octets and at most 63 per label; returns it lowercased.
/// Address literals are not domains here.
pub fn parse_domain(s: &str) -> Option<String> {
    if s.is_empty() || s.len() > MAX_DOMAIN {
        return None;
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || !c.is_ascii())
    };
    if !s.split('.').all(label_ok) {
        return None;
    }
    // Non-ASCII letters may lowercase to something else entirely; ASCII-only keeps the
    // length check above meaningful and matches how the rule set stores domains.
    Some(s.to_ascii_lowercase())
}

/// Decodes RFC 3461 xtext (`+HH` for anything outside `!`..`~` and for `+`, `=`). Hex digits
/// in either case are accepted. Returns `None` for bad xtext or when the result is not
/// printable ASCII (a decoded CR or LF must never reach a header).
pub fn xtext_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let byte = match c {
            b'+' => {
                let hex = s.get(i + 1..i + 3)?;
                if !hex.bytes().all(|h| h.is_ascii_hexdigit()) {
                    return None;
                }
                i += 3;
                u8::from_str_radix(hex, 16).ok()?
            }
            b'!'..=b'~' if c != b'=' => {
                i += 1;
                c
            }
            _ => return None,
        };
        if !(b' '..=b'~').contains(&byte) {
            return None;
        }
        out.push(char::from(byte));
    }
    Some(out)
}

/// Encodes a string as RFC 3461 xtext (for the outbound side); non-ASCII is encoded byte by
/// byte.
pub fn xtext_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

/// Lexes the parameters after the path into `(keyword, value)` pairs, keywords uppercased.
fn lex_params(mut lex: Lexer<'_, ParamTok>) -> Result<Vec<(String, Option<&str>)>, Status> {
    let bad = || syntax("bad parameter syntax");
    let mut out: Vec<(String, Option<&str>)> = Vec::new();
    let mut after_space = false;
    while let Some(tok) = lex.next() {
        match tok.map_err(|()| bad())? {
            ParamTok::Space => after_space = true,
            ParamTok::Keyword if after_space => {
                after_space = false;
                out.push((lex.slice().to_ascii_uppercase(), None));
            }
            ParamTok::Value if !after_space => match out.last_mut() {
                Some((_, value @ None)) => *value = lex.slice().get(1..),
                _ => return Err(bad()),
            },
            _ => return Err(bad()),
        }
    }
    let mut seen: Vec<&str> = Vec::with_capacity(out.len());
    for (key, _) in &out {
        if seen.contains(&key.as_str()) {
            return Err(syntax(format!("duplicate {key} parameter")));
        }
        seen.push(key);
    }
    Ok(out)
}

fn unknown_param(key: &str) -> Status {
    Status::new(555, "5.5.4", format!("unsupported parameter {key}"))
}

fn need_value<'a>(key: &str, value: Option<&'a str>) -> Result<&'a str, Status> {
    value.ok_or_else(|| syntax(format!("{key} needs a value")))
}

fn mail_params(list: &[(String, Option<&str>)]) -> Result<MailParams, Status> {
    let mut p = MailParams::default();
    for (key, value) in list {
        let bad = || syntax(format!("bad {key} parameter"));
        match key.as_str() {
            "SIZE" => p.size = Some(parse_decimal(need_value(key, *value)?).ok_or_else(bad)?),
            "BODY" => {
                let v = need_value(key, *value)?;
                p.body = Some(if v.eq_ignore_ascii_case("7BIT") {
                    Body::SevenBit
                } else if v.eq_ignore_ascii_case("8BITMIME") {
                    Body::EightBitMime
                } else if v.eq_ignore_ascii_case("BINARYMIME") {
                    Body::BinaryMime
                } else {
                    return Err(bad());
                });
            }
            "SMTPUTF8" => {
                if value.is_some() {
                    return Err(bad());
                }
                p.smtputf8 = true;
            }
            "RET" => {
                let v = need_value(key, *value)?;
                p.ret = Some(if v.eq_ignore_ascii_case("FULL") {
                    Ret::Full
                } else if v.eq_ignore_ascii_case("HDRS") {
                    Ret::Hdrs
                } else {
                    return Err(bad());
                });
            }
            "ENVID" => {
                let v = need_value(key, *value)?;
                if v.len() > MAX_ENVID {
                    return Err(bad());
                }
                p.envid = Some(xtext_decode(v).ok_or_else(bad)?);
            }
            "XOORG" => p.xoorg = Some(parse_domain(need_value(key, *value)?).ok_or_else(bad)?),
            "AUTH" => p.auth = Some(xtext_decode(need_value(key, *value)?).ok_or_else(bad)?),
            _ => return Err(unknown_param(key)),
        }
    }
    Ok(p)
}

fn rcpt_params(list: &[(String, Option<&str>)]) -> Result<RcptParams, Status> {
    let mut p = RcptParams::default();
    for (key, value) in list {
        let bad = || syntax(format!("bad {key} parameter"));
        match key.as_str() {
            "NOTIFY" => p.notify = Some(need_value(key, *value)?.parse().map_err(|_| bad())?),
            "ORCPT" => {
                let v = need_value(key, *value)?;
                if v.len() > MAX_ORCPT {
                    return Err(bad());
                }
                let (kind, addr) = v.split_once(';').ok_or_else(bad)?;
                let kind_ok = !kind.is_empty()
                    && kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
                let addr = xtext_decode(addr).ok_or_else(bad)?;
                if !kind_ok || addr.is_empty() {
                    return Err(bad());
                }
                p.orcpt = Some(format!("{kind};{addr}"));
            }
            _ => return Err(unknown_param(key)),
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// `500 5.5.1`: the code and enhanced code of the refusal.
    fn err(line: &str) -> String {
        let e = parse_command(line.as_bytes()).unwrap_err();
        format!("{} {}", e.code, e.enhanced)
    }

    fn rcpt(line: &str) -> (String, String) {
        match parse_command(line.as_bytes()).unwrap() {
            Command::Rcpt { to, .. } => (to.local, to.domain),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn verbs_are_case_insensitive_and_whole_words() {
        assert_eq!(parse_command(b"quit").unwrap(), Command::Quit);
        assert_eq!(parse_command(b"StartTLS").unwrap(), Command::StartTls);
        assert_eq!(
            parse_command(b"ehlo Mx.Example.COM").unwrap(),
            Command::Ehlo("Mx.Example.COM".into())
        );
        assert_eq!(err("QUITX"), "500 5.5.1");
        assert_eq!(err("HELOmx"), "500 5.5.1");
        assert_eq!(err(""), "500 5.5.1");
        assert_eq!(err(" QUIT"), "500 5.5.1");
        assert_eq!(err("QUIT now"), "501 5.5.4");
        assert_eq!(parse_command(b"QUIT  ").unwrap(), Command::Quit);
        assert_eq!(err("EHLO"), "501 5.5.4");
        assert_eq!(err("EHLO a b"), "501 5.5.4");
        assert_eq!(err("MAIL"), "501 5.5.4");
        assert_eq!(err("MAIL TO:<a@b>"), "501 5.5.4");
        assert_eq!(err("RCPT FROM:<a@b>"), "501 5.5.4");
        assert_eq!(parse_command(b"NOOP anything").unwrap(), Command::Noop);
        assert_eq!(
            parse_command(b"AUTH PLAIN AGEAYg==").unwrap(),
            Command::Auth("PLAIN AGEAYg==".into())
        );
        assert_eq!(err("VRFY"), "501 5.5.4");
    }

    #[test]
    fn space_after_colon_is_tolerated_once() {
        assert_eq!(rcpt("RCPT TO: <a@b.c>"), ("a".into(), "b.c".into()));
        assert_eq!(err("RCPT TO:  <a@b.c>"), "501 5.1.3");
        assert_eq!(err("MAIL FROM: "), "501 5.1.7");
        assert_eq!(err("MAIL FROM:<a@b.c >"), "501 5.1.7");
        assert_eq!(err("MAIL FROM:< a@b.c>"), "501 5.1.7");
    }

    #[test]
    fn paths() {
        assert_eq!(
            rcpt("RCPT TO:<A.b@EXAMPLE.com>"),
            ("A.b".into(), "example.com".into())
        );
        assert_eq!(
            rcpt("RCPT TO:<\"a b>c\"@x.y>"),
            ("\"a b>c\"".into(), "x.y".into())
        );
        // A quoted local part that needs no quotes is the unquoted one; one that needs
        // them keeps them, escapes reduced to `"` and `\`.
        assert_eq!(
            rcpt("RCPT TO:<\"John.Smith\"@myexchlab.com>"),
            ("John.Smith".into(), "myexchlab.com".into())
        );
        assert_eq!(
            rcpt("RCPT TO:<\"Jo\\hn\"@d.e>"),
            ("John".into(), "d.e".into())
        );
        assert_eq!(
            rcpt("RCPT TO:<\"user%host\"@d.e>"),
            ("user%host".into(), "d.e".into())
        );
        assert_eq!(
            rcpt("RCPT TO:<\"user@host\"@d.e>"),
            ("\"user@host\"".into(), "d.e".into())
        );
        assert_eq!(
            rcpt("RCPT TO:<\"a\\ b\\\"c\"@d.e>"),
            ("\"a b\\\"c\"".into(), "d.e".into())
        );
        assert_eq!(
            rcpt("RCPT TO:<\"a..b\"@d.e>"),
            ("\"a..b\"".into(), "d.e".into())
        );
        assert_eq!(
            rcpt("RCPT TO:<PostMaster>"),
            ("postmaster".into(), "".into())
        );
        assert_eq!(
            rcpt("RCPT TO:<a@[IPv6:2001:DB8::1]>"),
            ("a".into(), "[ipv6:2001:db8::1]".into())
        );
        assert_eq!(
            rcpt("RCPT TO:<@a.b,@[1.2.3.4]:u@d.e>"),
            ("u".into(), "d.e".into())
        );
        assert_eq!(err("RCPT TO:<@a.b:@c.d:u@d.e>"), "501 5.1.3");
        assert_eq!(err("RCPT TO:<@a.b u@d.e>"), "501 5.1.3");
        assert_eq!(err("RCPT TO:<.a@b>"), "501 5.1.3");
        assert_eq!(err("RCPT TO:<a..b@c>"), "501 5.1.3");
        assert_eq!(err("RCPT TO:<a.@c>"), "501 5.1.3");
        assert_eq!(err("RCPT TO:<a@-c.d>"), "501 5.1.3");
        assert_eq!(err("RCPT TO:<a@c..d>"), "501 5.1.3");
        assert_eq!(err("RCPT TO:<a@c.d.>"), "501 5.1.3");
        assert_eq!(err("RCPT TO:<a@c_d>"), "501 5.1.3");
        assert_eq!(err("RCPT TO:<a@[1.2.3]>"), "501 5.1.3");
        assert_eq!(err("RCPT TO:<a@[01.2.3.4]>"), "501 5.1.3");
        assert_eq!(err("RCPT TO:<a@[tag:x]>"), "501 5.1.3");
        assert_eq!(err("RCPT TO:<\"\"@c>"), "501 5.1.3");
        assert_eq!(err("RCPT TO:<a@b"), "501 5.1.3");
        assert_eq!(err("RCPT TO:<<a@b>>"), "501 5.1.3");
        assert_eq!(err("RCPT TO:<>"), "501 5.1.3");
        assert_eq!(err("RCPT TO:<postmaster@>"), "501 5.1.3");
        assert_eq!(err("MAIL FROM:<postmaster>"), "501 5.1.7");
        assert_eq!(err("RCPT TO:<a@b>x"), "501 5.5.4");
    }

    #[test]
    fn utf8_addresses() {
        let (l, d) = rcpt("RCPT TO:<jøran@bløbær.no>");
        assert_eq!((l.as_str(), d.as_str()), ("jøran", "bløbær.no"));
        assert!(!is_ascii(&Address {
            local: l,
            domain: d
        }));
        assert_eq!(err("MAIL FROM:<jøran@b.no>"), "553 5.6.7");
        assert!(parse_command("MAIL FROM:<jøran@b.no> SMTPUTF8".as_bytes()).is_ok());
    }

    #[test]
    fn params() {
        let Command::Mail { from, params } = parse_command(
            b"MAIL FROM:<> size=100 Body=8BITMIME RET=hdrs ENVID=a+2Bb+3dc XOORG=Contoso.COM AUTH=<>",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(from, None);
        assert_eq!(
            params,
            MailParams {
                size: Some(100),
                body: Some(Body::EightBitMime),
                smtputf8: false,
                ret: Some(Ret::Hdrs),
                envid: Some("a+b=c".into()),
                xoorg: Some("contoso.com".into()),
                auth: Some("<>".into()),
            }
        );
        assert_eq!(err("MAIL FROM:<> SIZE"), "501 5.5.4");
        assert_eq!(err("MAIL FROM:<> SIZE=+1"), "501 5.5.4");
        assert_eq!(err("MAIL FROM:<> SIZE=18446744073709551616"), "501 5.5.4");
        assert_eq!(err("MAIL FROM:<> SIZE=1 size=2"), "501 5.5.4");
        assert_eq!(err("MAIL FROM:<> FOO=1"), "555 5.5.4");
        assert_eq!(err("MAIL FROM:<> NOTIFY=NEVER"), "555 5.5.4");
        assert_eq!(err("MAIL FROM:<> ENVID=a+0D+0Ab"), "501 5.5.4");
        assert_eq!(err("MAIL FROM:<> ENVID=a+0"), "501 5.5.4");
        assert_eq!(err("MAIL FROM:<> XOORG=[1.2.3.4]"), "501 5.5.4");
        assert_eq!(err("MAIL FROM:<> SMTPUTF8=yes"), "501 5.5.4");
        assert_eq!(err("MAIL FROM:<> =1"), "501 5.5.4");
        assert_eq!(err("MAIL FROM:<> SIZE==1"), "501 5.5.4");
        let Command::Rcpt { params, .. } =
            parse_command(b"RCPT TO:<a@b> NOTIFY=success,Delay ORCPT=rfc822;a+40b").unwrap()
        else {
            panic!()
        };
        assert_eq!(
            params.notify,
            Some(Notify {
                never: false,
                success: true,
                failure: false,
                delay: true
            })
        );
        assert_eq!(params.orcpt.as_deref(), Some("rfc822;a@b"));
        assert_eq!(err("RCPT TO:<a@b> NOTIFY=NEVER,DELAY"), "501 5.5.4");
        assert_eq!(err("RCPT TO:<a@b> NOTIFY=DELAY,DELAY"), "501 5.5.4");
        assert_eq!(err("RCPT TO:<a@b> ORCPT=a@b"), "501 5.5.4");
        assert_eq!(err("RCPT TO:<a@b> SIZE=1"), "555 5.5.4");
    }

    #[test]
    fn bdat() {
        assert_eq!(
            parse_command(b"BDAT 0 last").unwrap(),
            Command::Bdat {
                size: 0,
                last: true
            }
        );
        assert_eq!(
            parse_command(b"BDAT 18446744073709551615").unwrap(),
            Command::Bdat {
                size: u64::MAX,
                last: false
            }
        );
        assert_eq!(err("BDAT 18446744073709551616"), "501 5.5.4");
        assert_eq!(err("BDAT -1"), "501 5.5.4");
        assert_eq!(err("BDAT"), "501 5.5.4");
        assert_eq!(err("BDAT 1 LAST x"), "501 5.5.4");
        assert_eq!(err("BDAT 1 FIRST"), "501 5.5.4");
    }

    #[test]
    fn bytes() {
        assert_eq!(err("NOOP \u{7f}"), "500 5.5.2");
        assert_eq!(err("NOOP\r"), "500 5.5.2");
        assert_eq!(err("NOOP\tx"), "500 5.5.2");
        assert_eq!(parse_command(b"NOOP \xff").unwrap_err().enhanced, "5.5.2");
    }

    #[test]
    fn xtext_round_trip() {
        for s in ["", "a+b=c", "rfc822;<x@y>", " ~!"] {
            assert_eq!(xtext_decode(&xtext_encode(s)).as_deref(), Some(s));
        }
        assert_eq!(xtext_decode("+2b"), Some("+".into()));
        assert_eq!(xtext_decode("a=b"), None);
        assert_eq!(xtext_decode("+C3+A9"), None);
    }

    #[test]
    fn find_line_cases() {
        assert_eq!(find_line(b"QUIT\r\nX", 512), LineEnd::Complete(6));
        assert_eq!(find_line(b"QUIT\nX", 512), LineEnd::BareLf(5));
        assert_eq!(find_line(b"\n", 512), LineEnd::BareLf(1));
        assert_eq!(find_line(b"QUIT\r", 512), LineEnd::Incomplete);
        assert_eq!(find_line(b"", 512), LineEnd::Incomplete);
        assert_eq!(find_line(b"abc\r\n", 5), LineEnd::Complete(5));
        assert_eq!(find_line(b"abcd\r\n", 5), LineEnd::TooLong);
        assert_eq!(find_line(b"abcd\r", 5), LineEnd::TooLong);
        assert_eq!(find_line(b"abc\r", 5), LineEnd::Incomplete);
    }
}
