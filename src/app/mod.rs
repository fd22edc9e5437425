//! The use cases that GraphQL and HTTP both call: load what a use case
//! needs from the store, decide in the pure `domain`, commit.
//!
//! - [`ingest`]: applying sighting batches, deriving attendance again from
//!   the raw log, erasing a user's sightings;
//! - [`writer`]: the process's one ingest writer, which folds queued batches
//!   together and commits them in one transaction;
//! - [`rederive`]: deriving an event's attendance again, in the background;
//! - [`identity`]: resolving rotating beacon identifiers;
//! - [`door`]: door codes, and check-ins with them;
//! - [`presence`]: presence reported by attendees' phones;
//! - [`reports`]: the event report and the attendance CSV;
//! - [`scanner_notes`]: each scanner's last batch, recorded on its key.

pub mod door;
pub mod identity;
pub mod ingest;
pub mod presence;
pub mod rederive;
pub mod reports;
pub mod scanner_notes;
pub mod writer;

pub use door::{DoorCodes, DoorError};
pub use ingest::{Ingest, IngestError, Source, single_check_in};
pub use presence::PhoneReports;
pub use writer::Scope;
