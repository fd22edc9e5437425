//! The tasks that keep the feeds current: the pump, which follows the
//! change feed (on each hint, and after a poll interval without one) and
//! keeps the live queries that give hints open, reopening them with backoff;
//! and one task per followed event that keeps its counters fresh.

use super::*;

/// Follows the change feed until the server stops, fanning it out: reads it
/// on every hint and after `opts.poll` without one, and keeps the hints'
/// live queries open, reopening them with backoff.
pub(super) async fn pump(inner: Weak<Inner>, mut reader: FeedReader, opts: FeedOptions) {
    let Some(mut stopping) = inner.upgrade().map(|i| i.stopping.subscribe()) else { return };
    let mut hints: Option<FeedHints> = None;
    let mut reopen_at = tokio::time::Instant::now();
    let mut reopen_delay = Duration::from_millis(200);
    let mut failing = false;
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    let mut gaps = tokio::time::interval(GAP_WAIT / 2);
    let mut poll = tokio::time::interval(opts.poll);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let closed = opts.hints && hints.is_none();
        if closed && tokio::time::Instant::now() >= reopen_at {
            let Some(hub) = inner.upgrade() else { return };
            match hub.store.feed_hints().await {
                Ok(stream) => {
                    hints = Some(stream);
                    reopen_delay = Duration::from_millis(200);
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?reopen_delay, "could not open the live queries; polling the change feed meanwhile");
                    reopen_at = tokio::time::Instant::now() + reopen_delay;
                    reopen_delay = (reopen_delay * 2).min(Duration::from_secs(10));
                }
            }
            continue;
        }
        let read = tokio::select! {
            _ = async { let _ = stopping.wait_for(|s| *s).await; } => {
                // Ended here, not by the SDK when they are dropped (see `FeedHints`).
                if let Some(h) = hints.take() {
                    h.close().await;
                }
                return;
            }
            hint = next_or_pending(&mut hints) => {
                if hint.is_none() {
                    tracing::warn!("the database ended the change feed's hints; reopening them");
                    hints = None;
                    reopen_at = tokio::time::Instant::now() + reopen_delay;
                }
                hint.is_some()
            }
            _ = poll.tick() => true,
            _ = tokio::time::sleep_until(reopen_at), if closed => false,
            _ = sweep.tick() => {
                let Some(inner) = inner.upgrade() else { return };
                inner.sweep();
                false
            }
            _ = gaps.tick() => {
                let Some(inner) = inner.upgrade() else { return };
                inner.fill_gaps(false).await;
                false
            }
        };
        if !read {
            continue;
        }
        // This read covers every hint that came before it.
        if let Some(h) = &mut hints {
            while let Some(Some(())) = h.next().now_or_never() {}
        }
        poll.reset();
        let Some(hub) = inner.upgrade() else { return };
        match reader.read(hub.store.attendance()).await {
            Ok(Read::Changes(changes)) => {
                if std::mem::take(&mut failing) {
                    tracing::info!("reading the change feed again");
                }
                for key in changes.revoked {
                    hub.key_revoked(key);
                }
                for event in changes.registrations {
                    if let Some(feed) = hub.feed(event) {
                        feed.changed.notify_one();
                    }
                }
                hub.publish(changes.steps).await;
            }
            Ok(Read::Behind) => {
                tracing::warn!("the change feed was not read for too long; reading live check-ins from the rows");
                match hub.store.attendance().feed_stamp_before(feed_reader::SETTLE).await {
                    Ok(start) => {
                        reader = FeedReader::new(start, tokio::time::Instant::now());
                        hub.fill_gaps(true).await;
                    }
                    Err(e) => tracing::warn!(error = %e, "could not restart the change feed"),
                }
            }
            Err(e) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(error = %e, "could not read the change feed; retrying");
                }
            }
        }
    }
}

/// The stream's next item, or never if there is no stream.
async fn next_or_pending<S: Stream + Unpin>(stream: &mut Option<S>) -> Option<S::Item> {
    match stream {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

/// Keeps one event's counters current while anybody watches them: on a
/// change (at most every [`STATS_MIN_INTERVAL`]) and every
/// [`STATS_MAX_INTERVAL`], as presence decays with time.
pub(super) async fn keep_stats(inner: Weak<Inner>, feed: Weak<Feed>, changed: Arc<Notify>) {
    loop {
        {
            let (Some(inner), Some(feed)) = (inner.upgrade(), feed.upgrade()) else { return };
            if feed.stats.receiver_count() == 0 {
                // Nobody watches: forget the counts, so the next watcher
                // waits for fresh ones rather than getting old ones.
                feed.stats.send_if_modified(|cur| cur.take().is_some());
            } else {
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
