//! Delivery status notifications (bounces and delay warnings): the RFC 3464
//! multipart/report the relay sends back to the original sender when it cannot deliver.

use mail_builder::MessageBuilder;
use mail_builder::headers::HeaderType;
use mail_builder::headers::address::Address;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::date::Date;
use mail_builder::headers::raw::Raw;
use mail_builder::mime::MimePart;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Longest Diagnostic-Code text kept, so the field stays well under 998 octets.
const MAX_DIAGNOSTIC: usize = 900;

/// What happened to a recipient, as the DSN's Action field says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsnAction {
    /// Given up: the message was not delivered.
    Failed,
    /// Not delivered yet; still being retried.
    Delayed,
}

impl DsnAction {
    /// The Action field value.
    pub fn as_str(self) -> &'static str {
        match self {
            DsnAction::Failed => "failed",
            DsnAction::Delayed => "delayed",
        }
    }
}

/// One recipient the report is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedRecipient {
    /// The address delivery was attempted to.
    pub address: String,
    /// The DSN ORCPT (`rfc822;joe@example.com`, decoded), when the client gave one.
    pub original: Option<String>,
    /// The enhanced status, e.g. `5.1.1`.
    pub status: String,
    /// The Diagnostic-Code value, e.g. `smtp; 550 5.1.1 user unknown`.
    pub diagnostic: String,
    /// The host that answered, if any.
    pub remote_mta: Option<String>,
    /// Failed or delayed.
    pub action: DsnAction,
}

/// Everything a report is made from.
#[derive(Debug, Clone, Copy)]
pub struct DsnInput<'a> {
    /// This relay's host name (Reporting-MTA, and the From domain).
    pub reporting_mta: &'a str,
    /// Where the report goes: the original envelope sender.
    pub original_sender: &'a str,
    /// The DSN ENVID the client gave.
    pub envid: Option<&'a str>,
    /// Return the whole message (RET=FULL) rather than only its header.
    pub ret_full: bool,
    /// When the relay received the message (Unix seconds).
    pub arrival_date: u64,
    /// The recipients reported on.
    pub recipients: &'a [FailedRecipient],
    /// The original message as received.
    pub original: &'a [u8],
}

/// Whether a failure for a message from `mail_from` gets a report: never for the null
/// sender (`None` or empty), so that reports cannot bounce back and forth.
pub fn should_bounce(mail_from: Option<&str>) -> bool {
    mail_from.is_some_and(|s| !s.is_empty())
}

/// An RFC 3464 `multipart/report; report-type=delivery-status` from
/// `MAILER-DAEMON@reporting_mta` to the original sender, with `Auto-Submitted: auto-replied`:
/// a human-readable part, the `message/delivery-status` part (per message: Reporting-MTA,
/// Original-Envelope-Id, Arrival-Date; per recipient: Final-Recipient, Original-Recipient,
/// Action, Status, Remote-MTA, Diagnostic-Code), and the original as `message/rfc822` when
/// `ret_full`, else its header only as `text/rfc822-headers`. Every line ends in CRLF.
/// Values that came from outside (addresses, remote replies) have control characters
/// replaced, so they cannot add header lines.
pub fn compose(input: &DsnInput<'_>) -> Vec<u8> {
    let mta = clean(input.reporting_mta);
    let any_failed = input
        .recipients
        .iter()
        .any(|r| r.action == DsnAction::Failed);

    let mut human = String::new();
    let _ = write!(human, "This is the mail system at host {mta}.\r\n\r\n");
    if any_failed {
        human.push_str("Your message could not be delivered to one or more recipients.\r\n");
        human.push_str(if input.original.is_empty() {
            "Its content could not be read back, so it is not attached.\r\n"
        } else {
            "It is attached below.\r\n"
        });
    } else {
        human.push_str(
            "Your message has not been delivered yet to one or more recipients.\r\n\
             Delivery will be retried; you do not need to send it again.\r\n",
        );
    }
    human.push_str("\r\n");
    for r in input.recipients {
        let _ = write!(
            human,
            "<{}> ({}): {}\r\n",
            clean(&r.address),
            r.action.as_str(),
            diagnostic(&r.diagnostic)
        );
    }

    let mut status = String::new();
    let _ = write!(status, "Reporting-MTA: dns; {mta}\r\n");
    if let Some(envid) = input.envid {
        let _ = write!(status, "Original-Envelope-Id: {}\r\n", clean(envid));
    }
    let _ = write!(
        status,
        "Arrival-Date: {}\r\n",
        Date::new(i64::try_from(input.arrival_date).unwrap_or(i64::MAX)).to_rfc822()
    );
    for r in input.recipients {
        status.push_str("\r\n");
        let _ = write!(status, "Final-Recipient: {}\r\n", typed_address(&r.address));
        if let Some(orig) = &r.original {
            let (kind, addr) = match orig.split_once(';') {
                Some((k, a)) => (clean(k.trim()), clean(a.trim())),
                None => ("rfc822".to_string(), clean(orig.trim())),
            };
            let _ = write!(status, "Original-Recipient: {kind}; {addr}\r\n");
        }
        let _ = write!(status, "Action: {}\r\n", r.action.as_str());
        let _ = write!(status, "Status: {}\r\n", clean(&r.status));
        if let Some(remote) = &r.remote_mta {
            let _ = write!(status, "Remote-MTA: dns; {}\r\n", clean(remote));
        }
        let diag = diagnostic(&r.diagnostic);
        if diag.contains(';') {
            let _ = write!(status, "Diagnostic-Code: {diag}\r\n");
        } else {
            let _ = write!(status, "Diagnostic-Code: smtp; {diag}\r\n");
        }
    }

    let original = crate::smtp::to_crlf(input.original);
    // Nothing to return (a body damaged in the spool): no third part, which RFC 6522
    // allows, rather than an empty one that looks like the message was empty.
    let returned = if original.is_empty() {
        None
    } else if input.ret_full {
        let cte = if original.is_ascii() { "7bit" } else { "8bit" };
        Some(MimePart::new(ContentType::new("message/rfc822"), original).transfer_encoding(cte))
    } else {
        let mut head = original;
        head.truncate(header_len(&head));
        let cte = if head.is_ascii() { "7bit" } else { "8bit" };
        Some(MimePart::new(ContentType::new("text/rfc822-headers"), head).transfer_encoding(cte))
    };

    let status_cte = if status.is_ascii() { "7bit" } else { "8bit" };
    let report = MimePart::new(
        ContentType::new("multipart/report").attribute("report-type", "delivery-status"),
        vec![
            MimePart::new(
                ContentType::new("text/plain").attribute("charset", "utf-8"),
                human.into_bytes(),
            )
            .transfer_encoding(if status_cte == "7bit" { "7bit" } else { "8bit" }),
            MimePart::new(
                ContentType::new("message/delivery-status"),
                status.into_bytes(),
            )
            .transfer_encoding(status_cte),
        ]
        .into_iter()
        .chain(returned)
        .collect::<Vec<_>>(),
    );

    let subject = if any_failed {
        "Undelivered Mail Returned to Sender"
    } else {
        "Delayed Mail (still being retried)"
    };
    let now = crate::clock::since_epoch();
    let message = MessageBuilder::new()
        .from(Address::new_address(
            Some("Mail Delivery System"),
            format!("MAILER-DAEMON@{mta}"),
        ))
        .to(Address::new_address(
            None::<&str>,
            clean(input.original_sender),
        ))
        .subject(subject)
        .date(Date::new(i64::try_from(now.as_secs()).unwrap_or(i64::MAX)))
        .message_id(message_id(&mta, now.as_nanos()))
        .header("Auto-Submitted", HeaderType::Raw(Raw::new("auto-replied")))
        .body(report);
    // Writing to a Vec cannot fail.
    message.write_to_vec().unwrap_or_default()
}

/// A unique id: time, a process-wide counter and the process id.
fn message_id(mta: &str, nanos: u128) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("dsn.{nanos:x}.{n}.{}@{mta}", std::process::id())
}

/// `rfc822; addr`, or `utf-8; addr` for an internationalised address (RFC 6533).
fn typed_address(addr: &str) -> String {
    let addr = clean(addr);
    if addr.is_ascii() {
        format!("rfc822; {addr}")
    } else {
        format!("utf-8; {addr}")
    }
}

fn diagnostic(d: &str) -> String {
    let mut d = clean(d.trim());
    if d.len() > MAX_DIAGNOSTIC {
        let mut cut = MAX_DIAGNOSTIC;
        while !d.is_char_boundary(cut) {
            cut -= 1;
        }
        d.truncate(cut);
    }
    d
}

/// Control characters (CR and LF above all) become spaces.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The length of the header block of a CRLF message, its last line's CRLF included and the
/// empty line excluded.
fn header_len(msg: &[u8]) -> usize {
    if msg.starts_with(b"\r\n") {
        return 0;
    }
    let parsed = mail_parser::MessageParser::new()
        .parse_headers(msg)
        .map(|m| m.root_part().offset_body as usize);
    let by_search = msg
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(msg.len(), |p| p + 2);
    // Trust the parser only when it agrees there is an empty line where it says.
    match parsed {
        Some(body) if body >= 2 && body <= msg.len() && msg[..body].ends_with(b"\r\n\r\n") => {
            body - 2
        }
        _ => by_search,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn header_block() {
        let m = crate::smtp::to_crlf(b"Subject: x\nFrom: a@b\n\nbody\n");
        assert_eq!(&m[..header_len(&m)], b"Subject: x\r\nFrom: a@b\r\n");
        let m = crate::smtp::to_crlf(b"Subject: only\n");
        assert_eq!(&m[..header_len(&m)], b"Subject: only\r\n");
    }

    /// A message whose body could not be read back (damaged in the spool) is reported
    /// without a returned part, not with an empty one.
    #[test]
    fn nothing_to_return_means_no_third_part() {
        let failed = [FailedRecipient {
            address: "a@example.net".into(),
            original: None,
            status: "5.3.0".into(),
            diagnostic: "smtp; 554 5.3.0 damaged".into(),
            remote_mta: None,
            action: DsnAction::Failed,
        }];
        for ret_full in [false, true] {
            let raw = compose(&DsnInput {
                reporting_mta: "relay.test",
                original_sender: "s@example.org",
                envid: None,
                ret_full,
                arrival_date: 0,
                recipients: &failed,
                original: b"",
            });
            let text = String::from_utf8(raw).unwrap();
            assert!(text.contains("message/delivery-status"), "{text}");
            assert!(!text.contains("rfc822-headers"), "{text}");
            assert!(!text.contains("message/rfc822"), "{text}");
            assert!(text.contains("not attached"), "{text}");
        }
    }

    #[test]
    fn null_sender_never_bounces() {
        assert!(!should_bounce(None));
        assert!(!should_bounce(Some("")));
        assert!(should_bounce(Some("a@example.com")));
    }
}
