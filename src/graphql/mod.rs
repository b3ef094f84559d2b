//! The GraphQL layer: schema assembly, request context, thin resolvers and view types. No rules live here.
mod actions;
mod cases;
mod cx;
mod derived;
mod document;
mod guard;
mod jobs;
mod loaders;
mod privacy;
mod profiles;
mod records;
mod scores;
mod system;
mod touchpoint_views;
mod touchpoints;
mod views;

use async_graphql::{Context, ErrorExtensions, MergedObject, MergedSubscription, Schema};

pub use document::{OperationKind, RequestDocument, inspect, operation_kind};
pub use loaders::{
    CaseHistoryLoader, ConsentHistoryLoader, CustomerCasesLoader, IdentityLoader, MergeHistoryLoader,
    RecentTouchpointsLoader, SourceRecordsLoader, TraitHistoryLoader, TraitsLoader,
};

use crate::{auth::Caller, config::Config, error::ApiError, services::Services};

#[derive(MergedObject, Default)]
#[graphql(name = "Query")]
pub struct QueryRoot(
    profiles::ProfilesQuery,
    records::RecordsQuery,
    touchpoints::TouchpointsQuery,
    privacy::PrivacyQuery,
    system::SystemQuery,
    jobs::JobsQuery,
    cx::CxQuery,
    scores::DefinitionsQuery,
    actions::ActionsQuery,
    cases::CasesQuery,
    derived::WebhooksQuery,
);

#[derive(MergedObject, Default)]
#[graphql(name = "Mutation")]
pub struct MutationRoot(
    profiles::ProfilesMutation,
    records::RecordsMutation,
    touchpoints::TouchpointsMutation,
    touchpoints::ConsentMutation,
    privacy::PrivacyMutation,
    cx::CxMutation,
    scores::ScoresMutation,
    scores::DefinitionsMutation,
    actions::ActionsMutation,
    cases::CasesMutation,
    derived::WebhooksMutation,
);

#[derive(MergedSubscription, Default)]
#[graphql(name = "Subscription")]
pub struct SubscriptionRoot(
    profiles::ProfilesSubscription,
    touchpoints::TouchpointsSubscription,
    cases::CasesSubscription,
    derived::DerivedSubscription,
);

pub type KontaktSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// What every resolver gets: the caller and the services. Put into each request by the HTTP or WebSocket edge.
#[derive(Clone)]
pub struct RequestContext {
    pub caller: Caller,
    pub services: Services,
}

impl RequestContext {
    /// The request data async-graphql needs for one operation: this context and its own (never shared) loaders.
    pub fn into_data(self) -> async_graphql::Data {
        use async_graphql::dataloader::DataLoader;
        let mut data = async_graphql::Data::default();
        let (caller, services) = (&self.caller, &self.services);
        data.insert(DataLoader::new(IdentityLoader::new(caller.tenant().clone(), services.clone()), tokio::spawn));
        data.insert(DataLoader::new(RecentTouchpointsLoader::new(caller.clone(), services.clone()), tokio::spawn));
        data.insert(DataLoader::new(TraitsLoader::new(caller.clone(), services.clone()), tokio::spawn));
        data.insert(DataLoader::new(TraitHistoryLoader::new(caller.clone(), services.clone()), tokio::spawn));
        data.insert(DataLoader::new(SourceRecordsLoader::new(caller.clone(), services.clone()), tokio::spawn));
        data.insert(DataLoader::new(MergeHistoryLoader::new(caller.clone(), services.clone()), tokio::spawn));
        data.insert(DataLoader::new(ConsentHistoryLoader::new(caller.clone(), services.clone()), tokio::spawn));
        data.insert(DataLoader::new(CustomerCasesLoader::new(caller.clone(), services.clone()), tokio::spawn));
        data.insert(DataLoader::new(CaseHistoryLoader::new(caller.clone(), services.clone()), tokio::spawn));
        data.insert(self);
        data
    }
}

/// The operation's consent read session (put in by the execution path's `Guard`).
pub(crate) fn session<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a crate::consent::ConsentSession> {
    ctx.data_opt::<crate::consent::ConsentSession>().ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!("no consent session: the Guard extension is missing")).extend()
    })
}

/// A per-request DataLoader, or an internal error (logged) when an entry point forgot to put the loaders in.
pub(crate) fn loader<'a, T: Send + Sync + 'static>(ctx: &Context<'a>) -> async_graphql::Result<&'a T> {
    ctx.data_opt::<T>().ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!("no {} in the request: the loaders are missing", std::any::type_name::<T>()))
            .extend()
    })
}

/// The request context, or `UNAUTHENTICATED` when an entry point forgot to put one in.
pub(crate) fn request<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a RequestContext> {
    ctx.data_opt::<RequestContext>().ok_or_else(|| ApiError::Unauthenticated("authentication required".into()).extend())
}

/// The served schema with the configured limits. Needs no database: `kontakt schema` prints its SDL.
pub fn build_schema(config: &Config) -> KontaktSchema {
    let mut builder = Schema::build(QueryRoot::default(), MutationRoot::default(), SubscriptionRoot::default())
        .extension(guard::Guard::new(config))
        .limit_complexity(config.max_complexity)
        .limit_directives(config.max_directives)
        .limit_recursive_depth(32);
    if !config.introspection_enabled() {
        builder = builder.disable_introspection();
    }
    if config.is_production() {
        builder = builder.disable_suggestions();
    }
    builder.finish()
}

/// The SDL of the schema as served (introspection and limits do not change it).
pub fn sdl() -> String {
    Schema::build(QueryRoot::default(), MutationRoot::default(), SubscriptionRoot::default()).finish().sdl()
}
