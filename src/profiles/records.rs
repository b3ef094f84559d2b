//! Source records: upserted by (tenant, source, source record id), kept as received, resolved into customers by
//! the one resolution function; every changed trait value is kept with its source for survivorship and history.
use crate::changes;
use crate::privacy::access_log::AccessCategory;
use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QuerySelect, Set, sea_query::Expr,
};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::{
    customers::IdentityInput,
    identity::Identity,
    resolution::{self, Resolution},
    rules, traits,
};
use crate::{
    auth::{Caller, Scope, TenantId},
    error::{ApiError, ApiResult},
    services::Services,
    storage::entities::{customer, source_record, trait_value},
};

pub const MAX_BATCH: usize = 5000;

/// A customer record as a source system holds it.
#[derive(Debug, Clone)]
pub struct CustomerRecordInput {
    pub source: String,
    pub source_record_id: String,
    pub identities: Vec<IdentityInput>,
    /// Core and custom traits by name.
    pub traits: Map<String, Value>,
    pub observed_at: Option<DateTime<Utc>>,
}

/// What happened to one record.
#[derive(Debug)]
pub enum RecordOutcome {
    Created {
        record_id: Uuid,
        customer_id: Uuid,
    },
    Updated {
        record_id: Uuid,
        customer_id: Uuid,
    },
    /// The same record again: nothing changed.
    Unchanged {
        record_id: Uuid,
        customer_id: Uuid,
    },
    Rejected(ApiError),
    /// An identity belongs to an erased person: dropped and counted.
    Suppressed,
}

struct Valid {
    source: String,
    key: String,
    identities: Vec<Identity>,
    identities_json: Value,
    traits: Map<String, Value>,
    observed_at: DateTime<Utc>,
    /// Whether the source said when it observed the values (`observedAt`), or they are observed at receipt.
    observed_given: bool,
}

/// A record's identities as stored: `[{kind, source, value}]`.
fn identities_json(identities: &[Identity]) -> Value {
    Value::Array(
        identities
            .iter()
            .map(|i| json!({ "kind": i.kind().as_str(), "source": i.source(), "value": i.value() }))
            .collect(),
    )
}

/// A source name as records and API writes give it: trimmed, 1–64 characters.
pub(crate) fn parse_source(field: &str, raw: &str) -> ApiResult<String> {
    let source = raw.trim();
    if source.is_empty() || source.chars().count() > 64 {
        return Err(ApiError::validation(field, "1–64 characters"));
    }
    Ok(source.to_owned())
}

fn validate(svc: &Services, trait_rules: &traits::TraitRules, input: &CustomerRecordInput) -> ApiResult<Valid> {
    let source = parse_source("source", &input.source)?;
    let key = input.source_record_id.trim();
    if key.is_empty() || key.len() > 128 {
        return Err(ApiError::validation("sourceRecordId", "1–128 characters"));
    }
    let identities = Identity::parse_all(&input.identities, &svc.settings)?;
    let identities_json = identities_json(&identities);
    let mut normalised = Map::new();
    for (name, value) in &input.traits {
        if let Some(value) = traits::normalise(trait_rules, &svc.settings, name, value, &format!("traits.{name}"))? {
            normalised.insert(name.clone(), value);
        }
    }
    let observed_at = input.observed_at.unwrap_or_else(Utc::now).trunc_subsecs(6);
    if observed_at > Utc::now() + chrono::Duration::minutes(5) {
        return Err(ApiError::validation("observedAt", "lies in the future"));
    }
    Ok(Valid {
        source,
        key: key.to_owned(),
        identities,
        identities_json,
        traits: normalised,
        observed_at,
        observed_given: input.observed_at.is_some(),
    })
}

/// Ingests a batch of records; one outcome per record, in order. Needs `profiles:write`.
#[tracing::instrument(skip_all, fields(tenant = %caller.tenant(), records = items.len()))]
pub async fn ingest_customer_records(
    caller: &Caller,
    svc: &Services,
    items: Vec<CustomerRecordInput>,
) -> ApiResult<Vec<RecordOutcome>> {
    caller.require(Scope::ProfilesWrite)?;
    if items.len() > MAX_BATCH {
        return Err(ApiError::validation("records", format!("at most {MAX_BATCH} per batch")));
    }
    let trait_rules = traits::rules_for(svc.db.conn(), caller.tenant()).await?;
    let resolution_rules = rules::for_tenant(svc, caller.tenant()).await?;
    let mut outcomes = Vec::with_capacity(items.len());
    for input in items {
        let valid = match validate(svc, &trait_rules, &input) {
            Ok(valid) => valid,
            Err(err) => {
                outcomes.push(RecordOutcome::Rejected(err));
                continue;
            }
        };
        let mut outcome = RecordOutcome::Rejected(ApiError::Conflict("could not settle concurrent writes".into()));
        for _ in 0..3 {
            match write(caller, svc, &trait_rules, &resolution_rules, &valid).await {
                Err(err) if ApiError::is_unique_violation(&err) => continue,
                Err(err) => {
                    outcome = RecordOutcome::Rejected(err.into());
                    break;
                }
                Ok(done) => {
                    outcome = done;
                    break;
                }
            }
        }
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

async fn write(
    caller: &Caller,
    svc: &Services,
    trait_rules: &traits::TraitRules,
    resolution_rules: &rules::CompiledRules,
    valid: &Valid,
) -> Result<RecordOutcome, sea_orm::DbErr> {
    let tenant = caller.tenant();
    let now = Utc::now();
    let txn = svc.db.begin_write().await?;
    let existing = source_record::of_tenant(tenant)
        .filter(source_record::Column::Source.eq(valid.source.as_str()))
        .filter(source_record::Column::SourceRecordId.eq(valid.key.as_str()))
        .one(&txn)
        .await?;
    let traits_json = Value::Object(valid.traits.clone());
    // The same payload again changes nothing: a re-send without `observedAt` is a replay (its values were observed
    // when the record was first received); with `observedAt`, only a different time is news.
    if let Some(old) = &existing
        && old.identities == valid.identities_json
        && old.traits == traits_json
        && (!valid.observed_given || old.observed_at == valid.observed_at)
    {
        txn.rollback().await?;
        return Ok(RecordOutcome::Unchanged { record_id: old.id, customer_id: old.customer_id });
    }
    let (mut merged, mut customer_created) = (Vec::new(), false);
    let customer_id = if valid.identities.is_empty() {
        match &existing {
            Some(old) => old.customer_id,
            None => {
                txn.rollback().await?;
                return Ok(RecordOutcome::Rejected(ApiError::validation(
                    "identities",
                    "a new record needs an identity",
                )));
            }
        }
    } else {
        match resolution::resolve(
            &txn,
            tenant,
            &svc.settings,
            resolution_rules,
            caller.subject(),
            &valid.identities,
            now,
        )
        .await?
        {
            Resolution::Resolved(resolved) => {
                (merged, customer_created) = (resolved.merged, resolved.created);
                resolved.customer.id
            }
            Resolution::Suppressed => {
                txn.rollback().await?;
                return Ok(RecordOutcome::Suppressed);
            }
            Resolution::Blocked => {
                txn.rollback().await?;
                return Ok(RecordOutcome::Rejected(ApiError::validation(
                    "identities",
                    "every identity is on the tenant's block list",
                )));
            }
        }
    };

    // A later observation of a value the record already held is kept as a new value row, so it wins back under
    // MOST_RECENT (an earlier first observation stays for FIRST_NON_EMPTY).
    let observed_later = existing.as_ref().is_some_and(|old| valid.observed_at > old.observed_at);
    let mut refresh = vec![customer_id];
    let (record_id, created, old_traits) = match existing {
        Some(old) => {
            if old.customer_id != customer_id {
                refresh.push(old.customer_id);
                // The record now points elsewhere: its trait history follows it.
                trait_value::update_of_tenant(tenant)
                    .col_expr(trait_value::Column::CustomerId, Expr::value(customer_id))
                    .filter(trait_value::Column::RecordId.eq(old.id))
                    .exec(&txn)
                    .await?;
            }
            let id = old.id;
            let old_traits = old.traits.clone();
            let mut row: source_record::ActiveModel = old.into();
            row.customer_id = Set(customer_id);
            row.identities = Set(valid.identities_json.clone());
            row.traits = Set(traits_json.clone());
            row.observed_at = Set(valid.observed_at);
            row.updated_at = Set(now);
            row.update(&txn).await?;
            (id, false, old_traits)
        }
        None => {
            let row = source_record::ActiveModel {
                id: Set(Uuid::now_v7()),
                tenant: Set(tenant.as_str().to_owned()),
                customer_id: Set(customer_id),
                source: Set(valid.source.clone()),
                source_record_id: Set(valid.key.clone()),
                identities: Set(valid.identities_json.clone()),
                traits: Set(traits_json.clone()),
                observed_at: Set(valid.observed_at),
                received_at: Set(now),
                updated_at: Set(now),
            }
            .insert(&txn)
            .await?;
            (row.id, true, Value::Object(Map::new()))
        }
    };
    let changed: Vec<trait_value::ActiveModel> = valid
        .traits
        .iter()
        .filter(|(name, value)| observed_later || old_traits.get(name.as_str()) != Some(*value))
        .map(|(name, value)| trait_value::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant: Set(tenant.as_str().to_owned()),
            customer_id: Set(customer_id),
            record_id: Set(record_id),
            source: Set(valid.source.clone()),
            name: Set(name.clone()),
            value: Set(value.clone()),
            observed_at: Set(valid.observed_at),
            recorded_at: Set(now),
        })
        .collect();
    if !changed.is_empty() {
        trait_value::Entity::insert_many(changed).exec(&txn).await?;
    }
    traits::refresh_derived(&txn, tenant, trait_rules, &refresh, now).await?;
    txn.commit().await?;
    changes::committed(svc, tenant, resolution::changes_of(customer_id, customer_created, &merged, true)).await;
    Ok(if created {
        RecordOutcome::Created { record_id, customer_id }
    } else {
        RecordOutcome::Updated { record_id, customer_id }
    })
}

/// Trait values a caller gives through the API (`upsertCustomer`, tracking `identify`), from a named source.
#[derive(Debug, Clone)]
pub struct ApiValues {
    pub source: String,
    /// Normalised values by trait name.
    pub values: Map<String, Value>,
}

/// Keeps values given through the API like any source's: in the source record (`source`, the customer's id) of the
/// customer, each value a trait value observed now (so survivorship and `traitHistory` treat it like any other). A
/// value that already wins from the same source changes nothing. Returns the customers whose names the caller
/// must re-derive (with `traits::refresh_derived`, in the same transaction).
pub(crate) async fn write_api_values(
    txn: &DatabaseTransaction,
    tenant: &TenantId,
    trait_rules: &traits::TraitRules,
    customer_id: Uuid,
    identities: &[Identity],
    given: &ApiValues,
    now: DateTime<Utc>,
) -> Result<Vec<Uuid>, sea_orm::DbErr> {
    let source = given.source.as_str();
    let now = now.trunc_subsecs(6);
    let held = trait_value::of_tenant(tenant)
        .filter(trait_value::Column::CustomerId.eq(customer_id))
        .filter(trait_value::Column::Name.is_in(given.values.keys().map(String::as_str)))
        .all(txn)
        .await?;
    let won = traits::winners(trait_rules, &held);
    let fresh: Vec<(&String, &Value)> = given
        .values
        .iter()
        .filter(|(name, value)| !won.get(name.as_str()).is_some_and(|w| w.source == source && w.value == **value))
        .collect();
    if fresh.is_empty() {
        return Ok(Vec::new());
    }
    let key = customer_id.to_string();
    let existing = source_record::of_tenant(tenant)
        .filter(source_record::Column::Source.eq(source))
        .filter(source_record::Column::SourceRecordId.eq(key.as_str()))
        .one(txn)
        .await?;
    let mut refresh = vec![customer_id];
    let record_id = match existing {
        Some(old) => {
            if old.customer_id != customer_id {
                // The record went elsewhere (an unmerge sent it after its identities): it comes back, with its history.
                refresh.push(old.customer_id);
                trait_value::update_of_tenant(tenant)
                    .col_expr(trait_value::Column::CustomerId, Expr::value(customer_id))
                    .filter(trait_value::Column::RecordId.eq(old.id))
                    .exec(txn)
                    .await?;
            }
            let id = old.id;
            let mut traits = old.traits.as_object().cloned().unwrap_or_default();
            for (name, value) in &given.values {
                traits.insert(name.clone(), value.clone());
            }
            let mut row: source_record::ActiveModel = old.into();
            row.customer_id = Set(customer_id);
            row.identities = Set(identities_json(identities));
            row.traits = Set(Value::Object(traits));
            row.observed_at = Set(now);
            row.updated_at = Set(now);
            row.update(txn).await?;
            id
        }
        None => {
            source_record::ActiveModel {
                id: Set(Uuid::now_v7()),
                tenant: Set(tenant.as_str().to_owned()),
                customer_id: Set(customer_id),
                source: Set(source.to_owned()),
                source_record_id: Set(key),
                identities: Set(identities_json(identities)),
                traits: Set(Value::Object(given.values.clone())),
                observed_at: Set(now),
                received_at: Set(now),
                updated_at: Set(now),
            }
            .insert(txn)
            .await?
            .id
        }
    };
    let rows: Vec<trait_value::ActiveModel> = fresh
        .into_iter()
        .map(|(name, value)| trait_value::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant: Set(tenant.as_str().to_owned()),
            customer_id: Set(customer_id),
            record_id: Set(record_id),
            source: Set(source.to_owned()),
            name: Set(name.clone()),
            value: Set(value.clone()),
            observed_at: Set(now),
            recorded_at: Set(now),
        })
        .collect();
    trait_value::Entity::insert_many(rows).exec(txn).await?;
    Ok(refresh)
}

/// A source record as the API shows it.
#[derive(Debug, Clone)]
pub struct SourceRecord {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub source: String,
    pub source_record_id: String,
    pub identities: Value,
    pub traits: Value,
    pub observed_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<source_record::Model> for SourceRecord {
    fn from(m: source_record::Model) -> Self {
        SourceRecord {
            id: m.id,
            customer_id: m.customer_id,
            source: m.source,
            source_record_id: m.source_record_id,
            identities: m.identities,
            traits: m.traits,
            observed_at: m.observed_at,
            updated_at: m.updated_at,
        }
    }
}

/// Which customer a source record belongs to now. Needs `profiles:read`.
pub async fn find(caller: &Caller, svc: &Services, source: &str, key: &str) -> ApiResult<SourceRecord> {
    caller.require(Scope::ProfilesRead)?;
    let row = source_record::of_tenant(caller.tenant())
        .filter(source_record::Column::Source.eq(source))
        .filter(source_record::Column::SourceRecordId.eq(key))
        .one(svc.db.conn())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("source record {source}/{key}")))?;
    // A record is the customer's personal data: the same restriction and access log as a profile read.
    let restricted = customer::of_tenant(caller.tenant())
        .filter(customer::Column::Id.eq(row.customer_id))
        .select_only()
        .column(customer::Column::Restricted)
        .into_tuple::<bool>()
        .one(svc.db.conn())
        .await?
        .unwrap_or(false);
    crate::consent::policy::check_profile_visible(caller, restricted)?;
    svc.access_log.record(caller, [row.customer_id], AccessCategory::SourceRecord);
    Ok(row.into())
}

/// The source records of a customer (at most 100, newest first). Needs `profiles:read`.
pub async fn of_customer(caller: &Caller, svc: &Services, customer_id: Uuid) -> ApiResult<Vec<SourceRecord>> {
    use sea_orm::QueryOrder;
    caller.require(Scope::ProfilesRead)?;
    let rows = source_record::of_tenant(caller.tenant())
        .filter(source_record::Column::CustomerId.eq(customer_id))
        .order_by_desc(source_record::Column::Id)
        .limit(100)
        .all(svc.db.conn())
        .await?;
    Ok(rows.into_iter().map(SourceRecord::from).collect())
}

/// [`of_customer`] for many customers at once (the loader behind a list's `sourceRecords`): one window query per
/// 500 customers, each customer's records newest first (at most 100). Every customer asked for is in the answer.
pub async fn of_customers(
    caller: &Caller,
    svc: &Services,
    customer_ids: &[Uuid],
) -> ApiResult<std::collections::HashMap<Uuid, Vec<SourceRecord>>> {
    use crate::storage::window::{TopPerCustomer, top_per_customer};
    caller.require(Scope::ProfilesRead)?;
    let query = TopPerCustomer {
        table: "source_records",
        key_columns: &["customer_id"],
        filter: None,
        order_desc: &["id"],
        limit: 100,
    };
    let by_customer = top_per_customer::<source_record::Entity>(&svc.db, caller.tenant(), &query, customer_ids).await?;
    Ok(by_customer.into_iter().map(|(id, rows)| (id, rows.into_iter().map(SourceRecord::from).collect())).collect())
}
