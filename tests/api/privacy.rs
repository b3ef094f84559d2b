//! Data-subject rights over HTTP: export is complete, erasure leaves nothing findable and suppresses the person,
//! the access log records reads, and every privacy operation is tenant-isolated and needs `privacy:admin`.
use std::{collections::HashSet, time::Duration};

use kontakt::storage::entities::{
    access_log, consent_event, customer, erasure_receipt, identity, suppression, touchpoint,
};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};

use crate::{
    common::{TestApp, first_code},
    touchpoints::{grant, record, touchpoint},
};

fn officer(app: &TestApp) -> String {
    app.token("acme", &["profiles:read", "touchpoints:read", "privacy:admin", "pii:read"], "privacy_admin")
}

async fn person(app: &TestApp, email: &str, phone: &str) -> String {
    let who = json!([{ "kind": "EMAIL", "value": email }, { "kind": "PHONE", "value": phone }, { "kind": "ANONYMOUS_ID", "value": format!("anon-{email}") }]);
    let mut survey = touchpoint(&format!("{email}-s"), who.clone(), "SURVEY_RESPONSE", 3);
    survey["feedback"] = json!({ "metric": "NPS", "score": 9, "verbatim": "great" });
    let result = record(app, json!([touchpoint(&format!("{email}-p"), who.clone(), "PAGE_VIEW", 5), survey])).await;
    let id = result["results"][0]["customerId"].as_str().expect("id").to_owned();
    grant(app, &id, "personalization", "GRANTED").await;
    grant(app, &id, "personalization", "WITHDRAWN").await;
    id
}

/// Waits until the access log (written in the background) shows at least `n` entries.
async fn access_log_of(app: &TestApp, id: &str, n: usize) -> Vec<Value> {
    for _ in 0..50 {
        let data = app
            .data(&officer(app), "query($id: UUID!) { customer(id: $id) { accessLog(first: 100) { edges { node { subject purpose categories requestId } } } } }", json!({ "id": id }))
            .await;
        let entries: Vec<Value> = data["customer"]["accessLog"]["edges"]
            .as_array()
            .expect("edges")
            .iter()
            .map(|e| e["node"].clone())
            .collect();
        if entries.len() >= n {
            return entries;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the access log did not reach {n} entries");
}

async fn reads_are_logged_with_who_why_and_the_request(app: TestApp) {
    let id = person(&app, "logged@example.com", "+4520998871").await;
    let agent = app.token("acme", &["profiles:read", "touchpoints:read"], "support");
    let response = app
        .client
        .post(app.url("/graphql"))
        .bearer_auth(&agent)
        .json(&json!({ "query": "query($id: UUID!) { customer(id: $id) { id touchpoints { edges { cursor } } } }", "variables": { "id": id } }))
        .send()
        .await
        .expect("request");
    let request_id =
        response.headers().get("x-request-id").and_then(|v| v.to_str().ok()).expect("request id").to_owned();
    // The writer puts what one request read of one customer into one entry (when both reach the same batch).
    let mut entries = access_log_of(&app, &id, 1).await;
    for _ in 0..50 {
        let categories: usize = entries.iter().filter_map(|e| e["categories"].as_array()).map(Vec::len).sum();
        if categories >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        entries = access_log_of(&app, &id, 1).await;
    }
    let by_agent: Vec<&Value> = entries.iter().filter(|e| e["requestId"] == request_id.as_str()).collect();
    let categories: HashSet<&str> = by_agent
        .iter()
        .flat_map(|e| e["categories"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(categories, HashSet::from(["profile", "touchpoints"]), "{entries:?}");
    assert!(by_agent.iter().all(|e| e["purpose"] == "support" && e["subject"] == "test-user"));
}

async fn export_holds_everything_the_database_holds(app: TestApp) {
    let id = person(&app, "export@example.com", "+4520998872").await;
    let _ = app.data(&officer(&app), "query($id: UUID!) { customer(id: $id) { id } }", json!({ "id": id })).await;
    // Let the background writer settle (counted in the database: reading through the API would log more reads).
    let db = app.db().await;
    let uuid: uuid::Uuid = id.parse().expect("uuid");
    let count = || async {
        access_log::Entity::find().filter(access_log::Column::CustomerId.eq(uuid)).all(&db).await.expect("log").len()
    };
    let mut seen = count().await;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = count().await;
        if now == seen && now > 0 {
            break;
        }
        seen = now;
    }
    let data = app.data(&officer(&app), "query($id: UUID!) { exportCustomer(id: $id) }", json!({ "id": id })).await;
    let doc = &data["exportCustomer"];
    assert_eq!(doc["customer"]["id"], id.as_str());

    let ids = |list: &Value| -> HashSet<String> {
        list.as_array().expect("list").iter().filter_map(|v| v["id"].as_str().map(str::to_owned)).collect()
    };
    let stored_identities: HashSet<String> = identity::Entity::find()
        .filter(identity::Column::CustomerId.eq(uuid))
        .all(&db)
        .await
        .expect("identities")
        .iter()
        .map(|r| r.id.to_string())
        .collect();
    let stored_touchpoints: HashSet<String> = touchpoint::Entity::find()
        .filter(touchpoint::Column::CustomerId.eq(uuid))
        .all(&db)
        .await
        .expect("touchpoints")
        .iter()
        .map(|r| r.id.to_string())
        .collect();
    let stored_consents: HashSet<String> = consent_event::Entity::find()
        .filter(consent_event::Column::CustomerId.eq(uuid))
        .all(&db)
        .await
        .expect("consents")
        .iter()
        .map(|r| r.id.to_string())
        .collect();
    // The export records itself (and the officer's reads of the log above land too): compare what preceded it.
    let stored_accesses: HashSet<String> = access_log::Entity::find()
        .filter(access_log::Column::CustomerId.eq(uuid))
        .all(&db)
        .await
        .expect("log")
        .iter()
        .filter(|r| {
            r.categories != "export"
                && r.at
                    <= doc["exportedAt"]
                        .as_str()
                        .and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok())
                        .expect("exportedAt")
        })
        .map(|r| r.id.to_string())
        .collect();
    assert_eq!(ids(&doc["identities"]), stored_identities);
    assert_eq!(ids(&doc["touchpoints"]), stored_touchpoints);
    assert_eq!(ids(&doc["consentHistory"]), stored_consents);
    assert_eq!(ids(&doc["accessLog"]), stored_accesses);
    assert_eq!((stored_identities.len(), stored_touchpoints.len(), stored_consents.len()), (3, 2, 2));
    let values: HashSet<&str> =
        doc["identities"].as_array().expect("ids").iter().filter_map(|i| i["value"].as_str()).collect();
    assert!(values.contains("export@example.com"), "export shows real values: {values:?}");
    let survey =
        doc["touchpoints"].as_array().expect("tps").iter().find(|t| t["type"] == "survey_response").expect("survey");
    assert_eq!(survey["feedback"], json!({ "metric": "nps", "score": 9, "verbatim": "great" }));
}

async fn erasure_leaves_nothing_findable_and_suppresses_the_person(app: TestApp) {
    let email = "erase.me@example.com";
    let id = person(&app, email, "+4520998877").await;
    let keep = person(&app, "keep@example.com", "+4520998873").await;
    // Warm the cache with the profile.
    let _ = app
        .data(
            &officer(&app),
            "query($id: UUID!) { customer(id: $id) { givenName identities { value } } }",
            json!({ "id": id }),
        )
        .await;

    let data = app
        .data(
            &officer(&app),
            "mutation($id: UUID!) { eraseCustomer(id: $id) { id erasedAt rows } }",
            json!({ "id": id }),
        )
        .await;
    let rows = &data["eraseCustomer"]["rows"];
    assert_eq!(
        (rows["customers"].as_i64(), rows["identities"].as_i64(), rows["touchpoints"].as_i64()),
        (Some(1), Some(3), Some(2))
    );
    assert_eq!(rows["suppressedIdentities"], 3);

    let (_, body) =
        app.gql(&officer(&app), "query($id: UUID!) { customer(id: $id) { id } }", json!({ "id": id })).await;
    assert_eq!(first_code(&body), "NOT_FOUND", "not served from a cache: {body}");

    // A later event carrying an erased identity is dropped and counted, not turned back into a person.
    let later = record(
        &app,
        json!([touchpoint(
            "after-erasure",
            json!([{ "kind": "EMAIL", "value": "Erase.Me@example.com" }]),
            "PAGE_VIEW",
            1
        )]),
    )
    .await;
    assert_eq!(later["results"][0]["status"], "SUPPRESSED", "{later}");
    assert_eq!(later["created"], 0);
    let (_, body) = app
        .gql(
            &officer(&app),
            r#"{ customerByIdentity(identity: {kind: EMAIL, value: "erase.me@example.com"}) { id } }"#,
            json!({}),
        )
        .await;
    assert_eq!(first_code(&body), "NOT_FOUND");

    // Scan every table for anything that identifies the person.
    let db = app.db().await;
    let needles = [email, "+4520998877", "anon-erase.me@example.com", &id];
    let mut dump = String::new();
    dump.push_str(&format!("{:?}", customer::Entity::find().all(&db).await.expect("customers")));
    dump.push_str(&format!("{:?}", identity::Entity::find().all(&db).await.expect("identities")));
    dump.push_str(&format!("{:?}", touchpoint::Entity::find().all(&db).await.expect("touchpoints")));
    dump.push_str(&format!("{:?}", consent_event::Entity::find().all(&db).await.expect("consents")));
    dump.push_str(&format!("{:?}", suppression::Entity::find().all(&db).await.expect("suppressions")));
    dump.push_str(&format!("{:?}", erasure_receipt::Entity::find().all(&db).await.expect("receipts")));
    for needle in needles.iter().take(3) {
        assert!(!dump.contains(needle), "{needle} is still stored");
    }
    assert!(!format!("{:?}", customer::Entity::find().all(&db).await.expect("customers")).contains(&id));
    assert!(dump.contains(&keep), "other customers are untouched");
    if app.uses_redis {
        let client = redis::Client::open(app.config.redis_url.as_ref().expect("redis url").expose()).expect("redis");
        let mut conn = client.get_multiplexed_async_connection().await.expect("redis connection");
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", app.config.redis_prefix))
            .query_async(&mut conn)
            .await
            .expect("keys");
        for key in keys {
            assert!(!key.contains(&id), "cache key {key} survived");
            let value: Option<Vec<u8>> = redis::cmd("GET").arg(&key).query_async(&mut conn).await.unwrap_or(None);
            let text = String::from_utf8_lossy(&value.unwrap_or_default()).to_string();
            for needle in &needles {
                assert!(!text.contains(needle), "{needle} is still cached under {key}");
            }
        }
    }
}

async fn privacy_operations_need_privacy_admin_and_stay_in_their_tenant(app: TestApp) {
    let id = person(&app, "guarded@example.com", "+4520998874").await;
    let agent = app.token("acme", &["profiles:read", "touchpoints:read", "pii:read"], "support");
    for (query, name) in [
        ("query($id: UUID!) { exportCustomer(id: $id) }", "export"),
        ("mutation($id: UUID!) { eraseCustomer(id: $id) { id } }", "erase"),
        ("query($id: UUID!) { customer(id: $id) { accessLog { edges { cursor } } } }", "access log"),
    ] {
        let (_, body) = app.gql(&agent, query, json!({ "id": id })).await;
        assert_eq!(first_code(&body), "FORBIDDEN", "{name}: {body}");
        let stranger = app.token("other", &["profiles:read", "privacy:admin"], "privacy_admin");
        let (_, body) = app.gql(&stranger, query, json!({ "id": id })).await;
        assert_eq!(first_code(&body), "NOT_FOUND", "{name} across tenants: {body}");
    }
    let data = app.data(&officer(&app), "query($id: UUID!) { customer(id: $id) { id } }", json!({ "id": id })).await;
    assert_eq!(data["customer"]["id"], id.as_str(), "nothing was erased by the refused calls");
}

/// A request naming an old, merged-away id reaches the whole person: the export is the survivor's, with everything
/// the merge moved to it, and the erasure takes the survivor and the stub, not the stub alone.
async fn a_merged_away_id_exports_and_erases_the_whole_person(app: TestApp) {
    let survivor = person(&app, "stays@example.com", "+4520998801").await;
    let merged = person(&app, "goes@example.com", "+4520998802").await;
    let agent = app.token("acme", &["profiles:read", "profiles:write"], "support");
    app.data(
        &agent,
        "mutation($s: UUID!, $m: UUID!) { mergeCustomers(survivorId: $s, mergedId: $m, note: \"same person\") { id } }",
        json!({ "s": survivor, "m": merged }),
    )
    .await;

    let data = app.data(&officer(&app), "query($id: UUID!) { exportCustomer(id: $id) }", json!({ "id": merged })).await;
    let doc = &data["exportCustomer"];
    assert_eq!(doc["requestedId"], merged.as_str());
    assert_eq!(doc["customer"]["id"], survivor.as_str(), "the export is the person's, not the stub's");
    let emails: HashSet<&str> = doc["identities"]
        .as_array()
        .expect("identities")
        .iter()
        .filter(|i| i["kind"].as_str().is_some_and(|k| k.eq_ignore_ascii_case("email")))
        .filter_map(|i| i["value"].as_str())
        .collect();
    assert_eq!(emails, HashSet::from(["stays@example.com", "goes@example.com"]));
    assert_eq!(doc["touchpoints"].as_array().map(Vec::len), Some(4), "both sides' touchpoints");

    app.data(&officer(&app), "mutation($id: UUID!) { eraseCustomer(id: $id) { id } }", json!({ "id": merged })).await;
    for id in [&survivor, &merged] {
        let (_, body) =
            app.gql(&officer(&app), "query($id: UUID!) { customer(id: $id) { id } }", json!({ "id": id })).await;
        assert_eq!(first_code(&body), "NOT_FOUND", "{id} is gone: {body}");
    }
    let ids = [survivor.parse::<uuid::Uuid>().expect("uuid"), merged.parse::<uuid::Uuid>().expect("uuid")];
    let left = touchpoint::Entity::find()
        .filter(touchpoint::Column::CustomerId.is_in(ids))
        .all(&app.db().await)
        .await
        .expect("query");
    assert!(left.is_empty(), "no touchpoint of the person is left");
}

/// A read through a merged-away id reads the person it was merged into: it is logged under that person, so the
/// person's access log and export show it.
async fn a_read_through_a_merged_away_id_is_logged_under_the_person(app: TestApp) {
    let survivor = person(&app, "kept@example.com", "+4520998811").await;
    let merged = person(&app, "gone@example.com", "+4520998812").await;
    let agent = app.token("acme", &["profiles:read", "profiles:write"], "support");
    app.data(
        &agent,
        "mutation($s: UUID!, $m: UUID!) { mergeCustomers(survivorId: $s, mergedId: $m) { id } }",
        json!({ "s": survivor, "m": merged }),
    )
    .await;
    let response = app
        .client
        .post(app.url("/graphql"))
        .bearer_auth(&agent)
        .json(&json!({ "query": "query($id: UUID!) { customer(id: $id) { id } }", "variables": { "id": merged } }))
        .send()
        .await
        .expect("request");
    let request_id =
        response.headers().get("x-request-id").and_then(|v| v.to_str().ok()).expect("request id").to_owned();
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["data"]["customer"]["id"], survivor.as_str(), "{body}");

    let mut found = false;
    for _ in 0..50 {
        let entries = access_log_of(&app, &survivor, 0).await;
        if entries.iter().any(|e| e["requestId"] == request_id.as_str()) {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(found, "the person's access log shows the read through {merged}");
    let export =
        app.data(&officer(&app), "query($id: UUID!) { exportCustomer(id: $id) }", json!({ "id": survivor })).await;
    let logged = export["exportCustomer"]["accessLog"].as_array().expect("access log");
    assert!(logged.iter().any(|e| e["requestId"] == request_id.as_str()), "the person's export shows it: {logged:?}");
}

on_every_backend!(
    a_read_through_a_merged_away_id_is_logged_under_the_person,
    reads_are_logged_with_who_why_and_the_request,
    export_holds_everything_the_database_holds,
    erasure_leaves_nothing_findable_and_suppresses_the_person,
    a_merged_away_id_exports_and_erases_the_whole_person,
    privacy_operations_need_privacy_admin_and_stay_in_their_tenant,
);
