//! sea-orm entities: database rows, never served directly (GraphQL types are views in `graphql::views`).
//!
//! Every table holds rows of many tenants. Each entity module has `of_tenant` (selects), `update_of_tenant` and
//! `delete_of_tenant` (bulk writes): the roots every query starts from, so none can forget the tenant.
use sea_orm::{ColumnTrait, DeleteMany, EntityTrait, QueryFilter, Select, UpdateMany};

use crate::auth::TenantId;

/// A table whose rows belong to one tenant each: the generic form of the modules' `*_of_tenant` roots.
pub trait TenantScoped: EntityTrait {
    /// The `tenant` column.
    fn tenant_column() -> Self::Column;

    /// Every select starts here.
    fn of_tenant(tenant: &TenantId) -> Select<Self> {
        Self::find().filter(Self::tenant_column().eq(tenant.as_str()))
    }

    /// Every bulk update starts here.
    fn update_of_tenant(tenant: &TenantId) -> UpdateMany<Self> {
        Self::update_many().filter(Self::tenant_column().eq(tenant.as_str()))
    }

    /// Every bulk delete starts here.
    fn delete_of_tenant(tenant: &TenantId) -> DeleteMany<Self> {
        Self::delete_many().filter(Self::tenant_column().eq(tenant.as_str()))
    }
}

/// Implements `TenantScoped` for the module's `Entity` (its `tenant` column) and defines the module's
/// `of_tenant`, `update_of_tenant` and `delete_of_tenant`.
macro_rules! tenant_scoped {
    ($what:literal) => {
        impl $crate::storage::entities::TenantScoped for Entity {
            fn tenant_column() -> Column {
                Column::Tenant
            }
        }

        #[doc = concat!("Every query on ", $what, " starts here, so none can forget the tenant.")]
        pub fn of_tenant(tenant: &$crate::auth::TenantId) -> sea_orm::Select<Entity> {
            <Entity as $crate::storage::entities::TenantScoped>::of_tenant(tenant)
        }

        #[doc = concat!("Every bulk update of ", $what, " starts here, so none can forget the tenant.")]
        pub fn update_of_tenant(tenant: &$crate::auth::TenantId) -> sea_orm::UpdateMany<Entity> {
            <Entity as $crate::storage::entities::TenantScoped>::update_of_tenant(tenant)
        }

        #[doc = concat!("Every bulk delete of ", $what, " starts here, so none can forget the tenant.")]
        pub fn delete_of_tenant(tenant: &$crate::auth::TenantId) -> sea_orm::DeleteMany<Entity> {
            <Entity as $crate::storage::entities::TenantScoped>::delete_of_tenant(tenant)
        }
    };
}
pub(crate) use tenant_scoped;

pub mod access_log;
pub mod action_rule;
pub mod consent_event;
pub mod customer;
pub mod cx_answer;
pub mod cx_rollup;
pub mod cx_settings;
pub mod definition;
pub mod derived_dirty;
pub mod derived_event;
pub mod derived_subject;
pub mod derived_value;
pub mod erasure_receipt;
pub mod external_score;
pub mod feedback_case;
pub mod feedback_case_event;
pub mod feedback_root_cause;
pub mod feedback_rule;
pub mod identity;
pub mod job;
pub mod journey_rules;
pub mod merge;
pub mod resolution_conflict;
pub mod resolution_rules;
pub mod score_model;
pub mod source_record;
pub mod suppression;
pub mod touchpoint;
pub mod trait_rules;
pub mod trait_value;
pub mod webhook;

#[cfg(test)]
mod tests {
    use sea_orm::{DbBackend, QueryTrait};

    use super::*;

    #[test]
    fn bulk_roots_filter_by_tenant() {
        let tenant = TenantId::parse("acme").expect("tenant");
        let update = customer::update_of_tenant(&tenant)
            .col_expr(customer::Column::GivenName, sea_orm::sea_query::Expr::value("x"))
            .build(DbBackend::Postgres)
            .to_string();
        assert!(update.contains(r#"WHERE "customers"."tenant" = 'acme'"#), "{update}");
        let delete = identity::delete_of_tenant(&tenant).build(DbBackend::Sqlite).to_string();
        assert!(delete.contains(r#"WHERE "identities"."tenant" = 'acme'"#), "{delete}");
    }

    /// No bulk write starts anywhere but at a tenant root: `update_many`/`delete_many` appear only in this module.
    #[test]
    fn bulk_writes_start_at_tenant_roots() {
        fn walk(dir: &std::path::Path, found: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).expect("src readable") {
                let path = entry.expect("entry").path();
                if path.ends_with("storage/entities") {
                    continue;
                }
                if path.is_dir() {
                    walk(&path, found);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).expect("source readable");
                    for (n, line) in text.lines().enumerate() {
                        if line.contains("update_many(") || line.contains("delete_many(") {
                            found.push(format!("{}:{}", path.display(), n + 1));
                        }
                    }
                }
            }
        }
        let mut found = Vec::new();
        walk(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut found);
        assert!(found.is_empty(), "bulk writes not started at `update_of_tenant`/`delete_of_tenant`: {found:?}");
    }
}
