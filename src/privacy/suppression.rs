//! Suppression of erased identities (DOMAIN.md privacy rule 5): keyed hashes recognise an identity again
//! without keeping it, so later events carrying it are dropped and counted instead of rebuilding the person.
use aws_lc_rs::hmac;
use chrono::Utc;
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter, Set};
use uuid::Uuid;

use crate::{auth::TenantId, profiles::Identity, services::DomainSettings, storage::entities::suppression};

/// HMAC-SHA256 of the normalised identity under the installation's suppression key, hex-encoded.
pub fn digest(settings: &DomainSettings, identity: &Identity) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, &settings.suppression_key);
    let message = format!("{}\u{0}{}\u{0}{}", identity.kind().as_str(), identity.stored_source(), identity.value());
    hmac::sign(&key, message.as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// True when any of the identities belongs to an erased person.
pub(crate) async fn any_suppressed(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    settings: &DomainSettings,
    identities: &[Identity],
) -> Result<bool, DbErr> {
    if identities.is_empty() {
        return Ok(false);
    }
    let digests: Vec<String> = identities.iter().map(|i| digest(settings, i)).collect();
    let found = suppression::Entity::find()
        .filter(suppression::Column::Tenant.eq(tenant.as_str()))
        .filter(suppression::Column::Digest.is_in(digests))
        .count(conn)
        .await?;
    Ok(found > 0)
}

/// Suppresses identities (idempotent: an identity already suppressed stays so).
pub(crate) async fn suppress(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    settings: &DomainSettings,
    identities: &[Identity],
) -> Result<(), DbErr> {
    for identity in identities {
        let digest = digest(settings, identity);
        let exists = suppression::Entity::find()
            .filter(suppression::Column::Tenant.eq(tenant.as_str()))
            .filter(suppression::Column::Digest.eq(digest.clone()))
            .count(conn)
            .await?
            > 0;
        if !exists {
            suppression::Entity::insert(suppression::ActiveModel {
                id: Set(Uuid::now_v7()),
                tenant: Set(tenant.as_str().to_owned()),
                kind: Set(identity.kind().as_str().to_owned()),
                digest: Set(digest),
                created_at: Set(Utc::now()),
            })
            .exec(conn)
            .await?;
        }
    }
    Ok(())
}
