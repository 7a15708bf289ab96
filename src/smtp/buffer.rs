//! The buffer a [`super::DataReceiver`] or [`super::BdatReceiver`] keeps a message in: its
//! size and header caps, and the [`Buffered`] interface through which the session reserves
//! memory for it from the relay's budget before any byte is kept.

use super::data::DataError;

/// What a receiver keeps in memory, so that the session can reserve it from the relay's
/// memory budget *before* feeding: a receiver never grows its buffer by itself while its
/// capacity covers [`Buffered::capacity_for`], and once it stops keeping (a limit passed,
/// or [`Buffered::out_of_memory`]) it holds nothing and only counts.
pub trait Buffered {
    /// The buffer capacity that feeding `input` more bytes can need (normalisation at most
    /// doubles them); the current capacity when that is enough or nothing is kept.
    fn capacity_for(&self, input: usize) -> usize;
    /// Grows the buffer to `capacity` exactly, so that feeding stays within it.
    fn reserve(&mut self, capacity: usize);
    /// The buffer's capacity now.
    fn capacity(&self) -> usize;
    /// No memory could be had: the buffer is freed, the rest only counted, and the message
    /// ends with [`DataError::NoMemory`] (unless a limit refuses it anyway).
    fn out_of_memory(&mut self);
    /// Why the message is already refused, before its end: the size or header limit was
    /// passed, or memory ran out. `None` while it is still being kept.
    fn refusal(&self) -> Option<DataError>;
}

/// The smallest buffer worth reserving: a typical message fits at once.
const MIN_RESERVE: usize = 64 * 1024;
/// Bytes a receiver may add beyond its input: a pending CR and the final CRLF of `finish`.
pub(super) const SLACK: usize = 8;

/// The message buffer with its caps: past the size limit, or past the header limit while
/// still in the header, bytes are counted but not kept, and what was kept is freed, so a
/// huge message or header block costs no memory.
#[derive(Debug)]
pub(super) struct Sink {
    pub(super) buf: Vec<u8>,
    pub(super) size: u64,
    pub(super) limit: u64,
    /// Bytes are still being kept.
    pub(super) keep: bool,
    /// Memory ran out ([`Buffered::out_of_memory`]).
    no_memory: bool,
    /// The header block seen so far (its lines with their CRLFs, not the empty line).
    head: u64,
    pub(super) max_head: u64,
    /// Still before the empty line that ends the header block.
    in_head: bool,
    /// Bytes of the current header line so far, its CR included.
    line: u64,
    /// The longest line allowed, CRLF excluded (`u64::MAX`: no limit).
    pub(super) max_line: u64,
    /// Octets of the current line so far (of the whole message, CR and LF excluded).
    text_line: u64,
    /// A line longer than `max_line` was seen.
    long_line: bool,
}

impl Sink {
    pub(super) fn new(limit: u64) -> Self {
        Sink {
            buf: Vec::new(),
            size: 0,
            limit,
            keep: true,
            no_memory: false,
            head: 0,
            max_head: u64::MAX,
            in_head: true,
            line: 0,
            max_line: u64::MAX,
            text_line: 0,
            long_line: false,
        }
    }

    pub(super) fn push(&mut self, bytes: &[u8]) {
        self.size = self.size.saturating_add(bytes.len() as u64);
        if self.in_head {
            self.track_head(bytes);
        }
        if !self.long_line {
            self.track_line(bytes);
        }
        if !self.keep {
            return;
        }
        if self.size > self.limit || self.head_size() > self.max_head || self.long_line {
            self.stop();
        } else {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// Counts header bytes until the empty line. What is pushed is already normalised, so
    /// every LF ends a line and a line holding only its CR is the empty one.
    fn track_head(&mut self, mut bytes: &[u8]) {
        while let Some(p) = bytes.iter().position(|&c| c == b'\n') {
            let line = self.line.saturating_add(p as u64);
            self.line = 0;
            if line <= 1 {
                self.in_head = false;
                return;
            }
            self.head = self.head.saturating_add(line + 1);
            bytes = bytes.get(p + 1..).unwrap_or_default();
        }
        self.line = self.line.saturating_add(bytes.len() as u64);
    }

    /// Measures lines as they go by (RFC 5321 §4.5.3.1.6: at most 998 octets before the
    /// CRLF). What is pushed is normalised and unstuffed, so every CR is the start of a CRLF,
    /// and a leading dot doubled for transparency is not counted, as the RFC says.
    fn track_line(&mut self, mut bytes: &[u8]) {
        while let Some(p) = bytes.iter().position(|&c| c == b'\n') {
            let text = bytes.get(..p).unwrap_or_default();
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            self.end_of_text(text.len());
            self.text_line = 0;
            bytes = bytes.get(p + 1..).unwrap_or_default();
        }
        let text = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        self.end_of_text(text.len());
    }

    fn end_of_text(&mut self, n: usize) {
        self.text_line = self.text_line.saturating_add(n as u64);
        if self.text_line > self.max_line {
            self.long_line = true;
        }
    }

    /// The header block so far, a line that has not ended yet included.
    fn head_size(&self) -> u64 {
        self.head.saturating_add(self.line)
    }

    fn stop(&mut self) {
        self.keep = false;
        self.buf = Vec::new();
    }

    pub(super) fn refusal(&self) -> Option<DataError> {
        if self.size > self.limit {
            Some(DataError::TooLarge { limit: self.limit })
        } else if self.head_size() > self.max_head {
            Some(DataError::HeaderTooLarge {
                limit: self.max_head,
            })
        } else if self.long_line {
            Some(DataError::LineTooLong {
                limit: self.max_line,
            })
        } else if self.no_memory {
            Some(DataError::NoMemory)
        } else {
            None
        }
    }

    pub(super) fn capacity_for(&self, input: usize) -> usize {
        let cap = self.buf.capacity();
        if !self.keep {
            return cap;
        }
        let need = self
            .buf
            .len()
            .saturating_add(input.saturating_mul(2))
            .saturating_add(SLACK);
        if need <= cap {
            return cap;
        }
        // Grow by half again (not double, as Vec would): the budget is charged for it.
        let most = usize::try_from(self.limit)
            .unwrap_or(usize::MAX)
            .saturating_add(SLACK);
        need.max(cap.saturating_add(cap / 2))
            .max(MIN_RESERVE)
            .min(most)
            .max(cap)
    }

    pub(super) fn reserve(&mut self, capacity: usize) {
        if self.keep {
            self.buf
                .reserve_exact(capacity.saturating_sub(self.buf.len()));
        }
    }

    pub(super) fn out_of_memory(&mut self) {
        self.no_memory = true;
        self.stop();
    }

    pub(super) fn finish(self) -> Result<Vec<u8>, DataError> {
        match self.refusal() {
            Some(e) => Err(e),
            None => Ok(self.buf),
        }
    }
}
