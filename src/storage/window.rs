//! The first rows of each of many customers in one statement (the per-customer `LIMIT` behind list loaders):
//! a `LATERAL` subquery per customer on PostgreSQL (an index-bounded `LIMIT` each), `ROW_NUMBER()` on SQLite.
use std::collections::HashMap;

use sea_orm::{DbBackend, DbErr, EntityTrait, FromQueryResult, QueryResult, Statement, Value};
use uuid::Uuid;

use crate::{auth::TenantId, storage::Database};

/// Customers per statement.
pub const CHUNK: usize = 500;

/// What to read: `table`'s rows of the tenant whose `key_columns` (any of them) hold the customer's id, with an
/// optional `column = value` filter, ordered by `order` (columns, each descending), at most `limit` per customer.
pub struct TopPerCustomer<'a> {
    pub table: &'a str,
    pub key_columns: &'a [&'a str],
    pub filter: Option<(&'a str, Value)>,
    pub order_desc: &'a [&'a str],
    pub limit: usize,
}

/// A row with the customer it was read for (a row two customers share, such as a merge, comes once for each).
pub struct Keyed<M> {
    pub customer_id: Uuid,
    pub row: M,
}

impl<M: FromQueryResult> FromQueryResult for Keyed<M> {
    fn from_query_result(res: &QueryResult, pre: &str) -> Result<Self, DbErr> {
        Ok(Keyed { customer_id: res.try_get(pre, "window_customer_id")?, row: M::from_query_result(res, pre)? })
    }
}

/// The rows of every customer in `ids` (each id present, with no rows if it has none), at most `limit` each, in
/// the query's order, one statement per [`CHUNK`] customers.
pub async fn top_per_customer<E: EntityTrait>(
    db: &Database,
    tenant: &TenantId,
    query: &TopPerCustomer<'_>,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Vec<E::Model>>, DbErr>
where
    E::Model: FromQueryResult,
{
    let mut out: HashMap<Uuid, Vec<E::Model>> = ids.iter().map(|id| (*id, Vec::new())).collect();
    if query.limit == 0 {
        return Ok(out);
    }
    let backend = db.backend();
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    for chunk in ids.chunks(CHUNK) {
        let placeholder = |i: usize| if backend == DbBackend::Postgres { format!("${i}") } else { "?".to_owned() };
        // Parameters: the customer ids, then the tenant, the filter value and the limit.
        let mut values: Vec<Value> = chunk.iter().map(|id| Value::from(*id)).collect();
        let ids_list: Vec<String> = (1..=chunk.len())
            .map(|i| if backend == DbBackend::Postgres { format!("({}::uuid)", placeholder(i)) } else { "(?)".into() })
            .collect();
        values.push(tenant.as_str().into());
        let tenant_p = placeholder(values.len());
        let filter = match &query.filter {
            Some((column, value)) => {
                values.push(value.clone());
                format!(" AND t.{column} = {}", placeholder(values.len()))
            }
            None => String::new(),
        };
        values.push((query.limit as i64).into());
        let limit_p = placeholder(values.len());
        let matches = query.key_columns.iter().map(|k| format!("t.{k} = c.id")).collect::<Vec<_>>().join(" OR ");
        let order = query.order_desc.iter().map(|c| format!("t.{c} DESC")).collect::<Vec<_>>().join(", ");
        let outer_order = query.order_desc.iter().map(|c| format!("w.{c} DESC")).collect::<Vec<_>>().join(", ");
        let (table, ids_list) = (query.table, ids_list.join(", "));
        let sql = if backend == DbBackend::Postgres {
            format!(
                "SELECT c.id AS window_customer_id, w.* FROM (VALUES {ids_list}) AS c(id) CROSS JOIN LATERAL \
                 (SELECT t.* FROM {table} t WHERE t.tenant = {tenant_p} AND ({matches}){filter} ORDER BY {order} \
                 LIMIT {limit_p}) w ORDER BY c.id, {outer_order}"
            )
        } else {
            format!(
                "SELECT * FROM (SELECT c.id AS window_customer_id, t.*, ROW_NUMBER() OVER (PARTITION BY c.id \
                 ORDER BY {order}) AS window_rank FROM (SELECT column1 AS id FROM (VALUES {ids_list})) c \
                 JOIN {table} t ON ({matches}) WHERE t.tenant = {tenant_p}{filter}) ranked \
                 WHERE window_rank <= {limit_p} ORDER BY window_customer_id, window_rank"
            )
        };
        let rows = Keyed::<E::Model>::find_by_statement(Statement::from_sql_and_values(backend, sql, values))
            .all(db.conn())
            .await?;
        for keyed in rows {
            out.entry(keyed.customer_id).or_default().push(keyed.row);
        }
    }
    Ok(out)
}
