//! `activeEvents` refresher: which events the key may report for now, and their
//! `minRssi`, for the pipeline's filter.

use std::time::Duration;

use tokio::sync::watch;

use crate::api::{ActiveEvent, ServerClient};
use crate::config::RunSettings;

/// Polls `activeEvents` and publishes changes.
pub(super) async fn refresh_events(
    client: ServerClient,
    settings: RunSettings,
    tx: watch::Sender<Option<Vec<ActiveEvent>>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut failing = false;
    loop {
        match client.active_events().await {
            Ok(events) => {
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
                    let _ = tx.send(Some(events));
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!("cannot refresh active events (sightings are still recorded): {e}");
                }
                failing = true;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(settings.events_refresh.max(Duration::from_millis(100))) => {}
            _ = stop.changed() => return,
        }
    }
}
