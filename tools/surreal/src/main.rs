//! `surreal`: the SurrealDB server, built from the `surrealdb-server` crate at
//! the version Rollcall's `surrealdb` client uses (3.3.5).
//!
//! The crate ships no binary of its own; its `init` is the whole of the
//! upstream `surreal` command line (`surreal start --bind .. --user .. memory`).
//! This build carries only the in-memory and SurrealKV storage engines and
//! none of the optional servers (GraphQL, Postgres wire, MCP, scripting), so
//! that CI can afford to build it. The integration tests start it as a child
//! process (`tests/api/surreal.rs`); operators run the official image instead.

// The server's router and query types nest deeply enough that type checking
// passes the default limit of 128.
#![recursion_limit = "512"]

use std::process::ExitCode;

use surrealdb_server::core::CommunityComposer;

fn main() -> ExitCode {
    surrealdb_server::init(CommunityComposer())
}
