//! Names written before they were trait values: customers with `given_name` / `family_name` in their columns and
//! no trait value of that name get one, from a source record of source `legacy`, observed when the customer was
//! last written. Without it their next re-derive (a merge, an unmerge, a trait-rule change) would clear the names.
use sea_orm::ConnectionTrait;
use sea_orm_migration::prelude::*;
use std::collections::{HashMap, HashSet};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        backfill_legacy_names(manager.get_connection()).await.map(|_| ())
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        Ok(())
    }
}

/// The source the backfilled values carry.
pub const LEGACY_SOURCE: &str = "legacy";

const PAGE: u64 = 500;

/// Gives every customer whose name columns hold a value but whose trait values lack that name a `legacy` source
/// record (keyed by the customer id, as `upsertCustomer` keys its API record) and a trait value per missing name,
/// observed at the customer's `updated_at`. Returns how many customers it backfilled; a second run finds none.
pub async fn backfill_legacy_names<C: ConnectionTrait>(conn: &C) -> Result<u64, DbErr> {
    let backend = conn.get_database_backend();
    let mut after: Option<uuid::Uuid> = None;
    let mut backfilled = 0;
    loop {
        let mut page = Query::select()
            .columns(["id", "tenant", "given_name", "family_name", "updated_at"].map(Alias::new))
            .from(Alias::new("customers"))
            .cond_where(
                Cond::any()
                    .add(Expr::col(Alias::new("given_name")).is_not_null())
                    .add(Expr::col(Alias::new("family_name")).is_not_null()),
            )
            .order_by(Alias::new("id"), Order::Asc)
            .limit(PAGE)
            .to_owned();
        if let Some(after) = after {
            page.and_where(Expr::col(Alias::new("id")).gt(after));
        }
        let rows = conn.query_all_raw(backend.build(&page)).await?;
        let Some(last) = rows.last() else { return Ok(backfilled) };
        after = Some(last.try_get::<uuid::Uuid>("", "id")?);
        let ids: Vec<uuid::Uuid> = rows.iter().map(|r| r.try_get::<uuid::Uuid>("", "id")).collect::<Result<_, _>>()?;
        let held: HashSet<(uuid::Uuid, String)> = conn
            .query_all_raw(
                backend.build(
                    Query::select()
                        .columns(["customer_id", "name"].map(Alias::new))
                        .from(Alias::new("trait_values"))
                        .and_where(Expr::col(Alias::new("customer_id")).is_in(ids.iter().copied()))
                        .and_where(Expr::col(Alias::new("name")).is_in(["givenName", "familyName"])),
                ),
            )
            .await?
            .iter()
            .map(|r| Ok((r.try_get::<uuid::Uuid>("", "customer_id")?, r.try_get::<String>("", "name")?)))
            .collect::<Result<_, DbErr>>()?;
        let records: HashMap<String, uuid::Uuid> = conn
            .query_all_raw(
                backend.build(
                    Query::select()
                        .columns(["id", "source_record_id"].map(Alias::new))
                        .from(Alias::new("source_records"))
                        .and_where(Expr::col(Alias::new("source")).eq(LEGACY_SOURCE))
                        .and_where(
                            Expr::col(Alias::new("source_record_id")).is_in(ids.iter().map(|id| id.to_string())),
                        ),
                ),
            )
            .await?
            .iter()
            .map(|r| Ok((r.try_get::<String>("", "source_record_id")?, r.try_get::<uuid::Uuid>("", "id")?)))
            .collect::<Result<_, DbErr>>()?;
        let now = chrono::Utc::now();
        for row in &rows {
            let id: uuid::Uuid = row.try_get("", "id")?;
            let tenant: String = row.try_get("", "tenant")?;
            let updated_at: chrono::DateTime<chrono::Utc> = row.try_get("", "updated_at")?;
            let mut missing = serde_json::Map::new();
            for (name, column) in [("givenName", "given_name"), ("familyName", "family_name")] {
                let value: Option<String> = row.try_get("", column)?;
                if let Some(value) = value
                    && !held.contains(&(id, name.to_owned()))
                {
                    missing.insert(name.to_owned(), serde_json::Value::String(value));
                }
            }
            if missing.is_empty() {
                continue;
            }
            let record_id = match records.get(&id.to_string()) {
                Some(record_id) => *record_id,
                None => {
                    let record_id = uuid::Uuid::now_v7();
                    let insert = Query::insert()
                        .into_table(Alias::new("source_records"))
                        .columns(
                            [
                                "id",
                                "tenant",
                                "customer_id",
                                "source",
                                "source_record_id",
                                "identities",
                                "traits",
                                "observed_at",
                                "received_at",
                                "updated_at",
                            ]
                            .map(Alias::new),
                        )
                        .values_panic([
                            record_id.into(),
                            tenant.clone().into(),
                            id.into(),
                            LEGACY_SOURCE.into(),
                            id.to_string().into(),
                            serde_json::json!([]).into(),
                            serde_json::Value::Object(missing.clone()).into(),
                            updated_at.into(),
                            now.into(),
                            updated_at.into(),
                        ])
                        .to_owned();
                    conn.execute_raw(backend.build(&insert)).await?;
                    record_id
                }
            };
            let mut insert = Query::insert()
                .into_table(Alias::new("trait_values"))
                .columns(
                    [
                        "id",
                        "tenant",
                        "customer_id",
                        "record_id",
                        "source",
                        "name",
                        "value",
                        "observed_at",
                        "recorded_at",
                    ]
                    .map(Alias::new),
                )
                .to_owned();
            for (name, value) in missing {
                insert.values_panic([
                    uuid::Uuid::now_v7().into(),
                    tenant.clone().into(),
                    id.into(),
                    record_id.into(),
                    LEGACY_SOURCE.into(),
                    name.into(),
                    value.into(),
                    updated_at.into(),
                    now.into(),
                ]);
            }
            conn.execute_raw(backend.build(&insert)).await?;
            backfilled += 1;
        }
    }
}
