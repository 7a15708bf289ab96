//! The in-memory picture of the journal: live messages (metadata, states, where the body
//! is) and the tombstones still needed, plus which segments each depends on. Replay and the
//! writer change it through the same four functions, so both build the same picture.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::sync::Arc;

use super::{NewMessage, QueueId, QueuedMessage, RecipientState};

/// Where a body is.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BodyLoc {
    pub(crate) seg: u32,
    pub(crate) offset: u64,
    pub(crate) len: u64,
    pub(crate) crc: u32,
}

pub(crate) struct LiveEntry {
    pub(crate) received_at: u64,
    pub(crate) meta: NewMessage,
    pub(crate) states: Vec<RecipientState>,
    /// The newest copy of the message record (its segment is `body.seg`).
    pub(crate) body: BodyLoc,
    pub(crate) rec_len: u64,
    /// Segments holding recipient updates newer than that copy.
    pub(crate) update_segs: BTreeSet<u32>,
    /// Every segment holding some copy of the message record.
    pub(crate) msg_segs: BTreeSet<u32>,
}

/// A finished message whose record still exists in some segment: its Done record must
/// outlive every copy, or replay would resurrect the message.
pub(crate) struct DeadEntry {
    pub(crate) done_seg: u32,
    pub(crate) msg_segs: BTreeSet<u32>,
}

#[derive(Default)]
pub(crate) struct Index {
    /// Ordered by id, that is by arrival.
    pub(crate) live: BTreeMap<QueueId, LiveEntry>,
    pub(crate) dead: HashMap<QueueId, DeadEntry>,
    /// Open handles of every segment in the journal, for reading bodies.
    pub(crate) segments: BTreeMap<u32, Arc<File>>,
}

pub(crate) fn any_pending(states: &[RecipientState]) -> bool {
    states
        .iter()
        .any(|s| matches!(s, RecipientState::Pending { .. }))
}

impl Index {
    pub(crate) fn apply_message(
        &mut self,
        id: QueueId,
        received_at: u64,
        meta: NewMessage,
        states: Vec<RecipientState>,
        body: BodyLoc,
        rec_len: u64,
    ) {
        let seg = body.seg;
        if let Some(dead) = self.dead.get_mut(&id) {
            // Only damage reorders records like this; the message stays finished.
            dead.msg_segs.insert(seg);
            dead.done_seg = dead.done_seg.max(seg);
            return;
        }
        let mut msg_segs = self
            .live
            .remove(&id)
            .map(|e| e.msg_segs)
            .unwrap_or_default();
        msg_segs.insert(seg);
        if !any_pending(&states) {
            self.dead.insert(
                id,
                DeadEntry {
                    done_seg: seg,
                    msg_segs,
                },
            );
            return;
        }
        self.live.insert(
            id,
            LiveEntry {
                received_at,
                meta,
                states,
                body,
                rec_len,
                update_segs: BTreeSet::new(),
                msg_segs,
            },
        );
    }

    /// Returns false when the id is not live (updates for it are ignored).
    pub(crate) fn apply_recipients(
        &mut self,
        id: &QueueId,
        seg: u32,
        updates: &[(u32, RecipientState)],
    ) -> bool {
        let Some(e) = self.live.get_mut(id) else {
            return false;
        };
        for (i, st) in updates {
            if let Some(slot) = e.states.get_mut(*i as usize) {
                *slot = st.clone();
            }
        }
        e.update_segs.insert(seg);
        if !any_pending(&e.states) {
            self.apply_done(id, seg);
        }
        true
    }

    pub(crate) fn apply_done(&mut self, id: &QueueId, seg: u32) -> bool {
        if let Some(e) = self.live.remove(id) {
            self.dead.insert(
                id.clone(),
                DeadEntry {
                    done_seg: seg,
                    msg_segs: e.msg_segs,
                },
            );
            true
        } else if let Some(d) = self.dead.get_mut(id) {
            d.done_seg = d.done_seg.max(seg);
            true
        } else {
            false
        }
    }

    /// The segment has been deleted from disk.
    pub(crate) fn forget_segment(&mut self, seg: u32) {
        self.segments.remove(&seg);
        for e in self.live.values_mut() {
            e.msg_segs.remove(&seg);
            e.update_segs.remove(&seg);
        }
        self.dead.retain(|_, d| {
            d.msg_segs.remove(&seg);
            !d.msg_segs.is_empty()
        });
    }

    /// Where message `id`'s body is, and its segment's open file.
    pub(crate) fn body_of(&self, id: &QueueId) -> Result<(BodyLoc, Arc<File>), super::QueueError> {
        let e = self
            .live
            .get(id)
            .ok_or_else(|| super::QueueError::UnknownId(id.clone()))?;
        let file =
            self.segments
                .get(&e.body.seg)
                .cloned()
                .ok_or_else(|| super::QueueError::Corrupt {
                    detail: format!("segment {} of message {id} is missing", e.body.seg),
                })?;
        Ok((e.body, file))
    }

    pub(crate) fn snapshot(&self, id: &QueueId) -> Option<QueuedMessage> {
        self.live.get(id).map(|e| to_queued(id, e))
    }

    pub(crate) fn snapshot_all(&self) -> Vec<QueuedMessage> {
        self.live.iter().map(|(id, e)| to_queued(id, e)).collect()
    }
}

fn to_queued(id: &QueueId, e: &LiveEntry) -> QueuedMessage {
    QueuedMessage {
        id: id.clone(),
        received_at: e.received_at,
        meta: e.meta.clone(),
        states: e.states.clone(),
        size: e.body.len,
    }
}
