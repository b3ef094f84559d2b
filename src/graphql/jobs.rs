//! Job resolvers: poll one job, list the tenant's jobs.
use async_graphql::{
    Context, Json, Object, SimpleObject,
    connection::{Connection, Edge},
};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::request;
use crate::{
    error::GqlResult,
    jobs::{self, Job, JobKind, JobState},
    pagination::{PageRequest, encode_cursor},
};

/// Tenant-wide work running in the background (started by a mutation such as `reresolveCustomers`).
pub struct JobView(pub Job);

/// How far a job is: items done of the items there were when it started.
#[derive(SimpleObject)]
#[graphql(name = "JobProgress")]
pub struct JobProgressView {
    done: i32,
    total: i32,
}

#[Object(name = "Job")]
impl JobView {
    async fn id(&self) -> Uuid {
        self.0.id
    }

    async fn kind(&self) -> JobKind {
        self.0.kind
    }

    async fn state(&self) -> JobState {
        self.0.state
    }

    async fn progress(&self) -> JobProgressView {
        let n = |v: u64| i32::try_from(v).unwrap_or(i32::MAX);
        JobProgressView { done: n(self.0.progress.done), total: n(self.0.progress.total) }
    }

    /// What the job did: its counts so far while it runs, all of them once it SUCCEEDED.
    async fn result(&self) -> Option<Json<serde_json::Value>> {
        self.0.result.clone().map(Json)
    }

    /// Why it FAILED.
    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }

    /// Who asked for it: the token's subject, or `kontakt:schedule` for a job the schedule queued (a score-model
    /// refit, `KONTAKT_SCORE_REFIT_SECS`).
    async fn requested_by(&self) -> &str {
        &self.0.requested_by
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.0.started_at
    }

    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.0.finished_at
    }
}

#[derive(Default)]
pub struct JobsQuery;

#[Object]
impl JobsQuery {
    /// One of the tenant's jobs (`NOT_FOUND` for another tenant's). Needs `profiles:write`.
    async fn job(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Option<JobView>> {
        let rc = request(ctx)?;
        Ok(Some(JobView(jobs::get(&rc.caller, &rc.services, id).await.gql()?)))
    }

    /// The tenant's jobs, newest first, keyset-paged. Needs `profiles:write`.
    #[graphql(complexity = "first.unwrap_or(20).max(0) as usize * child_complexity + 1")]
    async fn jobs(
        &self,
        ctx: &Context<'_>,
        #[graphql(validator(minimum = 0, maximum = 100))] first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, JobView>> {
        let rc = request(ctx)?;
        let page = PageRequest::parse(first, after.as_deref()).gql()?;
        let page = jobs::list(&rc.caller, &rc.services, page).await.gql()?;
        let mut connection = Connection::new(page.has_previous_page, page.has_next_page);
        connection.edges.extend(page.items.into_iter().map(|job| Edge::new(encode_cursor(job.id), JobView(job))));
        Ok(connection)
    }
}
