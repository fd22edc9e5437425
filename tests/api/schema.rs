//! The checked-in `schema.graphql` is what the server prints.

#[test]
fn schema_graphql_matches_the_server() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql");
    let sdl = rollcall::graphql::sdl();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(path, &sdl).unwrap();
    }
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        checked_in == sdl,
        "schema.graphql differs from what the server prints; run `cargo run -- schema > schema.graphql` \
         (or UPDATE_SCHEMA=1 cargo test schema) and review the diff"
    );
}
