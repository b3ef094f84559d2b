//! Tenant-wide work runs as a job: the mutation answers at once with a job to poll, the runner works in batches
//! with a checkpoint, and a job left RUNNING by a stopped instance is resumed from its checkpoint.
use chrono::{Duration, Utc};
use kontakt::storage::entities::job;
use sea_orm::{ActiveModelTrait, Set};
use serde_json::json;

use crate::{
    common::{JOB, TestApp, first_code},
    resolution::{email, lower_limit, values_of},
};

/// A customer holding four emails.
async fn four_emails(app: &TestApp, prefix: &str) -> String {
    let first = format!("{prefix}1@example.com");
    let id = app.upsert(&app.admin(), json!([email(&first)]), None).await;
    for n in 2..=4 {
        let both = json!([email(&first), email(&format!("{prefix}{n}@example.com"))]);
        assert_eq!(app.upsert(&app.admin(), both, None).await, id);
    }
    id
}

fn writer(app: &TestApp, tenant: &str) -> String {
    app.token(tenant, &["profiles:read", "profiles:write"], "support")
}

async fn a_reresolution_job_runs_to_the_end_and_is_listed(app: TestApp) {
    let token = writer(&app, "acme");
    let customer = four_emails(&app, "job").await;
    lower_limit(&app, &token, "EMAIL", 2).await;
    let queued =
        app.data(&token, "mutation { reresolveCustomers { id kind state createdAt finishedAt } }", json!({})).await;
    let queued = &queued["reresolveCustomers"];
    assert_eq!(queued["kind"], "RERESOLVE_CUSTOMERS");
    assert!(queued["state"] == "QUEUED" || queued["state"] == "RUNNING", "{queued}");
    assert!(queued["createdAt"].is_string() && queued["finishedAt"].is_null(), "{queued}");
    let id = queued["id"].as_str().expect("id");
    let job = app.wait_for_job(&token, id).await;
    assert_eq!(job["state"], "SUCCEEDED", "{job}");
    assert_eq!(job["progress"], json!({ "done": 1, "total": 1 }));
    assert_eq!(
        job["result"],
        json!({ "identitiesRemoved": 0, "mergesUndone": 0, "mergesKept": 0, "identitiesUnlinked": 2 })
    );
    assert!(job["error"].is_null() && job["startedAt"].is_string() && job["finishedAt"].is_string(), "{job}");
    assert_eq!(values_of(&app, &customer, "EMAIL").await, ["job1@example.com", "job2@example.com"]);

    // A second job has nothing left to do; the list pages newest first.
    let second = app.run_job(&token, "mutation { reresolveCustomers { id } }").await;
    assert_eq!(second["result"]["identitiesUnlinked"], 0);
    const LIST: &str = "query($after: String) { jobs(first: 1, after: $after) {
        edges { cursor node { id } } pageInfo { hasNextPage } } }";
    let page = app.data(&token, LIST, json!({ "after": null })).await;
    assert_eq!(page["jobs"]["edges"][0]["node"]["id"], second["id"]);
    assert_eq!(page["jobs"]["pageInfo"]["hasNextPage"], true);
    let cursor = page["jobs"]["edges"][0]["cursor"].clone();
    let next = app.data(&token, LIST, json!({ "after": cursor })).await;
    assert_eq!(next["jobs"]["edges"][0]["node"]["id"], id);
    assert_eq!(next["jobs"]["pageInfo"]["hasNextPage"], false);
}

async fn a_job_left_running_by_a_stopped_instance_resumes_after_its_checkpoint(app: TestApp) {
    let token = writer(&app, "acme");
    let first = four_emails(&app, "p").await;
    let second = four_emails(&app, "q").await;
    assert!(first < second, "ids sort by creation");
    lower_limit(&app, &token, "EMAIL", 2).await;
    // An instance died after the first customer's batch: RUNNING, heartbeat an hour old, checkpoint on `first`.
    let id = uuid::Uuid::now_v7();
    let long_ago = Utc::now() - Duration::hours(2);
    job::ActiveModel {
        id: Set(id),
        tenant: Set("acme".into()),
        kind: Set("reresolve_customers".into()),
        state: Set("RUNNING".into()),
        progress: Set(json!({ "done": 1, "total": 2 })),
        checkpoint: Set(Some(first.clone())),
        result: Set(Some(
            json!({ "identitiesRemoved": 0, "mergesUndone": 0, "mergesKept": 0, "identitiesUnlinked": 0 }),
        )),
        error: Set(None),
        requested_by: Set("test-user".into()),
        runner: Set(Some(uuid::Uuid::new_v4())),
        created_at: Set(long_ago),
        started_at: Set(Some(long_ago)),
        finished_at: Set(None),
        heartbeat_at: Set(Some(Utc::now() - Duration::hours(1))),
    }
    .insert(&app.db().await)
    .await
    .expect("insert the interrupted job");

    let job = app.wait_for_job(&token, &id.to_string()).await;
    assert_eq!(job["state"], "SUCCEEDED", "{job}");
    assert_eq!(job["progress"], json!({ "done": 2, "total": 2 }));
    assert_eq!(job["result"]["identitiesUnlinked"], 2, "only the customer after the checkpoint: {job}");
    assert_eq!(values_of(&app, &first, "EMAIL").await.len(), 4, "the checkpointed customer is not redone");
    assert_eq!(values_of(&app, &second, "EMAIL").await, ["q1@example.com", "q2@example.com"]);
}

async fn jobs_belong_to_their_tenant(app: TestApp) {
    let token = writer(&app, "acme");
    let job = app.run_job(&token, "mutation { reresolveCustomers { id } }").await;
    let id = job["id"].clone();

    let other = writer(&app, "other");
    let (_, body) = app.gql(&other, JOB, json!({ "id": id })).await;
    assert_eq!(first_code(&body), "NOT_FOUND", "{body}");
    assert_eq!(body["data"]["job"], json!(null));
    let theirs = app.data(&other, "{ jobs { edges { node { id } } } }", json!({})).await;
    assert_eq!(theirs["jobs"]["edges"], json!([]));

    let (_, body) = app.gql(&token, JOB, json!({ "id": uuid::Uuid::now_v7() })).await;
    assert_eq!(first_code(&body), "NOT_FOUND", "{body}");
    let (_, body) = app.gql(&token, JOB, json!({ "id": "not-a-uuid" })).await;
    assert_ne!(first_code(&body), "<none>", "{body}");
    assert!(body.get("data").is_none_or(|d| d["job"].is_null()), "{body}");
    let (_, body) = app.gql(&token, "{ jobs(after: \"nonsense\") { edges { cursor } } }", json!({})).await;
    assert_eq!(first_code(&body), "VALIDATION", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["field"], "after");

    let reader = app.token("acme", &["profiles:read"], "support");
    let (_, body) = app.gql(&reader, JOB, json!({ "id": id })).await;
    assert_eq!(first_code(&body), "FORBIDDEN", "{body}");
    let (_, body) = app.gql(&reader, "mutation { reresolveCustomers { id } }", json!({})).await;
    assert_eq!(first_code(&body), "FORBIDDEN", "{body}");
}

on_every_backend!(
    a_reresolution_job_runs_to_the_end_and_is_listed,
    a_job_left_running_by_a_stopped_instance_resumes_after_its_checkpoint,
    jobs_belong_to_their_tenant,
);
