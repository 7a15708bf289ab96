//! DATA and BDAT: receiving the message under the size, header and line limits and the
//! memory budget (a refused or oversized chunk is still read, as data, never as commands),
//! then handing the bytes to [`Session::message`].

use super::stream::ended;
use super::{Chunks, End, Session, State};
use crate::relay::memory::Lease;
use crate::smtp::command::Body;
use crate::smtp::data::{BdatReceiver, Buffered, DataError, DataReceiver, MAX_TEXT_LINE};
use crate::smtp::reply::Reply;

impl Session {
    pub(super) async fn data(&mut self) -> Result<(), End> {
        let tx = match std::mem::take(&mut self.state) {
            State::Transaction(hello, tx)
                if !tx.rcpts.is_empty() && tx.params.body != Some(Body::BinaryMime) =>
            {
                // The transaction ends with this DATA, whatever comes of it.
                self.state = State::Greeted(hello);
                tx
            }
            other => {
                let r = match &other {
                    // RFC 3030: a transaction that began with BDAT goes on with BDAT only.
                    State::Chunking(..) => {
                        Reply::new(503, "5.5.1", "DATA cannot follow BDAT in one transaction")
                    }
                    State::Transaction(_, tx) if tx.rcpts.is_empty() => {
                        Reply::new(554, "5.5.1", "no valid recipients")
                    }
                    State::Transaction(..) => {
                        Reply::new(503, "5.5.1", "BODY=BINARYMIME needs BDAT")
                    }
                    State::Connected | State::Greeted(_) => {
                        Reply::new(503, "5.5.1", "send MAIL first")
                    }
                };
                self.state = other;
                return self.ok_or_close(r).await;
            }
        };
        if !self
            .reply(Reply::new(354, "", "end data with <CR><LF>.<CR><LF>"))
            .await
        {
            return Err(End::Closed);
        }
        let limits = &self.conn().limits;
        let mut rx = DataReceiver::new(limits.max_message_size)
            .with_header_limit(limits.max_header_size)
            .with_line_limit(MAX_TEXT_LINE);
        let mut lease = Lease::new(&self.shared.memory);
        loop {
            budget(&mut lease, &mut rx, self.buf.len());
            let progress = rx.feed(&self.buf);
            self.buf.drain(..progress.consumed);
            if progress.done {
                break;
            }
            // RFC 5321's data block timeout is 3 minutes; the connector's idle limit applies.
            self.fill().await.map_err(ended)?;
        }
        let bare = rx.bare_line_endings();
        if bare > 0 {
            tracing::info!(client = %self.peer, "{bare} bare CR or LF line endings normalised to CRLF");
        }
        match rx.finish() {
            Ok(bytes) => self.message(tx, bytes, lease).await,
            Err(e) => self.refuse_data(&e).await,
        }
    }

    /// Ends the transaction with the reply for a refused message.
    pub(super) async fn refuse_data(&mut self, e: &DataError) -> Result<(), End> {
        if *e == DataError::NoMemory {
            tracing::warn!(client = %self.peer, "message refused: the relay's memory for message data is spent (--max-message-memory)");
        }
        self.state.reset();
        self.ok_or_close(Reply::from(e)).await
    }

    /// One `BDAT` chunk. Its bytes are read whatever the answer; a chunk announced over the
    /// size limit is refused at once, before they arrive, and the rest go through the
    /// receiver a read at a time under the memory budget, never buffered whole.
    pub(super) async fn bdat(
        &mut self,
        size: u64,
        last: bool,
        refusal: Option<Reply>,
    ) -> Result<(), End> {
        let taken = match refusal {
            Some(r) => Err(r),
            None => match std::mem::take(&mut self.state) {
                State::Transaction(hello, tx) if !tx.rcpts.is_empty() => Ok((hello, tx, None)),
                State::Chunking(hello, tx, chunks) => Ok((hello, tx, Some(chunks))),
                other => {
                    self.state = other;
                    Err(Reply::new(503, "5.5.1", "send MAIL and RCPT first"))
                }
            },
        };
        let (hello, tx, chunks) = match taken {
            Ok(t) => t,
            Err(r) => {
                self.discard(size).await?;
                return self.ok_or_close(r).await;
            }
        };
        // Unless this chunk leaves it open, the transaction ends with it.
        self.state = State::Greeted(hello);
        let limits = &self.conn().limits;
        let (max, max_header) = (limits.max_message_size, limits.max_header_size);
        let Chunks { mut rx, mut lease } = chunks.unwrap_or_else(|| Chunks {
            rx: BdatReceiver::new(max)
                .with_header_limit(max_header)
                .with_line_limit(MAX_TEXT_LINE),
            lease: Lease::new(&self.shared.memory),
        });
        // Normalisation only adds octets, so an announced size over the limit is final.
        if rx.size().saturating_add(size) > max {
            drop((rx, lease, tx));
            self.ok_or_close(Reply::from(&DataError::TooLarge { limit: max }))
                .await?;
            return self.discard(size).await;
        }
        let mut left = size;
        while left > 0 {
            if self.buf.is_empty() {
                self.fill().await.map_err(ended)?;
            }
            let take = (self.buf.len() as u64).min(left) as usize;
            budget(&mut lease, &mut rx, take);
            rx.feed(self.buf.get(..take).unwrap_or_default());
            self.buf.drain(..take);
            left -= take as u64;
        }
        if let Some(e) = rx.refusal() {
            return self.refuse_data(&e).await;
        }
        if !last {
            // INVARIANT: greeted since the transaction was taken out above.
            if let State::Greeted(hello) = std::mem::take(&mut self.state) {
                self.state = State::Chunking(hello, tx, Chunks { rx, lease });
            }
            return self
                .ok_or_close(Reply::new(250, "2.0.0", format!("{size} octets received")))
                .await;
        }
        let bare = rx.bare_line_endings();
        if bare > 0 {
            tracing::info!(client = %self.peer, "{bare} bare CR or LF line endings normalised to CRLF");
        }
        match rx.finish() {
            Ok(bytes) => self.message(tx, bytes, lease).await,
            Err(e) => self.refuse_data(&e).await,
        }
    }
}

/// Reserves from the relay's budget what feeding `input` more octets may make `rx` keep.
/// When the budget is spent the receiver stops keeping (the message will get `452 4.3.1`)
/// and what it held is given back; it goes on consuming, so the client stays in step.
fn budget(lease: &mut Lease, rx: &mut impl Buffered, input: usize) {
    let want = rx.capacity_for(input);
    if want > rx.capacity() {
        if lease.grow_for_receiving(want as u64) {
            rx.reserve(want);
        } else {
            rx.out_of_memory();
        }
    }
    if rx.capacity() == 0 {
        lease.shrink_to(0);
    }
}
