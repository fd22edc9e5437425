//! `simulate[:N]`: a venue of N virtual attendees, for demos and tests.
//!
//! From a seed, [`plan`] draws each attendee's BLE UUID, arrival and stays (some
//! leave for longer than the default five-minute departure gap and come back), and
//! a few passers-by whose signal stays too weak to count. [`SimulatedVenue`] then
//! plays that plan: every present phone advertises every `ad_interval_ms` with a
//! noisy RSSI; a fraction of advertisements is lost, as on air, except the first
//! and last of each stay, so the ground truth is exact: an attendee is heard at
//! the instant they arrive and at the instant they leave.
//!
//! The same seed and start always give the same plan; `rollcall-scanner simulate`
//! prints it as JSON. With beacon secrets (`--sim-beacon-secrets`), attendee i's
//! phone advertises the rotating identifiers of secret i instead of its BLE UUID,
//! changing at every slot boundary, as the app does.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;
use tokio::sync::mpsc;

use super::Source;
use crate::sighting::{Sighting, rfc3339_ms};

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// How many attendees.
    pub attendees: usize,
    /// Seed for every random draw.
    pub seed: u64,
    /// When the simulation starts (Unix ms).
    pub start_ms: i64,
    /// 1 plays in real time, 60 a minute per second, 0 as fast as possible.
    pub speed: f64,
    /// How often a present phone advertises.
    pub ad_interval_ms: i64,
    /// When set, attendee i advertises the rotating identifiers of secret i
    /// (docs/identity.md) instead of its BLE UUID; the plan is the same.
    pub rotating: Option<crate::rotating::Rotating>,
}

/// One attendee's truth.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SimAttendee {
    /// The UUID their phone advertises.
    pub ble_uuid: String,
    /// Periods of presence, in Unix ms, in order.
    #[serde(serialize_with = "ser_stays")]
    pub stays: Vec<(i64, i64)>,
    /// Their mean RSSI.
    #[serde(skip)]
    pub rssi_mean: i16,
}

/// The ground truth of a simulation.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SimPlan {
    /// The seed it came from.
    pub seed: u64,
    /// Who came, and when they were there.
    pub attendees: Vec<SimAttendee>,
    /// Phones heard only faintly (RSSI -100 to -93): not attendees.
    pub passers_by: Vec<String>,
    /// When the simulation ends (Unix ms).
    #[serde(serialize_with = "ser_ms")]
    pub end_ms: i64,
}

fn ser_ms<S: serde::Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339_ms(*ms))
}

fn ser_stays<S: serde::Serializer>(stays: &[(i64, i64)], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq as _;
    let mut seq = s.serialize_seq(Some(stays.len()))?;
    for (from, to) in stays {
        seq.serialize_element(&serde_json::json!({ "from": rfc3339_ms(*from), "to": rfc3339_ms(*to) }))?;
    }
    seq.end()
}

const MINUTE: i64 = 60_000;

fn uuid_from(rng: &mut StdRng) -> String {
    uuid::Builder::from_random_bytes(rng.r#gen()).into_uuid().to_string()
}

/// Draws the ground truth for `cfg`.
pub fn plan(cfg: &SimConfig) -> SimPlan {
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut end_ms = cfg.start_ms;
    let attendees = (0..cfg.attendees)
        .map(|_| {
            let ble_uuid = uuid_from(&mut rng);
            let arrive = cfg.start_ms + rng.gen_range(0..20 * MINUTE);
            let leave = arrive + rng.gen_range(10 * MINUTE..40 * MINUTE);
            let mut stays = vec![(arrive, leave)];
            if rng.gen_bool(0.4) {
                // Out for longer than the default departure gap (5 min), then back.
                let back = leave + rng.gen_range(8 * MINUTE..20 * MINUTE);
                stays.push((back, back + rng.gen_range(5 * MINUTE..20 * MINUTE)));
            }
            end_ms = end_ms.max(stays.last().map_or(arrive, |s| s.1));
            SimAttendee { ble_uuid, stays, rssi_mean: rng.gen_range(-75..=-55) }
        })
        .collect();
    let passers_by = (0..cfg.attendees.div_ceil(5)).map(|_| uuid_from(&mut rng)).collect();
    SimPlan { seed: cfg.seed, attendees, passers_by, end_ms }
}

/// Plays a [`SimPlan`].
#[derive(Debug)]
pub struct SimulatedVenue {
    /// The configuration.
    pub cfg: SimConfig,
    /// What it plays.
    pub plan: SimPlan,
}

impl SimulatedVenue {
    /// A venue for `cfg`, with its plan drawn.
    pub fn new(cfg: SimConfig) -> Self {
        let plan = plan(&cfg);
        Self { cfg, plan }
    }
}

#[async_trait::async_trait]
impl Source for SimulatedVenue {
    fn describe(&self) -> String {
        format!("simulation of {} attendees (seed {}, speed {})", self.cfg.attendees, self.cfg.seed, self.cfg.speed)
    }

    fn is_finite(&self) -> bool {
        true
    }

    async fn run(self: Box<Self>, out: mpsc::Sender<Sighting>) -> anyhow::Result<()> {
        // A different stream from the plan's, so that changing how ads are drawn
        // never changes the plan.
        let mut rng = StdRng::seed_from_u64(self.cfg.seed ^ 0x5eed_ad5e_eda5_5eed);
        let interval = self.cfg.ad_interval_ms.max(1);
        let started = tokio::time::Instant::now();
        let mut t = self.cfg.start_ms;
        let mut sent = 0u64;
        while t <= self.plan.end_ms {
            if self.cfg.speed > 0.0 {
                let offset = ((t - self.cfg.start_ms) as f64 / self.cfg.speed) as u64;
                tokio::time::sleep_until(started + Duration::from_millis(offset)).await;
            }
            let next = t + interval;
            for (i, a) in self.plan.attendees.iter().enumerate() {
                for &(from, to) in &a.stays {
                    // Ads in [t, next): the stay's first and last ads are never lost.
                    let mut ads: Vec<(i64, bool)> = Vec::new();
                    if (t..next).contains(&from) {
                        ads.push((from, true));
                    }
                    if (t..next).contains(&to) && to != from {
                        ads.push((to, true));
                    }
                    if from < t && t < to {
                        ads.push((t, false));
                    }
                    for (at, keep) in ads {
                        if !keep && rng.gen_bool(0.1) {
                            continue;
                        }
                        let rssi = (a.rssi_mean + rng.gen_range(-8..=8)).clamp(-127, 20);
                        let rotating = self.cfg.rotating.as_ref().and_then(|r| r.identifier_at(i, at));
                        let s = Sighting {
                            identifier: rotating.map_or_else(|| a.ble_uuid.clone(), |id| id.to_string()),
                            seen_at_ms: at,
                            rssi: Some(rssi),
                            event_id: None,
                        };
                        if out.send(s).await.is_err() {
                            return Ok(());
                        }
                        sent += 1;
                    }
                }
            }
            // Passers-by: now and then, faint.
            for p in &self.plan.passers_by {
                if rng.gen_bool(0.05) {
                    let s = Sighting {
                        identifier: p.clone(),
                        seen_at_ms: t,
                        rssi: Some(rng.gen_range(-100..=-93)),
                        event_id: None,
                    };
                    if out.send(s).await.is_err() {
                        return Ok(());
                    }
                    sent += 1;
                }
            }
            t = next;
        }
        tracing::info!("simulation finished: {sent} advertisements");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(seed: u64) -> SimConfig {
        SimConfig {
            attendees: 10,
            seed,
            start_ms: 1_900_000_000_000,
            speed: 0.0,
            ad_interval_ms: 2_000,
            rotating: None,
        }
    }

    #[test]
    fn same_seed_same_plan() {
        assert_eq!(plan(&cfg(7)).attendees, plan(&cfg(7)).attendees);
        assert_ne!(plan(&cfg(7)).attendees, plan(&cfg(8)).attendees);
    }

    #[tokio::test]
    async fn every_stay_is_heard_at_its_ends() {
        let venue = SimulatedVenue::new(cfg(3));
        let truth = venue.plan.clone();
        let (tx, mut rx) = mpsc::channel(1024);
        let task = tokio::spawn(Box::new(venue).run(tx));
        let mut heard = std::collections::HashMap::<String, Vec<i64>>::new();
        while let Some(s) = rx.recv().await {
            heard.entry(s.identifier).or_default().push(s.seen_at_ms);
        }
        task.await.unwrap().unwrap();
        for a in &truth.attendees {
            let times = &heard[&a.ble_uuid];
            for &(from, to) in &a.stays {
                assert!(times.contains(&from) && times.contains(&to));
                assert!(times.iter().all(|t| a.stays.iter().any(|&(f, e)| (f..=e).contains(t))));
            }
        }
    }
}
