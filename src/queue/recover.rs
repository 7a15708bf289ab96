//! Replay on open: reads every segment in order into an [`Index`], cutting a torn tail off
//! the newest segment and quarantining (copying to `corrupt/`) segments damaged elsewhere.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::format::{
    DoneHead, Kind, MessageHead, RawRecord, RecipientsHead, SEG_HEADER_LEN, SegmentReader,
    read_segment_header,
};
use super::index::{BodyLoc, Index};
use super::{QueueError, now_secs};

pub(crate) struct Recovered {
    pub(crate) index: Index,
    /// Segments with records lost to damage: rewritten and deleted by the first compaction.
    pub(crate) damaged: BTreeSet<u32>,
    pub(crate) max_seg: u32,
    pub(crate) max_id: u64,
}

pub(crate) fn segment_path(journal: &Path, no: u32) -> PathBuf {
    journal.join(format!("{no:08}.seg"))
}

fn list_segments(journal: &Path) -> io::Result<Vec<u32>> {
    let mut segs = Vec::new();
    for entry in fs::read_dir(journal)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(no) = name
            .strip_suffix(".seg")
            .and_then(|s| s.parse::<u32>().ok())
        {
            segs.push(no);
        }
    }
    segs.sort_unstable();
    Ok(segs)
}

pub(crate) fn replay(journal: &Path, corrupt: &Path) -> Result<Recovered, QueueError> {
    let segs = list_segments(journal)?;
    let mut rec = Recovered {
        index: Index::default(),
        damaged: BTreeSet::new(),
        max_seg: segs.last().copied().unwrap_or(0),
        max_id: 0,
    };
    for (i, &no) in segs.iter().enumerate() {
        let newest = i + 1 == segs.len();
        let path = segment_path(journal, no);
        match replay_segment(&path, no, newest, &mut rec) {
            Ok(Some(file)) => {
                rec.index.segments.insert(no, Arc::new(file));
            }
            Ok(None) => {}
            Err(e) => {
                // Unreadable: keep what was read from it, and a copy, and carry on.
                tracing::warn!(segment = %path.display(), error = %e, "spool segment unreadable");
                rec.damaged.insert(no);
                if let Ok(file) = File::open(&path) {
                    rec.index.segments.insert(no, Arc::new(file));
                }
            }
        }
        if rec.damaged.contains(&no) {
            quarantine(&path, corrupt);
        }
    }
    Ok(rec)
}

/// Copies a damaged segment into `corrupt/` for inspection.
fn quarantine(path: &Path, corrupt: &Path) {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dest = corrupt.join(format!("{name}.{}", now_secs()));
    match fs::copy(path, &dest) {
        Ok(_) => {
            tracing::warn!(segment = %path.display(), copy = %dest.display(), "damaged spool segment copied to corrupt/")
        }
        Err(e) => {
            tracing::warn!(segment = %path.display(), error = %e, "cannot copy damaged spool segment")
        }
    }
}

/// Returns the open segment, or `None` when the file was not a segment and has been
/// removed.
fn replay_segment(
    path: &Path,
    no: u32,
    newest: bool,
    rec: &mut Recovered,
) -> io::Result<Option<File>> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let len = file.metadata()?.len();
    let Some(salt) = read_segment_header(&file, len)? else {
        if len > SEG_HEADER_LEN {
            tracing::warn!(segment = %path.display(), "spool segment has no valid header");
            rec.damaged.insert(no);
            return Ok(Some(file));
        }
        // A segment whose creation was interrupted: nothing in it was ever acknowledged.
        drop(file);
        fs::remove_file(path)?;
        return Ok(None);
    };
    let reader = SegmentReader {
        file: &file,
        len,
        salt,
    };
    let mut pos = SEG_HEADER_LEN;
    while pos < len {
        if let Some(r) = reader.record_at(pos)? {
            if apply(&mut rec.index, &mut rec.max_id, no, pos, &r) {
                pos = r.end;
                continue;
            }
        }
        match reader.resync(pos)? {
            Some((at, _)) => {
                tracing::warn!(segment = %path.display(), offset = pos, skipped = at - pos, "damaged spool records skipped");
                rec.damaged.insert(no);
                pos = at;
            }
            None if newest => {
                // A write the crash interrupted; it was never acknowledged.
                tracing::warn!(segment = %path.display(), offset = pos, dropped = len - pos, "torn tail of spool journal cut off");
                file.set_len(pos)?;
                file.sync_all()?;
                break;
            }
            None => {
                tracing::warn!(segment = %path.display(), offset = pos, dropped = len - pos, "damaged end of spool segment skipped");
                rec.damaged.insert(no);
                break;
            }
        }
    }
    Ok(Some(file))
}

/// Applies one verified record; false if its head does not decode (treated as damage).
fn apply(index: &mut Index, max_id: &mut u64, seg: u32, pos: u64, r: &RawRecord) -> bool {
    match r.kind {
        Kind::Message => {
            let Ok(h) = postcard::from_bytes::<MessageHead>(&r.head) else {
                return false;
            };
            if h.states.len() != h.meta.recipients.len() {
                return false;
            }
            *max_id = (*max_id).max(h.id.value().unwrap_or(0));
            let body = BodyLoc {
                seg,
                offset: r.body_offset,
                len: r.body_len,
                crc: r.body_crc,
            };
            index.apply_message(h.id, h.received_at, h.meta, h.states, body, r.end - pos);
        }
        Kind::Recipients => {
            let Ok(h) = postcard::from_bytes::<RecipientsHead>(&r.head) else {
                return false;
            };
            // Unknown ids are normal: the message finished and its segments are gone.
            index.apply_recipients(&h.id, seg, &h.updates);
        }
        Kind::Done => {
            let Ok(h) = postcard::from_bytes::<DoneHead>(&r.head) else {
                return false;
            };
            index.apply_done(&h.id, seg);
        }
    }
    true
}
