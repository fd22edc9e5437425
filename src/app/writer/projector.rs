//! The writer's side of one projector for attendance rows over a shared
//! database (`store::row_projector` says why and how it stays exact).
//!
//! The instance whose writer holds the lease holds rows back as on the
//! embedded store (`rows`, `flush`), and folds in, every tick, the sightings
//! other instances left for it (`row_pending`). The others fold their
//! batches against the stored rows to answer them, commit the rows they
//! create, and leave the rest pending. Taking the lease turns the
//! `deferred_rows` markers a dead holder left into re-derivations; losing it
//! writes what is held, then lets it go. The writer's loop follows the lease
//! at each tick (`Loop::follow_lease`, `Loop::fold_pending`, here).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use chrono::Utc;
use uuid::Uuid;

use super::group::{Ask, known_repeats_of};
use super::rows::Rows;
use super::task::{Flushed, Loop, drain};
use crate::app::ingest::event_rules;
use crate::domain::Attendance;
use crate::domain::ingest::{BatchOutcome, Counted, EventRules, Fold, Pair, SightingStatus, below_marks};
use crate::store::{RENEW, StoreError, SurrealStore};

/// Pending records folded in one pass.
const PAGE: usize = 200;

/// This instance's hold on the rows. A task of its own renews it, so that
/// a writer busy with long commits does not lose it; the writer follows
/// [`Lease::holding`] at its next tick.
pub(super) struct Lease {
    me: Arc<str>,
    holding: Arc<AtomicBool>,
    renewer: Option<JoinHandle<()>>,
}

impl Lease {
    pub(super) fn new(holding: Arc<AtomicBool>) -> Self {
        Self { me: Uuid::new_v4().to_string().into(), holding, renewer: None }
    }

    pub(super) fn holding(&self) -> bool {
        self.holding.load(Ordering::Relaxed)
    }

    /// Takes the lease if no instance holds it, then renews or asks for it
    /// every [`RENEW`].
    pub(super) async fn start(&mut self, store: &SurrealStore) {
        renew(store, &self.me, &self.holding).await;
        let (store, me, holding) = (store.clone(), self.me.clone(), self.holding.clone());
        self.renewer = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(RENEW).await;
                renew(&store, &me, &holding).await;
            }
        }));
    }

    /// Stops renewing and gives the lease up (a clean stop), so that another
    /// instance takes it at once.
    pub(super) async fn release(&mut self, store: &SurrealStore) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
            let _ = renewer.await;
        }
        if self.holding.swap(false, Ordering::Relaxed)
            && let Err(e) = store.row_projector().release(&self.me).await
        {
            tracing::warn!(error = ?e, "could not give up the lease on attendance rows; it runs out by itself");
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
    }
}

/// Takes or renews the lease. A failed renewal counts as lost: the holder
/// cannot tell that its lease still stands.
async fn renew(store: &SurrealStore, me: &str, holding: &AtomicBool) {
    let held = match store.row_projector().lease(me, Utc::now()).await {
        Ok(held) => held,
        Err(e) => {
            tracing::warn!(error = ?e, "could not renew the lease on attendance rows");
            false
        }
    };
    let was = holding.swap(held, Ordering::Relaxed);
    metrics::gauge!("rollcall_ingest_rows_lease").set(if held { 1.0 } else { 0.0 });
    match (was, held) {
        (false, true) => tracing::info!(instance = %me, "this instance now writes the attendance rows"),
        (true, false) => tracing::warn!(instance = %me, "this instance no longer writes the attendance rows"),
        _ => {}
    }
}

/// The writer loop's side of the lease.
impl Loop {
    /// On a shared store, follows the lease: holds rows once it is gained;
    /// writes and lets go of them once it is lost.
    pub(super) async fn follow_lease(&mut self, flushed_rx: &mut mpsc::UnboundedReceiver<Flushed>) {
        let Some(lease) = &self.lease else { return };
        match (lease.holding(), self.held.is_some()) {
            (true, false) => self.hold().await,
            (false, true) => {
                if let Some(mut held) = self.held.take() {
                    // The markers stay: the new holder may have written its
                    // own for the same events by now.
                    held.marked.clear();
                    drain(&mut held, &self.store, flushed_rx).await;
                }
            }
            _ => {}
        }
    }

    /// On a shared store, while holding the rows: folds in what other
    /// instances left pending.
    pub(super) async fn fold_pending(&mut self) {
        let holding = self.lease.as_ref().is_some_and(Lease::holding);
        let Some(held) = self.held.as_mut() else { return };
        if holding {
            // A few pages a tick, so that the writer's own batches go on.
            for _ in 0..8 {
                match fold_page(&self.store, &mut held.rows, &mut held.marked, &self.finishing).await {
                    Ok(n) if n > 0 => continue,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = ?e, "folding in other instances' sightings failed; retrying");
                        break;
                    }
                }
            }
        }
    }
}

/// Folds the oldest pending records into the rows held, and deletes them
/// with markers for their events; returns how many were folded. Those of
/// events whose re-derivation is finishing wait for it (it deletes those it
/// derived from, and the rows held for the event are let go after it).
async fn fold_page(
    store: &SurrealStore,
    rows: &mut Rows,
    marked: &mut HashSet<Uuid>,
    finishing: &HashSet<Uuid>,
) -> Result<usize, StoreError> {
    let mut pending = store.row_projector().pending(PAGE, Utc::now()).await?;
    pending.retain(|p| !finishing.contains(&p.event));
    if pending.is_empty() {
        return Ok(0);
    }
    let pairs: Vec<Pair> = pending
        .iter()
        .flat_map(|p| p.sightings.iter().map(move |(u, _)| (p.event, *u)))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let read = store.attendance().rows(&rows.missing(&pairs)).await?;
    rows.hold_read(read, Instant::now());
    let stored: HashMap<Pair, Attendance> =
        rows.view(&pairs).into_iter().map(|r| ((r.event_id, r.user_id), r.attendance)).collect();
    // A row that is gone was erased, or its event deleted: nothing to fold.
    let counted: Vec<Counted> = pending
        .iter()
        .map(|p| {
            let mut c = Counted::new();
            for (i, (user, s)) in p.sightings.iter().enumerate() {
                if stored.contains_key(&(p.event, *user)) {
                    c.entry((p.event, *user)).or_default().push((i, *s));
                }
            }
            c
        })
        .collect();

    // The raw log's answer for sightings at or before their scanner's mark,
    // by the events' rules as they stand. A scanner whose sightings counted
    // at an event covers it, hence `in_scope`.
    let mut rules: HashMap<Uuid, Option<EventRules>> = HashMap::new();
    for p in &pending {
        if rules.contains_key(&p.event) {
            continue;
        }
        let r = match store.events().get(p.event).await? {
            Some(e) => Some(event_rules(&e, true)?),
            None => None,
        };
        rules.insert(p.event, r);
    }
    let mut asks: HashMap<Option<Uuid>, Ask> = HashMap::new();
    for (p, c) in pending.iter().zip(&counted) {
        let Some(Some(r)) = rules.get(&p.event) else { continue };
        for (pair, s) in below_marks(&stored, c.iter()) {
            let ask = asks.entry((!s.scanner.is_nil()).then_some(s.scanner)).or_default();
            ask.0.push((pair, s));
            ask.1.insert(p.event, r.clone());
        }
    }
    let known = known_repeats_of(store, asks).await?;

    let mut fold = Fold::new(stored, known);
    for (p, c) in pending.iter().zip(&counted) {
        let mut outcome =
            BatchOutcome { statuses: vec![SightingStatus::Counted; p.sightings.len()], ..Default::default() };
        fold.apply(c, |_| p.gap, &mut outcome);
    }
    let (_, updated) = fold.finish();
    let mut marks: Vec<Uuid> = updated.iter().map(|(p, _)| p.0).filter(|e| !marked.contains(e)).collect();
    marks.sort_unstable();
    marks.dedup();
    let ids = pending.iter().filter_map(|p| p.id.clone()).collect();
    store.row_projector().folded(ids, &marks, Utc::now()).await?;
    let sightings: usize = pending.iter().map(|p| p.sightings.len()).sum();
    metrics::counter!("rollcall_ingest_pending_folded_total").increment(sightings as u64);
    rows.committed(&[], updated, Instant::now());
    marked.extend(marks);
    Ok(pending.len())
}
