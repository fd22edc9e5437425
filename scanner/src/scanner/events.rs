//! `activeEvents` refresher: which events the key may report for now, their
//! `minRssi`, and the identifiers that may count for them
//! (`registeredDevices`), for the pipeline's filter.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::api::active_events::IdentityPolicy;
use crate::api::{ActiveEvent, ServerClient};
use crate::config::RunSettings;
use crate::registered::Allowed;

/// How long a list of identifiers is trusted without a refresh.
const LIST_FRESH: Duration = Duration::from_secs(600);

/// Polls `activeEvents`, then the identifiers of the events that matter,
/// and publishes changes.
pub(super) async fn refresh_events(
    client: ServerClient,
    settings: RunSettings,
    tx: watch::Sender<Option<Vec<ActiveEvent>>>,
    allowed_tx: watch::Sender<Option<Arc<Allowed>>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut failing = false;
    let mut lists = Lists::default();
    let mut last_ok = tokio::time::Instant::now();
    loop {
        match client.active_events().await {
            Ok(events) => {
                last_ok = tokio::time::Instant::now();
                if failing {
                    tracing::info!("the server answers again");
                    failing = false;
                }
                let changed = tx.borrow().as_ref() != Some(&events);
                if changed {
                    let names: Vec<String> = events.iter().map(|e| format!("{} ({})", e.name, e.id)).collect();
                    tracing::info!(
                        "active events in this key's scope: {}",
                        if names.is_empty() { "none".into() } else { names.join(", ") }
                    );
                    if let Some(pinned) = &settings.event
                        && !events.iter().any(|e| &e.id == pinned)
                    {
                        tracing::warn!(
                            "the pinned event {pinned} is not active in this key's scope: the server will not count its sightings until it is"
                        );
                    }
                    let _ = tx.send(Some(events.clone()));
                }
                if !settings.record_unregistered {
                    let allowed = lists.refresh(&client, &events, settings.event.as_deref()).await;
                    allowed_tx.send_if_modified(|now| {
                        let changed = *now != allowed;
                        *now = allowed;
                        changed
                    });
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!("cannot refresh active events (sightings are still recorded): {e}");
                }
                failing = true;
                // Offline for long: people may have registered meanwhile, so
                // record everything again rather than drop their sightings.
                if last_ok.elapsed() >= LIST_FRESH {
                    allowed_tx.send_if_modified(|now| now.take().is_some());
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(settings.events_refresh.max(Duration::from_millis(100))) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Each relevant event's identifiers, as last fetched, by event id.
#[derive(Default)]
struct Lists {
    by_event: HashMap<String, (String, Arc<Vec<String>>)>,
}

impl Lists {
    /// Fetches the lists that changed (one short answer for those that did
    /// not) and returns what may count now: `None` while an event's list has
    /// never been fetched, or when no event is active (a sighting heard now
    /// may still count for an event that starts later, within its grace).
    async fn refresh(
        &mut self,
        client: &ServerClient,
        events: &[ActiveEvent],
        pinned: Option<&str>,
    ) -> Option<Arc<Allowed>> {
        let relevant: Vec<&ActiveEvent> = events.iter().filter(|e| pinned.is_none_or(|p| e.id == p)).collect();
        self.by_event.retain(|id, _| relevant.iter().any(|e| &e.id == id));
        if relevant.is_empty() {
            return None;
        }
        for e in &relevant {
            let known = self.by_event.get(&e.id).map(|(v, _)| v.as_str());
            match client.registered_devices(&e.id, known).await {
                Ok(Some((version, ids))) => {
                    self.by_event.insert(e.id.clone(), (version, Arc::new(ids)));
                }
                Ok(None) => {}
                Err(err) => tracing::warn!(event = %e.id, "cannot refresh the identifiers that may count: {err}"),
            }
        }
        let mut identifiers = HashSet::new();
        for e in &relevant {
            let (_, ids) = self.by_event.get(&e.id)?;
            identifiers.extend(ids.iter().cloned());
        }
        let rotating = relevant.iter().any(|e| e.policy.identity != IdentityPolicy::STATIC);
        Some(Arc::new(Allowed { identifiers, rotating, events: relevant.len() }))
    }
}
