//! The GraphQL-over-HTTP rules: media types, status codes, GET rules, batching, GraphiQL, ops endpoints.
use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use crate::common::{Backend, TestApp, first_code, spawn, spawn_with};

const GRJ: &str = "application/graphql-response+json";

async fn app() -> TestApp {
    spawn(Backend::Sqlite).await.expect("sqlite")
}

fn content_type(r: &reqwest::Response) -> String {
    r.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

async fn post(app: &TestApp, accept: Option<&str>, body: Value) -> reqwest::Response {
    let mut req = app.client.post(app.url("/graphql")).bearer_auth(app.admin()).json(&body);
    if let Some(accept) = accept {
        req = req.header(header::ACCEPT, accept);
    }
    req.send().await.expect("request")
}

#[tokio::test]
async fn answers_in_the_media_type_the_client_accepts() {
    let app = app().await;
    let query = json!({ "query": "{ __typename }" });
    for (accept, expected) in [
        (Some(GRJ), GRJ),
        (Some("application/json"), "application/json"),
        (None, "application/json"),
        (Some("*/*"), "application/json"),
        (Some("application/json;q=0.5, application/graphql-response+json"), GRJ),
    ] {
        let response = post(&app, accept, query.clone()).await;
        assert_eq!(response.status(), StatusCode::OK, "accept {accept:?}");
        assert!(content_type(&response).starts_with(expected), "accept {accept:?} gave {}", content_type(&response));
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["data"]["__typename"], "Query");
    }
    let response = post(&app, Some("text/plain"), query).await;
    assert_eq!(response.status(), StatusCode::NOT_ACCEPTABLE);
}

#[tokio::test]
async fn a_post_without_a_json_content_type_is_415() {
    let app = app().await;
    for content_type in
        [None, Some("text/plain"), Some("application/x-www-form-urlencoded"), Some("application/json; charset=latin1")]
    {
        let mut req =
            app.client.post(app.url("/graphql")).bearer_auth(app.admin()).body(r#"{"query":"{ __typename }"}"#);
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let response = req.send().await.expect("request");
        assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "content type {content_type:?}");
    }
}

#[tokio::test]
async fn parse_and_validation_errors_are_400_without_data_for_graphql_response_json() {
    let app = app().await;
    for (query, code) in [("{ __typename", "GRAPHQL_PARSE_FAILED"), ("{ noSuchField }", "GRAPHQL_VALIDATION_FAILED")] {
        let response = post(&app, Some(GRJ), json!({ "query": query })).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        let body: Value = response.json().await.expect("json");
        assert!(body.get("data").is_none(), "no data entry: {body}");
        assert_eq!(first_code(&body), code);

        let response = post(&app, Some("application/json"), json!({ "query": query })).await;
        assert_eq!(response.status(), StatusCode::OK, "application/json keeps 200 for {query}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(first_code(&body), code);
    }
}

fn sha256_hex(text: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Automatic persisted queries (Apollo's protocol): a hash the server does not hold is answered with
/// `PERSISTED_QUERY_NOT_FOUND`; sent again with the query it runs and is kept, after which the hash alone runs it,
/// over POST and GET; a hash that is not the query's is refused; the limits still apply to a persisted query.
#[tokio::test]
async fn automatic_persisted_queries_run_by_hash_once_registered() {
    let app = app().await;
    let query = "query Who { viewer { tenant } }";
    let hash = sha256_hex(query);
    let extensions = json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } });

    let response = post(&app, Some("application/json"), json!({ "extensions": extensions })).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    assert_eq!(first_code(&body), "PERSISTED_QUERY_NOT_FOUND", "{body}");
    assert_eq!(body["errors"][0]["message"], "PersistedQueryNotFound", "the message Apollo clients look for");
    let response = post(&app, Some(GRJ), json!({ "extensions": extensions })).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST, "a request error under graphql-response+json");

    let registered = post(&app, None, json!({ "query": query, "extensions": extensions })).await;
    let registered: Value = registered.json().await.expect("json");
    assert!(registered["data"]["viewer"]["tenant"].is_string(), "{registered}");

    let by_hash: Value = post(&app, None, json!({ "extensions": extensions })).await.json().await.expect("json");
    assert_eq!(by_hash, registered, "the hash alone runs the registered query");
    let by_get: Value = app
        .client
        .get(app.url("/graphql"))
        .bearer_auth(app.admin())
        .query(&[("extensions", extensions.to_string())])
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(by_get, registered, "and over GET");

    let wrong = json!({ "persistedQuery": { "version": 1, "sha256Hash": sha256_hex("{ __typename }") } });
    let response = post(&app, Some(GRJ), json!({ "query": query, "extensions": wrong })).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.expect("json");
    assert_eq!(first_code(&body), "BAD_REQUEST", "{body}");
    let bad_version = json!({ "persistedQuery": { "version": 2, "sha256Hash": hash } });
    let response = post(&app, Some(GRJ), json!({ "extensions": bad_version })).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // A persisted document is held to the same limits as any other: 200 aliases are refused either way.
    let aliases: String = (0..200).map(|i| format!("a{i}: __typename ")).collect();
    let heavy = format!("{{ {aliases} }}");
    let heavy_ext = json!({ "persistedQuery": { "version": 1, "sha256Hash": sha256_hex(&heavy) } });
    let body: Value =
        post(&app, None, json!({ "query": heavy, "extensions": heavy_ext })).await.json().await.expect("json");
    assert_eq!(first_code(&body), "GRAPHQL_VALIDATION_FAILED", "{body}");
    let body: Value = post(&app, None, json!({ "extensions": heavy_ext })).await.json().await.expect("json");
    assert_eq!(first_code(&body), "GRAPHQL_VALIDATION_FAILED", "{body}");
}

#[tokio::test]
async fn malformed_requests_are_400() {
    let app = app().await;
    for body in [json!({}), json!({ "query": 1 }), json!({ "query": "{ __typename }", "variables": [] }), json!("text")]
    {
        let response = post(&app, Some(GRJ), body.clone()).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(first_code(&body), "BAD_REQUEST");
    }
    let response = app
        .client
        .post(app.url("/graphql"))
        .bearer_auth(app.admin())
        .header(header::CONTENT_TYPE, "application/json")
        .body("{ not json")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn get_runs_queries_and_refuses_mutations_with_405() {
    let app = app().await;
    let response = app
        .client
        .get(app.url("/graphql"))
        .bearer_auth(app.admin())
        .query(&[
            ("query", "query Who($x: Boolean!) { viewer @include(if: $x) { tenant } }"),
            ("variables", r#"{"x":true}"#),
        ])
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["data"]["viewer"]["tenant"], "acme");

    let mutation =
        r#"mutation { upsertCustomer(input: {identities: [{kind: EMAIL, value: "get@example.com"}]}) { created } }"#;
    let response = app
        .client
        .get(app.url("/graphql"))
        .bearer_auth(app.admin())
        .query(&[("query", mutation)])
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers().get(header::ALLOW).and_then(|v| v.to_str().ok()), Some("POST"));
    // Nothing was written.
    let (_, body) = app
        .gql(
            &app.admin(),
            r#"{ customerByIdentity(identity: {kind: EMAIL, value: "get@example.com"}) { id } }"#,
            json!({}),
        )
        .await;
    assert_eq!(first_code(&body), "NOT_FOUND");
}

#[tokio::test]
async fn batching_is_off_by_default_and_bounded_when_on() {
    let app = app().await;
    let batch = json!([{ "query": "{ __typename }" }, { "query": "{ viewer { tenant } }" }]);
    let response = post(&app, Some(GRJ), batch.clone()).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let app = spawn_with(Backend::Sqlite, |c| c.max_batch = 2).await.expect("sqlite");
    let response = post(&app, Some(GRJ), batch).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body[0]["data"]["__typename"], "Query");
    assert_eq!(body[1]["data"]["viewer"]["tenant"], "acme");
    let too_many = json!([{ "query": "{ __typename }" }, { "query": "{ __typename }" }, { "query": "{ __typename }" }]);
    assert_eq!(post(&app, Some(GRJ), too_many).await.status(), StatusCode::BAD_REQUEST);
}

/// What a browser sends when it opens a page.
const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

/// The values of every `src="…"` and `href="…"` attribute of an HTML page.
fn page_references(page: &str) -> Vec<String> {
    let mut found = Vec::new();
    for attribute in ["src=\"", "href=\""] {
        let mut rest = page;
        while let Some(at) = rest.find(attribute) {
            rest = &rest[at + attribute.len()..];
            let end = rest.find('"').expect("a closed attribute");
            found.push(rest[..end].to_owned());
            rest = &rest[end..];
        }
    }
    found
}

/// Fetches the GraphiQL page a browser gets at `path`.
async fn browser_get(app: &TestApp, path: &str) -> reqwest::Response {
    app.client.get(app.url(path)).header(header::ACCEPT, BROWSER_ACCEPT).send().await.expect("request")
}

/// GraphiQL comes from the binary: the page (at /graphql for a browser, and at /graphiql) names no other origin,
/// carries a Content-Security-Policy that allows this origin only, and every file it loads is served here with its
/// content type, cached as immutable.
#[tokio::test]
async fn graphiql_is_served_to_browsers_from_the_binary() {
    let app = app().await;
    for path in ["/graphql", "/graphiql"] {
        let response = browser_get(&app, path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert!(content_type(&response).starts_with("text/html"), "{path}: {}", content_type(&response));
        let csp = response
            .headers()
            .get(header::CONTENT_SECURITY_POLICY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        for directive in ["default-src 'none'", "script-src 'self';", "connect-src 'self'", "frame-ancestors 'none'"] {
            assert!(csp.contains(directive), "{path}: the CSP `{csp}` lacks `{directive}`");
        }
        assert!(!csp.contains("http") && !csp.contains("unsafe-eval"), "{path}: the CSP allows too much: {csp}");
        let page = response.text().await.expect("text");
        assert!(page.contains("<title>Kontakt</title>"), "{page}");
        // No CDN, no other origin: not in a script, a stylesheet, a link, nor anywhere else on the page.
        assert!(!page.contains("http://") && !page.contains("https://"), "the page names another origin: {page}");
        assert!(!page.contains("<script>") && !page.contains("<style"), "no inline script or style: {page}");

        let references = page_references(&page);
        let scripts: Vec<_> = references.iter().filter(|r| r.ends_with(".js")).collect();
        let styles: Vec<_> = references.iter().filter(|r| r.ends_with(".css")).collect();
        assert!(scripts.len() >= 4 && !styles.is_empty(), "GraphiQL, React, ReactDOM, the bootstrap: {references:?}");
        let mut largest_script = 0;
        for reference in &references {
            assert!(!reference.contains("//") && !reference.contains(':'), "not this origin: {reference}");
            let url = app.url(&format!("/{}", reference.trim_start_matches('/')));
            let response = app.client.get(&url).send().await.expect("asset");
            assert_eq!(response.status(), StatusCode::OK, "{url}");
            let expected = match reference.rsplit('.').next() {
                Some("js") => "text/javascript",
                Some("css") => "text/css",
                Some("txt") => "text/plain",
                other => panic!("an asset of an unexpected kind ({other:?}): {reference}"),
            };
            assert!(content_type(&response).starts_with(expected), "{url}: {}", content_type(&response));
            let cache = response.headers().get(header::CACHE_CONTROL).and_then(|v| v.to_str().ok()).unwrap_or_default();
            assert_eq!(cache, "public, max-age=31536000, immutable", "{url}");
            let body = response.bytes().await.expect("body");
            assert!(body.len() >= 1024, "{url} is only {} bytes", body.len());
            if expected == "text/javascript" {
                largest_script = largest_script.max(body.len());
            }
            // The version in the path is this build's: another one is not served (it would be cached for a year).
            let (version, file) = reference.rsplit_once('/').expect("graphiql/<version>/<file>");
            assert!(version.starts_with("graphiql/"), "{reference}");
            let stale = app.url(&format!("/graphiql/0000000000000000/{file}"));
            assert_eq!(app.client.get(&stale).send().await.expect("stale").status(), StatusCode::NOT_FOUND);
        }
        assert!(largest_script > 500_000, "GraphiQL itself is served, not a stub ({largest_script} bytes)");
    }
    assert_eq!(browser_get(&app, "/graphiql/0000000000000000/nothing.js").await.status(), StatusCode::NOT_FOUND);
}

/// Off (`KONTAKT_GRAPHIQL=false`, and by default in production): a browser at /graphql gets what any GET without a
/// query gets, and neither the page nor its assets are served. Production can opt in.
#[tokio::test]
async fn graphiql_is_not_served_when_off_nor_by_default_in_production() {
    let development = app().await;
    let page = browser_get(&development, "/graphiql").await.text().await.expect("page");
    let assets: Vec<String> = page_references(&page).into_iter().map(|r| format!("/{r}")).collect();
    assert!(!assets.is_empty());

    let production = |c: &mut kontakt::config::Config| {
        c.env = kontakt::config::Environment::Production;
        c.suppression_key = Some("s".repeat(40).into());
        c.metrics_token = Some("m".repeat(32).into());
    };
    let off = spawn_with(Backend::Sqlite, |c| c.graphiql = Some(false)).await.expect("sqlite");
    let default_production = spawn_with(Backend::Sqlite, production).await.expect("sqlite");
    for app in [&off, &default_production] {
        let response = browser_get(app, "/graphql").await;
        let status = response.status();
        let media = content_type(&response);
        let body = response.text().await.expect("body");
        let plain = app.client.get(app.url("/graphql")).header(header::ACCEPT, "*/*").send().await.expect("request");
        assert_eq!(status, plain.status(), "a browser gets what any GET without a query gets: {body}");
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert!(media.starts_with("application/json"), "{media}: {body}");
        assert!(!body.to_lowercase().contains("graphiql"), "{body}");
        assert_eq!(browser_get(app, "/graphiql").await.status(), StatusCode::NOT_FOUND);
        for asset in &assets {
            assert_eq!(app.client.get(app.url(asset)).send().await.expect("asset").status(), StatusCode::NOT_FOUND);
        }
    }

    let opted_in = spawn_with(Backend::Sqlite, |c| {
        production(c);
        c.graphiql = Some(true);
    })
    .await
    .expect("sqlite");
    assert_eq!(browser_get(&opted_in, "/graphiql").await.status(), StatusCode::OK);
    assert_eq!(browser_get(&opted_in, "/graphql").await.status(), StatusCode::OK);
    for asset in &assets {
        assert_eq!(opted_in.client.get(opted_in.url(asset)).send().await.expect("asset").status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_413() {
    let app = spawn_with(Backend::Sqlite, |c| c.max_body_bytes = 1024).await.expect("sqlite");
    let query = format!("{{ __typename }} # {}", "x".repeat(4096));
    let response = post(&app, Some(GRJ), json!({ "query": query })).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = app().await;
    let response = post(&app, Some(GRJ), json!({ "query": "{ __typename }" })).await;
    let id = response.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert_eq!(id.len(), 36, "a UUID request id, got {id:?}");
}

async fn health_checks(app: TestApp) {
    let response = app.client.get(app.url("/healthz")).send().await.expect("healthz");
    assert_eq!(response.status(), StatusCode::OK);
    let response = app.client.get(app.url("/readyz")).send().await.expect("readyz");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["database"], "ok");
    assert_eq!(body["cache"]["kind"], if app.uses_redis { "redis" } else { "memory" });
    assert_eq!(body["cache"]["status"], "ok");

    let _ = post(&app, Some(GRJ), json!({ "query": "query Probe { __typename }", "operationName": "Probe" })).await;
    let _ = post(&app, Some(GRJ), json!({ "query": "{ nope }" })).await;
    let text = app.client.get(app.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    for needle in [
        "kontakt_http_requests_total",
        "kontakt_graphql_requests_total{operation=\"Probe\",outcome=\"ok\"}",
        "kontakt_graphql_request_duration_seconds_bucket{operation=\"Probe\"",
        "kontakt_graphql_errors_total{code=\"GRAPHQL_VALIDATION_FAILED\"}",
        "kontakt_db_pool_connections",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}");
    }
}

const METRICS_TOKEN: &str = "metrics-token-0123456789abcdef";

fn metrics_token(config: &mut kontakt::config::Config) {
    config.metrics_token = Some(METRICS_TOKEN.into());
}

fn metrics_listener(config: &mut kontakt::config::Config) {
    config.metrics_listen = Some("127.0.0.1:0".parse().expect("address"));
}

/// `KONTAKT_METRICS_TOKEN`: `/metrics` answers 401 without the token or with another, 200 with it.
async fn metrics_need_the_token_when_one_is_set(app: TestApp) {
    let metrics = || app.client.get(app.url("/metrics"));
    let response = metrics().send().await.expect("metrics");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
    let text = response.text().await.expect("text");
    assert!(!text.contains("kontakt_http_requests_total"), "no metrics without the token: {text}");
    for wrong in ["wrong", "metrics-token-0123456789abcdeF", "metrics-token-0123456789abcdef0", ""] {
        let response = metrics().bearer_auth(wrong).send().await.expect("metrics");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "token {wrong:?}");
    }
    let response = metrics().header(header::AUTHORIZATION, format!("Basic {METRICS_TOKEN}")).send().await.expect("m");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "only a bearer token");
    let response = metrics().bearer_auth(METRICS_TOKEN).send().await.expect("metrics");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.expect("text").contains("kontakt_db_pool_connections"));
    // The rest of the server does not need it.
    let response = app.client.get(app.url("/healthz")).send().await.expect("healthz");
    assert_eq!(response.status(), StatusCode::OK);
}

/// `KONTAKT_METRICS_LISTEN`: `/metrics` is served on its own address, and only there.
async fn metrics_can_have_a_listener_of_their_own(app: TestApp) {
    let metrics_addr = app.metrics_addr.expect("a metrics listener");
    assert_ne!(metrics_addr, app.addr);
    let response = app.client.get(app.url("/metrics")).send().await.expect("metrics");
    assert_eq!(response.status(), StatusCode::NOT_FOUND, "not on the main listener");
    let response = app.client.get(format!("http://{metrics_addr}/metrics")).send().await.expect("metrics");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.expect("text").contains("kontakt_db_pool_connections"));
    for path in ["/graphql", "/healthz", "/v1/track"] {
        let response = app.client.get(format!("http://{metrics_addr}{path}")).send().await.expect("request");
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path} is not served on the metrics listener");
    }
    let response = post(&app, Some(GRJ), json!({ "query": "{ __typename }" })).await;
    assert_eq!(response.status(), StatusCode::OK, "the API is on the main listener");
}

on_every_backend!(
    health_checks,
    metrics_need_the_token_when_one_is_set with metrics_token,
    metrics_can_have_a_listener_of_their_own with metrics_listener,
);

#[tokio::test]
async fn browsers_from_configured_origins_pass_cors_and_others_do_not() {
    let app =
        spawn_with(Backend::Sqlite, |c| c.cors_origins = Some("https://shop.example".into())).await.expect("sqlite");
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/graphql"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type")
            .send()
    };
    let allowed = preflight("https://shop.example").await.expect("preflight");
    assert_eq!(
        allowed.headers().get("access-control-allow-origin").and_then(|v| v.to_str().ok()),
        Some("https://shop.example")
    );
    let refused = preflight("https://evil.example").await.expect("preflight");
    assert!(refused.headers().get("access-control-allow-origin").is_none());
    let response = post(&app, Some(GRJ), json!({ "query": "{ __typename }" })).await;
    assert_eq!(response.status(), StatusCode::OK, "CORS does not get in the way of non-browser callers");
}
