//! Replay on open: reads every segment in order into an [`Index`], telling a torn tail of
//! the newest segment (a write the crash cut short, never acknowledged: cut off) from damage
//! (a complete record that fails its checksum, or records after it: kept, reported), and
//! copying every segment it finds either in to `corrupt/` before changing anything.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::format::{
    DoneHead, Found, Kind, MessageHead, REC_HEADER_LEN, RawRecord, RecipientsHead, SEG_HEADER_LEN,
    SEG_VERSION, SegmentReader, newer_version, read_segment_header,
};
use super::index::{BodyLoc, Index};
use super::{QueueError, QueueId};
use crate::clock::now_secs;

pub(crate) struct Recovered {
    pub(crate) index: Index,
    /// Segments with records lost to damage, or holding a live message whose body is
    /// damaged: rewritten and deleted by the first compaction.
    pub(crate) damaged: BTreeSet<u32>,
    pub(crate) max_seg: u32,
    pub(crate) max_id: u64,
    /// Segments already copied to `corrupt/` during this replay.
    quarantined: BTreeSet<u32>,
    /// Message records whose head verified and whose body did not.
    bad_bodies: Vec<BadBody>,
}

/// A message record written whole whose body fails its checksum.
struct BadBody {
    seg: u32,
    pos: u64,
    body_offset: u64,
    id: QueueId,
    summary: String,
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
    refuse_newer(journal, &segs)?;
    let mut rec = Recovered {
        index: Index::default(),
        damaged: BTreeSet::new(),
        max_seg: segs.last().copied().unwrap_or(0),
        max_id: 0,
        quarantined: BTreeSet::new(),
        bad_bodies: Vec::new(),
    };
    for (i, &no) in segs.iter().enumerate() {
        let newest = i + 1 == segs.len();
        let path = segment_path(journal, no);
        match replay_segment(&path, no, newest, corrupt, &mut rec) {
            Ok(Some(file)) => {
                rec.index.segments.insert(no, Arc::new(file));
            }
            Ok(None) => {}
            Err(e) => {
                // Unreadable: keep what was read from it, and a copy, and carry on.
                tracing::error!(segment = %path.display(), error = %e, "spool segment unreadable");
                rec.damaged.insert(no);
                if let Ok(file) = File::open(&path) {
                    rec.index.segments.insert(no, Arc::new(file));
                }
            }
        }
    }
    report_bad_bodies(journal, &mut rec);
    for &no in rec.damaged.difference(&rec.quarantined) {
        quarantine(&segment_path(journal, no), corrupt);
    }
    Ok(rec)
}

/// A spool written by a newer mailflow (a downgrade) is refused whole, before anything is
/// read or cut: replaying the segments it can read and quarantining the others as damage
/// would destroy the newer segments' messages.
fn refuse_newer(journal: &Path, segs: &[u32]) -> Result<(), QueueError> {
    for &no in segs {
        let path = segment_path(journal, no);
        let file = File::open(&path)?;
        let len = file.metadata()?.len();
        if let Some(version) = newer_version(&file, len)? {
            return Err(QueueError::NewerFormat {
                path,
                version,
                supported: SEG_VERSION,
            });
        }
    }
    Ok(())
}

/// Damaged bodies of messages still live (whose newest copy it is) are reported and their
/// segments quarantined; the message stays queued with its intact envelope, so the
/// scheduler, failing to read the body, bounces its pending recipients to the sender
/// instead of the message vanishing. A damaged copy of a message that has finished since,
/// or was copied again intact, cost nothing.
fn report_bad_bodies(journal: &Path, rec: &mut Recovered) {
    for b in std::mem::take(&mut rec.bad_bodies) {
        let path = segment_path(journal, b.seg);
        let live = rec
            .index
            .live
            .get(&b.id)
            .is_some_and(|e| e.body.seg == b.seg && e.body.offset == b.body_offset);
        if live {
            tracing::error!(segment = %path.display(), offset = b.pos, found = %b.summary, "spool message body fails its checksum; its pending recipients will be bounced to the sender");
            rec.damaged.insert(b.seg);
        } else {
            tracing::warn!(segment = %path.display(), offset = b.pos, found = %b.summary, "damaged copy of a spool message that is finished or copied intact; nothing lost");
        }
    }
}

/// Copies a damaged segment into `corrupt/` for inspection, as it is on disk, before
/// anything changes it; returns whether the copy was made (and synced).
fn quarantine(path: &Path, corrupt: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A name not taken yet: the same segment can be quarantined at more than one open.
    let stamp = now_secs();
    let mut dest = corrupt.join(format!("{name}.{stamp}"));
    let mut n = 1;
    while dest.exists() {
        dest = corrupt.join(format!("{name}.{stamp}.{n}"));
        n += 1;
    }
    // A copy of mail, the service user's alone, whatever mode the segment had.
    let copied = fs::copy(path, &dest)
        .and_then(|_| {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&dest, fs::Permissions::from_mode(super::PRIVATE))
        })
        .and_then(|()| File::open(&dest)?.sync_all())
        .and_then(|()| File::open(corrupt)?.sync_all());
    match copied {
        Ok(()) => {
            tracing::error!(segment = %path.display(), copy = %dest.display(), "spool segment copied to corrupt/");
            true
        }
        Err(e) => {
            tracing::error!(segment = %path.display(), error = %e, "cannot copy a damaged spool segment to corrupt/");
            false
        }
    }
}

/// Returns the open segment, or `None` when the file was not a segment and has been
/// removed.
fn replay_segment(
    path: &Path,
    no: u32,
    newest: bool,
    corrupt: &Path,
    rec: &mut Recovered,
) -> io::Result<Option<File>> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let len = file.metadata()?.len();
    let Some(salt) = read_segment_header(&file, len)? else {
        if len > SEG_HEADER_LEN {
            tracing::error!(segment = %path.display(), "spool segment has no valid header");
            rec.damaged.insert(no);
            return Ok(Some(file));
        }
        // A segment whose creation was interrupted: nothing in it was ever acknowledged.
        // Still copied aside first, as everything recovery removes.
        if len > 0 {
            tracing::error!(segment = %path.display(), len, "spool segment with a partial header removed");
            quarantine(path, corrupt);
        }
        drop(file);
        fs::remove_file(path)?;
        return Ok(None);
    };
    let reader = SegmentReader {
        file: &file,
        len,
        salt,
    };
    let seg = path.display();
    let mut pos = SEG_HEADER_LEN;
    while pos < len {
        if let Some(r) = reader.record_at(pos)? {
            if apply(&mut rec.index, &mut rec.max_id, no, pos, &r) {
                if !r.body_ok {
                    if let Ok(h) = postcard::from_bytes::<MessageHead>(&r.head) {
                        rec.bad_bodies.push(BadBody {
                            seg: no,
                            pos,
                            body_offset: r.body_offset,
                            summary: summary(&h),
                            id: h.id,
                        });
                    }
                }
                pos = r.end;
                continue;
            }
        }
        let found = reader.inspect(pos)?;
        let what = describe(&reader, pos, found);
        match reader.resync(pos)? {
            Some((at, _)) => {
                tracing::error!(segment = %seg, offset = pos, skipped = at - pos, found = %what, "damaged spool records skipped; what follows is read");
                rec.damaged.insert(no);
                pos = at;
            }
            None => match found {
                Found::Torn { declared_end } if newest => {
                    // A write the crash cut short: it was never synced, so never
                    // acknowledged. Cut it off, keeping a copy of the segment as it was.
                    if !quarantine(path, corrupt) {
                        // Without a copy, keep the bytes: the segment is rewritten instead.
                        rec.damaged.insert(no);
                        rec.quarantined.insert(no);
                        break;
                    }
                    rec.quarantined.insert(no);
                    tracing::error!(segment = %seg, offset = pos, declared_end, dropped = len - pos, found = %what, "torn write at the end of the spool journal cut off (never acknowledged)");
                    file.set_len(pos)?;
                    file.sync_all()?;
                    break;
                }
                _ => {
                    tracing::error!(segment = %seg, offset = pos, dropped = len - pos, found = %what, "damaged end of spool segment: nothing readable after it");
                    rec.damaged.insert(no);
                    break;
                }
            },
        }
    }
    Ok(Some(file))
}

/// What was found at `pos`, for the log: torn or damaged, and what the record's head says
/// when it can be decoded at all (unverified, but it may name the message).
fn describe(reader: &SegmentReader<'_>, pos: u64, found: Found) -> String {
    let mut what = match found {
        Found::Torn { declared_end } => format!(
            "a record cut short ({} of {} bytes present)",
            reader.len - pos,
            declared_end - pos
        ),
        Found::Damaged => "a record that fails its checksum, or bytes that are not one".into(),
    };
    if let Some(head) = unverified_message_head(reader, pos) {
        what.push_str(&format!("; its head (unverified) says {}", summary(&head)));
    }
    what
}

/// The message head of whatever record-shaped bytes are at `pos`, decoded without checking
/// anything: only for telling an operator which message damage may have hit.
fn unverified_message_head(reader: &SegmentReader<'_>, pos: u64) -> Option<MessageHead> {
    const MAX: u64 = 1 << 20;
    let start = pos + REC_HEADER_LEN;
    let n = reader.len.checked_sub(start)?.min(MAX);
    let mut buf = vec![0u8; n as usize];
    reader.file.read_exact_at(&mut buf, start).ok()?;
    postcard::take_from_bytes::<MessageHead>(&buf)
        .ok()
        .map(|(h, _)| h)
}

fn summary(h: &MessageHead) -> String {
    let rcpts: Vec<&str> = h
        .meta
        .recipients
        .iter()
        .map(|r| r.address.as_str())
        .collect();
    format!(
        "message {} from <{}> to <{}>, Message-ID {}, received at {}",
        h.id,
        h.meta.mail_from.as_deref().unwrap_or(""),
        rcpts.join(">, <"),
        h.meta.message_id.as_deref().unwrap_or("(none)"),
        h.received_at
    )
}

/// Applies one record whose head verified; false if its head does not decode (treated as
/// damage).
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
            if !r.body_ok && index.live.contains_key(&h.id) {
                // An intact earlier copy beats a damaged later one.
                return true;
            }
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
