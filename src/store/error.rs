//! The storage layer's one error type, and how SurrealDB's errors map to
//! it (a unique index's refusal, an unreachable server, anything else).

/// Errors from the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique index refused a write; `index` names which one.
    #[error("unique index `{index}` already holds this value")]
    Conflict { index: String },
    /// The engine could not be reached or opened.
    #[error("cannot open database `{url}`")]
    Connect {
        url: String,
        #[source]
        source: Box<surrealdb::Error>,
    },
    /// The database server cannot be reached (its connection is down);
    /// the client may retry.
    #[error("database unavailable: {}", .0.message())]
    Unavailable(#[source] Box<surrealdb::Error>),
    /// Any other database failure. (Boxed: the engine's error is large, and
    /// every `Result` in the server would carry its size.)
    #[error("database error: {}", .0.message())]
    Db(#[source] Box<surrealdb::Error>),
    /// A stored record that no longer matches what the code expects.
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// The store's epoch file (`epoch.rs`) could not be read or written.
    #[error("cannot record the store's epoch in {}", .dir.display())]
    Epoch {
        dir: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<surrealdb::Error> for StoreError {
    fn from(err: surrealdb::Error) -> Self {
        // SurrealDB reports a unique-index violation as
        // "Database index `NAME` already contains ...".
        let msg = err.message();
        if let Some(rest) = msg.split_once("index `").map(|(_, r)| r)
            && msg.contains("already contains")
            && let Some((index, _)) = rest.split_once('`')
        {
            return StoreError::Conflict { index: index.to_owned() };
        }
        // The identifier lookup table is keyed by the identifier itself.
        if msg.contains("`identifier:") && msg.contains("already exists") {
            return StoreError::Conflict { index: "identifier".to_owned() };
        }
        if err.is_connection() {
            return StoreError::Unavailable(Box::new(err));
        }
        StoreError::Db(Box::new(err))
    }
}
