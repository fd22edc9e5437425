//! Shared renders: subscriptions whose output would be identical form a
//! group, and each result is rendered once for the whole group.
//!
//! The caller (the WebSocket layer) says what makes two subscriptions
//! identical by the group key it passes to [`Groups::join`], and how to
//! render the group's results by the stream it starts for a new group. The
//! stream runs in one task per group; each item it yields is a [`Frame`]
//! (the serialised `payload` of a `next` message), sent to every member
//! through one bounded broadcast ring of `Arc`s. A member copies the shared
//! bytes into its own message with its subscription id spliced in.
//!
//! Invariants:
//! - One render per result per group, however many members it has.
//! - Memory per group is one ring of at most `buffer` frames: a slow member
//!   never pins more. A member that falls a whole ring behind gets
//!   [`MemberItem::Lagged`] with the cursor of the last frame it was given
//!   (or where it joined), and its stream ends; the others go on.
//! - A member receives exactly the frames rendered after it joined, in
//!   order ([`GroupKind::Latest`] groups give a newcomer the latest frame
//!   first): the join reads the group's position and subscribes under the
//!   lock the publisher holds.
//! - A group lives while it has members: the last one leaving stops its
//!   task. A group whose stream ends is taken out of the registry at once,
//!   so a later subscriber starts a fresh one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use futures_util::{Stream, StreamExt};
use tokio::sync::broadcast;
use tokio::task::AbortHandle;
use uuid::Uuid;

/// One rendered result, shared by every member of its group.
#[derive(Debug)]
pub struct Frame {
    /// The serialised GraphQL response: the `payload` of a `next` message.
    pub payload: Box<str>,
    /// For a response that refuses the operation before it starts (errors,
    /// no data): the serialised errors, the `payload` of an `error` message.
    pub refusal: Option<Box<str>>,
    /// The cursor of the check-in this frame shows, if it shows one.
    pub cursor: Option<Arc<str>>,
}

/// How a group treats members that fall behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupKind {
    /// Every frame matters (check-ins): a member that falls a ring behind is
    /// told where to resume, and its stream ends.
    Every,
    /// Only the latest frame matters (counters): a newcomer gets the latest
    /// at once, and a member that falls behind skips to the newest.
    Latest,
}

/// What a member's stream yields.
#[derive(Debug)]
pub enum MemberItem {
    Frame(Arc<Frame>),
    /// The member fell a whole ring behind; it should resume after
    /// `last_cursor`. Nothing follows.
    Lagged {
        last_cursor: String,
    },
}

/// Where a group's render records the cursor of the check-in it is
/// rendering, so the group can tell members where to resume. The
/// subscription resolver fills it when it finds one in the request's data.
#[derive(Debug, Default)]
pub struct CursorProbe {
    state: Mutex<ProbeState>,
}

#[derive(Debug, Default)]
struct ProbeState {
    /// The event whose check-ins the group follows, once it does.
    event: Option<Uuid>,
    /// Where the group's subscription started (the check-in before its first).
    start: Option<Arc<str>>,
    /// The last check-in handed to the renderer.
    last: Option<Arc<str>>,
}

impl CursorProbe {
    /// The subscription follows `event`'s check-ins after `cursor`.
    pub fn started_after(&self, event: Uuid, cursor: &str) {
        let mut state = lock(&self.state);
        state.event = Some(event);
        state.start = Some(cursor.into());
    }

    /// The renderer is about to render the check-in at `cursor`.
    pub fn rendering(&self, cursor: &str) {
        lock(&self.state).last = Some(cursor.into());
    }

    /// The cursor of the last check-in handed to the renderer.
    pub fn last(&self) -> Option<Arc<str>> {
        lock(&self.state).last.clone()
    }

    /// Where the subscription started (the check-in before its first).
    pub fn start(&self) -> Option<Arc<str>> {
        lock(&self.state).start.clone()
    }
}

/// What a group's stream yields before the cursor is attached.
pub struct Rendered {
    pub payload: Box<str>,
    pub refusal: Option<Box<str>>,
}

/// The registry of groups, by key; cheap to clone.
#[derive(Clone)]
pub struct Groups {
    inner: Arc<Registry>,
}

struct Registry {
    groups: Mutex<HashMap<String, Weak<Group>>>,
    /// Frames a member may fall behind.
    buffer: usize,
    /// Results rendered, over all groups (one per result per group).
    renders: AtomicU64,
    /// Messages written to members, over all groups.
    deliveries: AtomicU64,
}

struct Group {
    key: String,
    kind: GroupKind,
    registry: Weak<Registry>,
    probe: Arc<CursorProbe>,
    state: Mutex<GroupState>,
    /// Stops the render task when the last member leaves.
    task: Mutex<Option<AbortHandle>>,
}

struct GroupState {
    /// `None` once the group's stream has ended.
    tx: Option<broadcast::Sender<Arc<Frame>>>,
    /// The cursor of the last frame sent.
    last_cursor: Option<Arc<str>>,
    /// The last frame sent, for newcomers of a [`GroupKind::Latest`] group.
    latest: Option<Arc<Frame>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Groups {
    /// A registry whose members may fall `buffer` frames behind.
    pub fn new(buffer: usize) -> Groups {
        Groups {
            inner: Arc::new(Registry {
                groups: Mutex::new(HashMap::new()),
                buffer: buffer.max(1),
                renders: AtomicU64::new(0),
                deliveries: AtomicU64::new(0),
            }),
        }
    }

    /// How many groups are live.
    pub fn len(&self) -> usize {
        lock(&self.inner.groups).values().filter(|g| g.strong_count() > 0).count()
    }

    /// Whether no group is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many members follow `event`'s check-ins through groups, and in
    /// how many groups (each of which is one subscriber of the event's feed).
    pub fn following(&self, event: Uuid) -> (usize, usize) {
        let groups: Vec<Arc<Group>> = lock(&self.inner.groups).values().filter_map(Weak::upgrade).collect();
        let mut found = (0, 0);
        for g in &groups {
            if lock(&g.probe.state).event == Some(event) {
                found.0 += 1;
                found.1 += lock(&g.state).tx.as_ref().map_or(0, broadcast::Sender::receiver_count);
            }
        }
        // Dropped here, out of the registry's lock (dropping takes it).
        drop(groups);
        found
    }

    /// Results rendered so far, over all groups.
    pub fn renders(&self) -> u64 {
        self.inner.renders.load(Ordering::Relaxed)
    }

    /// Messages delivered to members so far.
    pub fn deliveries(&self) -> u64 {
        self.inner.deliveries.load(Ordering::Relaxed)
    }

    /// Counts one message written to a member.
    pub fn delivered(&self) {
        self.inner.deliveries.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("rollcall_live_deliveries_total").increment(1);
    }

    /// Joins the group `key`, starting it with `start` (given the probe its
    /// renders report cursors to) if it has no live group.
    pub fn join<S, F>(
        &self,
        key: String,
        kind: GroupKind,
        start: F,
    ) -> impl Stream<Item = MemberItem> + Send + use<S, F>
    where
        S: Stream<Item = Rendered> + Send + 'static,
        F: FnOnce(Arc<CursorProbe>) -> S,
    {
        let mut groups = lock(&self.inner.groups);
        // An ended group found here is dropped after the lock is released:
        // dropping the last handle on a group takes that lock.
        let found = groups.get(&key).and_then(Weak::upgrade);
        let member = match found.as_ref().and_then(Member::of) {
            Some(member) => member,
            None => {
                let probe = Arc::new(CursorProbe::default());
                let (tx, rx) = broadcast::channel(self.inner.buffer);
                let group = Arc::new(Group {
                    key: key.clone(),
                    kind,
                    registry: Arc::downgrade(&self.inner),
                    probe: probe.clone(),
                    state: Mutex::new(GroupState { tx: Some(tx), last_cursor: None, latest: None }),
                    task: Mutex::new(None),
                });
                let task = tokio::spawn(render(Arc::downgrade(&group), start(probe)));
                *lock(&group.task) = Some(task.abort_handle());
                groups.insert(key, Arc::downgrade(&group));
                metrics::gauge!("rollcall_live_groups").set(groups.len() as f64);
                Member { rx, first: None, last: None, done: false, group }
            }
        };
        drop(groups);
        drop(found);
        futures_util::stream::unfold(member, Member::next)
    }
}

/// Runs a group's stream, sending each frame to its members.
async fn render<S: Stream<Item = Rendered>>(group: Weak<Group>, stream: S) {
    let mut stream = std::pin::pin!(stream);
    while let Some(rendered) = stream.next().await {
        let Some(group) = group.upgrade() else { return };
        let Some(registry) = group.registry.upgrade() else { return };
        registry.renders.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("rollcall_live_renders_total").increment(1);
        let frame =
            Arc::new(Frame { payload: rendered.payload, refusal: rendered.refusal, cursor: group.probe.last() });
        let mut state = lock(&group.state);
        if frame.cursor.is_some() {
            state.last_cursor = frame.cursor.clone();
        }
        if group.kind == GroupKind::Latest {
            state.latest = Some(frame.clone());
        }
        if let Some(tx) = &state.tx {
            // No receivers is fine: the last member is just leaving.
            let _ = tx.send(frame);
        }
    }
    // The stream ended: members get what is buffered, then the end; newcomers
    // start a fresh group.
    if let Some(group) = group.upgrade() {
        lock(&group.state).tx = None;
        group.unregister();
    }
}

impl Group {
    fn unregister(&self) {
        let Some(registry) = self.registry.upgrade() else { return };
        let mut groups = lock(&registry.groups);
        // Only if the entry is still this group (not a successor).
        if groups.get(&self.key).is_some_and(|g| std::ptr::eq(g.as_ptr(), self)) {
            groups.remove(&self.key);
        }
        metrics::gauge!("rollcall_live_groups").set(groups.len() as f64);
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
        let Some(registry) = self.registry.upgrade() else { return };
        let mut groups = lock(&registry.groups);
        if groups.get(&self.key).is_some_and(|g| g.strong_count() == 0) {
            groups.remove(&self.key);
        }
        metrics::gauge!("rollcall_live_groups").set(groups.len() as f64);
    }
}

/// One member's place in its group.
struct Member {
    rx: broadcast::Receiver<Arc<Frame>>,
    /// A frame to give before the ring's (a `Latest` group's current one).
    first: Option<Arc<Frame>>,
    /// The cursor of the last frame given (or the group's when joining).
    last: Option<Arc<str>>,
    done: bool,
    /// Keeps the group (and its render task) alive while this member is.
    group: Arc<Group>,
}

impl Member {
    /// A member of `group` from now on; `None` if its stream has ended.
    fn of(group: &Arc<Group>) -> Option<Member> {
        let state = lock(&group.state);
        let rx = state.tx.as_ref()?.subscribe();
        Some(Member {
            rx,
            first: state.latest.clone(),
            last: state.last_cursor.clone(),
            done: false,
            group: group.clone(),
        })
    }

    async fn next(mut self) -> Option<(MemberItem, Member)> {
        if self.done {
            return None;
        }
        if let Some(frame) = self.first.take() {
            return Some((MemberItem::Frame(frame), self));
        }
        loop {
            match self.rx.recv().await {
                Ok(frame) => {
                    if frame.cursor.is_some() {
                        self.last = frame.cursor.clone();
                    }
                    return Some((MemberItem::Frame(frame), self));
                }
                Err(broadcast::error::RecvError::Lagged(_)) if self.group.kind == GroupKind::Latest => continue,
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.done = true;
                    let last = self.last.clone().or_else(|| self.group.probe.start());
                    let last_cursor = last.as_deref().unwrap_or_default().to_owned();
                    return Some((MemberItem::Lagged { last_cursor }, self));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn rendered(text: &str) -> Rendered {
        Rendered { payload: text.into(), refusal: None }
    }

    #[tokio::test]
    async fn members_of_one_group_share_each_render() {
        let groups = Groups::new(16);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
        let source = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(rendered);
        let mut a = Box::pin(groups.join("k".into(), GroupKind::Every, |_| source));
        let mut b = Box::pin(groups.join("k".into(), GroupKind::Every, |_| futures_util::stream::empty()));
        assert_eq!(groups.len(), 1);
        tx.send("one").unwrap();
        let Some(MemberItem::Frame(f)) = a.next().await else { panic!("a frame") };
        assert_eq!(&*f.payload, "one");
        let Some(MemberItem::Frame(g)) = b.next().await else { panic!("a frame") };
        assert!(Arc::ptr_eq(&f, &g), "the very same bytes");
        assert_eq!(groups.renders(), 1);
        drop(tx);
        assert!(a.next().await.is_none());
        assert!(b.next().await.is_none());
        assert_eq!(groups.len(), 0, "an ended group leaves the registry");
    }

    #[tokio::test]
    async fn a_member_that_falls_a_ring_behind_is_told_where_to_resume() {
        let groups = Groups::new(2);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
        let source = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
        let mut slow = Box::pin(groups.join("k".into(), GroupKind::Every, move |probe: Arc<CursorProbe>| {
            probe.started_after(Uuid::nil(), "0");
            source.map(move |c| {
                probe.rendering(c);
                rendered(c)
            })
        }));
        let mut quick = Box::pin(groups.join("k".into(), GroupKind::Every, |_| futures_util::stream::empty()));
        tx.send("1").unwrap();
        let Some(MemberItem::Frame(f)) = slow.next().await else { panic!("a frame") };
        assert_eq!(f.cursor.as_deref(), Some("1"));
        let Some(MemberItem::Frame(_)) = quick.next().await else { panic!("a frame") };
        for c in ["2", "3", "4", "5"] {
            tx.send(c).unwrap();
            let Some(MemberItem::Frame(_)) = quick.next().await else { panic!("a frame") };
        }
        let Some(MemberItem::Lagged { last_cursor }) = slow.next().await else { panic!("lagged") };
        assert_eq!(last_cursor, "1");
        assert!(slow.next().await.is_none());
        drop(slow);
        tx.send("6").unwrap();
        let Some(MemberItem::Frame(f)) = quick.next().await else { panic!("the others go on") };
        assert_eq!(f.cursor.as_deref(), Some("6"));
    }

    #[tokio::test]
    async fn the_last_member_leaving_stops_the_group() {
        let groups = Groups::new(4);
        let member = groups.join("k".into(), GroupKind::Latest, |_| futures_util::stream::pending());
        assert_eq!(groups.len(), 1);
        drop(member);
        assert_eq!(groups.len(), 0);
        assert!(lock(&groups.inner.groups).is_empty());
    }

    #[tokio::test]
    async fn a_newcomer_to_a_latest_group_gets_the_latest_frame_first() {
        let groups = Groups::new(4);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
        let source = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(rendered);
        let mut first = Box::pin(groups.join("k".into(), GroupKind::Latest, |_| source));
        tx.send("a").unwrap();
        first.next().await.unwrap();
        let mut later = Box::pin(groups.join("k".into(), GroupKind::Latest, |_| futures_util::stream::empty()));
        let Some(MemberItem::Frame(f)) = later.next().await else { panic!("the latest frame") };
        assert_eq!(&*f.payload, "a");
        assert_eq!(groups.renders(), 1);
    }
}
