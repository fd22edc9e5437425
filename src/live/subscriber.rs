//! One `checkIns` subscriber's stream: replay from its cursor in pages,
//! then the event's live ring, skipping what the replay already gave, and
//! `LAGGED` with its last cursor if it falls a whole ring behind.

use super::*;

/// One subscriber's position: the replay page in hand, how far the replay
/// went (live items up to there are skipped), and the last cursor given.
pub(super) struct Subscriber {
    pub(super) live: Live,
    pub(super) event: Uuid,
    pub(super) replay: VecDeque<Arc<CheckIn>>,
    pub(super) replaying: bool,
    pub(super) replayed_upto: u64,
    pub(super) rx: broadcast::Receiver<Arc<CheckIn>>,
    pub(super) last: String,
    pub(super) done: bool,
    /// Keeps the event's feed alive while this subscriber is.
    pub(super) _feed: Arc<Feed>,
}

impl Subscriber {
    pub(super) async fn next(mut self) -> Option<(Result<Arc<CheckIn>, Interrupted>, Self)> {
        if self.done {
            return None;
        }
        while self.replay.is_empty() && self.replaying {
            // Boxed: a live subscriber waits on its receiver for hours and
            // should not carry the space of a database read meanwhile.
            match Box::pin(self.live.inner.replay_page(self.event, &self.last)).await {
                Ok(page) if page.is_empty() => self.replaying = false,
                Ok(page) => self.replay.extend(page.into_iter().map(Arc::new)),
                Err(e) => {
                    tracing::error!(error = %e, "could not replay check-ins");
                    self.done = true;
                    let last_cursor = self.last.clone();
                    return Some((Err(Interrupted::Unavailable { last_cursor }), self));
                }
            }
        }
        if let Some(c) = self.replay.pop_front() {
            self.last = c.cursor.clone();
            self.replayed_upto = self.replayed_upto.max(c.seq);
            return Some((Ok(c), self));
        }
        loop {
            match self.rx.recv().await {
                Ok(c) if c.seq <= self.replayed_upto => continue,
                Ok(c) => {
                    self.last = c.cursor.clone();
                    return Some((Ok(c), self));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.done = true;
                    let last_cursor = self.last.clone();
                    return Some((Err(Interrupted::Lagged { last_cursor }), self));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
