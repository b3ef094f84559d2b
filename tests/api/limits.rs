//! Query limits (depth, complexity, aliases, directives), introspection and suggestions by environment.
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Backend, TestApp, first_code, spawn, spawn_with};

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
        c.suppression_key = Some("s".repeat(40).into());
        c.metrics_token = Some("m".repeat(32).into());
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
        c.suppression_key = Some("s".repeat(40).into());
        c.metrics_token = Some("m".repeat(32).into());
        c.introspection = Some(true);
    })
    .await
    .expect("sqlite");
    let (status, _) = opted_in.gql(&opted_in.admin(), "{ __schema { queryType { name } } }", json!({})).await;
    assert_eq!(status, StatusCode::OK);
}

/// Error messages are bounded: a 200 KB one-line syntax error answers a small 400 that still says where the error
/// is; validation and variable errors that quote the request are bounded too.
async fn error_messages_are_bounded(app: TestApp) {
    const BOUND: usize = 512;
    let token = app.admin();
    let filler = "x".repeat(200_000);
    let query = format!("{{ __typename {filler} @@@ }}");
    // `@` starts a directive; the error is the second `@`, where a name is expected (columns count from 1).
    let column = query.find("@@@").expect("marker") + 2;
    for accept in ["application/graphql-response+json", "application/json"] {
        let response = app
            .client
            .post(app.url("/graphql"))
            .bearer_auth(&token)
            .header("accept", accept)
            .json(&json!({ "query": query }))
            .send()
            .await
            .expect("request");
        let expected = if accept == "application/json" { StatusCode::OK } else { StatusCode::BAD_REQUEST };
        assert_eq!(response.status(), expected, "{accept}");
        let bytes = response.bytes().await.expect("body");
        assert!(bytes.len() < 4096, "a {} byte answer to a 200 KB query ({accept})", bytes.len());
        let body: Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(first_code(&body), "GRAPHQL_PARSE_FAILED", "{body}");
        let message = body["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.len() <= BOUND, "{message}");
        assert!(message.contains(&format!("1:{column}")), "the message says where: {message}");
        assert!(message.contains("@@@"), "and shows the text there: {message}");
        assert_eq!(body["errors"][0]["locations"][0], json!({ "line": 1, "column": column }), "{body}");
    }

    // A validation error quoting a 200 KB field name.
    let (status, body) = app.gql(&token, &format!("{{ {filler} }}"), json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(first_code(&body), "GRAPHQL_VALIDATION_FAILED", "{}", &body.to_string()[..200]);
    assert!(body.to_string().len() < 4096, "{} bytes", body.to_string().len());
    // A variable that does not coerce, quoting a 200 KB value.
    let (_, body) =
        app.gql(&token, "query($n: Int) { customers(first: $n) { edges { cursor } } }", json!({ "n": filler })).await;
    assert!(body["errors"].is_array(), "{}", &body.to_string()[..200]);
    assert!(body.to_string().len() < 4096, "{} bytes", body.to_string().len());
    for error in body["errors"].as_array().into_iter().flatten() {
        assert!(error["message"].as_str().unwrap_or_default().len() <= BOUND, "{error}");
    }
}

on_every_backend!(error_messages_are_bounded);
