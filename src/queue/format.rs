//! The journal's bytes: segment headers, record framing and checksums, and reading records
//! back (with resynchronisation past damage). Knows nothing of what a record means.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{NewMessage, QueueId, RecipientState};
use crc32fast::Hasher;

/// `MFSPOOL\0`, then version (u32 LE) and salt (u32 LE).
pub(crate) const SEG_MAGIC: [u8; 8] = *b"MFSPOOL\0";
pub(crate) const SEG_VERSION: u32 = 1;
pub(crate) const SEG_HEADER_LEN: u64 = 16;
/// Every record starts with these four bytes, so a reader can find the next record after
/// damage.
pub(crate) const REC_MAGIC: [u8; 4] = *b"MFR1";
pub(crate) const REC_HEADER_LEN: u64 = 24;
/// A head is metadata (addresses, states); anything bigger is damage, not data.
const MAX_HEAD_LEN: u32 = 64 << 20;

/// What a record says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A whole message: head [`MessageHead`], body the message bytes.
    Message = 1,
    /// Recipient state changes: head [`RecipientsHead`], no body.
    Recipients = 2,
    /// The message is finished: head [`DoneHead`], no body.
    Done = 3,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Message),
            2 => Some(Kind::Recipients),
            3 => Some(Kind::Done),
            _ => None,
        }
    }
}

/// Head of a [`Kind::Message`] record. `states` lets compaction copy a message forward with
/// its progress.
#[derive(Serialize, Deserialize)]
pub(crate) struct MessageHead {
    pub(crate) id: QueueId,
    pub(crate) received_at: u64,
    pub(crate) meta: NewMessage,
    pub(crate) states: Vec<RecipientState>,
}

/// Borrowing twin of [`MessageHead`] (same encoding), so storing does not clone the metadata.
#[derive(Serialize)]
pub(crate) struct MessageHeadRef<'a> {
    pub(crate) id: &'a QueueId,
    pub(crate) received_at: u64,
    pub(crate) meta: &'a NewMessage,
    pub(crate) states: &'a [RecipientState],
}

#[derive(Serialize, Deserialize)]
pub(crate) struct RecipientsHead {
    pub(crate) id: QueueId,
    pub(crate) updates: Vec<(u32, RecipientState)>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct DoneHead {
    pub(crate) id: QueueId,
}

/// A message's bytes as the spool writes them: parts written one after another as one body.
/// The relay stores a message as the header it built (the Received line and the header as
/// changed) followed by the body it received, a shared slice of the received buffer, so the
/// stored form is never one more whole copy of the message.
#[derive(Clone, Debug, Default)]
pub struct MessageBytes {
    parts: Vec<Bytes>,
    len: u64,
}

impl MessageBytes {
    /// The parts in order; empty ones are left out.
    pub fn new(parts: impl IntoIterator<Item = Bytes>) -> MessageBytes {
        let parts: Vec<Bytes> = parts.into_iter().filter(|p| !p.is_empty()).collect();
        let len = parts.iter().map(|p| p.len() as u64).sum();
        MessageBytes { parts, len }
    }

    /// Octets in all parts.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The parts, to be written in this order.
    pub fn parts(&self) -> &[Bytes] {
        &self.parts
    }

    fn crc(&self) -> u32 {
        let mut c = Hasher::new();
        for p in &self.parts {
            c.update(p);
        }
        c.finalize()
    }
}

impl From<Vec<u8>> for MessageBytes {
    fn from(v: Vec<u8>) -> MessageBytes {
        MessageBytes::new([Bytes::from(v)])
    }
}

impl From<Bytes> for MessageBytes {
    fn from(b: Bytes) -> MessageBytes {
        MessageBytes::new([b])
    }
}

/// A record ready to append, checksums computed by the caller (off the writer thread); only
/// the segment salt is mixed in at write time.
pub(crate) struct Encoded {
    pub(crate) kind: Kind,
    pub(crate) head: Vec<u8>,
    pub(crate) body: MessageBytes,
    head_crc: u32,
    pub(crate) body_crc: u32,
}

impl Encoded {
    pub(crate) fn new(kind: Kind, head: Vec<u8>, body: impl Into<MessageBytes>) -> Encoded {
        let body = body.into();
        let body_crc = body.crc();
        Self::with_body_crc(kind, head, body, body_crc)
    }

    /// For a body whose checksum is already known (compaction re-reads and verifies it).
    pub(crate) fn with_body_crc(
        kind: Kind,
        head: Vec<u8>,
        body: impl Into<MessageBytes>,
        body_crc: u32,
    ) -> Self {
        let body = body.into();
        let mut c = Hasher::new();
        c.update(&frame_fields(
            kind as u8,
            head.len() as u32,
            body.len() as u32,
        ));
        c.update(&head);
        Encoded {
            kind,
            head_crc: c.finalize(),
            head,
            body,
            body_crc,
        }
    }

    /// Bytes on disk.
    pub(crate) fn len(&self) -> u64 {
        REC_HEADER_LEN + self.head.len() as u64 + self.body.len()
    }

    /// Offset of the body from the record's start.
    pub(crate) fn body_offset(&self) -> u64 {
        REC_HEADER_LEN + self.head.len() as u64
    }

    pub(crate) fn header(&self, salt: u32) -> [u8; REC_HEADER_LEN as usize] {
        let mut h = [0u8; REC_HEADER_LEN as usize];
        h[0..4].copy_from_slice(&REC_MAGIC);
        h[4..16].copy_from_slice(&frame_fields(
            self.kind as u8,
            self.head.len() as u32,
            self.body.len() as u32,
        ));
        h[16..20].copy_from_slice(&(self.head_crc ^ salt).to_le_bytes());
        h[20..24].copy_from_slice(&self.body_crc.to_le_bytes());
        h
    }
}

/// kind, three zero bytes, head length, body length: the part of the header the head
/// checksum covers.
fn frame_fields(kind: u8, head_len: u32, body_len: u32) -> [u8; 12] {
    let mut f = [0u8; 12];
    f[0] = kind;
    f[4..8].copy_from_slice(&head_len.to_le_bytes());
    f[8..12].copy_from_slice(&body_len.to_le_bytes());
    f
}

pub(crate) fn segment_header(salt: u32) -> [u8; SEG_HEADER_LEN as usize] {
    let mut h = [0u8; SEG_HEADER_LEN as usize];
    h[0..8].copy_from_slice(&SEG_MAGIC);
    h[8..12].copy_from_slice(&SEG_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&salt.to_le_bytes());
    h
}

/// The salt of a segment, or `None` when its header is not ours.
pub(crate) fn read_segment_header(file: &File, len: u64) -> io::Result<Option<u32>> {
    if len < SEG_HEADER_LEN {
        return Ok(None);
    }
    let mut h = [0u8; SEG_HEADER_LEN as usize];
    file.read_exact_at(&mut h, 0)?;
    if h[0..8] != SEG_MAGIC || h[8..12] != SEG_VERSION.to_le_bytes() {
        return Ok(None);
    }
    Ok(Some(u32::from_le_bytes([h[12], h[13], h[14], h[15]])))
}

/// The format version of a segment written by a newer mailflow (our magic, a version above
/// ours), which this one must neither read nor take for damage.
pub(crate) fn newer_version(file: &File, len: u64) -> io::Result<Option<u32>> {
    if len < SEG_HEADER_LEN {
        return Ok(None);
    }
    let mut h = [0u8; 12];
    file.read_exact_at(&mut h, 0)?;
    let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    Ok((h[0..8] == SEG_MAGIC && version > SEG_VERSION).then_some(version))
}

/// A record read back with its head verified; the body stays on disk.
pub(crate) struct RawRecord {
    pub(crate) kind: Kind,
    pub(crate) head: Vec<u8>,
    pub(crate) body_offset: u64,
    pub(crate) body_len: u64,
    pub(crate) body_crc: u32,
    /// The body matches its checksum. A record whose head verifies and whose body does not
    /// is complete (its full length was written) but damaged: kept, so the message it
    /// carries can be reported rather than silently dropped.
    pub(crate) body_ok: bool,
    pub(crate) end: u64,
}

/// What the bytes at a position where no record could be read look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// The start of a record the file ends inside of: a write cut short by a crash, which
    /// was never synced and so never acknowledged.
    Torn {
        /// Where the record says it ends.
        declared_end: u64,
    },
    /// Bytes that are not a record, or a record whose header or head fails its checksum.
    Damaged,
}

/// The fixed header fields of a record, parsed.
struct Header {
    kind: Kind,
    head_len: u32,
    body_len: u32,
    head_crc: u32,
    body_crc: u32,
    raw: [u8; REC_HEADER_LEN as usize],
}

impl Header {
    fn parse(h: [u8; REC_HEADER_LEN as usize]) -> Option<Header> {
        let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        if h[0..4] != REC_MAGIC || h[5..8] != [0, 0, 0] {
            return None;
        }
        let kind = Kind::from_u8(h[4])?;
        let (head_len, body_len) = (word(8), word(12));
        if head_len > MAX_HEAD_LEN || (kind != Kind::Message && body_len != 0) {
            return None;
        }
        Some(Header {
            kind,
            head_len,
            body_len,
            head_crc: word(16),
            body_crc: word(20),
            raw: h,
        })
    }

    fn end(&self, pos: u64) -> u64 {
        pos + REC_HEADER_LEN + u64::from(self.head_len) + u64::from(self.body_len)
    }
}

/// Reads and verifies records of one segment by position.
pub(crate) struct SegmentReader<'a> {
    pub(crate) file: &'a File,
    pub(crate) len: u64,
    pub(crate) salt: u32,
}

impl SegmentReader<'_> {
    fn header_at(&self, pos: u64) -> io::Result<Option<Header>> {
        if pos.saturating_add(REC_HEADER_LEN) > self.len {
            return Ok(None);
        }
        let mut h = [0u8; REC_HEADER_LEN as usize];
        self.file.read_exact_at(&mut h, pos)?;
        Ok(Header::parse(h))
    }

    /// The head of the record whose header is `h`, if it is all in the file and matches
    /// its checksum.
    fn verified_head(&self, pos: u64, h: &Header) -> io::Result<Option<Vec<u8>>> {
        let head_end = pos + REC_HEADER_LEN + u64::from(h.head_len);
        if head_end > self.len {
            return Ok(None);
        }
        let mut head = vec![0u8; h.head_len as usize];
        self.file.read_exact_at(&mut head, pos + REC_HEADER_LEN)?;
        let mut c = Hasher::new();
        c.update(&h.raw[4..16]);
        c.update(&head);
        Ok((c.finalize() ^ self.salt == h.head_crc).then_some(head))
    }

    /// The whole record at `pos` whose head verifies, or `None` if there is none there.
    /// Its body may still fail its checksum ([`RawRecord::body_ok`]).
    pub(crate) fn record_at(&self, pos: u64) -> io::Result<Option<RawRecord>> {
        let Some(h) = self.header_at(pos)? else {
            return Ok(None);
        };
        let end = h.end(pos);
        if end > self.len {
            return Ok(None);
        }
        let Some(head) = self.verified_head(pos, &h)? else {
            return Ok(None);
        };
        let body_offset = pos + REC_HEADER_LEN + u64::from(h.head_len);
        let body_ok = crc_of_range(self.file, body_offset, u64::from(h.body_len))? == h.body_crc;
        Ok(Some(RawRecord {
            kind: h.kind,
            head,
            body_offset,
            body_len: u64::from(h.body_len),
            body_crc: h.body_crc,
            body_ok,
            end,
        }))
    }

    /// What is at `pos`, where [`SegmentReader::record_at`] found no record: a record the
    /// file ends inside of (its header, and its head when that is all there, verify; or the
    /// file ends inside the header itself, on a prefix of the magic), or damage.
    pub(crate) fn inspect(&self, pos: u64) -> io::Result<Found> {
        let left = self.len.saturating_sub(pos);
        if left < REC_HEADER_LEN {
            let mut b = vec![0u8; left as usize];
            self.file.read_exact_at(&mut b, pos)?;
            let n = b.len().min(REC_MAGIC.len());
            let kind_ok = b.get(4).is_none_or(|&k| Kind::from_u8(k).is_some());
            return Ok(if b[..n] == REC_MAGIC[..n] && kind_ok {
                Found::Torn {
                    declared_end: pos + REC_HEADER_LEN,
                }
            } else {
                Found::Damaged
            });
        }
        let Some(h) = self.header_at(pos)? else {
            return Ok(Found::Damaged);
        };
        let declared_end = h.end(pos);
        if declared_end <= self.len {
            // All of it is there: whatever failed, it was written whole.
            return Ok(Found::Damaged);
        }
        let head_end = pos + REC_HEADER_LEN + u64::from(h.head_len);
        if head_end <= self.len && self.verified_head(pos, &h)?.is_none() {
            return Ok(Found::Damaged);
        }
        Ok(Found::Torn { declared_end })
    }

    /// The first record strictly after `pos` whose head verifies, found by its magic bytes.
    /// The salt in
    /// the checksum means a record-shaped string inside a message body is not taken for a
    /// record unless its author guessed this segment's salt.
    pub(crate) fn resync(&self, pos: u64) -> io::Result<Option<(u64, RawRecord)>> {
        const WINDOW: usize = 64 << 10;
        let mut buf = vec![0u8; WINDOW];
        let mut start = pos + 1;
        while start + REC_HEADER_LEN <= self.len {
            let n = (self.len - start).min(WINDOW as u64) as usize;
            self.file.read_exact_at(&mut buf[..n], start)?;
            for i in 0..n.saturating_sub(3) {
                if buf[i..i + 4] == REC_MAGIC {
                    let at = start + i as u64;
                    if let Some(r) = self.record_at(at)? {
                        return Ok(Some((at, r)));
                    }
                }
            }
            // Overlap by three bytes so a magic split across windows is still seen.
            start += (n as u64).saturating_sub(3).max(1);
        }
        Ok(None)
    }
}

/// CRC-32 of `len` bytes of `file` from `offset`, read in bounded chunks.
pub(crate) fn crc_of_range(file: &File, offset: u64, len: u64) -> io::Result<u32> {
    let mut c = Hasher::new();
    let mut buf = vec![0u8; len.min(256 << 10) as usize];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], offset + done)?;
        c.update(&buf[..n]);
        done += n as u64;
    }
    Ok(c.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Segments already on disk were summed by a hand-written slicing-by-8 CRC-32 with the
    /// IEEE/zlib polynomial (0xEDB88320, initial and final value all ones): these are that
    /// CRC's check values, so `crc32fast` reads them back. `tests/it/queue.rs` opens a segment
    /// the old code wrote.
    #[test]
    fn known_vectors() {
        assert_eq!(crc32fast::hash(b""), 0);
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        assert_eq!(
            crc32fast::hash(b"The quick brown fox jumps over the lazy dog"),
            0x414F_A339
        );
    }

    #[test]
    fn incremental_equals_one_shot() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        for split in [0, 1, 7, 8, 9, 500, 999, 1000] {
            let mut c = Hasher::new();
            c.update(&data[..split]);
            c.update(&data[split..]);
            assert_eq!(c.finalize(), crc32fast::hash(&data), "split at {split}");
        }
    }
}
