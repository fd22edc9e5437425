//! One event's feed: a bounded broadcast ring of resolved check-ins,
//! published in cursor order (an item that comes early waits for the ones
//! before it; see the parent module for how gaps are filled), and the
//! event's counters.

use super::*;

pub(super) struct Feed {
    pub(super) event: Uuid,
    pub(super) check_ins: broadcast::Sender<Arc<CheckIn>>,
    pub(super) stats: watch::Sender<Option<EventStats>>,
    pub(super) changed: Arc<Notify>,
    order: Mutex<Order>,
}

/// A feed's publishing position.
struct Order {
    /// The last check-in number published (or the event's count when the
    /// feed began).
    last: u64,
    /// Check-ins that came before the ones in front of them.
    pending: BTreeMap<u64, CheckIn>,
    /// Since when `pending` has waited for a missing check-in.
    gap_since: Option<tokio::time::Instant>,
}

impl Feed {
    /// A feed for `event` whose last published check-in is number `last`,
    /// with a ring of `buffer`.
    pub(super) fn new(event: Uuid, buffer: usize, last: u64) -> Self {
        let (check_ins, _) = broadcast::channel(buffer);
        let (stats, _) = watch::channel(None);
        let order = Mutex::new(Order { last, pending: BTreeMap::new(), gap_since: None });
        Feed { event, check_ins, stats, changed: Arc::new(Notify::new()), order }
    }

    /// Takes check-ins in any order and publishes them in cursor order.
    pub(super) fn offer(&self, items: impl IntoIterator<Item = CheckIn>) {
        let mut order = lock(&self.order);
        for c in items {
            if c.seq > order.last {
                order.pending.insert(c.seq, c);
            }
        }
        self.drain(&mut order);
    }

    /// The last check-in number published.
    pub(super) fn last(&self) -> u64 {
        lock(&self.order).last
    }

    /// Gives up on the check-ins before `seq` that never came.
    pub(super) fn skip_to(&self, seq: u64) {
        let mut order = lock(&self.order);
        if seq > order.last + 1 {
            order.last = seq - 1;
        }
        self.drain(&mut order);
    }

    fn drain(&self, order: &mut Order) {
        while let Some(entry) = order.pending.first_entry() {
            if *entry.key() != order.last + 1 {
                break;
            }
            let c = entry.remove();
            order.last = c.seq;
            // No receivers is fine: nobody is listening right now.
            let _ = self.check_ins.send(Arc::new(c));
        }
        order.gap_since = match (order.pending.is_empty(), order.gap_since) {
            (true, _) => None,
            (false, None) => Some(tokio::time::Instant::now()),
            (false, since) => since,
        };
    }

    /// `(last published, first waiting)` if a gap has waited too long; with
    /// `all`, `(last published, None)`, to read everything after it.
    pub(super) fn gap(&self, all: bool) -> Option<(u64, Option<u64>)> {
        let order = lock(&self.order);
        if all {
            return Some((order.last, None));
        }
        let since = order.gap_since?;
        let first = *order.pending.keys().next()?;
        (since.elapsed() >= GAP_WAIT).then_some((order.last, Some(first)))
    }
}
