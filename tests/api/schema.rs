//! `schema.graphql` is the SDL of the served schema.
use std::path::Path;

#[test]
fn schema_graphql_matches_the_served_schema() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema.graphql");
    let served = kontakt::graphql::sdl();
    if std::env::var("UPDATE_SCHEMA").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &served).expect("write schema.graphql");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == served,
        "schema.graphql differs from the served schema; run `cargo run -q -- schema > schema.graphql` and review the diff"
    );
}
