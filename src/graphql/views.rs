//! View types: what the API shows of domain values. Each personal field passes through `privacy::Disclosure`.
use crate::changes::{CustomerChange, CustomerChangeKind};
use async_graphql::{
    Context, ErrorExtensions, Object, SimpleObject,
    connection::{Connection, Edge, EmptyFields},
    dataloader::DataLoader,
};

use chrono::{DateTime, Utc};
use std::sync::Arc;
use uuid::Uuid;

use super::{
    cases::FeedbackCaseView,
    loader,
    loaders::{
        ConsentHistoryLoader, CustomerCasesLoader, IdentityLoader, InList, MergeHistoryLoader, RecentKey,
        RecentTouchpointsLoader, SourceRecordsLoader, TraitHistoryLoader, TraitsLoader,
    },
    records::{CustomerTraitsView, SourceRecordView, TraitValueView},
    request, session,
    touchpoint_views::{ConsentView, JourneyView, TimelineFields, TimelineName, TouchpointView},
    touchpoints::TouchpointFilterInput,
};
use crate::{
    auth::Scope,
    consent::{DataCategory, Permit, ledger},
    error::{ApiError, GqlResult},
    pagination::{PageRequest, Window, decode_time_cursor, encode_cursor, encode_time_cursor},
    privacy::Disclosure,
    privacy::access_log,
    profiles::{
        Customer, CustomerIdentity, IdentityKind,
        customers::{self, Profile},
    },
    profiles::{
        merge::{self, Merge, MergeReason},
        resolution::ConflictReason,
    },
    profiles::{records, resolution, traits},
    touchpoints::timeline::{self, TouchpointFilter},
};

/// A customer as a view. Its consents and every decision about its personalization data come from the
/// operation's `ConsentSession`; the view holds no privacy state of its own.
pub struct CustomerView {
    customer: Customer,
    disclosure: Disclosure,
    /// A single-customer read: its nested lists are read directly (a DataLoader would add its batching delay to
    /// the hot profile read); lists batch them.
    single: bool,
    /// The customers of the list this one was served in (itself alone outside a list).
    list: CustomerList,
    /// The customer's segments and computed traits, evaluated once for both fields.
    derived: tokio::sync::OnceCell<Result<crate::consent::Permitted<crate::derived::catalog::Derived>, Arc<ApiError>>>,
}

/// The customers of one list: a loader asked about one of them loads them all, so a list costs one query per
/// edge, whatever the timing of the DataLoader's batches.
#[derive(Clone)]
pub struct CustomerList {
    ids: Arc<[Uuid]>,
    /// The permits to read the listed customers' behavioural history (decided once, by the first who asks).
    history_permits: Arc<tokio::sync::OnceCell<Arc<[Permit]>>>,
}

impl CustomerList {
    fn of(ids: impl IntoIterator<Item = Uuid>) -> Self {
        CustomerList { ids: ids.into_iter().collect(), history_permits: Default::default() }
    }

    fn key<K>(&self, key: K) -> InList<K> {
        InList { key, list: self.ids.clone() }
    }
}

impl CustomerView {
    pub fn new(customer: Customer, disclosure: Disclosure) -> Self {
        let list = CustomerList::of([customer.id]);
        CustomerView { customer, disclosure, single: false, list, derived: Default::default() }
    }

    pub fn read(profile: Profile, disclosure: Disclosure) -> Self {
        let list = CustomerList::of([profile.customer.id]);
        CustomerView { customer: profile.customer, disclosure, single: true, list, derived: Default::default() }
    }

    /// The views of a list of customers, which load their nested lists together.
    pub fn list(customers: Vec<Customer>, disclosure: Disclosure) -> Vec<Self> {
        let list = CustomerList::of(customers.iter().map(|c| c.id));
        customers
            .into_iter()
            .map(|customer| CustomerView {
                customer,
                disclosure,
                single: false,
                list: list.clone(),
                derived: Default::default(),
            })
            .collect()
    }

    /// The customer's segments and computed traits, read once however many fields ask.
    async fn derived(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<&crate::consent::Permitted<crate::derived::catalog::Derived>> {
        let rc = request(ctx)?;
        let session = session(ctx)?;
        let found = self
            .derived
            .get_or_init(|| async {
                crate::derived::catalog::read(&rc.caller, &rc.services, session, self.customer.id)
                    .await
                    .map_err(Arc::new)
            })
            .await;
        found.as_ref().map_err(|e| e.as_ref().extend())
    }

    pub fn customer_id(&self) -> Uuid {
        self.customer.id
    }
}

/// A loader error as a GraphQL error with its code.
fn loaded<T>(result: Result<Option<T>, Arc<ApiError>>) -> async_graphql::Result<T>
where
    T: Default,
{
    Ok(result.map_err(|e| e.as_ref().extend())?.unwrap_or_default())
}

/// A unified customer profile.
#[Object(name = "Customer")]
impl CustomerView {
    async fn id(&self) -> Uuid {
        self.customer.id
    }

    /// Masked unless the token has `pii:read`.
    async fn given_name(&self) -> Option<String> {
        self.disclosure.name(self.customer.given_name.as_deref())
    }

    /// Masked unless the token has `pii:read`.
    async fn family_name(&self) -> Option<String> {
        self.disclosure.name(self.customer.family_name.as_deref())
    }

    /// Every identifier that points at this customer (values masked unless the token has `pii:read`).
    async fn identities(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<IdentityView>> {
        let identities = if self.single {
            let rc = request(ctx)?;
            let mut found =
                customers::identities_of(rc.caller.tenant(), &rc.services, &[self.customer.id]).await.gql()?;
            found.remove(&self.customer.id).unwrap_or_default()
        } else {
            let loader = loader::<DataLoader<IdentityLoader>>(ctx)?;
            loaded(loader.load_one(self.list.key(self.customer.id)).await)?
        };
        Ok(identities.into_iter().map(|identity| IdentityView { identity, disclosure: self.disclosure }).collect())
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.customer.created_at
    }

    async fn updated_at(&self) -> DateTime<Utc> {
        self.customer.updated_at
    }

    /// Set when the id asked for was merged into another customer: the survivor's id (this customer's, since
    /// reads answer with the survivor).
    async fn merged_into(&self) -> Option<Uuid> {
        self.customer.merged_into.or(self.customer.resolved_from.map(|_| self.customer.id))
    }

    /// The merged-away id the read asked for, when it was answered by its survivor.
    async fn requested_id(&self) -> Option<Uuid> {
        self.customer.resolved_from
    }

    /// The winning value of each trait (by the tenant's survivorship rules). Personal traits masked without
    /// `pii:read`.
    async fn traits(&self, ctx: &Context<'_>) -> async_graphql::Result<CustomerTraitsView> {
        let rc = request(ctx)?;
        let values = if self.single {
            traits::traits_of(&rc.caller, &rc.services, self.customer.id).await.gql()?
        } else {
            loaded(loader::<DataLoader<TraitsLoader>>(ctx)?.load_one(self.list.key(self.customer.id)).await)?
        };
        Ok(CustomerTraitsView { values, disclosure: Disclosure::for_request(&rc.caller, &rc.services) })
    }

    /// Every value a trait had, newest first (at most 100), with its source, source record and observed-at time.
    #[graphql(complexity = "100 * child_complexity + 1")]
    async fn trait_history(&self, ctx: &Context<'_>, name: String) -> async_graphql::Result<Vec<TraitValueView>> {
        let rc = request(ctx)?;
        let values = if self.single {
            traits::history(&rc.caller, &rc.services, self.customer.id, &name).await.gql()?
        } else {
            let loader = loader::<DataLoader<TraitHistoryLoader>>(ctx)?;
            loaded(loader.load_one(self.list.key((self.customer.id, name))).await)?
        };
        let disclosure = Disclosure::for_request(&rc.caller, &rc.services);
        Ok(values.into_iter().map(|v| TraitValueView::new(v, disclosure)).collect())
    }

    /// The source records this customer is built from, newest first (at most 100).
    #[graphql(complexity = "100 * child_complexity + 1")]
    async fn source_records(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<SourceRecordView>> {
        let rc = request(ctx)?;
        let list = if self.single {
            records::of_customer(&rc.caller, &rc.services, self.customer.id).await.gql()?
        } else {
            loaded(loader::<DataLoader<SourceRecordsLoader>>(ctx)?.load_one(self.list.key(self.customer.id)).await)?
        };
        Ok(list.into_iter().map(|r| SourceRecordView::new(r, self.disclosure)).collect())
    }

    /// Why this customer is who it is: its identities, the merges that built it (with evidence) and the links
    /// resolution refused to make.
    async fn identity_graph(&self) -> IdentityGraphView {
        IdentityGraphView {
            customer_id: self.customer.id,
            disclosure: self.disclosure,
            single: self.single,
            list: self.list.clone(),
        }
    }

    /// The merges this customer took part in, newest first (at most 100), with their evidence.
    #[graphql(complexity = "100 * child_complexity + 1")]
    async fn merge_history(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<MergeView>> {
        merges_of(ctx, self.customer.id, self.single, &self.list).await
    }

    /// Processing restricted (GDPR art. 18): nothing is served but to privacy administration.
    async fn processing_restricted(&self) -> bool {
        self.customer.restricted
    }

    /// The consent decisions in force now, one per purpose (and channel).
    async fn consents(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ConsentView>> {
        let rc = request(ctx)?;
        let state = session(ctx)?.state(&rc.caller, &rc.services, self.customer.id).await.gql()?;
        Ok(state.consents.iter().cloned().map(ConsentView::from).collect())
    }

    /// The decisions that were in force at a past moment.
    async fn consent_at(&self, ctx: &Context<'_>, time: DateTime<Utc>) -> async_graphql::Result<Vec<ConsentView>> {
        let rc = request(ctx)?;
        let mut states = ledger::current_for(&rc.caller, &rc.services, &[self.customer.id], Some(time)).await.gql()?;
        Ok(states.remove(&self.customer.id).unwrap_or_default().into_iter().map(ConsentView::from).collect())
    }

    /// The consent ledger, newest first: every decision ever recorded, nothing overwritten.
    #[graphql(complexity = "first.unwrap_or(20).max(0) as usize * child_complexity + 1")]
    async fn consent_history(
        &self,
        ctx: &Context<'_>,
        #[graphql(validator(minimum = 0, maximum = 100))] first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, ConsentView>> {
        let rc = request(ctx)?;
        let page = PageRequest::parse(first, after.as_deref()).gql()?;
        let page = match page {
            // A list of customers with the first page of their ledgers: one window query for the whole list.
            PageRequest { first, after: None } if !self.single => {
                let loader = loader::<DataLoader<ConsentHistoryLoader>>(ctx)?;
                let loaded = loader.load_one(self.list.key((self.customer.id, first))).await;
                loaded.map_err(|e| e.as_ref().extend())?.ok_or_else(|| {
                    ApiError::Internal(anyhow::anyhow!("no consent history page for {}", self.customer.id)).extend()
                })?
            }
            page => ledger::history_for(&rc.caller, &rc.services, self.customer.id, page).await.gql()?,
        };
        let mut connection = Connection::new(page.has_previous_page, page.has_next_page);
        connection.edges.extend(page.items.into_iter().map(|e| Edge::new(encode_cursor(e.id), ConsentView::from(e))));
        Ok(connection)
    }

    /// The customer's touchpoints, newest first, keyset-paged both ways (`first`/`after` go back in time,
    /// `last`/`before` come forward). Personalization data: `null` with `CONSENT_REQUIRED` when the customer has
    /// not consented to the caller's purpose. Needs `touchpoints:read`.
    #[graphql(complexity = "first.or(last).unwrap_or(20).max(0) as usize * child_complexity + 1")]
    async fn touchpoints(
        &self,
        ctx: &Context<'_>,
        #[graphql(validator(minimum = 0, maximum = 100))] first: Option<i32>,
        after: Option<String>,
        #[graphql(validator(minimum = 0, maximum = 100))] last: Option<i32>,
        before: Option<String>,
        filter: Option<TouchpointFilterInput>,
    ) -> async_graphql::Result<Option<Connection<String, TouchpointView, TimelineFields, EmptyFields, TimelineName>>>
    {
        let rc = request(ctx)?;
        let window = Window::parse(first, after.as_deref(), last, before.as_deref(), decode_time_cursor).gql()?;
        let filter: TouchpointFilter = filter.unwrap_or_default().into();
        let session = session(ctx)?;
        let page = match window {
            // A list of customers with their latest touchpoints: decided here, fetched for the whole list at once.
            Window::Forward { first, after: None } if !self.single && filter.is_empty() => {
                rc.caller.require(Scope::TouchpointsRead).gql()?;
                let permit = session
                    .decide(&rc.caller, &rc.services, self.customer.id, DataCategory::BehaviouralHistory)
                    .await
                    .gql()?;
                // The list's other customers' permits, decided once, so that whoever asks first loads them all.
                let list = self
                    .list
                    .history_permits
                    .get_or_init(|| async {
                        let mut permits = Vec::with_capacity(self.list.ids.len());
                        for id in self.list.ids.iter() {
                            let decided =
                                session.decide(&rc.caller, &rc.services, *id, DataCategory::BehaviouralHistory).await;
                            permits.extend(decided.ok());
                        }
                        permits.into()
                    })
                    .await
                    .clone();
                let loader = loader::<DataLoader<RecentTouchpointsLoader>>(ctx)?;
                let loaded =
                    loader.load_one(RecentKey { permit, first, list }).await.map_err(|e| e.as_ref().extend())?;
                loaded.ok_or_else(|| ApiError::not_found(format!("customer {}", self.customer.id)).extend())?
            }
            window => timeline::read_timeline(&rc.caller, &rc.services, session, self.customer.id, &filter, window)
                .await
                .gql()?,
        };
        let permit = page.permit();
        let page = page.into_value();
        let (has_previous_page, has_next_page) = (page.has_previous_page, page.has_next_page);
        let mut connection =
            Connection::with_additional_fields(has_previous_page, has_next_page, TimelineFields { permit, filter });
        connection.edges.extend(permit.serve(page.items).into_items().map(|tp| {
            let cursor = encode_time_cursor(tp.value().occurred_at, tp.value().id);
            Edge::new(cursor, TouchpointView::from(tp))
        }));
        Ok(Some(connection))
    }

    /// Who read this customer's personal data, for which purpose, newest first. Needs `privacy:admin`.
    #[graphql(complexity = "first.unwrap_or(20).max(0) as usize * child_complexity + 1")]
    async fn access_log(
        &self,
        ctx: &Context<'_>,
        #[graphql(validator(minimum = 0, maximum = 100))] first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, AccessLogEntry>> {
        let rc = request(ctx)?;
        let page = PageRequest::parse(first, after.as_deref()).gql()?;
        let page = access_log::for_customer(&rc.caller, &rc.services, self.customer.id, page).await.gql()?;
        let mut connection = Connection::new(page.has_previous_page, page.has_next_page);
        connection.edges.extend(page.items.into_iter().map(|e| {
            Edge::new(
                encode_cursor(e.id),
                AccessLogEntry {
                    subject: e.subject,
                    purpose: e.purpose,
                    categories: e.categories,
                    request_id: e.request_id,
                    at: e.at,
                },
            )
        }));
        Ok(connection)
    }

    /// Scores from the purchase history, computed now: RFM against the tenant's quintiles, CLV over `months` and
    /// churn risk from the tenant's fitted models (each says why when it cannot be computed). Derived
    /// personalization data: `null` with `CONSENT_REQUIRED` unless the customer consented to the caller's purpose,
    /// and (reason `PROFILING_REFUSED` or `PROCESSING_RESTRICTED`) for a customer who may not be profiled. Needs
    /// `profiles:read`; logged.
    async fn scores(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 12)] months: u32,
    ) -> async_graphql::Result<Option<super::scores::CustomerScoresView>> {
        let rc = request(ctx)?;
        let scores = crate::derived::scores::read(&rc.caller, &rc.services, session(ctx)?, self.customer.id, months)
            .await
            .gql()?;
        Ok(Some(super::scores::CustomerScoresView(scores)))
    }

    /// The segments the customer is in now, of those declared for the caller's purpose (evaluated when read: a
    /// window is exact at this moment). Derived personalization data, gated like `scores`. Needs `profiles:read`;
    /// logged.
    async fn segments(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<Vec<super::scores::SegmentMembership>>> {
        let derived = self.derived(ctx).await?;
        Ok(Some(super::scores::segments_view(derived)))
    }

    /// The customer's computed traits now, of those declared for the caller's purpose. Gated like `scores`. Needs
    /// `profiles:read`; logged.
    async fn computed_traits(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<Vec<super::scores::ComputedTraitValue>>> {
        let derived = self.derived(ctx).await?;
        Ok(Some(super::scores::traits_view(derived)))
    }

    /// Affinities to the values of one touchpoint property (`category`, `brand`, `topic`, …), strongest first:
    /// each touchpoint of the last year carrying it adds its weight, halved every `halfLifeDays` (0: no decay).
    /// Gated like `scores`. Needs `touchpoints:read`; logged.
    async fn affinities(
        &self,
        ctx: &Context<'_>,
        dimension: String,
        #[graphql(default = 30)] half_life_days: u32,
        #[graphql(default = 10)] first: i32,
    ) -> async_graphql::Result<Option<Vec<super::scores::AffinityView>>> {
        let rc = request(ctx)?;
        let first = usize::try_from(first).unwrap_or(0);
        let found = crate::derived::engagement::affinities(
            &rc.caller,
            &rc.services,
            session(ctx)?,
            self.customer.id,
            &dimension,
            half_life_days,
            first,
        )
        .await
        .gql()?;
        Ok(Some(super::scores::AffinityView::list(found)))
    }

    /// The channel to contact the customer on: reachable, consented to (`marketing` for the channel) and the most
    /// engaged with, with the evidence for every channel. Gated like `scores`. Needs `touchpoints:read`; logged.
    async fn preferred_channel(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<super::scores::PreferredChannelView>> {
        let rc = request(ctx)?;
        let found =
            crate::derived::engagement::preferred_channel(&rc.caller, &rc.services, session(ctx)?, self.customer.id)
                .await
                .gql()?;
        Ok(Some(found.into()))
    }

    /// The next best action now: the tenant's enabled rules (of `placement`, when given) tried by priority, with the
    /// decision about each (`FIRED`, `NOT_ELIGIBLE`, `BLOCKED_CONSENT` with the reason, `BLOCKED_COOLDOWN` and
    /// `BLOCKED_FREQUENCY_CAP` with `until`, `NOT_REACHED`). Derived personalization data, gated like `segments`.
    /// Needs `profiles:read`; logged.
    async fn next_best_action(
        &self,
        ctx: &Context<'_>,
        placement: Option<String>,
    ) -> async_graphql::Result<Option<super::actions::NextBestActionView>> {
        let rc = request(ctx)?;
        let found = crate::derived::actions::next_best_action(
            &rc.caller,
            &rc.services,
            session(ctx)?,
            self.customer.id,
            placement.as_deref(),
        )
        .await
        .gql()?;
        Ok(Some(found.into()))
    }

    /// The customer's latest NPS, CSAT and CES answers with category and trend. Derived personalization data:
    /// `null` with `CONSENT_REQUIRED` unless the customer consented to the caller's purpose. Needs
    /// `touchpoints:read`; logged.
    async fn feedback(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<super::cx::CustomerFeedbackView>> {
        let rc = request(ctx)?;
        let feedback =
            crate::cx::feedback::read(&rc.caller, &rc.services, session(ctx)?, self.customer.id).await.gql()?;
        Ok(Some(super::cx::CustomerFeedbackView::new(feedback, self.disclosure)))
    }

    /// The customer's feedback cases (the closed loop), newest first, keyset-paged; a merged customer's cases are
    /// its survivor's. `null` with `FORBIDDEN` without `cx:read`; access-logged. A list of customers loads the
    /// first page of everyone's cases in one query.
    #[graphql(complexity = "first.unwrap_or(20).max(0) as usize * child_complexity + 1")]
    async fn feedback_cases(
        &self,
        ctx: &Context<'_>,
        #[graphql(validator(minimum = 0, maximum = 100))] first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Option<Connection<String, FeedbackCaseView>>> {
        let rc = request(ctx)?;
        rc.caller.require(Scope::CxRead).gql()?;
        let page = PageRequest::parse(first, after.as_deref()).gql()?;
        let (page, loaded_with) = match page {
            PageRequest { first, after: None } if !self.single => {
                let loader = loader::<DataLoader<CustomerCasesLoader>>(ctx)?;
                let loaded = loader.load_one(self.list.key((self.customer.id, first))).await;
                let loaded = loaded.map_err(|e| e.as_ref().extend())?.ok_or_else(|| {
                    ApiError::Internal(anyhow::anyhow!("no feedback cases page for {}", self.customer.id)).extend()
                })?;
                (loaded.page, Some(loaded.loaded_with))
            }
            page => {
                let filter = crate::cx::cases::CaseFilter { customer_id: Some(self.customer.id), ..Default::default() };
                (crate::cx::cases::list(&rc.caller, &rc.services, filter, page).await.gql()?, None)
            }
        };
        Ok(Some(super::cases::connection(page, loaded_with)))
    }

    /// Where the customer stands in the journey. Derived from behaviour: `null` with `CONSENT_REQUIRED` unless
    /// the customer consented to the caller's purpose. Needs `touchpoints:read`.
    async fn journey(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<JourneyView>> {
        let rc = request(ctx)?;
        let journey = timeline::read_journey(&rc.caller, &rc.services, session(ctx)?, self.customer.id).await.gql()?;
        Ok(Some(JourneyView::from(journey)))
    }
}

pub struct IdentityView {
    identity: CustomerIdentity,
    disclosure: Disclosure,
}

/// One identifier of a customer.
#[Object(name = "Identity")]
impl IdentityView {
    async fn kind(&self) -> IdentityKind {
        self.identity.identity.kind()
    }

    /// The source system, for `EXTERNAL_ID` identities.
    async fn source(&self) -> Option<&str> {
        self.identity.identity.source()
    }

    /// Normalised value; masked unless the token has `pii:read`.
    async fn value(&self) -> String {
        self.disclosure.identity(self.identity.identity.kind(), self.identity.identity.value())
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.identity.created_at
    }
}

/// A merge of two customers, with its evidence.
pub struct MergeView(pub Merge);

#[Object(name = "Merge")]
impl MergeView {
    async fn id(&self) -> Uuid {
        self.0.id
    }
    async fn survivor_id(&self) -> Uuid {
        self.0.survivor_id
    }
    async fn merged_id(&self) -> Uuid {
        self.0.merged_id
    }
    async fn reason(&self) -> MergeReason {
        self.0.reason
    }
    /// Which rule, which identity (by id and kind, never its value), when; and consents that disagreed.
    async fn evidence(&self) -> async_graphql::Json<serde_json::Value> {
        async_graphql::Json(self.0.evidence.clone())
    }
    async fn merged_by(&self) -> &str {
        &self.0.merged_by
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// Set when the merge was undone.
    async fn undone_at(&self) -> Option<DateTime<Utc>> {
        self.0.undone_at
    }
}

pub struct IdentityGraphView {
    customer_id: Uuid,
    disclosure: Disclosure,
    single: bool,
    list: CustomerList,
}

/// The merges a customer took part in: read directly for a one-customer read, loaded for the whole list otherwise.
async fn merges_of(
    ctx: &Context<'_>,
    customer_id: Uuid,
    single: bool,
    list: &CustomerList,
) -> async_graphql::Result<Vec<MergeView>> {
    let merges = if single {
        let rc = request(ctx)?;
        merge::history(&rc.caller, &rc.services, customer_id).await.gql()?
    } else {
        loaded(loader::<DataLoader<MergeHistoryLoader>>(ctx)?.load_one(list.key(customer_id)).await)?
    };
    Ok(merges.into_iter().map(MergeView).collect())
}

#[Object(name = "IdentityGraph")]
impl IdentityGraphView {
    async fn identities(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<IdentityView>> {
        let identities = if self.single {
            let rc = request(ctx)?;
            let mut found =
                customers::identities_of(rc.caller.tenant(), &rc.services, &[self.customer_id]).await.gql()?;
            found.remove(&self.customer_id).unwrap_or_default()
        } else {
            loaded(loader::<DataLoader<IdentityLoader>>(ctx)?.load_one(self.list.key(self.customer_id)).await)?
        };
        Ok(identities.into_iter().map(|identity| IdentityView { identity, disclosure: self.disclosure }).collect())
    }

    /// The merges this customer took part in, newest first (at most 100).
    #[graphql(complexity = "100 * child_complexity + 1")]
    async fn merges(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<MergeView>> {
        merges_of(ctx, self.customer_id, self.single, &self.list).await
    }

    /// Links refused by the resolution rules (over a kind's limit, or an identity owned by another customer), and
    /// links undone by a re-resolution after a lowered limit. At most 100.
    #[graphql(complexity = "100 * child_complexity + 1")]
    async fn conflicts(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ResolutionConflictView>> {
        let rc = request(ctx)?;
        let conflicts = resolution::conflicts_of(&rc.caller, &rc.services, self.customer_id).await.gql()?;
        Ok(conflicts
            .into_iter()
            .map(|c| ResolutionConflictView {
                kind: c.kind,
                reason: c.reason,
                other_customer_id: c.other_customer_id,
                at: c.at,
            })
            .collect())
    }
}

#[derive(SimpleObject)]
#[graphql(name = "ResolutionConflict")]
pub struct ResolutionConflictView {
    kind: IdentityKind,
    reason: ConflictReason,
    other_customer_id: Option<Uuid>,
    at: DateTime<Utc>,
}

/// One read of a customer's personal data.
#[derive(SimpleObject)]
pub struct AccessLogEntry {
    /// The token's subject.
    subject: String,
    purpose: String,
    /// What was read, in the order read: `profile`, `touchpoints`, `journey`, `source_record`, `export`, `erasure`.
    categories: Vec<String>,
    request_id: Option<String>,
    at: DateTime<Utc>,
}

/// A customer was created, updated, merged, unmerged, had a consent decision recorded, or was erased. Ids and kinds
/// only: read the customer for what changed (the read decides what the caller may see).
#[derive(SimpleObject)]
#[graphql(name = "CustomerChange")]
pub struct CustomerChangeView {
    pub customer_id: Uuid,
    pub kind: CustomerChangeKind,
    /// `kind` is `CREATED`.
    #[graphql(deprecation = "use `kind`")]
    pub created: bool,
    /// The surviving customer, when `kind` is `MERGED_AWAY`.
    pub merged_into: Option<Uuid>,
    pub at: DateTime<Utc>,
}

impl From<CustomerChange> for CustomerChangeView {
    fn from(c: CustomerChange) -> Self {
        CustomerChangeView {
            customer_id: c.customer_id,
            kind: c.kind,
            created: c.kind == CustomerChangeKind::Created,
            merged_into: c.merged_into,
            at: c.at,
        }
    }
}
