//! The message-transfer phase, sans I/O: [`DataReceiver`] for `DATA` (ends only at a real
//! CRLF.CRLF, undoes dot-stuffing) and [`BdatReceiver`] for `BDAT` chunks, both normalising
//! bare CR and LF to CRLF under a size cap; [`dot_stuff`] for the outbound side and
//! [`to_crlf`] for a whole message (a returned message in a DSN). One rule of line endings
//! for all of them (`next_line`).
//!
//! Why normalise rather than pass through: a stored message without bare CR or LF cannot
//! carry an end-of-data marker that some next hop reads differently (SMTP smuggling), and
//! no hop can disagree with us about where a line ends. After a bare line ending the next
//! line is *not* a real line start: a `.` there neither ends the data nor is unstuffed, so
//! the bytes are kept literally and [`dot_stuff`] re-protects them when relaying.

pub use super::buffer::Buffered;
#[cfg(test)]
use super::buffer::SLACK;
use super::buffer::Sink;
use super::status::Status;

/// The longest text line RFC 5321 §4.5.3.1.6 allows, CRLF excluded (1,000 octets with it).
pub const MAX_TEXT_LINE: u64 = 998;

/// What one [`DataReceiver::feed`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataProgress {
    /// Bytes of the input consumed; any rest belongs to the next command (pipelining).
    pub consumed: usize,
    /// Whether the end-of-data marker has been seen.
    pub done: bool,
}

/// Why a received message is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    /// Larger than the limit after normalisation.
    #[error("message size exceeds the limit of {limit} octets")]
    TooLarge {
        /// The limit the receiver was created with.
        limit: u64,
    },
    /// The header block (everything before the first empty line, or the whole message when
    /// there is none) is larger than its limit.
    #[error("header exceeds the limit of {limit} octets")]
    HeaderTooLarge {
        /// The header limit the receiver was given.
        limit: u64,
    },
    /// A line (header or body) is longer than the limit, CRLF excluded: RFC 5321
    /// §4.5.3.1.6 allows 998 octets, and a next hop that holds to it would refuse the message
    /// after this relay had accepted it.
    #[error("message has a line longer than {limit} octets")]
    LineTooLong {
        /// The longest line allowed.
        limit: u64,
    },
    /// The relay's memory for message data was spent while this message arrived; the
    /// client may try again later.
    #[error("insufficient system resources")]
    NoMemory,
    /// `finish` was called before the end-of-data marker.
    #[error("message data ended before the end-of-data marker")]
    Incomplete,
}

impl DataError {
    /// The status to answer the client with.
    pub fn status(&self) -> Status {
        match self {
            DataError::TooLarge { limit } => Status::new(
                552,
                "5.3.4",
                format!("message size exceeds fixed maximum message size of {limit} octets"),
            ),
            // Exchange answers an over-long header block with 552 5.3.4 as well (its
            // MaxHeaderSize): the message is too big in one of its parts, permanently.
            DataError::HeaderTooLarge { limit } => Status::new(
                552,
                "5.3.4",
                format!("header exceeds the limit of {limit} octets"),
            ),
            // Exim's answer to a line over its `message_linelength_limit` (998 as well): the
            // transaction failed (554) for its content (5.6.0), permanently; the sender hears
            // it at once rather than in a bounce from the next hop.
            DataError::LineTooLong { limit } => Status::new(
                554,
                "5.6.0",
                format!("message has a line longer than {limit} octets (RFC 5321 4.5.3.1.6)"),
            ),
            DataError::NoMemory => Status::new(
                452,
                "4.3.1",
                "insufficient system resources; try again later".to_string(),
            ),
            DataError::Incomplete => {
                Status::new(451, "4.3.0", "message data incomplete".to_string())
            }
        }
    }
}

macro_rules! buffered {
    ($t:ty) => {
        impl Buffered for $t {
            fn capacity_for(&self, input: usize) -> usize {
                self.sink.capacity_for(input)
            }
            fn reserve(&mut self, capacity: usize) {
                self.sink.reserve(capacity)
            }
            fn capacity(&self) -> usize {
                self.sink.buf.capacity()
            }
            fn out_of_memory(&mut self) {
                self.sink.out_of_memory()
            }
            fn refusal(&self) -> Option<DataError> {
                self.sink.refusal()
            }
        }
    };
}

buffered!(DataReceiver);
buffered!(BdatReceiver);

/// Where the `DATA` state machine stands after the bytes seen so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// After a real CRLF (or at the start): a `.` here is special.
    LineStart,
    /// Inside a line, or after a bare CR/LF.
    Mid,
    /// After a CR not yet known to be part of a CRLF.
    Cr,
    /// After a `.` at a real line start.
    Dot,
    /// After `.` CR at a real line start: LF ends the data.
    DotCr,
    /// The end-of-data marker has been consumed.
    Done,
}

/// Receives the bytes after `DATA`'s 354 reply, incrementally: feed it whatever was read,
/// in any split, until [`DataProgress::done`].
#[derive(Debug)]
pub struct DataReceiver {
    sink: Sink,
    state: State,
    bare: u64,
}

impl DataReceiver {
    /// A receiver keeping at most `max_size` octets (after normalisation and unstuffing);
    /// `u64::MAX` for no limit.
    pub fn new(max_size: u64) -> Self {
        DataReceiver {
            sink: Sink::new(max_size),
            state: State::LineStart,
            bare: 0,
        }
    }

    /// The same, refusing a header block over `max_header` octets
    /// ([`DataError::HeaderTooLarge`]); it is not kept past that either.
    pub fn with_header_limit(mut self, max_header: u64) -> Self {
        self.sink.max_head = max_header;
        self
    }

    /// The same, refusing a message with a line (CRLF excluded, a dot doubled for
    /// transparency not counted) over `max_line` octets ([`DataError::LineTooLong`]); it is
    /// not kept past that either.
    pub fn with_line_limit(mut self, max_line: u64) -> Self {
        self.sink.max_line = max_line;
        self
    }

    /// Consumes bytes of the DATA stream; returns how many were consumed (all of them unless
    /// the end-of-data marker was reached) and whether the end (CRLF.CRLF) was seen.
    pub fn feed(&mut self, input: &[u8]) -> DataProgress {
        let mut i = 0;
        // Each arm either advances `i` or changes the state to one that will.
        while let Some(&b) = input.get(i) {
            match self.state {
                State::Done => break,
                State::Mid => {
                    let rest = input.get(i..).unwrap_or_default();
                    let run = rest
                        .iter()
                        .position(|&c| c == b'\r' || c == b'\n')
                        .unwrap_or(rest.len());
                    if run > 0 {
                        self.sink.push(rest.get(..run).unwrap_or_default());
                        i += run;
                        continue;
                    }
                    if b == b'\r' {
                        self.state = State::Cr;
                    } else {
                        self.bare_ending();
                    }
                    i += 1;
                }
                State::Cr => {
                    if b == b'\n' {
                        self.sink.push(b"\r\n");
                        self.state = State::LineStart;
                        i += 1;
                    } else {
                        // The pending CR was bare; `b` is looked at again as mid-line.
                        self.bare_ending();
                        self.state = State::Mid;
                    }
                }
                State::LineStart => {
                    if b == b'.' {
                        self.state = State::Dot;
                        i += 1;
                    } else {
                        self.state = State::Mid;
                    }
                }
                State::Dot => match b {
                    b'.' => {
                        self.sink.push(b".");
                        self.state = State::Mid;
                        i += 1;
                    }
                    b'\r' => {
                        self.state = State::DotCr;
                        i += 1;
                    }
                    _ => {
                        self.sink.push(b".");
                        self.state = State::Mid;
                    }
                },
                State::DotCr => {
                    if b == b'\n' {
                        self.state = State::Done;
                        i += 1;
                    } else {
                        // `.` then a bare CR: body, not the end.
                        self.sink.push(b".");
                        self.bare_ending();
                        self.state = State::Mid;
                    }
                }
            }
        }
        DataProgress {
            consumed: i,
            done: self.state == State::Done,
        }
    }

    fn bare_ending(&mut self) {
        self.bare += 1;
        self.sink.push(b"\r\n");
    }

    /// Whether the end-of-data marker has been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Bare CRs and LFs seen (each stored as CRLF), for the log.
    pub fn bare_line_endings(&self) -> u64 {
        self.bare
    }

    /// Octets of message so far, normalised, including any not kept past the limit.
    pub fn size(&self) -> u64 {
        self.sink.size
    }

    /// Whether the limit has been passed (the session may note it early; it still has to
    /// read to the end of the data before replying).
    pub fn is_too_large(&self) -> bool {
        self.sink.size > self.sink.limit
    }

    /// The unstuffed message (ending with CRLF unless empty), or why it is refused.
    pub fn finish(self) -> Result<Vec<u8>, DataError> {
        if self.state != State::Done {
            return Err(DataError::Incomplete);
        }
        self.sink.finish()
    }
}

/// Assembles a message from `BDAT` chunks. Chunks are exact byte counts, so there is no
/// end marker and no dot-unstuffing, but line endings are normalised as for `DATA`, also
/// across chunk boundaries, under the same size cap. Because of the normalisation the
/// session must not advertise `BINARYMIME`.
#[derive(Debug)]
pub struct BdatReceiver {
    sink: Sink,
    pending_cr: bool,
    bare: u64,
}

impl BdatReceiver {
    /// A receiver keeping at most `max_size` octets; `u64::MAX` for no limit.
    pub fn new(max_size: u64) -> Self {
        BdatReceiver {
            sink: Sink::new(max_size),
            pending_cr: false,
            bare: 0,
        }
    }

    /// The same, refusing a header block over `max_header` octets
    /// ([`DataError::HeaderTooLarge`]); it is not kept past that either.
    pub fn with_header_limit(mut self, max_header: u64) -> Self {
        self.sink.max_head = max_header;
        self
    }

    /// The same, refusing a message with a line (CRLF excluded, a dot doubled for
    /// transparency not counted) over `max_line` octets ([`DataError::LineTooLong`]); it is
    /// not kept past that either.
    pub fn with_line_limit(mut self, max_line: u64) -> Self {
        self.sink.max_line = max_line;
        self
    }

    /// Appends bytes of a chunk (a chunk may be fed in any number of pieces). Past the
    /// limit bytes are only counted; the session still reads and discards the whole chunk.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        if self.pending_cr {
            if let Some(&first) = bytes.first() {
                self.pending_cr = false;
                if first == b'\n' {
                    self.sink.push(b"\r\n");
                    bytes = bytes.get(1..).unwrap_or_default();
                } else {
                    self.bare_ending();
                }
            }
        }
        while !bytes.is_empty() {
            let (line, ending, rest) = next_line(bytes);
            self.sink.push(line);
            match ending {
                Ending::Crlf => self.sink.push(b"\r\n"),
                Ending::Bare => self.bare_ending(),
                Ending::CrAtEnd => self.pending_cr = true,
                Ending::None => {}
            }
            bytes = rest;
        }
    }

    fn bare_ending(&mut self) {
        self.bare += 1;
        self.sink.push(b"\r\n");
    }

    /// Bare CRs and LFs seen so far (each stored as CRLF), for the log.
    pub fn bare_line_endings(&self) -> u64 {
        self.bare
    }

    /// Octets of message so far, normalised, including any not kept past the limit.
    pub fn size(&self) -> u64 {
        self.sink.size
    }

    /// Whether the limit has been passed.
    pub fn is_too_large(&self) -> bool {
        self.sink.size > self.sink.limit
    }

    /// After the `LAST` chunk: the message, given a final CRLF if it lacks one (as a DATA
    /// message always has), or why it is refused.
    pub fn finish(mut self) -> Result<Vec<u8>, DataError> {
        if self.pending_cr {
            self.pending_cr = false;
            self.bare_ending();
        }
        if self.sink.keep && !self.sink.buf.is_empty() && !self.sink.buf.ends_with(b"\r\n") {
            self.sink.push(b"\r\n");
        }
        self.sink.finish()
    }
}

/// How a line ends, as [`next_line`] finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// CR LF.
    Crlf,
    /// A CR not followed by LF, or an LF not preceded by CR.
    Bare,
    /// A CR that is the input's last byte: whether it is bare depends on what comes next.
    CrAtEnd,
    /// None: the input ends inside the line.
    None,
}

/// Splits off the first line of `input`: its content, how it ends, and the rest. The one
/// rule of line endings that the BDAT receiver and the whole-message normalisers share (the
/// DATA receiver's byte-at-a-time state machine applies it too, interleaved with
/// unstuffing and the end marker): CRLF, a bare CR and a bare LF each end a line.
fn next_line(input: &[u8]) -> (&[u8], Ending, &[u8]) {
    let run = input
        .iter()
        .position(|&c| c == b'\r' || c == b'\n')
        .unwrap_or(input.len());
    let (line, tail) = input.split_at_checked(run).unwrap_or((input, &[]));
    match tail {
        [] => (line, Ending::None, tail),
        [b'\r', b'\n', rest @ ..] => (line, Ending::Crlf, rest),
        [b'\r'] => (line, Ending::CrAtEnd, &[]),
        [_, rest @ ..] => (line, Ending::Bare, rest),
    }
}

/// Appends `message` to `out` with every line ending CRLF: bare CRs and LFs become CRLF and
/// a last line without an ending gets one (an empty message stays empty). With `stuff`, a
/// line starting with `.` gets another.
fn push_crlf_lines(message: &[u8], stuff: bool, out: &mut Vec<u8>) {
    let mut rest = message;
    while !rest.is_empty() {
        let (line, _, tail) = next_line(rest);
        if stuff && line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
        rest = tail;
    }
}

/// A whole message with every line ending CRLF, as the receivers store it: bare CRs and LFs
/// become CRLF, and a non-empty message ends with CRLF.
pub fn to_crlf(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 40 + 2);
    push_crlf_lines(message, false, &mut out);
    out
}

/// Prepares a message for `DATA` on the outbound side: every bare CR or LF becomes CRLF,
/// lines starting with `.` get another, the message is made to end with CRLF (unless
/// empty), and the end marker `.\r\n` is appended.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    dot_stuff_after(&[], message)
}

/// [`dot_stuff`] of `header` followed by `message`, in one buffer: header fields the relay
/// puts before a message (its DKIM signatures) go out without the message being copied
/// behind them first.
pub fn dot_stuff_after(header: &[u8], message: &[u8]) -> Vec<u8> {
    let len = header.len() + message.len();
    let mut out = Vec::with_capacity(len + len / 32 + 5);
    push_crlf_lines(header, true, &mut out);
    push_crlf_lines(message, true, &mut out);
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn receive(input: &[u8]) -> (DataProgress, Result<Vec<u8>, DataError>, u64) {
        let mut r = DataReceiver::new(1 << 20);
        let p = r.feed(input);
        let bare = r.bare_line_endings();
        (p, r.finish(), bare)
    }

    #[test]
    fn end_marker_and_unstuffing() {
        let (p, m, bare) = receive(b".\r\nQUIT\r\n");
        assert_eq!(
            p,
            DataProgress {
                consumed: 3,
                done: true
            }
        );
        assert_eq!(m.unwrap(), b"");
        assert_eq!(bare, 0);
        let (p, m, _) = receive(b"a\r\n..b\r\n.c\r\n..\r\n.\r\nRSET\r\n");
        assert_eq!(p.consumed, 19);
        assert_eq!(m.unwrap(), b"a\r\n.b\r\n.c\r\n.\r\n");
    }

    #[test]
    fn bare_endings_are_normalised_and_do_not_end() {
        let (p, m, bare) = receive(b"a\nb\rc\r\r\n.\n.\r\r\n.\r\n");
        assert!(p.done);
        assert_eq!(m.unwrap(), b"a\r\nb\r\nc\r\n\r\n.\r\n.\r\n\r\n");
        assert_eq!(bare, 5);
        let (p, m, _) = receive(b"x\r\n.\r");
        assert!(!p.done);
        assert_eq!(m, Err(DataError::Incomplete));
    }

    #[test]
    fn too_large_keeps_consuming() {
        let mut r = DataReceiver::new(4);
        assert_eq!(r.feed(b"abc\r\n").consumed, 5);
        assert!(r.is_too_large());
        let p = r.feed(b"more\r\n.\r\nQUIT");
        assert_eq!(
            p,
            DataProgress {
                consumed: 9,
                done: true
            }
        );
        assert_eq!(r.size(), 11);
        assert_eq!(
            r.feed(b".\r\n"),
            DataProgress {
                consumed: 0,
                done: true
            }
        );
        let e = r.finish().unwrap_err();
        assert_eq!(e, DataError::TooLarge { limit: 4 });
        assert_eq!(e.status().code, 552);
        assert_eq!(e.status().enhanced, "5.3.4");
        let mut r = DataReceiver::new(5);
        r.feed(b"abc\r\n.\r\n");
        assert_eq!(r.finish().unwrap(), b"abc\r\n");
    }

    #[test]
    fn bdat_normalises_across_chunks() {
        let mut b = BdatReceiver::new(100);
        b.feed(b"a\r");
        b.feed(b"\nb\r");
        b.feed(b"c\n");
        b.feed(b"d\r");
        assert_eq!(b.bare_line_endings(), 2);
        assert_eq!(b.finish().unwrap(), b"a\r\nb\r\nc\r\nd\r\n");
        let mut b = BdatReceiver::new(100);
        b.feed(b"no end");
        assert_eq!(b.finish().unwrap(), b"no end\r\n");
        let mut b = BdatReceiver::new(3);
        b.feed(b"abcd");
        assert_eq!(b.finish(), Err(DataError::TooLarge { limit: 3 }));
        assert_eq!(BdatReceiver::new(0).finish().unwrap(), b"");
    }

    #[test]
    fn header_limit_is_enforced_while_reading() {
        // Exactly at the limit: two lines of 10 octets each (CRLF included), then the body.
        let mut r = DataReceiver::new(1 << 20).with_header_limit(20);
        r.feed(b"A: 34567\r\nB: 34567\r\n\r\nbody that is longer than twenty\r\n.\r\n");
        assert!(r.refusal().is_none());
        assert!(r.finish().is_ok());
        // One octet more, in a line that never ends: refused while it grows, nothing kept.
        let mut r = DataReceiver::new(1 << 20).with_header_limit(20);
        r.feed(b"A: 34567\r\nB: 3456789");
        assert!(r.refusal().is_none());
        r.feed(b"0");
        assert_eq!(r.refusal(), Some(DataError::HeaderTooLarge { limit: 20 }));
        assert_eq!(r.capacity(), 0);
        r.feed(&[b'x'; 4096]);
        assert_eq!(r.capacity(), 0);
        r.feed(b"\r\n.\r\n");
        let e = r.finish().unwrap_err();
        assert_eq!(e, DataError::HeaderTooLarge { limit: 20 });
        assert_eq!(
            (e.status().code, e.status().enhanced.as_str()),
            (552, "5.3.4")
        );
        // No empty line at all: the whole message is header. Bare LFs count as CRLF.
        let mut b = BdatReceiver::new(1 << 20).with_header_limit(20);
        b.feed(b"A: 34567\nB: 34567\nC");
        assert_eq!(b.finish(), Err(DataError::HeaderTooLarge { limit: 20 }));
        // The size limit wins over the header limit: it is the permanent, larger refusal.
        let mut b = BdatReceiver::new(10).with_header_limit(5);
        b.feed(b"0123456789ab");
        assert_eq!(b.refusal(), Some(DataError::TooLarge { limit: 10 }));
    }

    #[test]
    fn line_limit_counts_octets_before_the_crlf_across_pieces() {
        let line = |n: usize| [vec![b'x'; n], b"\r\n".to_vec()].concat();
        // 998 octets pass, in one piece or a byte at a time; 999 do not, header or body.
        for n in [998, 999] {
            for head in [true, false] {
                let msg = if head {
                    [b"X-Long: ".to_vec(), line(n - 8), b"\r\nbody\r\n".to_vec()].concat()
                } else {
                    [b"Subject: s\r\n\r\n".to_vec(), line(n)].concat()
                };
                let mut wire = msg.clone();
                wire.extend_from_slice(b".\r\n");
                let mut whole = DataReceiver::new(1 << 20).with_line_limit(MAX_TEXT_LINE);
                assert!(whole.feed(&wire).done);
                let mut drip = BdatReceiver::new(1 << 20).with_line_limit(MAX_TEXT_LINE);
                for b in &msg {
                    drip.feed(std::slice::from_ref(b));
                }
                for got in [whole.finish(), drip.finish()] {
                    if n == 998 {
                        assert_eq!(got.unwrap(), msg);
                    } else {
                        let e = got.unwrap_err();
                        assert_eq!(e, DataError::LineTooLong { limit: 998 });
                        assert_eq!(
                            (e.status().code, e.status().enhanced.as_str()),
                            (554, "5.6.0")
                        );
                    }
                }
            }
        }
        // A dot doubled for transparency is not counted (RFC 5321 §4.5.3.1.6); CR and LF
        // normalised from bare ones end lines like CRLF.
        let mut r = DataReceiver::new(1 << 20).with_line_limit(4);
        assert!(r.feed(b"..abc\r\nabcd\nabcd\rabcd\r\n.\r\n").done);
        assert_eq!(r.finish().unwrap(), b".abc\r\nabcd\r\nabcd\r\nabcd\r\n");
        // Refused while it grows: nothing is kept past the long line.
        let mut r = DataReceiver::new(1 << 20).with_line_limit(MAX_TEXT_LINE);
        r.reserve(r.capacity_for(8192));
        r.feed(&[b'x'; 4096]);
        assert_eq!(r.refusal(), Some(DataError::LineTooLong { limit: 998 }));
        assert_eq!(r.capacity(), 0);
        // Without the limit (the default), lines are not measured.
        let mut b = BdatReceiver::new(1 << 20);
        b.feed(&[b'x'; 5000]);
        assert_eq!(b.finish().unwrap().len(), 5002);
    }

    #[test]
    fn capacity_is_reserved_ahead_and_never_outgrown() {
        let mut r = BdatReceiver::new(1 << 20);
        let want = r.capacity_for(1000);
        assert!((2000 + SLACK..=1 << 20).contains(&want));
        r.reserve(want);
        assert_eq!(r.capacity(), want);
        // The worst case for normalisation: every byte a bare LF.
        r.feed(&[b'\n'; 1000]);
        assert_eq!(r.capacity(), want);
        // Never more than the limit (and its slack) is asked for.
        let r = DataReceiver::new(100);
        assert_eq!(r.capacity_for(1 << 20), 100 + SLACK);
        // Out of memory: freed, still counted, refused with 452 4.3.1 at the end.
        let mut r = DataReceiver::new(1 << 20);
        r.reserve(r.capacity_for(10));
        r.feed(b"Subject: x\r\n");
        r.out_of_memory();
        assert_eq!(r.capacity(), 0);
        assert_eq!(r.capacity_for(1 << 10), 0);
        assert!(r.feed(b"\r\nbody\r\n.\r\n").done);
        let e = r.finish().unwrap_err();
        assert_eq!(e, DataError::NoMemory);
        assert_eq!(
            (e.status().code, e.status().enhanced.as_str()),
            (452, "4.3.1")
        );
    }

    #[test]
    fn stuffing() {
        assert_eq!(dot_stuff(b""), b".\r\n");
        assert_eq!(dot_stuff(b"a"), b"a\r\n.\r\n");
        assert_eq!(dot_stuff(b".\n.a\r\r\n"), b"..\r\n..a\r\n\r\n.\r\n");
        assert_eq!(dot_stuff(b"a\r\n.\r\n"), b"a\r\n..\r\n.\r\n");
    }

    /// A whole message normalised at once is what the BDAT receiver stores from it, however
    /// it is cut into chunks.
    #[test]
    fn to_crlf_stores_what_bdat_stores() {
        assert_eq!(to_crlf(b""), b"");
        assert_eq!(to_crlf(b"\r"), b"\r\n");
        assert_eq!(
            to_crlf(b"Subject: x\nFrom: a@b\n\nbody"),
            b"Subject: x\r\nFrom: a@b\r\n\r\nbody\r\n"
        );
        for input in [
            &b"a\nb\rc\r\r\n.\n.\r\r\n.\r\n"[..],
            b"\r\r\n\n\r",
            b"no ending",
            b".dot\r\nend\r",
        ] {
            for cut in 0..=input.len() {
                let (a, b) = input.split_at(cut);
                let mut r = BdatReceiver::new(1 << 20);
                r.feed(a);
                r.feed(b);
                assert_eq!(
                    r.finish().unwrap(),
                    to_crlf(input),
                    "{input:?} cut at {cut}"
                );
            }
        }
    }
}
