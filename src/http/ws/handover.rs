//! A `checkIns` subscription that resumes after a cursor replays on its
//! own, then hands over to the group of the same subscription without a
//! cursor (`live::shared`), so that it stops rendering every check-in for
//! itself.
//!
//! A dashboard that reconnects resumes with the last cursor it saw; after a
//! restart behind a load balancer, every dashboard does. Without the hand
//! over, each would render each check-in alone for as long as it stays.
//!
//! The subscription joins the group as it starts, and runs its own replay
//! beside it. The group's first frame (check-in `n`) says from where the
//! group covers everything: once the replay has given every check-in
//! before `n`, the replay is dropped and the member's frames after the last
//! check-in given follow. Until then the group's frames wait here, at most
//! [`MAX_WAITING`] of them; beyond that (a long replay) the subscription
//! leaves the group and stays on its own, as before. Cursors that are not
//! sequence numbers (check-ins from before cursors) never hand over.

use std::collections::VecDeque;
use std::sync::Arc;

use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};

use super::connection::Outcome;
use crate::graphql::shared::SharedSubscription;
use crate::live::{CursorProbe, Frame, MemberItem};
use crate::store::seq_of;

/// Group frames kept while the replay catches up.
const MAX_WAITING: usize = 256;

/// The subscription's own results, each with the check-in it showed.
pub(super) type Replay = BoxStream<'static, async_graphql::Response>;
type Members = BoxStream<'static, MemberItem>;

enum State {
    /// The replay runs; the group's frames wait. `given` is the sequence
    /// number of the last check-in the replay gave (or where it started).
    Replaying {
        replay: Replay,
        probe: Arc<CursorProbe>,
        members: Option<Members>,
        waiting: VecDeque<Arc<Frame>>,
        given: Option<u64>,
    },
    /// The group's frames after `after` (a sequence number).
    Shared {
        members: Members,
        waiting: VecDeque<Arc<Frame>>,
        after: u64,
    },
    Done,
}

/// The results of a resuming subscription: its replay (`replay`, whose
/// resolver reports each check-in's cursor to `probe`), then the group's
/// frames (`members`).
pub(super) fn resumed(
    replay: Replay,
    probe: Arc<CursorProbe>,
    members: impl Stream<Item = MemberItem> + Send + 'static,
    lag: Arc<SharedSubscription>,
) -> impl Stream<Item = Outcome> + Send {
    let state =
        State::Replaying { replay, probe, members: Some(members.boxed()), waiting: VecDeque::new(), given: None };
    futures_util::stream::unfold((state, lag), |(state, lag)| async move {
        let (outcome, state) = step(state, &lag).await?;
        Some((outcome, (state, lag)))
    })
}

/// The next result, and the state after it; `None` when the subscription
/// is over.
async fn step(mut state: State, lag: &SharedSubscription) -> Option<(Outcome, State)> {
    loop {
        state = match state {
            State::Done => return None,
            State::Shared { mut members, mut waiting, after } => {
                if let Some(frame) = waiting.pop_front() {
                    return Some((Outcome::Shared(frame), State::Shared { members, waiting, after }));
                }
                match members.next().await? {
                    MemberItem::Frame(frame) if seq(&frame).is_some_and(|n| n <= after) => {
                        State::Shared { members, waiting, after }
                    }
                    MemberItem::Frame(frame) => {
                        return Some((Outcome::Shared(frame), State::Shared { members, waiting, after }));
                    }
                    MemberItem::Lagged { last_cursor } => {
                        return Some((Outcome::Response(Box::new(lag.lagged(last_cursor))), State::Done));
                    }
                }
            }
            State::Replaying { mut replay, probe, mut members, mut waiting, mut given } => {
                let next = match members.as_mut() {
                    Some(m) => tokio::select! {
                        biased;
                        response = replay.next() => Err(response),
                        item = m.next() => Ok(item),
                    },
                    None => Err(replay.next().await),
                };
                match next {
                    // The replay ended (an error such as `LAGGED` ends it).
                    Err(None) => return None,
                    Err(Some(response)) => {
                        // The probe holds the cursor of the check-in just
                        // given: the replay is not polled again before this.
                        given = probe.last().or_else(|| probe.start()).as_deref().and_then(seq_of);
                        let state = hand_over(State::Replaying { replay, probe, members, waiting, given });
                        return Some((Outcome::Response(Box::new(response)), state));
                    }
                    Ok(Some(MemberItem::Frame(frame))) if waiting.len() < MAX_WAITING && seq(&frame).is_some() => {
                        waiting.push_back(frame);
                        given = given.or_else(|| probe.start().as_deref().and_then(seq_of));
                        hand_over(State::Replaying { replay, probe, members, waiting, given })
                    }
                    // Too far behind the group, a cursor that is no sequence
                    // number, or the group stopped: stay on its own.
                    Ok(_) => State::Replaying { replay, probe, members: None, waiting: VecDeque::new(), given },
                }
            }
        };
    }
}

/// Switches a replay over to its group once it has given every check-in
/// before the group's first waiting frame.
fn hand_over(state: State) -> State {
    match state {
        State::Replaying { members: Some(members), mut waiting, given: Some(given), replay, probe }
            if waiting.front().and_then(|f| seq(f)).is_some_and(|first| given + 1 >= first) =>
        {
            metrics::counter!("rollcall_live_handovers_total").increment(1);
            drop((replay, probe));
            waiting.retain(|f| seq(f).is_some_and(|n| n > given));
            State::Shared { members, waiting, after: given }
        }
        other => other,
    }
}

/// The same subscription without its cursor: what the group runs.
pub(super) fn live_request(request: &async_graphql::Request, var: &str) -> async_graphql::Request {
    let mut variables = request.variables.clone();
    variables.insert(async_graphql::Name::new(var), async_graphql::Value::Null);
    let mut live = async_graphql::Request::new(request.query.clone()).variables(variables);
    live.operation_name = request.operation_name.clone();
    live
}

fn seq(frame: &Frame) -> Option<u64> {
    frame.cursor.as_deref().and_then(seq_of)
}
