//! Two Kontakt instances over one PostgreSQL and one Redis, as two machines behind one address (issue 13, "more than
//! one machine"): what one writes, the other's subscribers receive; a withdrawal on one is refused at once on the
//! other, cache included; a change is evaluated and announced once, not once per instance's worker. Runs when
//! `TEST_DATABASE_URL` and `TEST_REDIS_URL` are set (CI always sets them).
use std::time::Duration;

use chrono::Utc;
use serde_json::json;

use crate::{
    common::{Backend, TestApp, first_code, spawn},
    derived_changes::{SEGMENT, consenting, define, purchase, settle, within_days},
    subscriptions::{next_json, ready_socket, send},
    touchpoints::{grant, record, touchpoint},
};

async fn pair() -> Option<(TestApp, TestApp)> {
    let first = spawn(Backend::Postgres).await?;
    if !first.uses_redis {
        // Without Redis each instance's pub/sub is its own: there is no installation of two to test.
        return None;
    }
    let second = first.second_instance().await;
    Some((first, second))
}

#[tokio::test]
async fn two_instances_tell_the_same_truth() {
    let Some((a, b)) = pair().await else { return };
    let officer = a.token(
        "acme",
        &["profiles:read", "profiles:write", "touchpoints:write", "consent:write", "pii:read", "privacy:admin"],
        "privacy_admin",
    );

    // A subscriber on B hears writes made on A.
    let mut socket = ready_socket(&b, &officer).await;
    let query = "subscription { customerChanges { customerId kind } }";
    send(&mut socket, json!({ "type": "subscribe", "id": "c", "payload": { "query": query } })).await;
    let warm = async {
        for i in 0..40 {
            a.upsert(&officer, json!([{ "kind": "EMAIL", "value": format!("two{i}@example.com") }]), None).await;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    };
    let heard = tokio::select! {
        first = next_json(&mut socket) => first.expect("an event"),
        () = warm => panic!("B's subscriber heard nothing of A's writes"),
    };
    assert_eq!(heard["type"], "next", "{heard}");
    assert_eq!(heard["payload"]["data"]["customerChanges"]["kind"], "CREATED", "{heard}");

    // A withdrawal recorded on A is refused on B's very next read, though B had just served (and cached) the profile.
    let created =
        record(&a, json!([touchpoint("w-1", json!([{ "kind": "EMAIL", "value": "w@example.com" }]), "PAGE_VIEW", 1)]))
            .await;
    let id = created["results"][0]["customerId"].as_str().expect("id").to_owned();
    grant(&a, &id, "personalization", "GRANTED").await;
    let reader = b.token("acme", &["profiles:read", "touchpoints:read"], "personalization");
    let profile = "query($id: UUID!) { customer(id: $id) { id touchpoints(first: 5) { edges { node { type } } } } }";
    for _ in 0..2 {
        let (_, body) = b.gql(&reader, profile, json!({ "id": id })).await;
        assert_eq!(body["data"]["customer"]["id"], id.as_str(), "{body}");
    }
    grant(&a, &id, "personalization", "WITHDRAWN").await;
    let (_, body) = b.gql(&reader, profile, json!({ "id": id })).await;
    assert!(body["data"]["customer"]["touchpoints"].is_null(), "{body}");
    assert_eq!(body["errors"][0]["path"], json!(["customer", "touchpoints"]), "{body}");
    assert_eq!(first_code(&body), "CONSENT_REQUIRED", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["reason"], "WITHDRAWN", "{body}");

    // Both instances' derived-state workers watch the same queue; a purchase recorded on B enters the segment once.
    define(&a, SEGMENT, json!({ "key": "buyer", "purpose": "personalization", "condition": within_days(30) })).await;
    let buyer = consenting(&a, "buyer@example.com").await;
    record(&b, json!([purchase("buyer@example.com", "p-1", Utc::now(), 10.0)])).await;
    settle(&a).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    settle(&b).await;
    use sea_orm::{ConnectionTrait, Statement};
    let db = a.db().await;
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "SELECT COUNT(*) AS n FROM derived_events WHERE customer_id = $1 AND kind = 'SEGMENT_ENTERED'",
            [uuid::Uuid::parse_str(&buyer).expect("uuid").into()],
        ))
        .await
        .expect("count")
        .expect("a row");
    assert_eq!(row.try_get::<i64>("", "n").expect("n"), 1, "one entry, announced once");
}
