//! The directory: whose identifier is whose, and who stands registered for
//! which event. Every batch asks both for every person in it; at a venue
//! that is about 490 people a batch, and asking SurrealDB costs about 18 µs
//! a person (7 µs for the identifier, 11 µs for the registration). Answers
//! change rarely, so the process remembers the ones it has read.
//!
//! What keeps the memory exact, on one instance or several over one
//! database:
//! - Every transaction that takes an answer away (a `bleUuid` rotated, a
//!   device removed, a registration cancelled, a user or an event deleted)
//!   also increments `directory:version` (`directory_changed!`), in the same
//!   transaction. So the version moves exactly when such a change commits,
//!   whichever instance made it and whether or not its caller is still
//!   waiting.
//! - A batch reads the version first ([`SurrealStore::directory`], one point
//!   read). Answers are kept tagged with the version they were read under; a
//!   newer version drops them all before any is used.
//! - A batch that read the version before a change committed may still see
//!   the old answer: that batch is ordered before the change, as it would
//!   be had it read the database itself a moment earlier. A batch that
//!   starts after the change returned sees the change.
//! - Only answers that exist are kept (an identifier's owner, a standing
//!   registration). What was missing is asked again, so a change that adds
//!   an answer (a sign-up, a device added, a registration, a walk-in) needs
//!   no version.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use uuid::Uuid;

use super::Conn;
use super::{Registrations, StoreError, SurrealStore, Users};

/// The statement that, inside a transaction taking an answer away, moves
/// the directory's version. A macro, so that it is `concat!`ed into the
/// transactions' SQL.
macro_rules! directory_changed {
    () => {
        "UPSERT directory:version SET n = (n ?? 0) + 1;"
    };
}
pub(crate) use directory_changed;

/// Beyond this many identifiers (or standing registrations) remembered, the
/// memory starts again empty: bounded, and rarely reached (one per person).
const MAX_OWNERS: usize = 250_000;
const MAX_STANDING: usize = 500_000;

/// What this process remembers of the directory, shared by every clone of
/// the store.
#[derive(Debug, Default)]
pub(crate) struct Remembered(Mutex<Memory>);

#[derive(Debug, Default)]
struct Memory {
    /// The version the answers below were read under.
    version: i64,
    owners: HashMap<String, Uuid>,
    standing: HashSet<(Uuid, Uuid)>,
}

impl Memory {
    /// Whether answers read under `version` may be used and kept: a newer
    /// version first drops everything; an older one (a batch that read the
    /// version before another moved it) neither reads nor writes.
    fn at(&mut self, version: i64) -> bool {
        if version > self.version {
            *self = Memory { version, ..Memory::default() };
        }
        version == self.version
    }
}

impl Remembered {
    fn lock(&self) -> std::sync::MutexGuard<'_, Memory> {
        // The memory is only ever left whole (no panics while held); if a
        // panic elsewhere poisoned it, its contents are still sound.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The directory as of one read of its version; see the module doc.
pub struct Directory<'a> {
    db: &'a Conn,
    memory: &'a Remembered,
    version: i64,
}

impl SurrealStore {
    /// The directory as it stands now: one read of its version.
    pub async fn directory(&self) -> Result<Directory<'_>, StoreError> {
        let mut res = self.db.query("SELECT VALUE n FROM ONLY directory:version").await?;
        let version: Option<i64> = res.take(0)?;
        Ok(Directory { db: &self.db, memory: &self.directory, version: version.unwrap_or(0) })
    }
}

impl Directory<'_> {
    /// The owner of each identifier that has one (`Users::resolve`).
    pub async fn owners(&self, identifiers: Vec<String>) -> Result<HashMap<String, Uuid>, StoreError> {
        let mut known = HashMap::new();
        let mut missing = Vec::new();
        {
            let mut memory = self.memory.lock();
            let usable = memory.at(self.version);
            for i in identifiers {
                match memory.owners.get(&i).filter(|_| usable) {
                    Some(owner) => {
                        known.insert(i, *owner);
                    }
                    None => missing.push(i),
                }
            }
        }
        if missing.is_empty() {
            return Ok(known);
        }
        let found = Users::new(self.db).resolve(missing).await?;
        {
            let mut memory = self.memory.lock();
            if memory.at(self.version) {
                if memory.owners.len() + found.len() > MAX_OWNERS {
                    memory.owners.clear();
                }
                memory.owners.extend(found.iter().map(|(i, u)| (i.clone(), *u)));
            }
        }
        known.extend(found);
        Ok(known)
    }

    /// Which of the (user, event) pairs stand registered
    /// (`Registrations::standing`).
    pub async fn standing(&self, pairs: &[(Uuid, Uuid)]) -> Result<Vec<(Uuid, Uuid)>, StoreError> {
        let (mut known, missing): (Vec<_>, Vec<_>) = {
            let mut memory = self.memory.lock();
            if memory.at(self.version) {
                pairs.iter().copied().partition(|p| memory.standing.contains(p))
            } else {
                (Vec::new(), pairs.to_vec())
            }
        };
        if missing.is_empty() {
            return Ok(known);
        }
        let found = Registrations::new(self.db).standing(&missing).await?;
        {
            let mut memory = self.memory.lock();
            if memory.at(self.version) {
                if memory.standing.len() + found.len() > MAX_STANDING {
                    memory.standing.clear();
                }
                memory.standing.extend(found.iter().copied());
            }
        }
        known.extend(found);
        Ok(known)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_version_drops_what_was_remembered_and_an_older_one_is_not_kept() {
        let mut m = Memory::default();
        assert!(m.at(0));
        m.owners.insert("a".into(), Uuid::from_u128(1));
        assert!(m.at(0), "the same version keeps its answers");
        assert_eq!(m.owners.len(), 1);
        assert!(m.at(2));
        assert!(m.owners.is_empty(), "a change committed since: nothing old is used");
        assert!(!m.at(1), "a batch that read the version before the change neither reads nor fills");
        assert_eq!(m.version, 2);
    }
}
