//! Presence reported by attendees' phones (`reportPresence`, see
//! `domain::presence`): the app heard the venue's beacon.
//!
//! A report counts when the event accepts phone reports, names the event's
//! venue beacon, and is timed near the server's clock. It is then one
//! sighting of the reporting user at the event, attributed to the phone
//! reporter (`CheckInSource::Phone`), through ingest like any other.
//!
//! **Rate limit.** One report per user and event counts per
//! [`REPORT_INTERVAL`] of server time; earlier ones are refused
//! (`RATE_LIMITED`, with the seconds to wait). The table lives in this
//! process: behind a load balancer each instance keeps its own, so a phone
//! spreading its reports over N instances is counted at most N times per
//! interval. That is harmless (a report only says "I am here now", and the
//! same moment twice counts once), and the table stays bounded.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::door::{DoorError, counted_row, submit_one};
use super::ingest::{Ingest, single_check_in};
use crate::domain::CheckInSource;
use crate::domain::presence::{REPORT_INTERVAL, VenueBeacon, check_report_time};
use crate::store::{AttendanceRecord, SurrealStore, User};

/// Users and events tracked at most; past it, expired entries go first.
const MAX_TRACKED: usize = 100_000;

/// What a phone reports.
#[derive(Debug, Clone)]
pub struct PresenceReport {
    pub event: Uuid,
    /// The beacon heard, as the app got it.
    pub beacon: String,
    pub rssi: Option<i32>,
    /// When, by the phone's clock.
    pub at: DateTime<Utc>,
}

/// Phone reports, over the process's ingest.
pub struct PhoneReports {
    ingest: Ingest,
    store: SurrealStore,
    /// When each (user, event) last had a report counted.
    last: Mutex<HashMap<(Uuid, Uuid), Instant>>,
}

impl PhoneReports {
    pub fn new(ingest: Ingest, store: SurrealStore) -> Self {
        Self { ingest, store, last: Mutex::default() }
    }

    /// Counts `user`'s report; returns their attendance at the event.
    pub async fn report(
        &self,
        user: &User,
        report: &PresenceReport,
        now: DateTime<Utc>,
    ) -> Result<AttendanceRecord, DoorError> {
        let event = self.store.events().get(report.event).await?.ok_or(DoorError::NoEvent)?;
        let policy = event.policy;
        let venue = match policy.venue_beacon {
            Some(venue) if policy.accept_phone_reports => venue,
            _ => return Err(DoorError::NotAccepted("this event does not count presence reported by phones".into())),
        };
        let heard: VenueBeacon = report.beacon.parse().map_err(|e| DoorError::Invalid(format!("beacon: {e}")))?;
        if !venue.matches(&heard) {
            return Err(DoorError::Invalid("that beacon is not this event's venue beacon".into()));
        }
        check_report_time(report.at, now).map_err(|e| DoorError::Invalid(e.to_string()))?;
        let key = (user.id, event.id);
        self.take(key)?;
        let outcome = submit_one(&self.ingest, CheckInSource::Phone, user, event.id, report.at, report.rssi).await;
        let counted = outcome.map_err(DoorError::from).and_then(|o| single_check_in(&o).map_err(DoorError::NotCounted));
        if let Err(e) = counted {
            // Not counted: the next report may try at once.
            self.give_back(key);
            return Err(e);
        }
        counted_row(&self.store, event.id, user.id).await
    }

    /// Takes the (user, event)'s turn, or says how long to wait.
    fn take(&self, key: (Uuid, Uuid)) -> Result<(), DoorError> {
        let interval = Duration::from_secs(REPORT_INTERVAL.num_seconds().unsigned_abs());
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(at) = last.get(&key)
            && now.duration_since(*at) < interval
        {
            let wait = interval - now.duration_since(*at);
            return Err(DoorError::RateLimited {
                interval: REPORT_INTERVAL.num_seconds(),
                retry_after: wait.as_secs_f64().ceil() as i64,
            });
        }
        if last.len() >= MAX_TRACKED {
            last.retain(|_, at| now.duration_since(*at) < interval);
            if last.len() >= MAX_TRACKED {
                last.clear();
            }
        }
        last.insert(key, now);
        Ok(())
    }

    fn give_back(&self, key: (Uuid, Uuid)) {
        self.last.lock().unwrap_or_else(PoisonError::into_inner).remove(&key);
    }
}
