//! Live updates: one change stream per process, fanned out by event.
//!
//! Check-in cursors follow commit order per event (a counter bumped in the
//! committing transaction; see `store::cursor_of`). The database's
//! notifications may arrive out of that order, so each feed publishes in
//! cursor order: an item that comes early waits for the ones before it, and
//! a gap that does not fill within [`GAP_WAIT`] is read from the database
//! (or skipped, if those rows are gone). Subscribers therefore see check-ins
//! in cursor order, which is what makes "resume after my last cursor" exact.
//!
//! [`Live`] reads one change stream for the whole process, whoever is
//! listening: the change feed (`store::change_feed`, SurrealDB
//! `CHANGEFEED`s every node of a cluster can read), from the last
//! versionstamp seen ([`feed_reader`]). A read happens on a hint (`LIVE
//! SELECT`s on the tables with a feed, which on a multi-node cluster hear
//! only their own node's writes) or after [`FeedOptions::poll`] without one,
//! so a missed hint costs at most that long. An entry names an event and
//! its new cursors (the rows are read only for events someone follows
//! here), an event whose registrations changed (its counters are nudged;
//! they are also recomputed every second anyway), or a revoked API key
//! (its sockets here close).
//!
//! Each event with listeners has a [`Feed`]: a bounded broadcast ring of resolved
//! check-ins (the user and scanner looked up once per check-in, not once per
//! subscriber) and a `watch` cell of the event's counters, recomputed at most
//! a few times a second however fast check-ins arrive.
//!
//! A subscriber that falls a whole ring behind is told so once, with the
//! cursor of the last check-in it was given, and its stream ends; the others
//! are never slowed, and memory per event stays at one ring. Every instance
//! reads the same feed, so a check-in ingested through any of them reaches
//! the subscribers of all.
//!
//! `feed.rs` holds one event's ordered ring, `subscriber.rs` one
//! subscriber's stream (replay from its cursor, then the ring), `pump.rs`
//! the tasks that follow the change feed, and `publish.rs` what they do with
//! it (resolving, publishing in cursor order, filling gaps, counters).
//!
//! On top of the feeds: [`shared`] renders each result once for a group of
//! identical subscriptions, [`personal`] routes each check-in to its own
//! person's subscriptions, and [`keepalive`] ticks once for every socket.

mod feed;
mod feed_reader;
mod keepalive;
mod personal;
mod publish;
mod pump;
pub mod shared;
mod subscriber;

use feed::Feed;
use subscriber::Subscriber;

pub use shared::{CursorProbe, Frame, GroupKind, Groups, MemberItem, Rendered};

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::{FutureExt, Stream, StreamExt};
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::domain::CheckInSource;
use crate::store::{CheckInRow, CheckInStep, FeedHints, StoreError, SurrealStore, User, cursor_of};
use feed_reader::{FeedReader, Read};

/// How many check-ins a subscriber may fall behind before it is cut off.
/// Above the largest batch (5,000 sightings, so at most 5,000 new check-ins
/// published at once), so one big batch never cuts off a subscriber that
/// keeps up.
pub const DEFAULT_BUFFER: usize = 8192;

/// The shortest time between two counter updates of one event.
const STATS_MIN_INTERVAL: Duration = Duration::from_millis(250);
/// Counters are recomputed at least this often, as people leave by silence.
const STATS_MAX_INTERVAL: Duration = Duration::from_secs(1);
/// How long [`Live::stop`] waits for the pump to end its live queries
/// before it stops the pump outright.
const PUMP_STOP_WAIT: Duration = Duration::from_secs(3);
/// How often feeds nobody listens to any more are dropped.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);
/// How long a feed waits for a check-in that should come before ones it
/// already has, before reading it from the database.
const GAP_WAIT: Duration = Duration::from_millis(100);
/// Check-ins read per page when replaying.
const REPLAY_PAGE: usize = 500;
/// The default of [`FeedOptions::poll`].
pub const DEFAULT_POLL: Duration = Duration::from_millis(100);

/// How the hub follows the database.
#[derive(Debug, Clone, Copy)]
pub struct FeedOptions {
    /// Check-ins a subscriber may fall behind before it is cut off.
    pub buffer: usize,
    /// How long the hub waits for a hint before reading the change feed anyway.
    pub poll: Duration,
    /// Whether to take hints from live queries; without them every change
    /// waits for the poll, as one written through another SurrealDB node does.
    pub hints: bool,
}

/// One check-in as subscribers receive it.
#[derive(Debug, Clone)]
pub struct CheckIn {
    /// Its place in the event's check-in stream; resume after it.
    pub cursor: String,
    /// The number in the cursor (0 for rows from before cursors).
    pub seq: u64,
    pub event: Uuid,
    pub user: User,
    pub checked_in_at: DateTime<Utc>,
    /// The name of the API key whose scanner saw it; `None` for a check-in
    /// from any other source.
    pub scanner: Option<String>,
    /// Where it came from, as its row said when it was published.
    pub source: CheckInSource,
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

/// Why a check-in stream ended early; the subscriber should resume after
/// `last_cursor` (the last check-in it was given, or where it started).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interrupted {
    /// It fell a whole buffer behind.
    Lagged { last_cursor: String },
    /// The database failed while replaying.
    Unavailable { last_cursor: String },
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
    /// API keys revoked, here or anywhere (from the change feed), for the
    /// sockets that use them.
    revoked: broadcast::Sender<Uuid>,
    /// API key names by id, for check-ins' `scanner`.
    key_names: Mutex<HashMap<Uuid, Option<String>>>,
    /// Set when the server stops: live sockets close and the pump ends.
    stopping: watch::Sender<bool>,
    /// How many WebSocket tasks are running (they hold the store).
    sockets: watch::Sender<usize>,
    pump: Mutex<Option<JoinHandle<()>>>,
    /// Groups of identical subscriptions, each rendered once.
    groups: Groups,
    /// `myCheckIns` subscriptions, by person.
    personal: Arc<personal::PersonalRoutes>,
    /// The sockets' one keepalive ticker.
    ticker: Arc<keepalive::Ticker>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Live {
    /// Starts following the change feed from now and fanning it out.
    pub async fn start(store: SurrealStore, opts: FeedOptions) -> Result<Live, StoreError> {
        let buffer = opts.buffer;
        let start = store.attendance().feed_stamp_before(feed_reader::SETTLE).await?;
        let reader = FeedReader::new(start, tokio::time::Instant::now());
        let (revoked, _) = broadcast::channel(64);
        let (stopping, _) = watch::channel(false);
        let (sockets, _) = watch::channel(0);
        let inner = Arc::new(Inner {
            sockets,
            store,
            feeds: Mutex::new(HashMap::new()),
            buffer: buffer.max(1),
            revoked,
            key_names: Mutex::new(HashMap::new()),
            stopping,
            pump: Mutex::new(None),
            groups: Groups::new(buffer),
            personal: Arc::default(),
            ticker: Arc::default(),
        });
        let pump = tokio::spawn(pump::pump(Arc::downgrade(&inner), reader, opts));
        *lock(&inner.pump) = Some(pump);
        Ok(Live { inner })
    }

    /// Stops the pump and tells every live socket to close; returns once
    /// the pump no longer holds the store.
    pub async fn stop(&self) {
        self.inner.stopping.send_replace(true);
        self.inner.ticker.stop();
        let pump = lock(&self.inner.pump).take();
        if let Some(mut task) = pump {
            // It ends its live queries itself on `stopping` (`pump::pump`).
            if tokio::time::timeout(PUMP_STOP_WAIT, &mut task).await.is_err() {
                task.abort();
                let _ = task.await;
            }
        }
        lock(&self.inner.feeds).clear();
    }

    /// Counts a WebSocket task while the guard lives.
    pub fn socket_opened(&self) -> SocketGuard {
        self.inner.sockets.send_modify(|n| *n += 1);
        metrics::gauge!("rollcall_ws_sockets").increment(1.0);
        SocketGuard { sockets: self.inner.sockets.clone() }
    }

    /// How many WebSocket tasks are running.
    pub fn sockets(&self) -> usize {
        *self.inner.sockets.borrow()
    }

    /// The groups of identical subscriptions.
    pub fn groups(&self) -> &Groups {
        &self.inner.groups
    }

    /// Ticks every `period`, for every socket's keepalive.
    pub fn keepalive(&self, period: Duration) -> watch::Receiver<u64> {
        self.inner.ticker.subscribe(period)
    }

    /// `user`'s own check-ins from now on, at every event or only `event`.
    pub fn user_check_ins(
        &self,
        user: Uuid,
        event: Option<Uuid>,
    ) -> impl Stream<Item = Result<Arc<CheckIn>, Interrupted>> + Send + use<> {
        self.inner.personal.subscribe(user, event)
    }

    /// How many `myCheckIns` subscriptions are open.
    pub fn personal_subscribers(&self) -> usize {
        self.inner.personal.len()
    }

    /// Waits, up to `limit`, for every WebSocket task to end (after
    /// [`Live::stop`] has told them to), so that none still holds the store
    /// when it is closed.
    pub async fn sockets_closed(&self, limit: Duration) {
        let mut rx = self.inner.sockets.subscribe();
        if tokio::time::timeout(limit, rx.wait_for(|n| *n == 0)).await.is_err() {
            tracing::warn!(open = *rx.borrow(), "some WebSockets did not close in time");
        }
    }

    /// Resolves when the server starts to stop.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.inner.stopping.subscribe()
    }

    /// Tells this process's live sockets that `key` was revoked.
    pub fn key_revoked(&self, key: Uuid) {
        self.inner.key_revoked(key);
    }

    /// Keys revoked from now on.
    pub fn revocations(&self) -> broadcast::Receiver<Uuid> {
        self.inner.revoked.subscribe()
    }

    /// How many subscribers follow the event's check-ins right now: on
    /// their own, or as members of a group (which itself is one subscriber).
    pub fn check_in_subscribers(&self, event: Uuid) -> usize {
        let direct = lock(&self.inner.feeds).get(&event).map_or(0, |f| f.check_ins.receiver_count());
        let (groups, members) = self.inner.groups.following(event);
        direct.saturating_sub(groups) + members
    }

    /// The event's check-ins: with `after`, those after that cursor (from
    /// the first for `Some("")`) in order, then live ones; without, live
    /// ones. Nothing is missed or repeated at the hand-over: the live stream
    /// is joined before the replay is read, and live items the replay
    /// already gave are skipped. Also returns where the stream starts (the
    /// cursor a subscriber resumes after if it lags before its first item).
    pub async fn check_ins(
        &self,
        event: Uuid,
        after: Option<String>,
    ) -> Result<(String, impl Stream<Item = Result<Arc<CheckIn>, Interrupted>> + Send + use<>), StoreError> {
        let feed = self.feed(event).await?;
        let rx = feed.check_ins.subscribe();
        let start = cursor_of(feed.last());
        let replaying = after.is_some();
        let state = Subscriber {
            live: self.clone(),
            event,
            replay: VecDeque::new(),
            replaying,
            replayed_upto: 0,
            rx,
            last: after.unwrap_or(start),
            done: false,
            _feed: feed,
        };
        Ok((state.last.clone(), futures_util::stream::unfold(state, Subscriber::next)))
    }

    /// The event's counters: the current ones as soon as they are known,
    /// then each change.
    pub async fn stats(&self, event: Uuid) -> Result<impl Stream<Item = EventStats> + Send + use<>, StoreError> {
        let feed = self.feed(event).await?;
        feed.changed.notify_one();
        let mut rx = feed.stats.subscribe();
        rx.mark_changed();
        Ok(futures_util::stream::unfold((rx, feed), |(mut rx, feed)| async move {
            loop {
                rx.changed().await.ok()?;
                let current = rx.borrow_and_update().clone();
                if let Some(stats) = current {
                    return Some((stats, (rx, feed)));
                }
            }
        }))
    }

    async fn feed(&self, event: Uuid) -> Result<Arc<Feed>, StoreError> {
        if let Some(feed) = self.inner.feed(event) {
            return Ok(feed);
        }
        let last = self.inner.store.attendance().check_in_count(event).await?;
        let mut feeds = lock(&self.inner.feeds);
        if let Some(feed) = feeds.get(&event) {
            return Ok(feed.clone()); // another subscriber made it meanwhile
        }
        let feed = Arc::new(Feed::new(event, self.inner.buffer, last));
        feeds.insert(event, feed.clone());
        tokio::spawn(pump::keep_stats(Arc::downgrade(&self.inner), Arc::downgrade(&feed), feed.changed.clone()));
        Ok(feed)
    }
}

/// Counts one running WebSocket task; see [`Live::socket_opened`].
pub struct SocketGuard {
    sockets: watch::Sender<usize>,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        self.sockets.send_modify(|n| *n = n.saturating_sub(1));
        metrics::gauge!("rollcall_ws_sockets").decrement(1.0);
    }
}
