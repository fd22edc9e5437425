//! `replay:FILE`: sightings from a JSONL file, one object per line.
//!
//! Two shapes are accepted, so logs from the scanners already deployed can be fed
//! in unchanged:
//!
//! - this scanner's: `{"bleUuid": "…", "seenAt": "2030-05-01T09:00:00Z", "rssi": -60, "eventId": "…"}`
//! - the older scanners': `{"bleUuid": "…", "timestamp": 1893488400000, "eventId": "…", "scannerSource": "…"}`,
//!   with `timestamp` in Unix milliseconds and no RSSI.
//!
//! `rssi` and `eventId` are optional in both; `--event` overrides `eventId`.
//! Lines that cannot be read are logged with their line number and skipped.
//!
//! `speed` paces the replay by the recorded times: 1 is as recorded, 60 is a minute
//! per second, and 0 is as fast as the pipeline takes it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;
use tokio::io::AsyncBufReadExt as _;
use tokio::sync::mpsc;

use super::Source;
use crate::sighting::{Sighting, parse_rfc3339_ms};

/// Replays a JSONL file.
#[derive(Debug)]
pub struct ReplaySource {
    /// The file.
    pub path: PathBuf,
    /// Replay speed: 1 as recorded, 0 as fast as possible.
    pub speed: f64,
}

/// One line, in either shape.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Line {
    /// The identifier heard (both shapes).
    ble_uuid: String,
    /// This scanner's shape: RFC 3339.
    seen_at: Option<String>,
    /// The old scanners' shape: Unix milliseconds.
    timestamp: Option<f64>,
    /// dBm, if recorded.
    rssi: Option<i16>,
    /// The event, if recorded.
    event_id: Option<String>,
}

/// Reads one line into a sighting.
pub fn parse_line(text: &str) -> Result<Sighting, String> {
    let line: Line = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let seen_at_ms = match (&line.seen_at, line.timestamp) {
        (Some(s), _) => parse_rfc3339_ms(s).ok_or_else(|| format!("seenAt `{s}` is not RFC 3339"))?,
        (None, Some(ms)) if ms.is_finite() => ms.round() as i64,
        _ => return Err("neither `seenAt` nor `timestamp`".into()),
    };
    if line.ble_uuid.trim().is_empty() {
        return Err("empty `bleUuid`".into());
    }
    Ok(Sighting {
        identifier: line.ble_uuid.trim().to_owned(),
        seen_at_ms,
        rssi: line.rssi,
        event_id: line.event_id.filter(|e| !e.is_empty()),
    })
}

#[async_trait::async_trait]
impl Source for ReplaySource {
    fn describe(&self) -> String {
        format!("replay of {} at speed {}", self.path.display(), self.speed)
    }

    fn is_finite(&self) -> bool {
        true
    }

    async fn run(self: Box<Self>, out: mpsc::Sender<Sighting>) -> anyhow::Result<()> {
        let file = tokio::fs::File::open(&self.path)
            .await
            .with_context(|| format!("cannot open replay file {}", self.path.display()))?;
        let mut lines = tokio::io::BufReader::new(file).lines();
        let started = tokio::time::Instant::now();
        let mut first_ms: Option<i64> = None;
        let (mut n, mut bad) = (0u64, 0u64);
        let mut line_no = 0u64;
        while let Some(text) = lines.next_line().await.with_context(|| format!("reading {}", self.path.display()))? {
            line_no += 1;
            if text.trim().is_empty() {
                continue;
            }
            let s = match parse_line(&text) {
                Ok(s) => s,
                Err(e) => {
                    bad += 1;
                    tracing::warn!("{}:{line_no}: skipped: {e}", self.path.display());
                    continue;
                }
            };
            if self.speed > 0.0 {
                let t0 = *first_ms.get_or_insert(s.seen_at_ms);
                let offset_ms = ((s.seen_at_ms - t0).max(0) as f64 / self.speed) as u64;
                tokio::time::sleep_until(started + Duration::from_millis(offset_ms)).await;
            }
            if out.send(s).await.is_err() {
                break;
            }
            n += 1;
        }
        tracing::info!("replay of {} finished: {n} sightings read, {bad} lines skipped", self.path.display());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_shapes() {
        let old = parse_line(r#"{"bleUuid":"abc","timestamp":1893488400000,"eventId":"e1","scannerSource":"door-2"}"#)
            .unwrap();
        assert_eq!(
            old,
            Sighting {
                identifier: "abc".into(),
                seen_at_ms: 1_893_488_400_000,
                rssi: None,
                event_id: Some("e1".into())
            }
        );
        let new = parse_line(r#"{"bleUuid":"abc","seenAt":"2030-01-01T09:00:00Z","rssi":-61}"#).unwrap();
        assert_eq!(
            new,
            Sighting { identifier: "abc".into(), seen_at_ms: 1_893_488_400_000, rssi: Some(-61), event_id: None }
        );
        assert!(parse_line(r#"{"bleUuid":"abc"}"#).is_err());
        assert!(parse_line("not json").is_err());
    }
}
