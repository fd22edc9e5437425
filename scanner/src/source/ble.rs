//! `ble`: the radio, through btleplug (BlueZ over D-Bus on Linux).
//!
//! The scan asks for duplicates (btleplug sets BlueZ's `DuplicateData`), so a phone
//! that keeps advertising keeps being heard, not just once. Each advertisement
//! shows up as BlueZ property changes on the device (`RSSI`, `ManufacturerData`,
//! `ServiceData`, `UUIDs`); btleplug turns those into events:
//!
//! - a data event (manufacturer data, service data, services) refreshes the
//!   identifiers known for that device (see [`crate::advert`]) and reports them with
//!   the device's current RSSI;
//! - an RSSI event reports the known identifiers with the RSSI of that advertisement.
//!
//! A device whose advertisement is Apple's overflow area (an iPhone with an app
//! advertising in the background) is counted in [`BleHealth`], not reported.
//!
//! **Watchdog.** btleplug's event stream is known to stall after hours on some
//! adapters. When no event at all arrives for `watchdog` (30 s by default: a venue
//! is never that quiet), the source stops the scan, drops the stream and starts
//! again, and logs it. If BlueZ or the adapter is missing it retries every few
//! seconds, so the scanner recovers when the dongle is plugged in or bluetoothd
//! restarts.
//!
//! **One D-Bus connection per run.** Every btleplug `Manager::new()` opens a
//! system-bus connection that btleplug 0.13 keeps alive for the life of the process,
//! so the `Manager` is made once (on the first session that manages to) and every
//! restart reuses it; a restart loop would otherwise leak connections until
//! dbus-daemon's per-user limit. If `give_up_after` sessions in a row fail or hear
//! nothing, the source fails and the scanner exits non-zero: a fresh process (systemd
//! restarts it) gets a fresh connection. What is in the pipeline is committed first.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use btleplug::api::{Central as _, CentralEvent, Manager as _, Peripheral as _, ScanFilter};
use btleplug::platform::{Adapter, Manager, PeripheralId};
use futures_util::StreamExt as _;
use tokio::sync::mpsc;

use super::Source;
use crate::advert::{AdvertisingData, identifiers, is_apple_overflow};
use crate::health::BleHealth;
use crate::sighting::{Sighting, now_ms};

/// Scans with btleplug.
#[derive(Debug)]
pub struct BtleplugSource {
    /// Restart the scan after this long without any event.
    pub watchdog: Duration,
    /// Use the adapter whose name contains this (e.g. `hci1`); the first one otherwise.
    pub adapter: Option<String>,
    /// Fail after this many sessions in a row that could not scan or heard nothing.
    pub give_up_after: u32,
    /// Restarts and adapter state, for the heartbeat.
    pub health: Arc<BleHealth>,
}

/// Why one scanning session ended.
enum SessionEnd {
    /// The receiver is gone: stop for good.
    Closed,
    /// Silence or a dead stream: start again.
    Restart(String),
}

#[async_trait::async_trait]
impl Source for BtleplugSource {
    fn describe(&self) -> String {
        format!("BLE scan (watchdog {} s)", self.watchdog.as_secs())
    }

    fn is_finite(&self) -> bool {
        false
    }

    async fn run(self: Box<Self>, out: mpsc::Sender<Sighting>) -> anyhow::Result<()> {
        let mut manager: Option<Manager> = None;
        let mut restarts = 0u64;
        let mut failed = 0u32;
        loop {
            let (why, events) = match self.session(&mut manager, &out).await {
                Ok((SessionEnd::Closed, _)) => return Ok(()),
                Ok((SessionEnd::Restart(why), events)) => (why, events),
                Err(e) => {
                    self.health.set_adapter_state(format!("unavailable: {e:#}"));
                    (format!("{e:#}"), 0)
                }
            };
            if out.is_closed() {
                return Ok(());
            }
            failed = if events == 0 { failed.saturating_add(1) } else { 0 };
            if failed >= self.give_up_after {
                anyhow::bail!(
                    "giving up on Bluetooth after {failed} scan sessions in a row that failed or heard nothing \
                     (last: {why}); is bluetoothd running and the adapter up?"
                );
            }
            restarts += 1;
            self.health.restarts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(restarts, failed_in_a_row = failed, "BLE scan restarting: {why}");
            tokio::time::sleep(Duration::from_secs(if failed < 3 { 1 } else { 5 })).await;
        }
    }
}

impl BtleplugSource {
    async fn pick_adapter(&self, manager: &mut Option<Manager>) -> anyhow::Result<Adapter> {
        let manager = match manager {
            Some(m) => m,
            None => manager.insert(Manager::new().await?),
        };
        let adapters = manager.adapters().await?;
        let mut named = Vec::new();
        for a in adapters {
            let info = a.adapter_info().await.unwrap_or_default();
            named.push((info, a));
        }
        let chosen = match &self.adapter {
            Some(want) => named.into_iter().find(|(info, _)| info.contains(want.as_str())),
            None => named.into_iter().next(),
        };
        match chosen {
            Some((info, adapter)) => {
                tracing::info!("using Bluetooth adapter {info}");
                Ok(adapter)
            }
            None => anyhow::bail!(
                "no Bluetooth adapter{}",
                self.adapter.as_ref().map(|a| format!(" matching `{a}`")).unwrap_or_default()
            ),
        }
    }

    /// One scanning session: until the watchdog fires or the stream ends. Returns
    /// how it ended and how many events it got.
    async fn session(
        &self,
        manager: &mut Option<Manager>,
        out: &mpsc::Sender<Sighting>,
    ) -> anyhow::Result<(SessionEnd, u64)> {
        let adapter = self.pick_adapter(manager).await?;
        let mut events = adapter.events().await?;
        adapter.start_scan(ScanFilter::default()).await?;
        self.health.set_adapter_state("scanning");
        tracing::info!("BLE scan started");
        // Identifiers last seen per device, for RSSI-only events.
        let mut known: HashMap<PeripheralId, Vec<String>> = HashMap::new();
        let mut count = 0u64;
        let end = loop {
            let event = match tokio::time::timeout(self.watchdog, events.next()).await {
                Err(_) => break SessionEnd::Restart(format!("no BLE event for {} s", self.watchdog.as_secs())),
                Ok(None) => break SessionEnd::Restart("the BLE event stream ended".into()),
                Ok(Some(e)) => e,
            };
            count += 1;
            let (id, rssi) = match event {
                CentralEvent::RssiUpdate { id, rssi } => (id, Some(rssi)),
                CentralEvent::ManufacturerDataAdvertisement { id, .. }
                | CentralEvent::ServiceDataAdvertisement { id, .. }
                | CentralEvent::ServicesAdvertisement { id, .. }
                | CentralEvent::DeviceDiscovered(id) => {
                    // Read the device's whole advertisement state, not just the part
                    // that changed: an identifier may live in another field.
                    let props = match adapter.peripheral(&id).await {
                        Ok(p) => p.properties().await.ok().flatten(),
                        Err(_) => None,
                    };
                    let Some(props) = props else { continue };
                    let ad = AdvertisingData {
                        manufacturer_data: props.manufacturer_data.into_iter().collect(),
                        services: props.services,
                        service_data: props.service_data.into_iter().collect(),
                    };
                    if is_apple_overflow(&ad) {
                        self.health.heard_background_iphone(&id.to_string());
                    }
                    let ids = identifiers(&ad);
                    if ids.is_empty() {
                        known.remove(&id);
                    } else {
                        known.insert(id.clone(), ids);
                    }
                    (id, props.rssi)
                }
                CentralEvent::StateUpdate(state) => {
                    tracing::info!("Bluetooth adapter state: {state:?}");
                    self.health.set_adapter_state(format!("{state:?}"));
                    continue;
                }
                _ => continue,
            };
            // Without an RSSI there was no advertisement heard just now (a cached
            // device); 127 is the HCI's "RSSI not available".
            let (Some(rssi), Some(ids)) = (rssi.filter(|r| *r != crate::sighting::RSSI_UNAVAILABLE), known.get(&id))
            else {
                continue;
            };
            let seen_at_ms = now_ms();
            for identifier in ids {
                let s = Sighting { identifier: identifier.clone(), seen_at_ms, rssi: Some(rssi), event_id: None };
                if out.send(s).await.is_err() {
                    let _ = adapter.stop_scan().await;
                    return Ok((SessionEnd::Closed, count));
                }
            }
        };
        if let Err(e) = adapter.stop_scan().await {
            tracing::debug!("stopping the BLE scan: {e}");
        }
        Ok((end, count))
    }
}
