//! Routing by person: each check-in goes to the `myCheckIns` subscriptions
//! of the one person it is about.
//!
//! This is routing, not fan-out: however many people subscribe, a
//! check-in costs one index lookup by its user id. Each subscription has a
//! small bounded queue; one that fills up (its socket stopped reading) is
//! dropped from the index and told `LAGGED` with the cursor of the last
//! check-in it was given, so it never holds more than that queue.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use futures_util::Stream;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{CheckIn, Interrupted};

/// Check-ins one person's subscription may fall behind. A person checks in
/// once per event, so this is only reached by a socket that stopped reading.
const PERSONAL_BUFFER: usize = 16;

/// The `myCheckIns` subscriptions, by person.
#[derive(Default)]
pub(crate) struct PersonalRoutes {
    routes: Mutex<HashMap<Uuid, Vec<Route>>>,
    next_id: AtomicU64,
}

/// One subscription's way in.
struct Route {
    id: u64,
    /// Only this event's check-ins, if set.
    event: Option<Uuid>,
    tx: mpsc::Sender<Arc<CheckIn>>,
    /// Set when the queue overflowed and the route was dropped.
    lagged: Arc<AtomicBool>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PersonalRoutes {
    /// Whether no subscription is routed.
    pub(crate) fn is_empty(&self) -> bool {
        lock(&self.routes).is_empty()
    }

    /// How many subscriptions are routed.
    pub(crate) fn len(&self) -> usize {
        lock(&self.routes).values().map(Vec::len).sum()
    }

    /// Hands `c` to its person's subscriptions.
    pub(crate) fn deliver(&self, c: &CheckIn) {
        let mut routes = lock(&self.routes);
        let Some(list) = routes.get_mut(&c.user.id) else { return };
        let c = Arc::new(c.clone());
        list.retain(|r| {
            if r.event.is_some_and(|e| e != c.event) {
                return true;
            }
            match r.tx.try_send(c.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    r.lagged.store(true, Ordering::Relaxed);
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        if list.is_empty() {
            routes.remove(&c.user.id);
        }
    }

    /// `user`'s check-ins from now on (only `event`'s, if given).
    pub(crate) fn subscribe(
        self: &Arc<Self>,
        user: Uuid,
        event: Option<Uuid>,
    ) -> impl Stream<Item = Result<Arc<CheckIn>, Interrupted>> + Send + use<> {
        let (tx, rx) = mpsc::channel(PERSONAL_BUFFER);
        let lagged = Arc::new(AtomicBool::new(false));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.routes).entry(user).or_default().push(Route { id, event, tx, lagged: lagged.clone() });
        let sub = Personal { rx, lagged, last: String::new(), done: false, routes: Arc::downgrade(self), user, id };
        futures_util::stream::unfold(sub, Personal::next)
    }

    fn remove(&self, user: Uuid, id: u64) {
        let mut routes = lock(&self.routes);
        if let Some(list) = routes.get_mut(&user) {
            list.retain(|r| r.id != id);
            if list.is_empty() {
                routes.remove(&user);
            }
        }
    }
}

/// One `myCheckIns` subscription; leaves the index when dropped.
struct Personal {
    rx: mpsc::Receiver<Arc<CheckIn>>,
    lagged: Arc<AtomicBool>,
    /// The cursor of the last check-in given.
    last: String,
    done: bool,
    routes: Weak<PersonalRoutes>,
    user: Uuid,
    id: u64,
}

impl Personal {
    async fn next(mut self) -> Option<(Result<Arc<CheckIn>, Interrupted>, Personal)> {
        if self.done {
            return None;
        }
        match self.rx.recv().await {
            Some(c) => {
                self.last.clone_from(&c.cursor);
                Some((Ok(c), self))
            }
            None if self.lagged.load(Ordering::Relaxed) => {
                self.done = true;
                let last_cursor = self.last.clone();
                Some((Err(Interrupted::Lagged { last_cursor }), self))
            }
            None => None,
        }
    }
}

impl Drop for Personal {
    fn drop(&mut self) {
        if let Some(routes) = self.routes.upgrade() {
            routes.remove(self.user, self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::{FutureExt, StreamExt};

    use super::*;
    use crate::domain::{CheckInSource, Role};
    use crate::store::User;

    fn check_in(user: Uuid, event: Uuid, seq: u64) -> CheckIn {
        let now = chrono::Utc::now();
        CheckIn {
            cursor: format!("{seq:012}"),
            seq,
            event,
            user: User {
                id: user,
                email: String::new(),
                name: String::new(),
                role: Role::Attendee,
                password_hash: None,
                ble_uuid: String::new(),
                created_at: now,
                token_version: 0,
            },
            checked_in_at: now,
            scanner: None,
            source: CheckInSource::Scanner,
        }
    }

    /// With 10,000 people subscribed, a check-in reaches the subscriptions
    /// of its own person only (those for all events and those for its
    /// event), and a subscription that ends leaves the index.
    #[tokio::test]
    async fn a_check_in_reaches_only_its_persons_subscriptions() {
        let routes = Arc::new(PersonalRoutes::default());
        let (event, other) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let mut crowd: Vec<_> =
            (0..10_000u128).map(|i| Box::pin(routes.subscribe(Uuid::from_u128(1_000 + i), None))).collect();
        let ada = Uuid::from_u128(7);
        let mut all = Box::pin(routes.subscribe(ada, None));
        let mut this_event = Box::pin(routes.subscribe(ada, Some(event)));
        let mut other_event = Box::pin(routes.subscribe(ada, Some(other)));
        assert_eq!(routes.len(), 10_003);

        routes.deliver(&check_in(ada, event, 1));
        assert_eq!(all.next().await.unwrap().unwrap().seq, 1);
        assert_eq!(this_event.next().await.unwrap().unwrap().seq, 1);
        assert!(other_event.next().now_or_never().is_none(), "another event's subscription hears nothing");
        assert!(crowd.iter_mut().all(|s| s.next().now_or_never().is_none()), "nobody else hears it");

        drop((all, this_event, other_event));
        assert_eq!(routes.len(), 10_000);
    }

    /// A subscription whose socket stopped reading is dropped from the
    /// index once its queue is full, and told `LAGGED` with the cursor of
    /// the last check-in it was given.
    #[tokio::test]
    async fn a_subscription_that_stops_reading_is_dropped_and_told_where_to_resume() {
        let routes = Arc::new(PersonalRoutes::default());
        let ada = Uuid::from_u128(7);
        let mut sub = Box::pin(routes.subscribe(ada, None));
        let full = PERSONAL_BUFFER as u64;
        for seq in 1..=full + 1 {
            routes.deliver(&check_in(ada, Uuid::from_u128(u128::from(seq)), seq));
        }
        assert!(routes.is_empty(), "the overflowing route left the index");
        for seq in 1..=full {
            assert_eq!(sub.next().await.unwrap().unwrap().seq, seq);
        }
        match sub.next().await {
            Some(Err(Interrupted::Lagged { last_cursor })) => assert_eq!(last_cursor, format!("{full:012}")),
            _ => panic!("expected LAGGED after the queued check-ins"),
        }
        assert!(sub.next().await.is_none());
    }
}
