//! Bearer tokens: every failure is 401 UNAUTHENTICATED; scopes give FORBIDDEN; tenants never see each other.
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use crate::common::{Backend, TestApp, first_code, now, spawn, spawn_with};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api/fixtures");

async fn status_of(app: &TestApp, token: Option<&str>) -> (StatusCode, Value, Option<String>) {
    let mut req = app.client.post(app.url("/graphql")).json(&json!({ "query": "{ viewer { tenant } }" }));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let response = req.send().await.expect("request");
    let status = response.status();
    let challenge = response.headers().get(header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    (status, response.json().await.expect("json"), challenge)
}

async fn assert_rejected(app: &TestApp, token: Option<&str>, why: &str) {
    let (status, body, challenge) = status_of(app, token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{why}: {body}");
    assert_eq!(first_code(&body), "UNAUTHENTICATED", "{why}");
    assert!(body.get("data").is_none(), "{why}");
    assert!(challenge.is_some_and(|c| c.starts_with("Bearer")), "{why}: WWW-Authenticate");
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"))
}

#[tokio::test]
async fn bad_tokens_are_401() {
    let app = spawn(Backend::Sqlite).await.expect("sqlite");
    let good = app.claims("acme", &["profiles:read"], "support");
    let (status, body, _) = status_of(&app, Some(&app.sign(&good))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["viewer"]["tenant"], "acme");

    assert_rejected(&app, None, "no token").await;
    assert_rejected(&app, Some("not.a.jwt"), "garbage").await;

    let with = |patch: Value| {
        let mut claims = good.clone();
        for (k, v) in patch.as_object().expect("object") {
            if v.is_null() {
                claims.as_object_mut().expect("object").remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        app.sign(&claims)
    };
    assert_rejected(&app, Some(&with(json!({ "exp": now() - 60 }))), "expired beyond the leeway").await;
    assert_rejected(&app, Some(&with(json!({ "nbf": now() + 120 }))), "not valid yet").await;
    assert_rejected(&app, Some(&with(json!({ "aud": "someone-else" }))), "wrong audience").await;
    assert_rejected(&app, Some(&with(json!({ "iss": "https://evil.example" }))), "wrong issuer").await;
    assert_rejected(&app, Some(&with(json!({ "aud": null }))), "no audience").await;
    assert_rejected(&app, Some(&with(json!({ "iss": null }))), "no issuer").await;
    assert_rejected(&app, Some(&with(json!({ "exp": null }))), "no expiry").await;
    assert_rejected(&app, Some(&with(json!({ "tenant": null }))), "no tenant").await;
    assert_rejected(&app, Some(&with(json!({ "tenant": "bad tenant!" }))), "malformed tenant").await;

    let wrong_key = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &good,
        &EncodingKey::from_secret(b"another-secret-of-sufficient-length!!"),
    )
    .expect("sign");
    assert_rejected(&app, Some(&wrong_key), "wrong key").await;

    let alg_none = format!("{}.{}.", b64(&json!({ "alg": "none", "typ": "JWT" })), b64(&good));
    assert_rejected(&app, Some(&alg_none), "alg none").await;

    // A key carried in the header is never trusted.
    let signed = app.sign(&good);
    let payload_and_sig: Vec<&str> = signed.splitn(2, '.').collect();
    let embedded = format!(
        "{}.{}",
        b64(&json!({ "alg": "HS256", "typ": "JWT", "jwk": { "kty": "oct", "k": "c2VjcmV0" } })),
        payload_and_sig[1]
    );
    assert_rejected(&app, Some(&embedded), "embedded key").await;
}

/// The `purpose` claim names one purpose of the closed set (DOMAIN.md: personalization, marketing, analytics,
/// profiling, sharing; and support, privacy_admin, ingestion), a consent purpose optionally with one channel.
#[tokio::test]
async fn an_unknown_purpose_claim_is_401_and_named() {
    let app = spawn(Backend::Sqlite).await.expect("sqlite");
    for purpose in
        ["personalization", "marketing:email", "analytics", "profiling", "sharing", "support", "privacy_admin"]
    {
        let token = app.token("acme", &["profiles:read"], purpose);
        let (status, body, _) = status_of(&app, Some(&token)).await;
        assert_eq!(status, StatusCode::OK, "{purpose}: {body}");
    }
    for (purpose, says) in [
        ("newsletter", "unknown purpose `newsletter`"),
        ("Marketing", "unknown purpose `Marketing`"),
        ("marketting:email", "unknown purpose `marketting`"),
        ("support:email", "`support` takes no channel"),
        ("marketing:", "channel"),
        ("", "unknown purpose ``"),
    ] {
        let token = app.token("acme", &["profiles:read"], purpose);
        assert_rejected(&app, Some(&token), purpose).await;
        let (_, body, _) = status_of(&app, Some(&token)).await;
        let message = body["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains("`purpose` claim") && message.contains(says), "{purpose}: {message}");
    }
}

#[tokio::test]
async fn jwks_keys_are_chosen_by_kid_and_never_confused_with_hmac() {
    let app = spawn_with(Backend::Sqlite, |c| {
        c.jwt_secret = None;
        c.jwks_file = Some(format!("{FIXTURES}/jwks.json").into());
    })
    .await
    .expect("sqlite");
    let claims = app.claims("acme", &["profiles:read"], "support");
    let rsa_a = std::fs::read(format!("{FIXTURES}/rsa-a.pem")).expect("fixture");
    let rsa_b = std::fs::read(format!("{FIXTURES}/rsa-b.pem")).expect("fixture");
    let ed = std::fs::read(format!("{FIXTURES}/ed.pem")).expect("fixture");
    let sign = |alg: Algorithm, kid: Option<&str>, key: EncodingKey| {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, &claims, &key).expect("sign")
    };

    let rs256 = sign(Algorithm::RS256, Some("rsa-a"), EncodingKey::from_rsa_pem(&rsa_a).expect("pem"));
    let (status, body, _) = status_of(&app, Some(&rs256)).await;
    assert_eq!(status, StatusCode::OK, "RS256 with a known kid: {body}");
    let eddsa = sign(Algorithm::EdDSA, Some("ed-1"), EncodingKey::from_ed_pem(&ed).expect("pem"));
    let (status, body, _) = status_of(&app, Some(&eddsa)).await;
    assert_eq!(status, StatusCode::OK, "EdDSA with a known kid: {body}");

    let rotated_out = sign(Algorithm::RS256, Some("rsa-b"), EncodingKey::from_rsa_pem(&rsa_b).expect("pem"));
    assert_rejected(&app, Some(&rotated_out), "unknown kid").await;
    let forged = sign(Algorithm::RS256, Some("rsa-a"), EncodingKey::from_rsa_pem(&rsa_b).expect("pem"));
    assert_rejected(&app, Some(&forged), "signed by another key under a known kid").await;
    // HS/RS confusion: an HMAC token "signed" with the RSA public key must not verify.
    let public_pem = std::fs::read(format!("{FIXTURES}/rsa-a.pub.pem")).expect("fixture");
    let confused = sign(Algorithm::HS256, Some("rsa-a"), EncodingKey::from_secret(&public_pem));
    assert_rejected(&app, Some(&confused), "HS256 signed with the RSA public key").await;
    let hs_without_secret = sign(Algorithm::HS256, None, EncodingKey::from_secret(app.secret.as_bytes()));
    assert_rejected(&app, Some(&hs_without_secret), "HS256 when only JWKS keys are configured").await;
}

#[tokio::test]
async fn production_refuses_to_start_without_real_keys() {
    use kontakt::{
        app::Application,
        config::{Config, Environment},
    };
    let dir = tempfile::tempdir().expect("dir");
    let mut config = Config::defaults();
    config.env = Environment::Production;
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.database_url = format!("sqlite://{}?mode=rwc", dir.path().join("k.db").display()).into();
    let err = Application::build(config.clone()).await.err().expect("refused").to_string();
    assert!(err.contains("KONTAKT_JWT_ISSUER"), "{err}");
    config.jwt_issuer = Some("https://issuer".into());
    config.jwt_audience = Some("kontakt".into());
    let err = Application::build(config.clone()).await.err().expect("refused").to_string();
    assert!(err.contains("KONTAKT_JWKS_FILE"), "{err}");
    config.jwt_secret = Some("short".into());
    let err = Application::build(config).await.err().expect("refused").to_string();
    assert!(err.contains("32 bytes"), "{err}");
    assert!(!dir.path().join("k.db.devkey").exists(), "no development key is made in production");
}

async fn missing_scope_is_forbidden(app: TestApp) {
    let reader = app.token("acme", &["profiles:read"], "support");
    let (status, body) = app
        .gql(
            &reader,
            r#"mutation { upsertCustomer(input: {identities: [{kind: EMAIL, value: "a@b.dk"}]}) { created } }"#,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first_code(&body), "FORBIDDEN", "{body}");
    let nobody = app.token("acme", &[], "support");
    let (_, body) = app.gql(&nobody, "{ customers { edges { cursor } } }", json!({})).await;
    assert_eq!(first_code(&body), "FORBIDDEN", "{body}");
}

async fn tenants_never_see_each_other(app: TestApp) {
    let a = app.token("tenant-a", &["profiles:read", "profiles:write", "pii:read"], "support");
    let b = app.token("tenant-b", &["profiles:read", "profiles:write", "pii:read"], "support");
    let id = app.upsert(&a, json!([{ "kind": "EMAIL", "value": "shared@example.com" }]), Some("Ann")).await;

    let (_, body) = app.gql(&b, "query($id: UUID!) { customer(id: $id) { id givenName } }", json!({ "id": id })).await;
    assert_eq!(first_code(&body), "NOT_FOUND", "{body}");
    assert!(body["data"]["customer"].is_null());
    let (_, body) = app
        .gql(&b, r#"{ customerByIdentity(identity: {kind: EMAIL, value: "shared@example.com"}) { id } }"#, json!({}))
        .await;
    assert_eq!(first_code(&body), "NOT_FOUND", "{body}");
    let data = app.data(&b, "{ customers { edges { node { id } } } }", json!({})).await;
    assert_eq!(data["customers"]["edges"], json!([]));

    // The same identity in tenant B makes B's own customer; A's is untouched.
    let b_id = app.upsert(&b, json!([{ "kind": "EMAIL", "value": "shared@example.com" }]), Some("Bo")).await;
    assert_ne!(b_id, id);
    let data = app.data(&a, "query($id: UUID!) { customer(id: $id) { givenName } }", json!({ "id": id })).await;
    assert_eq!(data["customer"]["givenName"], "Ann");
}

const WRITE_KEY: &str = "debug-write-key-0123456789";
const METRICS_TOKEN: &str = "debug-metrics-token-0123456789";
const SUPPRESSION_KEY: &str = "debug-suppression-key-0123456789abcdef";

fn every_secret(config: &mut kontakt::config::Config) {
    config.write_keys = Some(format!("{WRITE_KEY}=acme/web").into());
    config.metrics_token = Some(METRICS_TOKEN.into());
    config.suppression_key = Some(SUPPRESSION_KEY.into());
}

/// Secrets never print (`Debug` of the running server's configuration, database and Redis URLs without their
/// password) and still do their work: the JWT secret verifies tokens, the write key tracks, the metrics token opens
/// `/metrics`.
async fn secrets_never_print_and_still_work(app: TestApp) {
    let printed = format!("{:?}", app.config);
    for secret in [app.secret.as_str(), WRITE_KEY, METRICS_TOKEN, SUPPRESSION_KEY] {
        assert!(!printed.contains(secret), "a secret is in the configuration's Debug output: {printed}");
    }
    assert!(printed.contains("[redacted]"), "{printed}");
    for url in
        std::iter::once(app.config.database_url.expose()).chain(app.config.redis_url.as_ref().map(|u| u.expose()))
    {
        if let Some(password) = url
            .split_once("://")
            .and_then(|(_, rest)| rest.split_once('@'))
            .and_then(|(userinfo, _)| userinfo.split_once(':'))
            .map(|(_, password)| password)
        {
            assert!(!printed.contains(&format!(":{password}@")), "a URL's password is in the Debug output: {printed}");
        }
    }

    let (status, body, _) = status_of(&app, Some(&app.admin())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["viewer"]["tenant"], "acme");
    let event = json!({ "type": "track", "event": "Viewed", "userId": "debug-user", "messageId": "debug-1" });
    let response =
        app.client.post(app.url("/v1/track")).basic_auth(WRITE_KEY, Some("")).json(&event).send().await.expect("track");
    assert_eq!(response.status(), StatusCode::OK, "{:?}", response.text().await);
    let response = app.client.get(app.url("/metrics")).bearer_auth(METRICS_TOKEN).send().await.expect("metrics");
    assert_eq!(response.status(), StatusCode::OK);
}

on_every_backend!(
    missing_scope_is_forbidden,
    tenants_never_see_each_other,
    secrets_never_print_and_still_work with every_secret,
);
