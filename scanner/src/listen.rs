//! `rollcall-scanner listen`: what the radio hears, live, for an installer placing
//! a scanner at a door. Nothing is recorded or uploaded.
//!
//! It scans like `run` (same adapter choice, same parsing of iBeacon, service
//! UUIDs and service data) and shows one line per identifier heard: its last and
//! strongest RSSI, how many advertisements, and how long ago the last one was,
//! strongest first. Walking a phone along the doorway shows where the signal
//! drops below the event's `minRssi`. On a terminal the table is redrawn every
//! second; otherwise (a pipe, a log) it is printed every `every`.

use std::collections::HashMap;
use std::io::{IsTerminal as _, Write as _};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::health::BleHealth;
use crate::sighting::Sighting;
use crate::source::Source as _;
use crate::source::ble::BtleplugSource;

/// What one identifier sounded like so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heard {
    /// The last advertisement's RSSI.
    pub last_rssi: Option<i16>,
    /// The strongest RSSI.
    pub best_rssi: Option<i16>,
    /// Advertisements heard.
    pub adverts: u64,
    /// When the last one was heard.
    pub last_at: Instant,
}

/// Every identifier heard, by identifier.
#[derive(Debug, Default)]
pub struct Board {
    /// The identifiers.
    pub heard: HashMap<String, Heard>,
}

impl Board {
    /// One advertisement.
    pub fn hear(&mut self, s: &Sighting, at: Instant) {
        let e = self.heard.entry(s.identifier.clone()).or_insert(Heard {
            last_rssi: None,
            best_rssi: None,
            adverts: 0,
            last_at: at,
        });
        e.last_rssi = s.rssi;
        e.best_rssi = e.best_rssi.max(s.rssi);
        e.adverts += 1;
        e.last_at = at;
    }

    /// The table, strongest first, `min_rssi` marking those too weak to count.
    pub fn render(&self, now: Instant, min_rssi: Option<i16>) -> String {
        let mut rows: Vec<(&String, &Heard)> = self.heard.iter().collect();
        rows.sort_by(|a, b| b.1.last_rssi.cmp(&a.1.last_rssi).then_with(|| a.0.cmp(b.0)));
        let rssi = |r: Option<i16>| r.map_or_else(|| "?".to_owned(), |v| v.to_string());
        let mut out = format!("{:<38} {:>5} {:>5} {:>7} {:>6}\n", "identifier", "rssi", "best", "adverts", "ago");
        for (id, h) in rows {
            let weak = matches!((min_rssi, h.last_rssi), (Some(min), Some(r)) if r < min);
            out.push_str(&format!(
                "{:<38} {:>5} {:>5} {:>7} {:>5.1}s{}\n",
                id,
                rssi(h.last_rssi),
                rssi(h.best_rssi),
                h.adverts,
                now.saturating_duration_since(h.last_at).as_secs_f64(),
                if weak { "  (below min RSSI)" } else { "" }
            ));
        }
        out.push_str(&format!("{} identifiers heard\n", self.heard.len()));
        out
    }
}

/// Scans and shows what is heard until `secs` have passed (`None`: until Ctrl-C).
pub async fn run(
    adapter: Option<String>,
    secs: Option<Duration>,
    every: Duration,
    min_rssi: Option<i16>,
) -> anyhow::Result<()> {
    let source = BtleplugSource {
        watchdog: Duration::from_secs(30),
        adapter,
        give_up_after: 3,
        health: Arc::new(BleHealth::default()),
    };
    let (tx, mut rx) = mpsc::channel::<Sighting>(4096);
    let mut task = tokio::spawn(Box::new(source).run(tx));
    let tty = std::io::stdout().is_terminal();
    let mut board = Board::default();
    let mut tick = tokio::time::interval(if tty { Duration::from_secs(1) } else { every });
    tick.tick().await;
    let end = secs.map(|s| tokio::time::Instant::now() + s);
    let until_end = async {
        match end {
            Some(end) => tokio::time::sleep_until(end).await,
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    tokio::pin!(until_end);
    let show = |board: &Board| {
        let table = board.render(Instant::now(), min_rssi);
        let mut out = std::io::stdout().lock();
        // Home and clear on a terminal; one table after another otherwise.
        let _ = if tty { write!(out, "\x1b[H\x1b[2J{table}") } else { writeln!(out, "{table}") };
        let _ = out.flush();
    };
    loop {
        tokio::select! {
            s = rx.recv() => match s {
                Some(s) => board.hear(&s, Instant::now()),
                None => break,
            },
            _ = tick.tick() => show(&board),
            _ = &mut until_end => break,
            res = &mut task => {
                res??;
                break;
            }
        }
    }
    task.abort();
    show(&board);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_board_shows_the_strongest_first_and_marks_the_weak() {
        let mut b = Board::default();
        let t0 = Instant::now();
        let s = |id: &str, rssi| Sighting { identifier: id.into(), seen_at_ms: 0, rssi: Some(rssi), event_id: None };
        b.hear(&s("far", -95), t0);
        b.hear(&s("near", -60), t0);
        b.hear(&s("near", -52), t0 + Duration::from_secs(1));
        let table = b.render(t0 + Duration::from_secs(2), Some(-90));
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[1].starts_with("near") && lines[1].contains("-52") && lines[1].contains("      2"), "{table}");
        assert!(lines[2].starts_with("far") && lines[2].ends_with("(below min RSSI)"), "{table}");
        assert_eq!(lines[3], "2 identifiers heard");
    }
}
