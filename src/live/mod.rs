//! Live updates: one change stream per process, fanned out by event.
//!
//! [`Live`] holds one SurrealDB live query on `attendance` and one on
//! `registration` for the whole process, whoever is listening. Each event
//! with listeners has a [`Feed`]: a bounded broadcast ring of resolved
//! check-ins (the user and scanner looked up once per check-in, not once per
//! subscriber) and a `watch` cell of the event's counters, recomputed at most
//! a few times a second however fast check-ins arrive.
//!
//! A subscriber that falls a whole ring behind is told so once, with the
//! cursor of the last check-in it was given, and its stream ends; the others
//! are never slowed, and memory per event stays at one ring. Two instances
//! over one SurrealDB server each hold their own live queries, so a check-in
//! ingested through either reaches the subscribers of both.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt};
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::store::{AttendanceChange, ChangeKind, CheckInRow, StoreError, SurrealStore, User};

/// How many check-ins a subscriber may fall behind before it is cut off.
pub const DEFAULT_BUFFER: usize = 1024;

/// The shortest time between two counter updates of one event.
const STATS_MIN_INTERVAL: Duration = Duration::from_millis(250);
/// Counters are recomputed at least this often, as people leave by silence.
const STATS_MAX_INTERVAL: Duration = Duration::from_secs(1);
/// How often feeds nobody listens to any more are dropped.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// One check-in as subscribers receive it.
#[derive(Debug, Clone)]
pub struct CheckIn {
    /// Its place in the event's check-in stream; resume after it.
    pub cursor: Uuid,
    pub event: Uuid,
    pub user: User,
    pub checked_in_at: DateTime<Utc>,
    /// The name of the API key whose scanner saw it; `None` for a manual check-in.
    pub scanner: Option<String>,
}

/// An event's counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventStats {
    pub event: Uuid,
    pub registered: usize,
    pub checked_in: usize,
    pub present_now: usize,
    pub at: DateTime<Utc>,
}

impl EventStats {
    fn same_counts(&self, other: &EventStats) -> bool {
        (self.registered, self.checked_in, self.present_now) == (other.registered, other.checked_in, other.present_now)
    }
}

/// A subscriber fell too far behind; it should resume after `last_cursor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lagged {
    /// The last check-in this subscriber was given, if any.
    pub last_cursor: Option<Uuid>,
}

/// The process's live hub; cheap to clone.
#[derive(Clone)]
pub struct Live {
    inner: Arc<Inner>,
}

struct Inner {
    store: SurrealStore,
    feeds: Mutex<HashMap<Uuid, Arc<Feed>>>,
    buffer: usize,
    /// API keys revoked in this process, for the sockets that used them.
    revoked: broadcast::Sender<Uuid>,
    /// API key names by id, for check-ins' `scanner`.
    key_names: Mutex<HashMap<Uuid, Option<String>>>,
    /// Set when the server stops: live sockets close and the pump ends.
    stopping: watch::Sender<bool>,
    pump: Mutex<Option<JoinHandle<()>>>,
}

struct Feed {
    event: Uuid,
    check_ins: broadcast::Sender<Arc<CheckIn>>,
    stats: watch::Sender<Option<EventStats>>,
    changed: Arc<Notify>,
    /// The greatest cursor published, for catching up after a lost stream.
    last_published: Mutex<Uuid>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Live {
    /// Opens the change streams and starts fanning them out.
    pub async fn start(store: SurrealStore, buffer: usize) -> Result<Live, StoreError> {
        let attendance = store.attendance().changes().await?;
        let registrations = store.registrations().changes().await?;
        let (revoked, _) = broadcast::channel(64);
        let (stopping, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            store,
            feeds: Mutex::new(HashMap::new()),
            buffer: buffer.max(1),
            revoked,
            key_names: Mutex::new(HashMap::new()),
            stopping,
            pump: Mutex::new(None),
        });
        let pump = tokio::spawn(pump(Arc::downgrade(&inner), attendance.boxed(), registrations.boxed()));
        *lock(&inner.pump) = Some(pump);
        Ok(Live { inner })
    }

    /// Stops the pump and tells every live socket to close; returns once
    /// the pump no longer holds the store.
    pub async fn stop(&self) {
        self.inner.stopping.send_replace(true);
        let pump = lock(&self.inner.pump).take();
        if let Some(pump) = pump {
            pump.abort();
            let _ = pump.await;
        }
        lock(&self.inner.feeds).clear();
    }

    /// Resolves when the server starts to stop.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.inner.stopping.subscribe()
    }

    /// Tells this process's live sockets that `key` was revoked.
    pub fn key_revoked(&self, key: Uuid) {
        let _ = self.inner.revoked.send(key);
    }

    /// Keys revoked from now on.
    pub fn revocations(&self) -> broadcast::Receiver<Uuid> {
        self.inner.revoked.subscribe()
    }

    /// How many events have live listeners, for `/metrics` and tests.
    pub fn feeds(&self) -> usize {
        lock(&self.inner.feeds).len()
    }

    /// The event's check-ins: with `after`, those after that cursor (all of
    /// them for the nil cursor) in order, then live ones; without, live ones.
    /// Nothing is missed or repeated at the hand-over: the live stream is
    /// joined before the replay is read, and what both hold is given once.
    pub async fn check_ins(
        &self,
        event: Uuid,
        after: Option<Uuid>,
    ) -> Result<impl Stream<Item = Result<Arc<CheckIn>, Lagged>> + Send + use<>, StoreError> {
        let feed = self.feed(event);
        let rx = feed.check_ins.subscribe();
        let mut replay = VecDeque::new();
        let mut replayed = HashSet::new();
        if let Some(after) = after {
            let after = (!after.is_nil()).then_some(after);
            let rows = self.inner.store.attendance().check_ins(event, after).await?;
            for c in self.inner.resolve(rows).await? {
                replayed.insert(c.cursor);
                replay.push_back(Arc::new(c));
            }
        }
        let state = Subscriber { replay, replayed, rx, last: after.filter(|a| !a.is_nil()), done: false, _feed: feed };
        Ok(futures_util::stream::unfold(state, Subscriber::next))
    }

    /// The event's counters: the current ones as soon as they are known,
    /// then each change.
    pub fn stats(&self, event: Uuid) -> impl Stream<Item = EventStats> + Send + use<> {
        let feed = self.feed(event);
        feed.changed.notify_one();
        let mut rx = feed.stats.subscribe();
        rx.mark_changed();
        futures_util::stream::unfold((rx, feed), |(mut rx, feed)| async move {
            loop {
                rx.changed().await.ok()?;
                let current = rx.borrow_and_update().clone();
                if let Some(stats) = current {
                    return Some((stats, (rx, feed)));
                }
            }
        })
    }

    fn feed(&self, event: Uuid) -> Arc<Feed> {
        let mut feeds = lock(&self.inner.feeds);
        if let Some(feed) = feeds.get(&event) {
            return feed.clone();
        }
        let (check_ins, _) = broadcast::channel(self.inner.buffer);
        let (stats, _) = watch::channel(None);
        let feed = Arc::new(Feed {
            event,
            check_ins,
            stats,
            changed: Arc::new(Notify::new()),
            last_published: Mutex::new(Uuid::nil()),
        });
        feeds.insert(event, feed.clone());
        tokio::spawn(keep_stats(Arc::downgrade(&self.inner), Arc::downgrade(&feed), feed.changed.clone()));
        feed
    }
}

/// One subscriber's position: what is left to replay, what was replayed
/// (to skip when the live stream brings it again), and the last cursor given.
struct Subscriber {
    replay: VecDeque<Arc<CheckIn>>,
    replayed: HashSet<Uuid>,
    rx: broadcast::Receiver<Arc<CheckIn>>,
    last: Option<Uuid>,
    done: bool,
    /// Keeps the event's feed alive while this subscriber is.
    _feed: Arc<Feed>,
}

impl Subscriber {
    async fn next(mut self) -> Option<(Result<Arc<CheckIn>, Lagged>, Self)> {
        if self.done {
            return None;
        }
        if let Some(c) = self.replay.pop_front() {
            self.last = Some(c.cursor);
            return Some((Ok(c), self));
        }
        loop {
            match self.rx.recv().await {
                Ok(c) if self.replayed.remove(&c.cursor) => continue,
                Ok(c) => {
                    self.last = Some(c.cursor);
                    return Some((Ok(c), self));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.done = true;
                    let lagged = Lagged { last_cursor: self.last };
                    return Some((Err(lagged), self));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

impl Inner {
    /// Turns rows into check-ins: users in one fetch, key names cached.
    /// Rows whose user no longer exists are left out.
    async fn resolve(&self, rows: Vec<CheckInRow>) -> Result<Vec<CheckIn>, StoreError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = rows.iter().map(|r| r.user).collect::<HashSet<_>>().into_iter().collect();
        let users: HashMap<Uuid, User> =
            self.store.users().get_many(&ids).await?.into_iter().map(|u| (u.id, u)).collect();
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let Some(user) = users.get(&row.user) else { continue };
            out.push(CheckIn {
                cursor: row.cursor,
                event: row.event,
                user: user.clone(),
                checked_in_at: row.checked_in_at,
                scanner: self.key_name(row.scanner).await?,
            });
        }
        Ok(out)
    }

    async fn key_name(&self, key: Uuid) -> Result<Option<String>, StoreError> {
        if key.is_nil() {
            return Ok(None);
        }
        if let Some(name) = lock(&self.key_names).get(&key) {
            return Ok(name.clone());
        }
        let name = self.store.api_keys().get(key).await?.map(|k| k.name);
        lock(&self.key_names).insert(key, name.clone());
        Ok(name)
    }

    fn feed(&self, event: Uuid) -> Option<Arc<Feed>> {
        lock(&self.feeds).get(&event).cloned()
    }

    /// Publishes new check-ins to their events' subscribers.
    async fn publish(&self, changes: Vec<AttendanceChange>) {
        let mut created = Vec::new();
        for change in changes {
            let Some(feed) = self.feed(change.row.event) else { continue };
            feed.changed.notify_one();
            if change.kind == ChangeKind::Created {
                created.push(change.row);
            }
        }
        if created.is_empty() {
            return;
        }
        match self.resolve(created).await {
            Ok(check_ins) => {
                for c in check_ins {
                    if let Some(feed) = self.feed(c.event) {
                        feed.publish(c);
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "could not resolve new check-ins for live subscribers"),
        }
    }

    /// After the change stream was lost, publishes what it missed.
    async fn catch_up(&self) {
        let feeds: Vec<Arc<Feed>> = lock(&self.feeds).values().cloned().collect();
        for feed in feeds {
            feed.changed.notify_one();
            let after = *lock(&feed.last_published);
            let rows = match self.store.attendance().check_ins(feed.event, (!after.is_nil()).then_some(after)).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::error!(error = %e, "could not catch up live check-ins");
                    continue;
                }
            };
            match self.resolve(rows).await {
                Ok(check_ins) => check_ins.into_iter().for_each(|c| feed.publish(c)),
                Err(e) => tracing::error!(error = %e, "could not catch up live check-ins"),
            }
        }
    }

    fn sweep(&self) {
        lock(&self.feeds).retain(|_, feed| Arc::strong_count(feed) > 1);
    }

    async fn compute_stats(&self, event: Uuid) -> Result<Option<EventStats>, StoreError> {
        let Some(ev) = self.store.events().get(event).await? else { return Ok(None) };
        let now = Utc::now();
        let registered = self.store.registrations().count_registered(event).await?;
        let (checked_in, present_now) =
            self.store.attendance().counts(event, now - ev.policy.departure_gap, now).await?;
        Ok(Some(EventStats { event, registered, checked_in, present_now, at: now }))
    }
}

impl Feed {
    fn publish(&self, c: CheckIn) {
        {
            let mut last = lock(&self.last_published);
            if c.cursor > *last {
                *last = c.cursor;
            }
        }
        // No receivers is fine: nobody is listening right now.
        let _ = self.check_ins.send(Arc::new(c));
    }
}

/// Reads both change streams until the server stops, fanning them out;
/// reopens them (and catches up) if the database drops them.
async fn pump(
    inner: Weak<Inner>,
    mut attendance: futures_util::stream::BoxStream<'static, AttendanceChange>,
    mut registrations: futures_util::stream::BoxStream<'static, Uuid>,
) {
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        {
            let mut chunks = (&mut attendance).ready_chunks(256);
            loop {
            tokio::select! {
                changes = chunks.next() => match changes {
                    Some(changes) => {
                        let Some(inner) = inner.upgrade() else { return };
                        inner.publish(changes).await;
                    }
                    None => break,
                },
                event = registrations.next() => match event {
                    Some(event) => {
                        let Some(inner) = inner.upgrade() else { return };
                        if let Some(feed) = inner.feed(event) {
                            feed.changed.notify_one();
                        }
                    }
                    None => break,
                },
                _ = sweep.tick() => {
                    let Some(inner) = inner.upgrade() else { return };
                    inner.sweep();
                }
            }
            }
        }
        tracing::warn!("the database ended the live change stream; reopening it");
        // Reopen with backoff while the hub lives.
        let mut delay = Duration::from_millis(200);
        loop {
            tokio::time::sleep(delay).await;
            let Some(hub) = inner.upgrade() else { return };
            let reopened = async {
                Ok::<_, StoreError>((
                    hub.store.attendance().changes().await?.boxed(),
                    hub.store.registrations().changes().await?.boxed(),
                ))
            }
            .await;
            match reopened {
                Ok((a, r)) => {
                    attendance = a;
                    registrations = r;
                    hub.catch_up().await;
                    tracing::info!("live change stream reopened");
                    break;
                }
                Err(e) => {
                    tracing::error!(error = %e, retry_in = ?delay, "could not reopen the live change stream");
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}

/// Keeps one event's counters current while anybody watches them: on a
/// change (at most every [`STATS_MIN_INTERVAL`]) and every
/// [`STATS_MAX_INTERVAL`], as presence decays with time.
async fn keep_stats(inner: Weak<Inner>, feed: Weak<Feed>, changed: Arc<Notify>) {
    loop {
        {
            let (Some(inner), Some(feed)) = (inner.upgrade(), feed.upgrade()) else { return };
            if feed.stats.receiver_count() > 0 {
                match inner.compute_stats(feed.event).await {
                    Ok(Some(stats)) => {
                        feed.stats.send_if_modified(|cur| {
                            if cur.as_ref().is_some_and(|c| c.same_counts(&stats)) {
                                return false;
                            }
                            *cur = Some(stats);
                            true
                        });
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, event = %feed.event, "could not compute live event stats"),
                }
            }
        }
        tokio::time::sleep(STATS_MIN_INTERVAL).await;
        let _ = tokio::time::timeout(STATS_MAX_INTERVAL - STATS_MIN_INTERVAL, changed.notified()).await;
    }
}
