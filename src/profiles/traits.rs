//! Traits and survivorship: core traits are typed, custom traits are declared per tenant, and each trait's value on
//! the customer is chosen from its sources by the tenant's rule (source priority, most recent, first non-empty).
use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
    sea_query::{CaseStatement, Expr},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::identity::{Identity, IdentityKind};
use crate::{
    auth::{Caller, Scope, TenantId},
    error::{ApiError, ApiResult},
    services::{DomainSettings, Services},
    storage::entities::{customer, trait_rules, trait_value},
};

/// How a trait's value is chosen when sources disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, async_graphql::Enum)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SurvivorshipRule {
    /// The first source in the rule's list that has a value wins; the most recent within it.
    SourcePriority,
    MostRecent,
    /// The earliest observed non-empty value stays.
    FirstNonEmpty,
}

/// Types a tenant can declare for its custom traits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, async_graphql::Enum)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TraitType {
    String,
    Number,
    Boolean,
    Date,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraitRule {
    pub name: String,
    pub rule: SurvivorshipRule,
    #[serde(default)]
    pub sources: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomTrait {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: TraitType,
    /// Directly identifies the person: masked whole without `pii:read` (others are masked as free-form JSON).
    #[serde(default)]
    pub personal: bool,
}

/// A tenant's trait rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TraitRules {
    pub default_rule: SurvivorshipRule,
    pub rules: Vec<TraitRule>,
    pub custom: Vec<CustomTrait>,
}

impl TraitRules {
    /// Whether a trait directly identifies the person: a personal core trait, or a custom trait declared personal.
    pub fn is_personal(&self, name: &str) -> bool {
        is_personal(name) || self.custom.iter().any(|c| c.name == name && c.personal)
    }
}

impl Default for TraitRules {
    fn default() -> Self {
        TraitRules { default_rule: SurvivorshipRule::MostRecent, rules: Vec::new(), custom: Vec::new() }
    }
}

/// The core traits and whether each directly identifies the person (masked without `pii:read`).
pub const CORE_TRAITS: [(&str, bool); 9] = [
    ("givenName", true),
    ("familyName", true),
    ("emails", true),
    ("phones", true),
    ("addresses", true),
    ("birthDate", true),
    ("locale", false),
    ("country", false),
    ("company", false),
];

pub fn is_personal(name: &str) -> bool {
    CORE_TRAITS.iter().any(|(n, personal)| *n == name && *personal)
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

fn short_text(field: &str, value: &Value, max: usize) -> ApiResult<Value> {
    match value.as_str().map(str::trim) {
        Some(s) if s.chars().count() <= max => Ok(Value::String(s.to_owned())),
        Some(_) => Err(ApiError::validation(field, format!("longer than {max} characters"))),
        None => Err(ApiError::validation(field, "must be text")),
    }
}

/// Validates and normalises one trait value (`field` names it in errors). Empty values are dropped (`None`).
pub fn normalise(
    rules: &TraitRules,
    settings: &DomainSettings,
    name: &str,
    value: &Value,
    field: &str,
) -> ApiResult<Option<Value>> {
    if is_empty(value) {
        return Ok(None);
    }
    let normalised = match name {
        "givenName" | "familyName" | "company" => short_text(field, value, 200)?,
        "locale" => short_text(field, value, 35)?,
        "country" => {
            let text = short_text(field, value, 2)?;
            let code = text.as_str().unwrap_or_default().to_ascii_uppercase();
            if code.len() != 2 || !code.chars().all(|c| c.is_ascii_alphabetic()) {
                return Err(ApiError::validation(field, "an ISO 3166 alpha-2 code such as DK"));
            }
            Value::String(code)
        }
        "birthDate" => {
            let text = value.as_str().unwrap_or_default();
            let date = NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map_err(|_| ApiError::validation(field, "a date such as 1990-04-30"))?;
            if date > Utc::now().date_naive() {
                return Err(ApiError::validation(field, "lies in the future"));
            }
            Value::String(date.to_string())
        }
        "emails" | "phones" => {
            let kind = if name == "emails" { IdentityKind::Email } else { IdentityKind::Phone };
            let list = value.as_array().ok_or_else(|| ApiError::validation(field, "must be a list"))?;
            let mut out = Vec::new();
            for (i, item) in list.iter().enumerate() {
                let text =
                    item.as_str().ok_or_else(|| ApiError::validation(format!("{field}[{i}]"), "must be text"))?;
                let identity = Identity::parse(kind, text, None, settings, &format!("{field}[{i}]"))?;
                if !out.contains(&Value::String(identity.value().to_owned())) {
                    out.push(Value::String(identity.value().to_owned()));
                }
            }
            Value::Array(out)
        }
        "addresses" => {
            let list = value.as_array().ok_or_else(|| ApiError::validation(field, "must be a list"))?;
            if list.iter().any(|a| !a.is_object()) || value.to_string().len() > 4096 {
                return Err(ApiError::validation(field, "a list of address objects (at most 4 KiB)"));
            }
            value.clone()
        }
        custom => {
            let declared = rules.custom.iter().find(|c| c.name == custom).ok_or_else(|| {
                ApiError::validation(field, format!("`{custom}` is not a declared custom trait (see traitRules)"))
            })?;
            let ok = match declared.kind {
                TraitType::String => value.as_str().is_some_and(|s| s.chars().count() <= 1000),
                TraitType::Number => value.is_number(),
                TraitType::Boolean => value.is_boolean(),
                TraitType::Date => value.as_str().is_some_and(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()),
                TraitType::Json => value.to_string().len() <= 4096,
            };
            if !ok {
                return Err(ApiError::validation(field, format!("must be of the declared type {:?}", declared.kind)));
            }
            value.clone()
        }
    };
    Ok(Some(normalised))
}

/// The winning value of every trait among the given values.
pub fn winners<'a>(rules: &TraitRules, values: &'a [trait_value::Model]) -> BTreeMap<String, &'a trait_value::Model> {
    let mut by_name: BTreeMap<&str, Vec<&trait_value::Model>> = BTreeMap::new();
    for value in values.iter().filter(|v| !is_empty(&v.value)) {
        by_name.entry(value.name.as_str()).or_default().push(value);
    }
    let mut out = BTreeMap::new();
    for (name, candidates) in by_name {
        let rule = rules.rules.iter().find(|r| r.name == name);
        let kind = rule.map(|r| r.rule).unwrap_or(rules.default_rule);
        let recency = |v: &&&trait_value::Model| (v.observed_at, v.id);
        let winner = match kind {
            SurvivorshipRule::MostRecent => candidates.iter().max_by_key(recency),
            SurvivorshipRule::FirstNonEmpty => candidates.iter().min_by_key(recency),
            SurvivorshipRule::SourcePriority => {
                let sources = rule.map(|r| r.sources.as_slice()).unwrap_or_default();
                let rank = |v: &trait_value::Model| sources.iter().position(|s| *s == v.source).unwrap_or(usize::MAX);
                let best = candidates.iter().map(|v| rank(v)).min().unwrap_or(usize::MAX);
                candidates.iter().filter(|v| rank(v) == best).max_by_key(recency)
            }
        };
        if let Some(winner) = winner {
            out.insert(name.to_owned(), *winner);
        }
    }
    out
}

/// The traits the customer row also carries as columns (`given_name`, `family_name`): always the winning values,
/// written by [`refresh_derived`] on every path that changes trait values or rules.
pub const DERIVED: [&str; 2] = ["givenName", "familyName"];

/// Customers per statement when re-deriving.
const DERIVE_BATCH: usize = 500;

/// The one place the customer's derived columns are computed: recomputes the winning `givenName` / `familyName`
/// of these customers from their trait values under `rules` and writes the columns that differ (`None` when no
/// source gives the trait), two reads and at most one `UPDATE … CASE` per 500 customers. Called inside the
/// writing transaction by record ingest, upsert, identify, merge, unmerge and trait-rule changes. Returns how many
/// customers changed.
pub(crate) async fn refresh_derived(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    rules: &TraitRules,
    customer_ids: &[Uuid],
    now: DateTime<Utc>,
) -> Result<usize, DbErr> {
    let mut ids = customer_ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    // Traits feed definitions: the customers' derived state is evaluated again.
    crate::derived::maintain::mark(conn, tenant, &ids, crate::derived::maintain::Cause::Record).await?;
    let mut changed_total = 0;
    for chunk in ids.chunks(DERIVE_BATCH) {
        let values = trait_value::of_tenant(tenant)
            .filter(trait_value::Column::CustomerId.is_in(chunk.iter().copied()))
            .filter(trait_value::Column::Name.is_in(DERIVED))
            .all(conn)
            .await?;
        let mut by_customer: HashMap<Uuid, Vec<trait_value::Model>> = HashMap::new();
        for value in values {
            by_customer.entry(value.customer_id).or_default().push(value);
        }
        let stored: Vec<(Uuid, Option<String>, Option<String>)> = customer::of_tenant(tenant)
            .filter(customer::Column::Id.is_in(chunk.iter().copied()))
            .select_only()
            .columns([customer::Column::Id, customer::Column::GivenName, customer::Column::FamilyName])
            .into_tuple()
            .all(conn)
            .await?;
        let mut given = CaseStatement::new();
        let mut family = CaseStatement::new();
        let mut changed = Vec::new();
        for (id, old_given, old_family) in stored {
            let values = by_customer.remove(&id).unwrap_or_default();
            let won = winners(rules, &values);
            let text = |name: &str| won.get(name).and_then(|v| v.value.as_str()).map(str::to_owned);
            let (new_given, new_family) = (text("givenName"), text("familyName"));
            if new_given == old_given && new_family == old_family {
                continue;
            }
            given = given.case(customer::Column::Id.eq(id), Expr::val(new_given));
            family = family.case(customer::Column::Id.eq(id), Expr::val(new_family));
            changed.push(id);
        }
        if changed.is_empty() {
            continue;
        }
        customer::update_of_tenant(tenant)
            .col_expr(customer::Column::GivenName, given.into())
            .col_expr(customer::Column::FamilyName, family.into())
            .col_expr(customer::Column::UpdatedAt, Expr::val(now))
            .filter(customer::Column::Id.is_in(changed.iter().copied()))
            .exec(conn)
            .await?;
        changed_total += changed.len();
    }
    Ok(changed_total)
}

/// How a trait's winner is chosen under these rules (rule and, for source priority, the sources).
fn effective<'a>(rules: &'a TraitRules, name: &str) -> (SurvivorshipRule, &'a [String]) {
    match rules.rules.iter().find(|r| r.name == name) {
        Some(r) if r.rule == SurvivorshipRule::SourcePriority => (r.rule, r.sources.as_slice()),
        Some(r) => (r.rule, &[]),
        None => (rules.default_rule, &[]),
    }
}

/// Re-derives the columns of every customer holding a value of a derived trait whose rule changed, in batches of
/// customers (keyset on the customer id), inside the caller's transaction.
async fn rederive_after_rule_change(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    old: &TraitRules,
    new: &TraitRules,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    let names: Vec<&str> = DERIVED.into_iter().filter(|n| effective(old, n) != effective(new, n)).collect();
    if names.is_empty() {
        return Ok(());
    }
    let mut after: Option<Uuid> = None;
    loop {
        let mut query = trait_value::of_tenant(tenant).filter(trait_value::Column::Name.is_in(names.iter().copied()));
        if let Some(after) = after {
            query = query.filter(trait_value::Column::CustomerId.gt(after));
        }
        let ids: Vec<Uuid> = query
            .select_only()
            .column(trait_value::Column::CustomerId)
            .distinct()
            .order_by_asc(trait_value::Column::CustomerId)
            .limit(DERIVE_BATCH as u64)
            .into_tuple()
            .all(conn)
            .await?;
        refresh_derived(conn, tenant, new, &ids, now).await?;
        if ids.len() < DERIVE_BATCH {
            return Ok(());
        }
        after = ids.last().copied();
    }
}

/// The tenant's rules (defaults until changed).
pub async fn rules_for(conn: &impl ConnectionTrait, tenant: &TenantId) -> Result<TraitRules, DbErr> {
    let row = trait_rules::Entity::find_by_id(tenant.as_str().to_owned()).one(conn).await?;
    Ok(row.and_then(|r| serde_json::from_value(r.rules).ok()).unwrap_or_default())
}

pub async fn read_rules(caller: &Caller, svc: &Services) -> ApiResult<TraitRules> {
    caller.require(Scope::ProfilesRead)?;
    Ok(rules_for(svc.db.conn(), caller.tenant()).await?)
}

/// Replaces the tenant's trait rules and, in the same transaction, re-derives the names of every customer whose
/// `givenName` / `familyName` rule changed, so no read sees the new rules beside names chosen by the old ones.
/// Needs `profiles:write`.
pub async fn update_rules(caller: &Caller, svc: &Services, rules: TraitRules) -> ApiResult<TraitRules> {
    caller.require(Scope::ProfilesWrite)?;
    for (i, custom) in rules.custom.iter().enumerate() {
        let ok = !custom.name.is_empty()
            && custom.name.len() <= 64
            && custom.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !CORE_TRAITS.iter().any(|(n, _)| *n == custom.name);
        if !ok {
            return Err(ApiError::validation(format!("custom[{i}].name"), "letters, digits and `_`, not a core trait"));
        }
    }
    let json = serde_json::to_value(&rules).map_err(ApiError::internal)?;
    let txn = svc.db.begin_write().await?;
    let old = rules_for(&txn, caller.tenant()).await?;
    let now = Utc::now();
    let row = trait_rules::ActiveModel {
        tenant: Set(caller.tenant().as_str().to_owned()),
        rules: Set(json),
        updated_at: Set(now),
    };
    if trait_rules::Entity::find_by_id(caller.tenant().as_str().to_owned()).one(&txn).await?.is_some() {
        row.update(&txn).await?;
    } else {
        row.insert(&txn).await?;
    }
    rederive_after_rule_change(&txn, caller.tenant(), &old, &rules, now).await?;
    txn.commit().await?;
    // Names of any of the tenant's customers may have changed: nothing kept from before may be served.
    super::cache::forget_tenant(svc, caller.tenant());
    Ok(rules)
}

/// A stored value of a trait, with where it came from.
#[derive(Debug, Clone)]
pub struct TraitValue {
    pub name: String,
    pub value: Value,
    pub source: String,
    pub record_id: Uuid,
    pub observed_at: DateTime<Utc>,
    /// Directly identifies the person (`TraitRules::is_personal`): masked whole without `pii:read`.
    pub personal: bool,
}

impl TraitValue {
    fn new(m: &trait_value::Model, rules: &TraitRules) -> Self {
        TraitValue {
            name: m.name.clone(),
            value: m.value.clone(),
            source: m.source.clone(),
            record_id: m.record_id,
            observed_at: m.observed_at,
            personal: rules.is_personal(&m.name),
        }
    }
}

/// The winning traits of a customer. Needs `profiles:read`.
pub async fn traits_of(caller: &Caller, svc: &Services, customer_id: Uuid) -> ApiResult<BTreeMap<String, TraitValue>> {
    caller.require(Scope::ProfilesRead)?;
    let rules = rules_for(svc.db.conn(), caller.tenant()).await?;
    let values = trait_value::of_tenant(caller.tenant())
        .filter(trait_value::Column::CustomerId.eq(customer_id))
        .all(svc.db.conn())
        .await?;
    Ok(winners(&rules, &values).into_iter().map(|(name, v)| (name, TraitValue::new(v, &rules))).collect())
}

/// Every value a trait had, newest first (at most 100). Needs `profiles:read`.
pub async fn history(caller: &Caller, svc: &Services, customer_id: Uuid, name: &str) -> ApiResult<Vec<TraitValue>> {
    caller.require(Scope::ProfilesRead)?;
    let rules = rules_for(svc.db.conn(), caller.tenant()).await?;
    let rows = trait_value::of_tenant(caller.tenant())
        .filter(trait_value::Column::CustomerId.eq(customer_id))
        .filter(trait_value::Column::Name.eq(name))
        .order_by_desc(trait_value::Column::ObservedAt)
        .order_by_desc(trait_value::Column::Id)
        .limit(100)
        .all(svc.db.conn())
        .await?;
    Ok(rows.iter().map(|row| TraitValue::new(row, &rules)).collect())
}

/// [`traits_of`] for many customers at once (the loader behind a list's `traits`): the rules once and one query per
/// 500 customers. Every customer asked for is in the answer (no values: no traits).
pub async fn traits_of_many(
    caller: &Caller,
    svc: &Services,
    customer_ids: &[Uuid],
) -> ApiResult<HashMap<Uuid, BTreeMap<String, TraitValue>>> {
    caller.require(Scope::ProfilesRead)?;
    let rules = rules_for(svc.db.conn(), caller.tenant()).await?;
    let mut by_customer: HashMap<Uuid, Vec<trait_value::Model>> =
        customer_ids.iter().map(|id| (*id, Vec::new())).collect();
    for chunk in customer_ids.chunks(crate::storage::window::CHUNK) {
        let values = trait_value::of_tenant(caller.tenant())
            .filter(trait_value::Column::CustomerId.is_in(chunk.iter().copied()))
            .all(svc.db.conn())
            .await?;
        for value in values {
            by_customer.entry(value.customer_id).or_default().push(value);
        }
    }
    Ok(by_customer
        .into_iter()
        .map(|(id, values)| {
            let won =
                winners(&rules, &values).into_iter().map(|(name, v)| (name, TraitValue::new(v, &rules))).collect();
            (id, won)
        })
        .collect())
}

/// [`history`] of one trait for many customers at once: one window query per 500 customers, each customer's
/// values newest first (at most 100), as the single read gives them.
pub async fn history_of_many(
    caller: &Caller,
    svc: &Services,
    customer_ids: &[Uuid],
    name: &str,
) -> ApiResult<HashMap<Uuid, Vec<TraitValue>>> {
    use crate::storage::window::{TopPerCustomer, top_per_customer};
    caller.require(Scope::ProfilesRead)?;
    let rules = rules_for(svc.db.conn(), caller.tenant()).await?;
    let query = TopPerCustomer {
        table: "trait_values",
        key_columns: &["customer_id"],
        filter: Some(("name", name.into())),
        order_desc: &["observed_at", "id"],
        limit: 100,
    };
    let by_customer = top_per_customer::<trait_value::Entity>(&svc.db, caller.tenant(), &query, customer_ids).await?;
    Ok(by_customer
        .into_iter()
        .map(|(id, rows)| (id, rows.iter().map(|row| TraitValue::new(row, &rules)).collect()))
        .collect())
}
