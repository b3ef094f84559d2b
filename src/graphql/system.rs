//! `viewer`: who the API thinks the caller is (handy for frontends and for debugging tokens).
use async_graphql::{Context, Object, SimpleObject};

use super::request;

#[derive(Default)]
pub struct SystemQuery;

/// The authenticated caller.
#[derive(SimpleObject)]
pub struct Viewer {
    tenant: String,
    subject: String,
    scopes: Vec<String>,
    purpose: String,
}

#[Object]
impl SystemQuery {
    /// The caller as the bearer token describes it.
    async fn viewer(&self, ctx: &Context<'_>) -> async_graphql::Result<Viewer> {
        let caller = &request(ctx)?.caller;
        Ok(Viewer {
            tenant: caller.tenant().to_string(),
            subject: caller.subject().to_owned(),
            scopes: caller.scopes().map(|s| s.as_str().to_owned()).collect(),
            purpose: caller.purpose().as_str().to_owned(),
        })
    }
}
