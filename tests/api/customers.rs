//! Customers and identities end to end: upsert, reads, normalisation, masking, paging, concurrency, no N+1.
use std::collections::HashSet;

use serde_json::{Value, json};

use crate::common::{TestApp, first_code};

const CUSTOMER: &str =
    "query($id: UUID!) { customer(id: $id) { id givenName familyName identities { kind value source } } }";

async fn upsert_then_read_by_any_identity(app: TestApp) {
    let token = app.admin();
    let upsert = "mutation($input: UpsertCustomerInput!) { upsertCustomer(input: $input) { created customer { id givenName } } }";
    let first = app
        .data(
            &token,
            upsert,
            json!({ "input": { "identities": [{ "kind": "EMAIL", "value": " Ann.Larsen@Example.COM " }], "givenName": "Ann" } }),
        )
        .await;
    assert_eq!(first["upsertCustomer"]["created"], true);
    let id = first["upsertCustomer"]["customer"]["id"].as_str().expect("id").to_owned();

    // Same person, email written differently, plus a phone in national format: attaches, does not create.
    let second = app
        .data(
            &token,
            upsert,
            json!({ "input": { "identities": [
                { "kind": "EMAIL", "value": "ann.larsen@example.com" },
                { "kind": "PHONE", "value": "20 12 34 56" },
                { "kind": "EXTERNAL_ID", "value": "u-77", "source": "webshop" }
            ], "familyName": "Larsen" } }),
        )
        .await;
    assert_eq!(second["upsertCustomer"]["created"], false);
    assert_eq!(second["upsertCustomer"]["customer"]["id"], id.as_str());

    let data = app.data(&token, CUSTOMER, json!({ "id": id })).await;
    let customer = &data["customer"];
    assert_eq!(customer["givenName"], "Ann");
    assert_eq!(customer["familyName"], "Larsen");
    let identities: HashSet<(String, String)> = customer["identities"]
        .as_array()
        .expect("identities")
        .iter()
        .map(|i| {
            (i["kind"].as_str().unwrap_or_default().to_owned(), i["value"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    let expected: HashSet<(String, String)> =
        [("EMAIL", "ann.larsen@example.com"), ("PHONE", "+4520123456"), ("EXTERNAL_ID", "u-77")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
    assert_eq!(identities, expected);

    for identity in [
        json!({ "kind": "PHONE", "value": "+45 20 12 34 56" }),
        json!({ "kind": "EMAIL", "value": "ANN.LARSEN@example.com" }),
        json!({ "kind": "EXTERNAL_ID", "value": "u-77", "source": "webshop" }),
    ] {
        let data = app
            .data(
                &token,
                "query($i: IdentityInput!) { customerByIdentity(identity: $i) { id } }",
                json!({ "i": identity }),
            )
            .await;
        assert_eq!(data["customerByIdentity"]["id"], id.as_str(), "{identity}");
    }
    let (_, body) = app
        .gql(
            &token,
            "query($i: IdentityInput!) { customerByIdentity(identity: $i) { id } }",
            json!({ "i": { "kind": "EXTERNAL_ID", "value": "u-77", "source": "crm" } }),
        )
        .await;
    assert_eq!(first_code(&body), "NOT_FOUND", "an external id belongs to its source: {body}");
}

async fn personal_fields_are_masked_without_pii_read(app: TestApp) {
    let id = app
        .upsert(
            &app.admin(),
            json!([{ "kind": "EMAIL", "value": "jane@example.com" }, { "kind": "PHONE", "value": "+4520123456" }]),
            Some("Jane"),
        )
        .await;
    let agent = app.token("acme", &["profiles:read"], "support");
    let data = app.data(&agent, CUSTOMER, json!({ "id": id })).await;
    assert_eq!(data["customer"]["givenName"], "J***");
    let values: HashSet<&str> = data["customer"]["identities"]
        .as_array()
        .expect("identities")
        .iter()
        .filter_map(|i| i["value"].as_str())
        .collect();
    assert_eq!(values, HashSet::from(["j***@example.com", "+45******56"]));
}

async fn bad_input_names_the_field_and_stores_nothing(app: TestApp) {
    let token = app.admin();
    let upsert = "mutation($input: UpsertCustomerInput!) { upsertCustomer(input: $input) { created } }";
    for (identities, field) in [
        (json!([{ "kind": "EMAIL", "value": "not-an-email" }]), "identities[0].value"),
        (
            json!([{ "kind": "EMAIL", "value": "ok@example.com" }, { "kind": "PHONE", "value": "12" }]),
            "identities[1].value",
        ),
        (json!([{ "kind": "EXTERNAL_ID", "value": "x" }]), "identities[0].value"),
        (json!([]), "identities"),
    ] {
        let (_, body) = app.gql(&token, upsert, json!({ "input": { "identities": identities } })).await;
        assert_eq!(first_code(&body), "VALIDATION", "{body}");
        assert_eq!(body["errors"][0]["extensions"]["field"], field, "{body}");
    }
    let data = app.data(&token, "{ customers { edges { node { id } } } }", json!({})).await;
    assert_eq!(data["customers"]["edges"], json!([]), "nothing stored by rejected writes");
}

async fn customers_page_by_cursor_without_gaps_or_repeats(app: TestApp) {
    let token = app.admin();
    let mut created = Vec::new();
    for i in 0..7 {
        let mut identities = vec![json!({ "kind": "EMAIL", "value": format!("p{i}@example.com") })];
        if i % 2 == 0 {
            identities.push(json!({ "kind": "LOYALTY_ID", "value": format!("L-{i}") }));
        }
        created.push(app.upsert(&token, Value::Array(identities), None).await);
    }
    let query =
        "query($after: String, $filter: CustomerFilterInput) { customers(first: 3, after: $after, filter: $filter) {
        edges { cursor node { id } } pageInfo { hasNextPage endCursor } } }";
    let mut seen = Vec::new();
    let mut after = Value::Null;
    loop {
        let data = app.data(&token, query, json!({ "after": after })).await;
        let conn = &data["customers"];
        seen.extend(
            conn["edges"]
                .as_array()
                .expect("edges")
                .iter()
                .map(|e| e["node"]["id"].as_str().unwrap_or_default().to_owned()),
        );
        if conn["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = conn["pageInfo"]["endCursor"].clone();
        assert!(seen.len() <= created.len(), "paging does not end");
    }
    assert_eq!(seen, created, "every customer once, in creation order");

    let data = app.data(&token, query, json!({ "filter": { "hasIdentityKind": "LOYALTY_ID" } })).await;
    let count = data["customers"]["edges"].as_array().map(Vec::len);
    assert_eq!(count, Some(3));
    assert_eq!(data["customers"]["pageInfo"]["hasNextPage"], true);
}

async fn fifty_concurrent_upserts_sharing_an_email_make_one_customer(app: TestApp) {
    let token = app.admin();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let client = app.client.clone();
        let url = app.url("/graphql");
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let body = json!({
                "query": "mutation($input: UpsertCustomerInput!) { upsertCustomer(input: $input) { customer { id } } }",
                "variables": { "input": { "identities": [
                    { "kind": "EMAIL", "value": "Same.Person@example.com" },
                    { "kind": "DEVICE_ID", "value": format!("device-{i}") }
                ] } }
            });
            let response: Value = client
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .expect("request")
                .json()
                .await
                .expect("json");
            assert!(response.get("errors").is_none(), "{response}");
            response["data"]["upsertCustomer"]["customer"]["id"].as_str().expect("id").to_owned()
        }));
    }
    let mut ids = HashSet::new();
    for task in tasks {
        ids.insert(task.await.expect("task"));
    }
    assert_eq!(ids.len(), 1, "one customer, got {ids:?}");
    let data =
        app.data(&token, "{ customers(first: 100) { edges { node { id identities { kind } } } } }", json!({})).await;
    let edges = data["customers"]["edges"].as_array().expect("edges");
    assert_eq!(edges.len(), 1);
    assert_eq!(edges[0]["node"]["identities"].as_array().map(Vec::len), Some(51), "1 email + 50 devices");
}

async fn a_page_of_customers_with_identities_takes_a_fixed_number_of_statements(app: TestApp) {
    let token = app.admin();
    for i in 0..12 {
        app.upsert(&token, json!([{ "kind": "EMAIL", "value": format!("n{i}@example.com") }, { "kind": "CRM_ID", "value": format!("C{i}") }]), None)
            .await;
    }
    let query =
        |n: usize| format!("{{ customers(first: {n}) {{ edges {{ node {{ id identities {{ kind value }} }} }} }} }}");
    let before = app.statements().await;
    let data = app.data(&token, &query(2), json!({})).await;
    assert_eq!(data["customers"]["edges"].as_array().map(Vec::len), Some(2));
    let small = app.statements().await - before;
    let before = app.statements().await;
    let data = app.data(&token, &query(12), json!({})).await;
    assert_eq!(data["customers"]["edges"].as_array().map(Vec::len), Some(12));
    let large = app.statements().await - before;
    assert_eq!(small, large, "statements must not grow with the page size (N+1)");
    assert!(large <= 2, "one for customers, one for all their identities; got {large}");
}

async fn a_cached_profile_is_refreshed_by_an_update(app: TestApp) {
    let token = app.admin();
    let id = app.upsert(&token, json!([{ "kind": "EMAIL", "value": "cache@example.com" }]), Some("Old")).await;
    let data = app.data(&token, CUSTOMER, json!({ "id": id })).await;
    assert_eq!(data["customer"]["givenName"], "Old");
    app.upsert(&token, json!([{ "kind": "EMAIL", "value": "cache@example.com" }]), Some("New")).await;
    let data = app.data(&token, CUSTOMER, json!({ "id": id })).await;
    assert_eq!(data["customer"]["givenName"], "New", "the update invalidated the cached profile");
}

on_every_backend!(
    upsert_then_read_by_any_identity,
    personal_fields_are_masked_without_pii_read,
    bad_input_names_the_field_and_stores_nothing,
    customers_page_by_cursor_without_gaps_or_repeats,
    fifty_concurrent_upserts_sharing_an_email_make_one_customer,
    a_page_of_customers_with_identities_takes_a_fixed_number_of_statements,
    a_cached_profile_is_refreshed_by_an_update,
);
