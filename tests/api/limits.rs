//! Query limits (depth, complexity, aliases, directives), introspection and suggestions by environment.
use reqwest::StatusCode;
use serde_json::json;

use crate::common::{Backend, first_code, spawn, spawn_with};

#[tokio::test]
async fn deep_complex_and_alias_heavy_queries_are_refused() {
    let app = spawn_with(Backend::Sqlite, |c| {
        c.max_depth = 4;
        c.max_complexity = 200;
        c.max_aliases = 3;
    })
    .await
    .expect("sqlite");
    let token = app.admin();

    let ok = "{ customers(first: 5) { edges { node { id } } } }";
    let (status, body) = app.gql(&token, ok, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let deep = "{ customers(first: 1) { edges { node { identities { kind } } } } }";
    let (status, body) = app.gql(&token, deep, json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(first_code(&body), "GRAPHQL_VALIDATION_FAILED");

    // 100 customers × several fields each is far over 200.
    let complex = "{ customers(first: 100) { edges { cursor node { id givenName familyName createdAt } } } }";
    let (status, body) = app.gql(&token, complex, json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap_or_default().to_lowercase().contains("complex"), "{body}");

    let aliases = "{ a: viewer { tenant } b: viewer { tenant } c: viewer { tenant } d: viewer { tenant } }";
    let (status, body) = app.gql(&token, aliases, json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap_or_default().contains("aliases"), "{body}");

    let directives = "{ viewer @include(if: true) @skip(if: false) @include(if: true) @skip(if: false) @include(if: true) @skip(if: false) @include(if: true) @skip(if: false) @include(if: true) @skip(if: false) @include(if: true) { tenant } }";
    let (status, _) = app.gql(&token, directives, json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn page_sizes_are_bounded() {
    let app = spawn(Backend::Sqlite).await.expect("sqlite");
    let (_, body) = app.gql(&app.admin(), "{ customers(first: 1000) { edges { cursor } } }", json!({})).await;
    assert!(body["errors"].is_array(), "{body}");
    let (_, body) = app.gql(&app.admin(), r#"{ customers(after: "bogus") { edges { cursor } } }"#, json!({})).await;
    assert_eq!(first_code(&body), "VALIDATION", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["field"], "after");
}

#[tokio::test]
async fn introspection_and_suggestions_follow_the_environment() {
    let dev = spawn(Backend::Sqlite).await.expect("sqlite");
    let (status, body) = dev.gql(&dev.admin(), "{ __schema { queryType { name } } }", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["__schema"]["queryType"]["name"], "Query");
    let (_, body) = dev.gql(&dev.admin(), "{ viewr { tenant } }", json!({})).await;
    assert!(body["errors"][0]["message"].as_str().unwrap_or_default().contains("Did you mean"), "{body}");

    let prod = spawn_with(Backend::Sqlite, |c| {
        c.env = kontakt::config::Environment::Production;
        c.suppression_key = Some("s".repeat(40));
    })
    .await
    .expect("sqlite");
    let (_, body) = prod.gql(&prod.admin(), "{ __schema { queryType { name } } }", json!({})).await;
    assert!(body["errors"].is_array(), "introspection is off in production: {body}");
    let (_, body) = prod.gql(&prod.admin(), "{ viewr { tenant } }", json!({})).await;
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(!message.contains("Did you mean"), "no suggestions in production: {message}");

    let opted_in = spawn_with(Backend::Sqlite, |c| {
        c.env = kontakt::config::Environment::Production;
        c.suppression_key = Some("s".repeat(40));
        c.introspection = Some(true);
    })
    .await
    .expect("sqlite");
    let (status, _) = opted_in.gql(&opted_in.admin(), "{ __schema { queryType { name } } }", json!({})).await;
    assert_eq!(status, StatusCode::OK);
}
