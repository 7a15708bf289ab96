//! The one thread that writes the journal: group commit (take every waiting request, write,
//! sync once, answer all), segment rolling, recovery from write errors, and compaction.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, RandomState};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::format::{DoneHead, Encoded, Kind, MessageHeadRef, SEG_HEADER_LEN, segment_header};
use super::index::{BodyLoc, any_pending};
use super::recover::segment_path;
use super::{CompactReport, QueueError, QueueId, QueuedMessage, RecipientState, Shared};

/// How often to compact when no new segment prompts it.
const COMPACT_EVERY: Duration = Duration::from_secs(60);
/// A batch stops taking requests past this many bytes, to bound memory and latency.
const MAX_BATCH_BYTES: u64 = 32 << 20;
/// Bodies at least this big are written straight from the request, not copied.
const DIRECT_WRITE: usize = 64 << 10;
/// Compaction copies forward at most this much before syncing, to bound memory.
const MOVE_CHUNK_BYTES: u64 = 8 << 20;

type Reply = oneshot::Sender<Result<(), QueueError>>;

pub(crate) enum Request {
    Store {
        enc: Encoded,
        msg: Box<QueuedMessage>,
        reply: Reply,
    },
    Update {
        id: QueueId,
        updates: Vec<(usize, RecipientState)>,
        reply: Reply,
    },
    Remove {
        id: QueueId,
        reply: Reply,
    },
    Compact {
        reply: oneshot::Sender<Result<CompactReport, QueueError>>,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
    #[cfg(test)]
    FailSyncs(u32),
}

/// A record to append and what it does to the index once synced.
struct Out {
    enc: Encoded,
    op: Op,
    reply: Option<Reply>,
}

enum Op {
    Message(Box<QueuedMessage>),
    Recipients(QueueId, Vec<(u32, RecipientState)>),
    Done(QueueId),
}

struct Current {
    no: u32,
    file: Arc<File>,
    len: u64,
    synced: u64,
    salt: u32,
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    journal: PathBuf,
    cur: Current,
    /// The current segment's state is unknown after a failed write: start a new one.
    broken: bool,
    damaged: BTreeSet<u32>,
    rolled: bool,
    changes: u64,
    last_compact: Instant,
    lock: Option<super::SpoolLock>,
    fail_syncs: u32,
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates segment `no`, durable (file and directory entry) before anything goes in it.
fn create_segment(journal: &Path, no: u32) -> io::Result<(Arc<File>, u32)> {
    let salt = RandomState::new().hash_one(no) as u32;
    let path = segment_path(journal, no);
    // Truncate rather than create_new: a file with this number can only be left from a
    // failed attempt to create it, which acknowledged nothing.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(super::PRIVATE)
        .open(&path)?;
    file.write_all(&segment_header(salt))?;
    file.sync_all()?;
    sync_dir(journal)?;
    Ok((Arc::new(file), salt))
}

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        journal: PathBuf,
        first_seg: u32,
        damaged: BTreeSet<u32>,
        lock: super::SpoolLock,
    ) -> Result<Writer, QueueError> {
        let (file, salt) = create_segment(&journal, first_seg)?;
        shared.index().segments.insert(first_seg, Arc::clone(&file));
        Ok(Writer {
            shared,
            journal,
            cur: Current {
                no: first_seg,
                file,
                len: SEG_HEADER_LEN,
                synced: SEG_HEADER_LEN,
                salt,
            },
            broken: false,
            damaged,
            rolled: false,
            changes: 0,
            last_compact: Instant::now(),
            lock: Some(lock),
            fail_syncs: 0,
        })
    }

    pub(crate) fn run(mut self, rx: mpsc::Receiver<Request>) {
        loop {
            let first = match rx.recv_timeout(COMPACT_EVERY) {
                Ok(r) => r,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.compact_if_due();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            let mut batch = vec![first];
            let mut bytes = 0u64;
            while bytes < MAX_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(r) => {
                        if let Request::Store { enc, .. } = &r {
                            bytes += enc.len();
                        }
                        batch.push(r);
                    }
                    Err(_) => break,
                }
            }
            if self.handle(batch) {
                return;
            }
        }
    }

    /// Returns true when asked to close.
    fn handle(&mut self, batch: Vec<Request>) -> bool {
        let mut outs = Vec::with_capacity(batch.len());
        let mut compacts = Vec::new();
        let mut close = None;
        // States as this batch leaves them, so updates in one batch see each other.
        let mut overlay: HashMap<QueueId, Option<Vec<RecipientState>>> = HashMap::new();
        for req in batch {
            match req {
                Request::Store { enc, msg, reply } => outs.push(Out {
                    enc,
                    op: Op::Message(msg),
                    reply: Some(reply),
                }),
                Request::Update { id, updates, reply } => {
                    match self.prepare_update(&id, updates, &mut overlay) {
                        Ok(mut recs) => match recs.last_mut() {
                            Some(last) => {
                                last.reply = Some(reply);
                                outs.extend(recs);
                            }
                            None => {
                                let _ = reply.send(Ok(()));
                            }
                        },
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    }
                }
                Request::Remove { id, reply } => match self.prepare_remove(&id, &mut overlay) {
                    Ok(mut out) => {
                        out.reply = Some(reply);
                        outs.push(out);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                },
                Request::Compact { reply } => compacts.push(reply),
                Request::Close { reply } => close = Some(reply),
                #[cfg(test)]
                Request::FailSyncs(n) => self.fail_syncs = n,
            }
        }
        let _ = self.write(outs);
        if !compacts.is_empty() {
            let result = self.compact();
            for reply in compacts {
                let _ = reply.send(match &result {
                    Ok(r) => Ok(*r),
                    Err(e) => Err(e.duplicate()),
                });
            }
        } else {
            self.compact_if_due();
        }
        if let Some(reply) = close {
            drop(self.lock.take());
            let _ = reply.send(());
            return true;
        }
        false
    }

    fn states_of(
        &self,
        id: &QueueId,
        overlay: &HashMap<QueueId, Option<Vec<RecipientState>>>,
    ) -> Result<Vec<RecipientState>, QueueError> {
        let unknown = || QueueError::UnknownId(id.clone());
        match overlay.get(id) {
            Some(Some(states)) => Ok(states.clone()),
            Some(None) => Err(unknown()),
            None => self
                .shared
                .index()
                .live
                .get(id)
                .map(|e| e.states.clone())
                .ok_or_else(unknown),
        }
    }

    fn prepare_update(
        &self,
        id: &QueueId,
        updates: Vec<(usize, RecipientState)>,
        overlay: &mut HashMap<QueueId, Option<Vec<RecipientState>>>,
    ) -> Result<Vec<Out>, QueueError> {
        let mut states = self.states_of(id, overlay)?;
        for (i, st) in &updates {
            let slot = states
                .get_mut(*i)
                .ok_or_else(|| QueueError::NoSuchRecipient {
                    id: id.clone(),
                    index: *i,
                })?;
            *slot = st.clone();
        }
        if updates.is_empty() {
            return Ok(Vec::new());
        }
        let updates: Vec<(u32, RecipientState)> =
            updates.into_iter().map(|(i, s)| (i as u32, s)).collect();
        let mut outs = vec![recipients_out(id, updates)?];
        if any_pending(&states) {
            overlay.insert(id.clone(), Some(states));
        } else {
            // The Recipients record alone would finish the message on replay; the Done
            // record is the explicit tombstone compaction tracks.
            outs.push(done_out(id)?);
            overlay.insert(id.clone(), None);
        }
        Ok(outs)
    }

    fn prepare_remove(
        &self,
        id: &QueueId,
        overlay: &mut HashMap<QueueId, Option<Vec<RecipientState>>>,
    ) -> Result<Out, QueueError> {
        self.states_of(id, overlay)?;
        overlay.insert(id.clone(), None);
        done_out(id)
    }

    /// Appends `outs`, syncing once at the end (and before moving to a new segment), then
    /// applies them to the index and answers their callers. On failure everything not yet
    /// synced is answered with the error and forgotten.
    fn write(&mut self, outs: Vec<Out>) -> Result<(), QueueError> {
        if outs.is_empty() {
            return Ok(());
        }
        let seg_size = self.shared.options.segment_size;
        let mut written: Vec<(Out, u32, u64)> = Vec::with_capacity(outs.len());
        let mut buf: Vec<u8> = Vec::new();
        let mut buf_at = self.cur.len;
        let mut rest = outs.into_iter();
        while let Some(o) = rest.next() {
            let full = self.cur.len > SEG_HEADER_LEN && self.cur.len + o.enc.len() > seg_size;
            if self.broken || full {
                let step = self.flush(&mut buf, &mut buf_at).and_then(|()| self.sync());
                if let Err(e) = step {
                    return Err(
                        self.fail(written.into_iter().map(|w| w.0).chain([o]).chain(rest), e)
                    );
                }
                self.commit(std::mem::take(&mut written));
                if let Err(e) = self.roll() {
                    return Err(self.fail([o].into_iter().chain(rest), e));
                }
                buf_at = self.cur.len;
            }
            let at = self.cur.len;
            buf.extend_from_slice(&o.enc.header(self.cur.salt));
            buf.extend_from_slice(&o.enc.head);
            if o.enc.body.len() >= DIRECT_WRITE as u64 {
                let step = self.flush(&mut buf, &mut buf_at).and_then(|()| {
                    for part in o.enc.body.parts() {
                        self.cur.file.write_all_at(part, buf_at)?;
                        buf_at += part.len() as u64;
                    }
                    Ok(())
                });
                if let Err(e) = step {
                    return Err(
                        self.fail(written.into_iter().map(|w| w.0).chain([o]).chain(rest), e)
                    );
                }
            } else {
                for part in o.enc.body.parts() {
                    buf.extend_from_slice(part);
                }
            }
            self.cur.len += o.enc.len();
            written.push((o, self.cur.no, at));
            if buf.len() >= 1 << 20 {
                if let Err(e) = self.flush(&mut buf, &mut buf_at) {
                    return Err(self.fail(written.into_iter().map(|w| w.0).chain(rest), e));
                }
            }
        }
        let step = self.flush(&mut buf, &mut buf_at).and_then(|()| self.sync());
        if let Err(e) = step {
            return Err(self.fail(written.into_iter().map(|w| w.0), e));
        }
        self.commit(written);
        Ok(())
    }

    fn flush(&mut self, buf: &mut Vec<u8>, at: &mut u64) -> io::Result<()> {
        if !buf.is_empty() {
            self.cur.file.write_all_at(buf, *at)?;
            *at += buf.len() as u64;
            buf.clear();
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        if self.cur.len == self.cur.synced {
            return Ok(());
        }
        if self.fail_syncs > 0 {
            self.fail_syncs -= 1;
            return Err(io::Error::other("injected sync failure"));
        }
        self.cur.file.sync_data()?;
        self.shared.syncs.fetch_add(1, Ordering::Relaxed);
        self.cur.synced = self.cur.len;
        Ok(())
    }

    /// Makes synced records visible and answers their callers.
    fn commit(&mut self, written: Vec<(Out, u32, u64)>) {
        let mut replies = Vec::new();
        {
            let mut idx = self.shared.index();
            for (o, seg, at) in written {
                let rec_len = o.enc.len();
                match o.op {
                    Op::Message(m) => {
                        let body = BodyLoc {
                            seg,
                            offset: at + o.enc.body_offset(),
                            len: o.enc.body.len(),
                            crc: o.enc.body_crc,
                        };
                        idx.apply_message(m.id, m.received_at, m.meta, m.states, body, rec_len);
                    }
                    Op::Recipients(id, updates) => {
                        idx.apply_recipients(&id, seg, &updates);
                    }
                    Op::Done(id) => {
                        idx.apply_done(&id, seg);
                    }
                }
                self.changes += 1;
                self.shared.records.fetch_add(1, Ordering::Relaxed);
                replies.extend(o.reply);
            }
        }
        for r in replies {
            let _ = r.send(Ok(()));
        }
    }

    /// Answers every unsynced record with `e`, cuts them off the segment and, since after a
    /// failed write or sync the file's state cannot be trusted, moves to a new segment on the
    /// next write.
    fn fail(&mut self, lost: impl IntoIterator<Item = Out>, e: io::Error) -> QueueError {
        tracing::warn!(segment = self.cur.no, error = %e, "spool write failed");
        let err = QueueError::Io(e);
        for o in lost {
            if let Some(r) = o.reply {
                let _ = r.send(Err(err.duplicate()));
            }
        }
        self.cur.len = self.cur.synced;
        // Best effort, so that unacknowledged records do not reappear after a restart.
        if let Err(e) = self
            .cur
            .file
            .set_len(self.cur.synced)
            .and_then(|()| self.cur.file.sync_all())
        {
            tracing::warn!(segment = self.cur.no, error = %e, "cannot cut failed write off spool segment");
        }
        self.broken = true;
        err
    }

    fn roll(&mut self) -> io::Result<()> {
        let no = self.cur.no + 1;
        let (file, salt) = create_segment(&self.journal, no)?;
        self.shared.index().segments.insert(no, Arc::clone(&file));
        self.cur = Current {
            no,
            file,
            len: SEG_HEADER_LEN,
            synced: SEG_HEADER_LEN,
            salt,
        };
        self.broken = false;
        self.rolled = true;
        Ok(())
    }

    fn compact_if_due(&mut self) {
        let due = self.rolled || (self.changes > 0 && self.last_compact.elapsed() >= COMPACT_EVERY);
        if due {
            if let Err(e) = self.compact() {
                tracing::warn!(error = %e, "spool compaction failed; will retry");
            }
        }
    }

    /// Deletes old segments nothing needs any more, first copying forward what little is
    /// still needed from sparse (under a quarter full of live data) or damaged ones.
    ///
    /// A segment is needed by a live message whose newest copy or later recipient updates
    /// are in it, and by a Done record while an older segment still holds a copy of that
    /// message (else replay would resurrect it). Segments are judged and deleted oldest
    /// first, so a Done record goes only after every segment it shadows.
    pub(crate) fn compact(&mut self) -> Result<CompactReport, QueueError> {
        self.rolled = false;
        self.changes = 0;
        self.last_compact = Instant::now();
        let plan = self.plan();
        let mut report = CompactReport::default();
        let mut copied = HashSet::new();
        let mut deletable = plan.len();
        for (i, (seg, work)) in plan.iter().enumerate() {
            if let Some(work) = work {
                match self.move_forward(*seg, work, &mut copied) {
                    Ok(n) => report.records_moved += n,
                    Err(e) => {
                        tracing::warn!(segment = seg, error = %e, "cannot copy live messages out of spool segment");
                        deletable = i;
                        break;
                    }
                }
            }
        }
        for (seg, _) in plan.iter().take(deletable) {
            let path = segment_path(&self.journal, *seg);
            if let Err(e) = std::fs::remove_file(&path).and_then(|()| sync_dir(&self.journal)) {
                // Stop: later segments may hold Done records this one's copies need.
                tracing::warn!(segment = %path.display(), error = %e, "cannot delete spool segment");
                return Err(QueueError::Io(e));
            }
            self.shared.index().forget_segment(*seg);
            self.damaged.remove(seg);
            report.segments_deleted += 1;
        }
        Ok(report)
    }

    /// Old segments to delete, in ascending order, each with what must be copied out first.
    fn plan(&self) -> Vec<(u32, Option<Work>)> {
        let quarter = self.shared.options.segment_size / 4;
        let idx = self.shared.index();
        let mut live_bytes: HashMap<u32, u64> = HashMap::new();
        let mut copies: HashMap<u32, Vec<QueueId>> = HashMap::new();
        let mut updated: HashMap<u32, Vec<QueueId>> = HashMap::new();
        for (id, e) in &idx.live {
            *live_bytes.entry(e.body.seg).or_default() += e.rec_len;
            copies.entry(e.body.seg).or_default().push(id.clone());
            for &s in &e.update_segs {
                *live_bytes.entry(s).or_default() += 64;
                updated.entry(s).or_default().push(id.clone());
            }
        }
        let mut tombs: HashMap<u32, Vec<&QueueId>> = HashMap::new();
        for (id, d) in &idx.dead {
            tombs.entry(d.done_seg).or_default().push(id);
        }
        let mut gone = BTreeSet::new();
        let mut plan = Vec::new();
        for &seg in idx.segments.keys().filter(|&&s| s < self.cur.no) {
            let needed_tombs: Vec<QueueId> = tombs
                .get(&seg)
                .into_iter()
                .flatten()
                .filter(|id| {
                    idx.dead
                        .get(**id)
                        .is_some_and(|d| d.msg_segs.iter().any(|m| *m != seg && !gone.contains(m)))
                })
                .map(|id| (*id).clone())
                .collect();
            let has_live = copies.contains_key(&seg) || updated.contains_key(&seg);
            if !has_live && needed_tombs.is_empty() {
                plan.push((seg, None));
                gone.insert(seg);
            } else if self.damaged.contains(&seg)
                || live_bytes.get(&seg).copied().unwrap_or(0) < quarter
            {
                plan.push((
                    seg,
                    Some(Work {
                        copies: copies.remove(&seg).unwrap_or_default(),
                        updated: updated.remove(&seg).unwrap_or_default(),
                        tombs: needed_tombs,
                    }),
                ));
                gone.insert(seg);
            }
        }
        plan
    }

    /// Copies what `seg` holds for others into the current segment, synced.
    fn move_forward(
        &mut self,
        seg: u32,
        work: &Work,
        copied: &mut HashSet<QueueId>,
    ) -> Result<usize, QueueError> {
        let mut outs = Vec::new();
        let mut pending_bytes = 0u64;
        let mut moved = 0;
        for id in &work.copies {
            let found = {
                let idx = self.shared.index();
                idx.live.get(id).and_then(|e| {
                    let file = idx.segments.get(&e.body.seg).cloned()?;
                    Some((idx.snapshot(id)?, e.body, file))
                })
            };
            let Some((msg, loc, file)) = found else {
                continue;
            };
            let mut body = vec![0u8; loc.len as usize];
            file.read_exact_at(&mut body, loc.offset)?;
            if crc32fast::hash(&body) != loc.crc {
                // Copied as it is, with the checksum it was stored with, so the copy still
                // reads as damaged: the message stays until the scheduler bounces it.
                tracing::error!(segment = seg, id = %id, "spool message body fails its checksum; copied forward as it is");
            }
            let head = postcard::to_stdvec(&MessageHeadRef {
                id,
                received_at: msg.received_at,
                meta: &msg.meta,
                states: &msg.states,
            })?;
            let enc = Encoded::with_body_crc(Kind::Message, head, body, loc.crc);
            pending_bytes += enc.len();
            outs.push(Out {
                enc,
                op: Op::Message(Box::new(msg)),
                reply: None,
            });
            copied.insert(id.clone());
            if pending_bytes >= MOVE_CHUNK_BYTES {
                moved += outs.len();
                self.write(std::mem::take(&mut outs))?;
                pending_bytes = 0;
            }
        }
        for id in &work.updated {
            if copied.contains(id) {
                continue;
            }
            let Some(states) = self.shared.index().live.get(id).map(|e| e.states.clone()) else {
                continue;
            };
            let updates: Vec<(u32, RecipientState)> = states
                .into_iter()
                .enumerate()
                .map(|(i, s)| (i as u32, s))
                .collect();
            outs.push(recipients_out(id, updates)?);
        }
        for id in &work.tombs {
            outs.push(done_out(id)?);
        }
        moved += outs.len();
        self.write(outs)?;
        Ok(moved)
    }
}

/// What must be copied out of a segment before it is deleted.
struct Work {
    copies: Vec<QueueId>,
    updated: Vec<QueueId>,
    tombs: Vec<QueueId>,
}

fn recipients_out(id: &QueueId, updates: Vec<(u32, RecipientState)>) -> Result<Out, QueueError> {
    // postcard encodes a struct as the tuple of its fields: this is a `RecipientsHead`.
    let head = postcard::to_stdvec(&(id, &updates))?;
    Ok(Out {
        enc: Encoded::new(Kind::Recipients, head, Vec::new()),
        op: Op::Recipients(id.clone(), updates),
        reply: None,
    })
}

fn done_out(id: &QueueId) -> Result<Out, QueueError> {
    let head = postcard::to_stdvec(&DoneHead { id: id.clone() })?;
    Ok(Out {
        enc: Encoded::new(Kind::Done, head, Vec::new()),
        op: Op::Done(id.clone()),
        reply: None,
    })
}
