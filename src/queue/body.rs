//! A stored message body read in pieces: for handing a large message to a reader that takes
//! its time (`queue show --message` over the admin socket) without ever holding it whole.
//! The piece-wise reader checks the same checksum [`super::Spool::read_body`] checks, before
//! the first piece is handed out.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::index::BodyLoc;
use super::{QueueError, QueueId};

/// What one pass of [`StoredBody::check`] reads at a time.
const CHECK_PIECE: usize = 256 * 1024;

/// A live message's body where it lies in its segment. The open segment stays readable
/// while this is held, even if a compaction deletes the file meanwhile; what a record
/// holds is never rewritten in place.
#[derive(Debug, Clone)]
pub struct StoredBody {
    id: QueueId,
    loc: BodyLoc,
    file: Arc<File>,
}

impl StoredBody {
    pub(crate) fn new(id: &QueueId, loc: BodyLoc, file: Arc<File>) -> StoredBody {
        StoredBody {
            id: id.clone(),
            loc,
            file,
        }
    }

    /// `bytes` as stored at `offset` in `file` (for tests elsewhere in the crate).
    #[cfg(test)]
    pub(crate) fn at(file: Arc<File>, offset: u64, bytes: &[u8]) -> StoredBody {
        let loc = BodyLoc {
            seg: 1,
            offset,
            len: bytes.len() as u64,
            crc: crc32fast::hash(bytes),
        };
        StoredBody::new(&QueueId("A".into()), loc, file)
    }

    /// Its length in octets.
    pub fn len(&self) -> u64 {
        self.loc.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.loc.len == 0
    }

    /// Reads it once, a piece at a time, against its checksum: [`QueueError::Corrupt`] when
    /// it fails. Blocking file I/O.
    pub fn check(&self) -> Result<(), QueueError> {
        let mut hasher = crc32fast::Hasher::new();
        let mut piece = vec![0u8; CHECK_PIECE.min(self.loc.len as usize)];
        let mut at = 0;
        while at < self.loc.len {
            let n = piece.len().min((self.loc.len - at) as usize);
            self.file
                .read_exact_at(&mut piece[..n], self.loc.offset + at)?;
            hasher.update(&piece[..n]);
            at += n as u64;
        }
        self.confirm(hasher.finalize())
    }

    /// Whether `crc`, the checksum of the octets read, is the stored one:
    /// [`QueueError::Corrupt`] when not. The pieces handed out after [`Self::check`] are
    /// read again, so a reader confirms what it read before taking it for the body.
    pub fn confirm(&self, crc: u32) -> Result<(), QueueError> {
        if crc != self.loc.crc {
            return Err(QueueError::Corrupt {
                detail: format!(
                    "body of {} fails its checksum (segment {})",
                    self.id, self.loc.seg
                ),
            });
        }
        Ok(())
    }

    /// The octets from `at`, at most `max` of them (none past the end). Blocking file I/O.
    pub fn piece(&self, at: u64, max: usize) -> Result<Vec<u8>, QueueError> {
        let n = (self.loc.len.saturating_sub(at)).min(max as u64) as usize;
        let mut buf = vec![0u8; n];
        self.file.read_exact_at(&mut buf, self.loc.offset + at)?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn body(bytes: &[u8], crc: u32) -> (tempfile::NamedTempFile, StoredBody) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"head").unwrap();
        f.write_all(bytes).unwrap();
        let file = Arc::new(f.reopen().unwrap());
        let loc = BodyLoc {
            seg: 1,
            offset: 4,
            len: bytes.len() as u64,
            crc,
        };
        (f, StoredBody::new(&QueueId("A".into()), loc, file))
    }

    #[test]
    fn pieces_put_together_are_the_body_and_the_checksum_is_checked() {
        let bytes: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
        let (_f, b) = body(&bytes, crc32fast::hash(&bytes));
        b.check().unwrap();
        let mut got = Vec::new();
        while (got.len() as u64) < b.len() {
            got.extend(b.piece(got.len() as u64, 65_536).unwrap());
        }
        assert_eq!(got, bytes);
        assert!(b.piece(b.len(), 10).unwrap().is_empty());
        let (_g, bad) = body(&bytes, crc32fast::hash(&bytes) ^ 1);
        assert!(matches!(bad.check(), Err(QueueError::Corrupt { .. })));
        let (_h, empty) = body(b"", crc32fast::hash(b""));
        empty.check().unwrap();
        assert!(empty.is_empty());
    }
}
