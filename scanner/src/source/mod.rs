//! Where sightings come from. Every source implements [`Source`] and pushes raw
//! sightings (one per identifier per advertisement) into a channel; everything
//! downstream is the same whichever source runs.
//!
//! - [`ble::BtleplugSource`]: the radio, through btleplug and BlueZ.
//! - [`replay::ReplaySource`]: a JSONL file, at recorded or accelerated speed.
//! - [`simulate::SimulatedVenue`]: virtual attendees with noisy RSSI and a known
//!   ground truth.

use std::path::PathBuf;
use std::str::FromStr;

use tokio::sync::mpsc;

use crate::sighting::Sighting;

pub mod ble;
pub mod replay;
pub mod simulate;

/// A producer of sightings.
#[async_trait::async_trait]
pub trait Source: Send {
    /// What it is, for the logs.
    fn describe(&self) -> String;

    /// Whether it ends by itself (a file, a simulation) rather than running until stopped.
    fn is_finite(&self) -> bool;

    /// Produces sightings into `out` until the input ends or `out` is closed.
    async fn run(self: Box<Self>, out: mpsc::Sender<Sighting>) -> anyhow::Result<()>;
}

/// Which source `--source` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    /// `ble`.
    Ble,
    /// `replay:FILE`.
    Replay(PathBuf),
    /// `simulate` or `simulate:N` (N attendees, default 20).
    Simulate(usize),
}

/// Attendees simulated by a bare `simulate`.
pub const DEFAULT_SIMULATED_ATTENDEES: usize = 20;

impl FromStr for SourceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            None if s == "ble" => Ok(Self::Ble),
            None if s == "simulate" => Ok(Self::Simulate(DEFAULT_SIMULATED_ATTENDEES)),
            Some(("replay", file)) if !file.is_empty() => Ok(Self::Replay(PathBuf::from(file))),
            Some(("simulate", n)) => n
                .parse()
                .map(Self::Simulate)
                .map_err(|_| format!("`simulate:{n}`: N must be a whole number of attendees")),
            _ => Err(format!("unknown source `{s}`: expected `ble`, `replay:FILE`, `simulate` or `simulate:N`")),
        }
    }
}

impl std::fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ble => f.write_str("ble"),
            Self::Replay(p) => write!(f, "replay:{}", p.display()),
            Self::Simulate(n) => write!(f, "simulate:{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_source_specs() {
        assert_eq!("ble".parse(), Ok(SourceSpec::Ble));
        assert_eq!("simulate".parse(), Ok(SourceSpec::Simulate(20)));
        assert_eq!("simulate:7".parse(), Ok(SourceSpec::Simulate(7)));
        assert_eq!("replay:/tmp/a b.jsonl".parse(), Ok(SourceSpec::Replay("/tmp/a b.jsonl".into())));
        assert!("simulate:x".parse::<SourceSpec>().is_err());
        assert!("replay:".parse::<SourceSpec>().is_err());
        assert!("wifi".parse::<SourceSpec>().is_err());
    }
}
