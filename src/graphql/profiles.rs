//! Profile resolvers: take the request context, call one domain function, map to a view.
use async_graphql::{
    Context, InputObject, Object, SimpleObject, Subscription,
    connection::{Connection, Edge},
};
use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt};
use uuid::Uuid;

use super::{
    jobs::JobView,
    request, session,
    views::{CustomerChangeView, CustomerView, MergeView},
};
use crate::{
    error::GqlResult,
    jobs::{self, JobKind},
    pagination::{PageRequest, encode_cursor},
    privacy::Disclosure,
    profiles::{
        CustomerFilter, IdentityKind, UpsertCustomer,
        customers::{self, IdentityInput as DomainIdentityInput},
        merge, rules,
    },
};

#[derive(Default)]
pub struct ProfilesQuery;

/// Extra fields of a list of customers.
#[derive(SimpleObject)]
pub struct CustomerListFields {
    /// Customers on this page withheld because their processing is restricted. Counted, never silently dropped.
    excluded_count: i32,
    /// Resume from here even when every customer of this page was withheld.
    resume_cursor: Option<String>,
}

/// An identifier as a client sends it; normalised by the server (email lower-cased, phone to E.164).
#[derive(InputObject)]
pub struct IdentityInput {
    kind: IdentityKind,
    value: String,
    /// Required for `EXTERNAL_ID`: the source system the id belongs to.
    source: Option<String>,
}

impl From<IdentityInput> for DomainIdentityInput {
    fn from(i: IdentityInput) -> Self {
        DomainIdentityInput { kind: i.kind, value: i.value, source: i.source }
    }
}

#[derive(InputObject, Default)]
pub struct CustomerFilterInput {
    /// Only customers with at least one identity of this kind.
    has_identity_kind: Option<IdentityKind>,
    /// Only customers changed at or after this time.
    updated_since: Option<DateTime<Utc>>,
    /// Only customers for whom some source gave this trait this value.
    has_trait: Option<TraitFilterInput>,
}

#[derive(InputObject)]
pub struct TraitFilterInput {
    /// A core trait (`givenName`, `country`, …) or a declared custom trait.
    name: String,
    /// The value, as JSON (`"DK"`, `42`, `true`).
    equals: async_graphql::Json<serde_json::Value>,
}

#[Object]
impl ProfilesQuery {
    /// The tenant's identity-resolution rules (the defaults until changed).
    async fn resolution_rules(&self, ctx: &Context<'_>) -> async_graphql::Result<ResolutionRules> {
        let rc = request(ctx)?;
        Ok(rules::read(&rc.caller, &rc.services).await.gql()?.into())
    }

    /// One customer by id. `NOT_FOUND` when it does not exist in the caller's tenant.
    async fn customer(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Option<CustomerView>> {
        let rc = request(ctx)?;
        let profile = customers::read_profile(&rc.caller, &rc.services, session(ctx)?, id).await.gql()?;
        Ok(Some(CustomerView::read(profile, Disclosure::for_caller(&rc.caller))))
    }

    /// The customer an identity points at (the identity is normalised first).
    async fn customer_by_identity(
        &self,
        ctx: &Context<'_>,
        identity: IdentityInput,
    ) -> async_graphql::Result<Option<CustomerView>> {
        let rc = request(ctx)?;
        let profile =
            customers::find_by_identity(&rc.caller, &rc.services, session(ctx)?, identity.into()).await.gql()?;
        Ok(Some(CustomerView::read(profile, Disclosure::for_caller(&rc.caller))))
    }

    /// The tenant's customers, oldest first, keyset-paged.
    #[graphql(complexity = "first.unwrap_or(20).max(0) as usize * child_complexity + 1")]
    async fn customers(
        &self,
        ctx: &Context<'_>,
        #[graphql(validator(minimum = 0, maximum = 100))] first: Option<i32>,
        after: Option<String>,
        filter: Option<CustomerFilterInput>,
    ) -> async_graphql::Result<Connection<String, CustomerView, CustomerListFields>> {
        let rc = request(ctx)?;
        let page = PageRequest::parse(first, after.as_deref()).gql()?;
        let filter = filter.unwrap_or_default();
        let filter = CustomerFilter {
            identity_kind: filter.has_identity_kind,
            updated_since: filter.updated_since,
            has_trait: filter.has_trait.map(|t| (t.name, t.equals.0)),
        };
        let listed = customers::list_customers(&rc.caller, &rc.services, session(ctx)?, &filter, page).await.gql()?;
        let fields = CustomerListFields {
            excluded_count: i32::try_from(listed.excluded).unwrap_or(i32::MAX),
            resume_cursor: listed.resume_after.map(encode_cursor),
        };
        let page = listed.page;
        let disclosure = Disclosure::for_caller(&rc.caller);
        let mut connection = Connection::with_additional_fields(page.has_previous_page, page.has_next_page, fields);
        connection.edges.extend(
            CustomerView::list(page.items, disclosure)
                .into_iter()
                .map(|c| Edge::new(encode_cursor(c.customer_id()), c)),
        );
        Ok(connection)
    }
}

#[derive(InputObject)]
pub struct UpsertCustomerInput {
    /// At least one. The customer they already point at is updated; otherwise a new one is created.
    identities: Vec<IdentityInput>,
    /// Kept as `givenName` / `familyName` trait values observed now, from `source`: survivorship chooses among them
    /// and other sources' values as for any source, and `traits` / `traitHistory` show them.
    given_name: Option<String>,
    family_name: Option<String>,
    /// Where the names come from (1–64 characters; default `api`), as `source` names a record's system.
    source: Option<String>,
}

#[derive(SimpleObject)]
pub struct UpsertCustomerPayload {
    customer: CustomerView,
    /// True when this call created the customer.
    created: bool,
}

/// How identity resolution behaves for the tenant.
#[derive(SimpleObject, InputObject, Clone)]
#[graphql(input_name = "ResolutionRulesInput")]
pub struct ResolutionRules {
    /// Normalised values (any kind) that never link anyone, compared case-insensitively.
    blocked_values: Vec<String>,
    /// Regular expressions; a value matching one never links anyone.
    blocked_patterns: Vec<String>,
    /// Most identities of a kind on one customer.
    limits: Vec<KindLimit>,
    /// Kinds from strongest to weakest: the weaker link gives way when a record would break a limit.
    priority: Vec<IdentityKind>,
}

#[derive(SimpleObject, InputObject, Clone, Copy)]
#[graphql(input_name = "KindLimitInput")]
pub struct KindLimit {
    kind: IdentityKind,
    max: u32,
}

impl From<rules::ResolutionRules> for ResolutionRules {
    fn from(r: rules::ResolutionRules) -> Self {
        ResolutionRules {
            blocked_values: r.blocked_values,
            blocked_patterns: r.blocked_patterns,
            limits: r.limits.into_iter().map(|l| KindLimit { kind: l.kind, max: l.max }).collect(),
            priority: r.priority,
        }
    }
}

impl From<ResolutionRules> for rules::ResolutionRules {
    fn from(r: ResolutionRules) -> Self {
        rules::ResolutionRules {
            blocked_values: r.blocked_values,
            blocked_patterns: r.blocked_patterns,
            limits: r.limits.into_iter().map(|l| rules::KindLimit { kind: l.kind, max: l.max }).collect(),
            priority: r.priority,
        }
    }
}

#[derive(Default)]
pub struct ProfilesMutation;

#[Object]
impl ProfilesMutation {
    /// Merges `mergedId` into `survivorId` (for an agent who knows they are one person): identities, touchpoints,
    /// consents and feedback cases move; disagreeing consents resolve to the most restrictive. Needs
    /// `profiles:write`.
    async fn merge_customers(
        &self,
        ctx: &Context<'_>,
        survivor_id: Uuid,
        merged_id: Uuid,
        note: Option<String>,
    ) -> async_graphql::Result<MergeView> {
        let rc = request(ctx)?;
        Ok(MergeView(merge::merge_customers(&rc.caller, &rc.services, survivor_id, merged_id, note).await.gql()?))
    }

    /// Starts a job (kind `RERESOLVE_CUSTOMERS`) that applies the tenant's current rules to customers already
    /// resolved, and returns it at once; poll `job(id)`. Merges made through a now-blocked identity are undone and
    /// the blocked identities removed; a customer over a kind's limit first gets back the automatic merges that
    /// brought it identities of that kind (newest first, while still over), then its newest excess identities of
    /// that kind are unlinked (its touchpoints stay). The job's `result` counts `identitiesRemoved`,
    /// `mergesUndone`, `mergesKept` (could not be undone: the survivor was merged again since) and
    /// `identitiesUnlinked` (each a `limit_lowered` conflict in the customer's `identityGraph`). Needs
    /// `profiles:write`.
    async fn reresolve_customers(&self, ctx: &Context<'_>) -> async_graphql::Result<JobView> {
        let rc = request(ctx)?;
        Ok(JobView(jobs::enqueue(&rc.caller, &rc.services, JobKind::ReresolveCustomers).await.gql()?))
    }

    /// Undoes a merge: both customers are restored with their own identities, touchpoints, consents and feedback
    /// cases, and the
    /// touchpoints and source records that arrived since go where their identities now point. Needs `profiles:write`.
    async fn unmerge_customer(&self, ctx: &Context<'_>, merge_id: Uuid) -> async_graphql::Result<MergeView> {
        let rc = request(ctx)?;
        Ok(MergeView(merge::unmerge(&rc.caller, &rc.services, merge_id).await.gql()?))
    }

    /// Replaces the tenant's identity-resolution rules; they apply to writes from now on. Needs `profiles:write`.
    async fn update_resolution_rules(
        &self,
        ctx: &Context<'_>,
        rules: ResolutionRules,
    ) -> async_graphql::Result<ResolutionRules> {
        let rc = request(ctx)?;
        Ok(rules::update(&rc.caller, &rc.services, rules.into()).await.gql()?.into())
    }

    /// Creates or updates the customer that the given identities point at. Needs `profiles:write`.
    async fn upsert_customer(
        &self,
        ctx: &Context<'_>,
        input: UpsertCustomerInput,
    ) -> async_graphql::Result<UpsertCustomerPayload> {
        let rc = request(ctx)?;
        let input = UpsertCustomer {
            identities: input.identities.into_iter().map(Into::into).collect(),
            given_name: input.given_name,
            family_name: input.family_name,
            source: input.source,
        };
        let outcome = customers::upsert_customer(&rc.caller, &rc.services, input).await.gql()?;
        Ok(UpsertCustomerPayload {
            customer: CustomerView::new(outcome.customer, Disclosure::for_caller(&rc.caller)),
            created: outcome.created,
        })
    }
}

#[derive(Default)]
pub struct ProfilesSubscription;

#[Subscription]
impl ProfilesSubscription {
    /// Customers of the caller's tenant as they are created or updated. Needs `profiles:read`.
    async fn customer_changes(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = CustomerChangeView> + use<>> {
        let rc = request(ctx)?;
        let stream = customers::watch_changes(&rc.caller, &rc.services).await.gql()?;
        Ok(stream.map(CustomerChangeView::from))
    }
}
