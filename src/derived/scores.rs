//! A customer's scores from the purchase history, computed at read time so they are exact on the day they are read:
//! RFM against the tenant's current quintiles (cached a couple of minutes per instance), and CLV / churn risk from
//! the tenant's BG/NBD and Gamma-Gamma models (fitted by the `FIT_SCORE_MODEL` job). A score that cannot be computed
//! says why (`scores::clv::Refusal`) instead of guessing.
//!
//! Amounts are summed as numbers: a tenant that sells in several currencies should fit and read per currency
//! (not built yet).
use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DbBackend, EntityTrait, FromQueryResult, QueryFilter, QueryOrder, QuerySelect,
    Statement,
};
use uuid::Uuid;

use crate::{
    auth::{Caller, Scope, TenantId},
    consent::{ConsentSession, Permitted, policy},
    error::{ApiError, ApiResult},
    privacy::access_log::AccessCategory,
    scores::{
        FitError, FitOptions, PurchaseSummary, TimeUnit,
        bgnbd::{self, BgNbdParams},
        clv::{self, ClvOptions, FittedModel, Model, Refusal, Score},
        gamma_gamma::{self, GammaGammaParams},
        rfm::{Breakpoints, RfmScore, RfmValues},
        summary::Purchase,
    },
    services::Services,
    storage::entities::{score_model, touchpoint},
    touchpoints::TouchpointType,
};

/// How long an instance keeps a tenant's RFM breakpoints.
pub const BREAKPOINTS_TTL: Duration = Duration::from_secs(120);
/// The time unit summaries and models use.
pub const UNIT: TimeUnit = TimeUnit::Days;

/// The tenant's RFM breakpoints and when they were computed.
#[derive(Debug, Clone)]
pub struct TenantBreakpoints {
    pub breakpoints: Option<Breakpoints>,
    pub computed_at: DateTime<Utc>,
}

/// Per-tenant breakpoints, kept `BREAKPOINTS_TTL` in the process.
#[derive(Clone)]
pub struct ScoresCache(moka::future::Cache<String, Arc<TenantBreakpoints>>);

impl Default for ScoresCache {
    fn default() -> Self {
        ScoresCache(moka::future::Cache::builder().max_capacity(10_000).time_to_live(BREAKPOINTS_TTL).build())
    }
}

#[derive(FromQueryResult)]
struct Aggregate {
    purchases: i64,
    last_at: DateTime<Utc>,
    total: Option<f64>,
}

/// The tenant's RFM quintiles over its customers with purchases (restricted customers left out), from one
/// aggregate statement; cached.
pub async fn breakpoints(svc: &Services, tenant: &TenantId) -> ApiResult<Arc<TenantBreakpoints>> {
    if let Some(found) = svc.scores.0.get(tenant.as_str()).await {
        return Ok(found);
    }
    let backend = svc.db.backend();
    let (p1, p2) = if backend == DbBackend::Postgres { ("$1", "$2") } else { ("?", "?") };
    let sql = format!(
        "SELECT COUNT(*) AS purchases, MAX(t.occurred_at) AS last_at, SUM(COALESCE(t.value, 0)) AS total \
         FROM touchpoints t JOIN customers c ON c.id = t.customer_id AND c.tenant = t.tenant \
         WHERE t.tenant = {p1} AND t.kind = {p2} AND c.restricted = FALSE AND c.merged_into IS NULL \
         GROUP BY t.customer_id"
    );
    let rows = Aggregate::find_by_statement(Statement::from_sql_and_values(
        backend,
        sql,
        [tenant.as_str().into(), TouchpointType::Purchase.as_str().into()],
    ))
    .all(svc.db.conn())
    .await?;
    let now = Utc::now();
    let values: Vec<RfmValues> = rows
        .iter()
        .filter(|r| r.purchases > 0)
        .map(|r| RfmValues {
            recency_days: (now - r.last_at).num_days() as f64,
            frequency: r.purchases as u64,
            monetary: r.total.unwrap_or(0.0) / r.purchases as f64,
        })
        .collect();
    let breakpoints = if values.is_empty() { None } else { Breakpoints::of(&values).ok() };
    let found = Arc::new(TenantBreakpoints { breakpoints, computed_at: now });
    svc.scores.0.insert(tenant.as_str().to_owned(), found.clone()).await;
    Ok(found)
}

/// The tenant's models as stored.
pub struct Models {
    pub purchases: Model<BgNbdParams>,
    pub spend: Model<GammaGammaParams>,
    pub refusal: Option<Refusal>,
}

async fn models(svc: &Services, tenant: &TenantId) -> ApiResult<Models> {
    Ok(models_of(score_model::of_tenant(tenant).one(svc.db.conn()).await?))
}

/// The models a stored row holds (none: nothing fitted yet).
fn models_of(row: Option<score_model::Model>) -> Models {
    let Some(row) = row else {
        return Models { purchases: Model::NotFitted, spend: Model::NotFitted, refusal: Some(Refusal::NotFitted) };
    };
    let stamp = |params| FittedModel { params, fitted_at: Some(row.fitted_at), version: Some(row.version.to_string()) };
    let purchases = row.bgnbd.clone().and_then(|p| serde_json::from_value::<BgNbdParams>(p).ok()).map(stamp);
    let spend =
        row.gamma_gamma.clone().and_then(|p| serde_json::from_value::<GammaGammaParams>(p).ok()).map(|params| {
            FittedModel { params, fitted_at: Some(row.fitted_at), version: Some(row.version.to_string()) }
        });
    let refusal_of = |text: &Option<String>| match text.as_deref() {
        Some(t) if t.starts_with("TOO_FEW_CUSTOMERS") => Refusal::TooFewCustomers,
        Some(t) => Refusal::FitFailed(t.to_owned()),
        None => Refusal::NotFitted,
    };
    let refusal = match (&purchases, &spend) {
        (None, _) => Some(refusal_of(&row.bgnbd_refusal)),
        (_, None) => Some(refusal_of(&row.gamma_gamma_refusal)),
        _ => None,
    };
    Models {
        purchases: purchases.map_or(Model::NotFitted, Model::Fitted),
        spend: spend.map_or(Model::NotFitted, Model::Fitted),
        refusal,
    }
}

/// One purchase as read: customer, time, value.
type PurchaseRow = (Uuid, DateTime<Utc>, Option<f64>);

/// The tenant's purchases as [`PurchaseRow`]s, per customer in time order (filter further, then `into_tuple`).
fn purchase_rows(tenant: &TenantId) -> sea_orm::Select<touchpoint::Entity> {
    touchpoint::of_tenant(tenant)
        .filter(touchpoint::Column::Kind.eq(TouchpointType::Purchase.as_str()))
        .order_by_asc(touchpoint::Column::CustomerId)
        .order_by_asc(touchpoint::Column::OccurredAt)
        .select_only()
        .column(touchpoint::Column::CustomerId)
        .column(touchpoint::Column::OccurredAt)
        .column(touchpoint::Column::Value)
}

/// A customer's RFM score against the tenant's quintiles (none without purchases or quintiles).
fn rfm_of(purchases: &[Purchase], quintiles: &TenantBreakpoints, now: DateTime<Utc>) -> Option<RfmScore> {
    RfmValues::from_purchases(purchases, now)
        .ok()
        .flatten()
        .and_then(|values| quintiles.breakpoints.as_ref().map(|b| b.score(&values)))
}

/// A customer's scores, each present or refused with its reason.
#[derive(Debug, Clone)]
pub struct CustomerScores {
    pub rfm: Option<RfmScore>,
    pub breakpoints_at: DateTime<Utc>,
    pub value: Result<Score, Refusal>,
    /// 1 − P(alive), or why not (a one-time buyer's P(alive) is 1 by construction).
    pub churn: Result<(f64, f64), Refusal>,
    pub options: ClvOptions,
    /// Scores the tenant's own models wrote (`setExternalScores`).
    pub external: Vec<ExternalScore>,
}

/// The customer's purchases, oldest first (value 0 when none was given).
async fn purchases_of(svc: &Services, tenant: &TenantId, customer: Uuid) -> ApiResult<Vec<Purchase>> {
    let rows: Vec<PurchaseRow> = purchase_rows(tenant)
        .filter(touchpoint::Column::CustomerId.eq(customer))
        .into_tuple()
        .all(svc.db.conn())
        .await?;
    Ok(rows.into_iter().map(|(_, at, value)| Purchase { at, value: value.unwrap_or(0.0) }).collect())
}

/// The customer's scores. Needs `profiles:read` and the policy's permit for derived data; refused for a customer who
/// may not be profiled (processing restricted, `profiling` denied or withdrawn). Logged.
pub async fn read(
    caller: &Caller,
    svc: &Services,
    session: &ConsentSession,
    customer_id: Uuid,
    months: u32,
) -> ApiResult<Permitted<CustomerScores>> {
    caller.require(Scope::ProfilesRead)?;
    let permit = session.decide_derived(caller, svc, customer_id).await?;
    let now = Utc::now();
    if months > 120 {
        return Err(ApiError::validation("months", "at most 120"));
    }
    let tenant = caller.tenant();
    let purchases = purchases_of(svc, tenant, customer_id).await?;
    let tenant_breakpoints = breakpoints(svc, tenant).await?;
    let rfm = rfm_of(&purchases, &tenant_breakpoints, now);
    let summary =
        PurchaseSummary::from_purchases(&purchases, now, UNIT).map_err(|e| Refusal::InvalidInput(e.to_string()));
    let models = models(svc, tenant).await?;
    let options = ClvOptions { months, monthly_discount: 0.01, units_per_month: UNIT.per_month() };
    let value = match (&summary, &models.refusal) {
        (Err(refusal), _) => Err(refusal.clone()),
        (Ok(None), _) => Err(Refusal::NoPurchases),
        (Ok(Some(_)), Some(refusal)) => Err(refusal.clone()),
        (Ok(Some(summary)), None) => clv::score(Some(summary), &models.purchases, &models.spend, &options),
    };
    let churn = match &summary {
        Err(refusal) => Err(refusal.clone()),
        Ok(summary) => clv::churn(summary.as_ref(), &models.purchases).map(|c| (c.churn_risk, c.p_alive)),
    };
    let external = external_of(svc, tenant, customer_id).await?;
    svc.access_log.record(caller, [customer_id], AccessCategory::Scores);
    Ok(permit.serve(CustomerScores {
        rfm,
        breakpoints_at: tenant_breakpoints.computed_at,
        value,
        churn,
        options,
        external,
    }))
}

/// The score bands the derived-state worker keeps per customer and announces when they move
/// (`SCORE_BAND_CHANGED`): `rfm` (the named RFM segment by the tenant's current quintiles) and `churnRisk`
/// (`LOW`, `MEDIUM`, `HIGH`). Only for a tenant that has fitted its score model (`fitScoreModel`, then on the
/// schedule): that fit is the tenant asking for scores. A customer without a band (no purchases, one-time buyer for
/// churn) has no entry for it; `None` for a tenant without a model. One query for all `ids`.
pub async fn bands(
    svc: &Services,
    tenant: &TenantId,
    ids: &[Uuid],
    now: DateTime<Utc>,
) -> ApiResult<Option<std::collections::HashMap<Uuid, Vec<(&'static str, serde_json::Value)>>>> {
    use std::collections::HashMap;
    let mut bands: HashMap<Uuid, Vec<(&'static str, serde_json::Value)>> = HashMap::new();
    let Some(row) = score_model::of_tenant(tenant).one(svc.db.conn()).await? else { return Ok(None) };
    if ids.is_empty() {
        return Ok(Some(bands));
    }
    let mut histories: HashMap<Uuid, Vec<Purchase>> = HashMap::new();
    for chunk in ids.chunks(1000) {
        let rows: Vec<PurchaseRow> = purchase_rows(tenant)
            .filter(touchpoint::Column::CustomerId.is_in(chunk.iter().copied()))
            .into_tuple()
            .all(svc.db.conn())
            .await?;
        for (id, at, value) in rows {
            histories.entry(id).or_default().push(Purchase { at, value: value.unwrap_or(0.0) });
        }
    }
    if histories.is_empty() {
        return Ok(Some(bands));
    }
    let quintiles = breakpoints(svc, tenant).await?;
    let models = models_of(Some(row));
    for (id, purchases) in histories {
        let mut found = Vec::new();
        if let Some(rfm) = rfm_of(&purchases, &quintiles, now)
            && let Ok(segment) = serde_json::to_value(rfm.segment)
        {
            found.push(("rfm", segment));
        }
        if let Ok(Some(summary)) = PurchaseSummary::from_purchases(&purchases, now, UNIT)
            && let Ok(churn) = clv::churn(Some(&summary), &models.purchases)
        {
            found.push(("churnRisk", clv::ChurnBand::of(churn.churn_risk).as_str().into()));
        }
        if !found.is_empty() {
            bands.insert(id, found);
        }
    }
    Ok(Some(bands))
}

/// What a fit produced, for the job's result.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FitReport {
    pub version: i64,
    pub customers: u64,
    pub repeat_buyers: u64,
    pub excluded_not_profiled: u64,
    pub purchase_model: serde_json::Value,
    pub spend_model: serde_json::Value,
}

fn refusal_text(err: &FitError) -> String {
    match err {
        FitError::TooFewCustomers { .. } => format!("TOO_FEW_CUSTOMERS: {err}"),
        other => format!("FIT_FAILED: {other}"),
    }
}

/// Fits the tenant's purchase (BG/NBD) and spend (Gamma-Gamma) models on the purchase histories of the customers
/// who may be profiled, and stores them (a new version). Run by the `FIT_SCORE_MODEL` job.
pub async fn fit(caller: &Caller, svc: &Services) -> ApiResult<FitReport> {
    use std::collections::{BTreeMap, HashMap};

    use futures_util::TryStreamExt;
    let tenant = caller.tenant();
    let now = Utc::now();
    // Every purchase of the tenant, per customer in time order, in one streamed pass.
    let mut histories: HashMap<Uuid, Vec<Purchase>> = HashMap::new();
    {
        let mut stream = purchase_rows(tenant).into_tuple::<PurchaseRow>().stream(svc.db.conn()).await?;
        while let Some((customer, at, value)) = stream.try_next().await? {
            histories.entry(customer).or_default().push(Purchase { at, value: value.unwrap_or(0.0) });
        }
    }
    // Only customers who may be profiled.
    let ids: Vec<Uuid> = histories.keys().copied().collect();
    let mut allowed = std::collections::HashSet::new();
    for chunk in ids.chunks(1000) {
        let states = policy::states_of(svc.db.conn(), tenant, chunk).await?;
        allowed.extend(states.into_iter().filter(|(_, s)| policy::profiling_allowed(s, now)).map(|(id, _)| id));
    }
    let excluded = (histories.len() - allowed.len()) as u64;
    // Identical summaries weigh together (most customers share a few (x, t_x, T) rows).
    let mut rows: BTreeMap<(u32, u64, u64, u64), (PurchaseSummary, u64)> = BTreeMap::new();
    for (id, purchases) in &histories {
        if !allowed.contains(id) {
            continue;
        }
        let Ok(Some(summary)) = PurchaseSummary::from_purchases(purchases, now, UNIT) else { continue };
        let key = (
            summary.repeat_purchases(),
            summary.recency().to_bits(),
            summary.age().to_bits(),
            summary.mean_repeat_value().unwrap_or(f64::NAN).to_bits(),
        );
        rows.entry(key).or_insert((summary, 0)).1 += 1;
    }
    let rows: Vec<(PurchaseSummary, u64)> = rows.into_values().collect();
    let customers: u64 = rows.iter().map(|(_, n)| n).sum();
    let repeat_buyers: u64 = rows.iter().filter(|(s, _)| s.repeat_purchases() > 0).map(|(_, n)| n).sum();
    let options = FitOptions::default();
    // The fits are CPU work: off the async threads.
    let fitted = tokio::task::spawn_blocking(move || {
        (bgnbd::fit_weighted(&rows, &options), gamma_gamma::fit_weighted(&rows, &options))
    })
    .await
    .map_err(ApiError::internal)?;
    let (purchase_fit, spend_fit) = fitted;
    let current = score_model::of_tenant(tenant).one(svc.db.conn()).await?.map_or(0, |m| m.version);
    let version = current + 1;
    let row = score_model::ActiveModel {
        tenant: Set(tenant.as_str().to_owned()),
        version: Set(version),
        unit: Set("DAYS".to_owned()),
        bgnbd: Set(purchase_fit.as_ref().ok().and_then(|f| serde_json::to_value(f.params).ok())),
        gamma_gamma: Set(spend_fit.as_ref().ok().and_then(|f| serde_json::to_value(f.params).ok())),
        bgnbd_refusal: Set(purchase_fit.as_ref().err().map(refusal_text)),
        gamma_gamma_refusal: Set(spend_fit.as_ref().err().map(refusal_text)),
        customers: Set(customers as i64),
        repeat_buyers: Set(repeat_buyers as i64),
        fitted_at: Set(now),
        fitted_by: Set(caller.subject().chars().take(256).collect()),
    };
    // The model and a re-evaluation of every buyer's score bands under it (announced as `SCORE_BAND_CHANGED`,
    // cause `SCORE_MODEL`) commit together.
    let txn = svc.db.begin_write().await?;
    score_model::Entity::insert(row)
        .on_conflict(
            sea_orm::sea_query::OnConflict::column(score_model::Column::Tenant)
                .update_columns([
                    score_model::Column::Version,
                    score_model::Column::Unit,
                    score_model::Column::Bgnbd,
                    score_model::Column::GammaGamma,
                    score_model::Column::BgnbdRefusal,
                    score_model::Column::GammaGammaRefusal,
                    score_model::Column::Customers,
                    score_model::Column::RepeatBuyers,
                    score_model::Column::FittedAt,
                    score_model::Column::FittedBy,
                ])
                .to_owned(),
        )
        .exec(&txn)
        .await?;
    let buyers: Vec<Uuid> = allowed.iter().copied().collect();
    crate::derived::maintain::mark(&txn, tenant, &buyers, crate::derived::maintain::Cause::ScoreModel).await?;
    txn.commit().await?;
    svc.derived_wake.wake();
    let describe = |fit: Result<serde_json::Value, String>| match fit {
        Ok(params) => serde_json::json!({ "fitted": true, "params": params }),
        Err(refusal) => serde_json::json!({ "fitted": false, "refusal": refusal }),
    };
    Ok(FitReport {
        version,
        customers,
        repeat_buyers,
        excluded_not_profiled: excluded,
        purchase_model: describe(
            purchase_fit
                .map(|f| serde_json::json!({ "r": f.params.r(), "alpha": f.params.alpha(), "a": f.params.a(), "b": f.params.b(), "logLikelihood": f.log_likelihood }))
                .map_err(|e| refusal_text(&e)),
        ),
        spend_model: describe(
            spend_fit
                .map(|f| serde_json::json!({ "p": f.params.p(), "q": f.params.q(), "v": f.params.v(), "logLikelihood": f.log_likelihood }))
                .map_err(|e| refusal_text(&e)),
        ),
    })
}

/// At most this many external scores per call.
pub const MAX_EXTERNAL: usize = 1000;

/// One score a tenant's own model wrote.
#[derive(Debug, Clone)]
pub struct ExternalScore {
    pub customer_id: Uuid,
    pub name: String,
    pub value: f64,
    pub model: Option<String>,
    pub computed_at: DateTime<Utc>,
}

/// What became of one written score.
#[derive(Debug)]
pub enum ExternalOutcome {
    Stored,
    /// Not stored: the customer may not be profiled (`reason`: `PROFILING_REFUSED`, `PROCESSING_RESTRICTED`).
    Refused(&'static str),
    Rejected(ApiError),
}

fn check_external(score: &ExternalScore) -> ApiResult<()> {
    let name_ok = !score.name.is_empty()
        && score.name.len() <= 64
        && score.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.'));
    if !name_ok {
        return Err(ApiError::validation("name", "1–64 of a–z, 0–9, `_`, `-`, `.`"));
    }
    if !score.value.is_finite() {
        return Err(ApiError::validation("value", "a finite number"));
    }
    if score.model.as_ref().is_some_and(|m| m.len() > 128) {
        return Err(ApiError::validation("model", "at most 128 characters"));
    }
    if score.computed_at > Utc::now() + chrono::Duration::minutes(5) {
        return Err(ApiError::validation("computedAt", "lies in the future"));
    }
    Ok(())
}

/// Stores scores the tenant's own models computed (one per customer and name, replaced by a later write), in one
/// transaction; one outcome per item. A customer who may not be profiled gets none (`Refused`). Needs
/// `profiles:write`.
pub async fn set_external(
    caller: &Caller,
    svc: &Services,
    scores: Vec<ExternalScore>,
) -> ApiResult<Vec<ExternalOutcome>> {
    use sea_orm::sea_query::OnConflict;

    use crate::storage::entities::{customer, external_score};
    caller.require(Scope::ProfilesWrite)?;
    if scores.len() > MAX_EXTERNAL {
        return Err(ApiError::validation("scores", format!("at most {MAX_EXTERNAL} per call")));
    }
    let tenant = caller.tenant();
    let txn = svc.db.begin_write().await?;
    let mut ids: Vec<Uuid> = scores.iter().map(|s| s.customer_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let live: std::collections::HashSet<Uuid> = customer::of_tenant(tenant)
        .filter(customer::Column::Id.is_in(ids.iter().copied()))
        .filter(customer::Column::MergedInto.is_null())
        .select_only()
        .column(customer::Column::Id)
        .into_tuple::<Uuid>()
        .all(&txn)
        .await?
        .into_iter()
        .collect();
    let states = policy::states_of(&txn, tenant, &ids).await?;
    let now = Utc::now();
    let mut outcomes = Vec::with_capacity(scores.len());
    for score in scores {
        if let Err(err) = check_external(&score) {
            outcomes.push(ExternalOutcome::Rejected(err));
            continue;
        }
        if !live.contains(&score.customer_id) {
            outcomes.push(ExternalOutcome::Rejected(ApiError::validation(
                "customerId",
                format!("no customer {} (or merged into another)", score.customer_id),
            )));
            continue;
        }
        match states.get(&score.customer_id) {
            Some(state) if !policy::profiling_allowed(state, now) => {
                let reason = if state.restricted { "PROCESSING_RESTRICTED" } else { "PROFILING_REFUSED" };
                outcomes.push(ExternalOutcome::Refused(reason));
                continue;
            }
            _ => {}
        }
        let row = external_score::ActiveModel {
            tenant: Set(tenant.as_str().to_owned()),
            customer_id: Set(score.customer_id),
            name: Set(score.name),
            value: Set(score.value),
            model: Set(score.model),
            computed_at: Set(score.computed_at),
            written_by: Set(caller.subject().chars().take(256).collect()),
            written_at: Set(now),
        };
        external_score::Entity::insert(row)
            .on_conflict(
                OnConflict::columns([
                    external_score::Column::Tenant,
                    external_score::Column::CustomerId,
                    external_score::Column::Name,
                ])
                .update_columns([
                    external_score::Column::Value,
                    external_score::Column::Model,
                    external_score::Column::ComputedAt,
                    external_score::Column::WrittenBy,
                    external_score::Column::WrittenAt,
                ])
                .to_owned(),
            )
            .exec_without_returning(&txn)
            .await?;
        outcomes.push(ExternalOutcome::Stored);
    }
    txn.commit().await?;
    Ok(outcomes)
}

/// Drops the stored derived state of a customer who may no longer be profiled (consent, restriction) or who was
/// merged into another (the writer's model scores the person again): in the transaction of that change, which
/// goes through `consent::ledger::bump_consent_version`.
pub(crate) async fn on_privacy_change(
    conn: &impl sea_orm::ConnectionTrait,
    tenant: &TenantId,
    customer_id: Uuid,
) -> Result<(), sea_orm::DbErr> {
    use crate::storage::entities::{customer, external_score};
    // Most customers have none: one look, and nothing else to read.
    let holds = external_score::of_tenant(tenant)
        .filter(external_score::Column::CustomerId.eq(customer_id))
        .select_only()
        .column(external_score::Column::Name)
        .into_tuple::<String>()
        .one(conn)
        .await?
        .is_some();
    if !holds {
        return Ok(());
    }
    let merged = customer::of_tenant(tenant)
        .filter(customer::Column::Id.eq(customer_id))
        .select_only()
        .column(customer::Column::MergedInto)
        .into_tuple::<Option<Uuid>>()
        .one(conn)
        .await?
        .flatten()
        .is_some();
    let allowed = policy::states_of(conn, tenant, &[customer_id])
        .await?
        .get(&customer_id)
        .is_some_and(|s| policy::profiling_allowed(s, Utc::now()));
    if merged || !allowed {
        external_score::delete_of_tenant(tenant)
            .filter(external_score::Column::CustomerId.eq(customer_id))
            .exec(conn)
            .await?;
    }
    Ok(())
}

/// The customer's external scores, by name.
pub async fn external_of(svc: &Services, tenant: &TenantId, customer_id: Uuid) -> ApiResult<Vec<ExternalScore>> {
    use crate::storage::entities::external_score;
    let rows = external_score::of_tenant(tenant)
        .filter(external_score::Column::CustomerId.eq(customer_id))
        .order_by_asc(external_score::Column::Name)
        .all(svc.db.conn())
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| ExternalScore {
            customer_id: r.customer_id,
            name: r.name,
            value: r.value,
            model: r.model,
            computed_at: r.computed_at,
        })
        .collect())
}
