//! The scanner's stable identity: a UUID made at its first start and kept in the
//! data directory (`scanner-id`), next to the outbox but outside it, so it
//! survives a salvaged outbox, a key rotation and a reinstall of the binary.
//!
//! It is sent with every request as the `x-rollcall-scanner-id` header and in the
//! heartbeat. The API key says what a scanner may do; this id says which box it is.
//! The server keeps batch ids per identity (bound to the owner of the first key that
//! used it), so a batch resent under a rotated key is recognised as the one it has
//! already applied.

use std::path::Path;

use uuid::Uuid;

/// File name of the identity inside the data directory.
pub const SCANNER_ID_FILE: &str = "scanner-id";

/// Reads the scanner's id from `data_dir`, making and saving one if there is none.
/// A file that does not hold a UUID is an error, not silently replaced: a new
/// identity would make the server take this box for another.
pub fn load_or_create(data_dir: &Path) -> anyhow::Result<Uuid> {
    let path = data_dir.join(SCANNER_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Uuid::parse_str(text.trim()).map_err(|e| {
            anyhow::anyhow!(
                "{} does not hold a scanner id ({e}); restore it from a backup, or delete it to make a new one",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir)?;
            let id = Uuid::new_v4();
            // Written aside and renamed, so a power cut leaves the whole id or none.
            let tmp = data_dir.join(format!("{SCANNER_ID_FILE}.tmp"));
            std::fs::write(&tmp, format!("{id}\n"))?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            tracing::info!("this scanner's identity is {id} (kept in {})", path.display());
            Ok(id)
        }
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}

/// The id in `data_dir`, if one was made.
pub fn read(data_dir: &Path) -> Option<Uuid> {
    std::fs::read_to_string(data_dir.join(SCANNER_ID_FILE)).ok().and_then(|t| Uuid::parse_str(t.trim()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_then_kept() {
        let dir = tempfile::tempdir().unwrap();
        let id = load_or_create(dir.path()).unwrap();
        assert_eq!(load_or_create(dir.path()).unwrap(), id);
        assert_eq!(read(dir.path()), Some(id));
        std::fs::write(dir.path().join(SCANNER_ID_FILE), "garbage").unwrap();
        assert!(load_or_create(dir.path()).is_err(), "never silently replaced");
    }
}
