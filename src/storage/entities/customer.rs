//! `customers` rows.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "customers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant: String,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub merged_into: Option<Uuid>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// Every query on customers starts here, so none can forget the tenant.
pub fn of_tenant(tenant: &crate::auth::TenantId) -> Select<Entity> {
    Entity::find().filter(Column::Tenant.eq(tenant.as_str()))
}
