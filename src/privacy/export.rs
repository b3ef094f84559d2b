//! Access and portability (GDPR art. 15 and 20): everything held about one customer, in one JSON document.
use crate::privacy::access_log::AccessCategory;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    auth::{Caller, Scope},
    error::{ApiError, ApiResult},
    services::Services,
    storage::entities::{access_log, consent_event, customer, identity, merge, source_record, touchpoint, trait_value},
};

/// The whole record of a customer of the caller's tenant. Needs `privacy:admin`; the export itself is logged.
#[tracing::instrument(skip_all, fields(tenant = %caller.tenant(), customer = %requested_id))]
pub async fn export_customer(caller: &Caller, svc: &Services, requested_id: Uuid) -> ApiResult<Value> {
    caller.require(Scope::PrivacyAdmin)?;
    let tenant = caller.tenant();
    let conn = svc.db.conn();
    // A merged-away id stands for the person it was merged into: export them, whose rows the merge moved.
    let customer_id = crate::profiles::customers::current_id(conn, tenant, requested_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("customer {requested_id}")))?;
    let profile = customer::of_tenant(tenant)
        .filter(customer::Column::Id.eq(customer_id))
        .one(conn)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("customer {customer_id}")))?;
    let identities = identity::of_tenant(tenant)
        .filter(identity::Column::CustomerId.eq(customer_id))
        .order_by_asc(identity::Column::Id)
        .all(conn)
        .await?;
    let touchpoints = touchpoint::of_tenant(tenant)
        .filter(touchpoint::Column::CustomerId.eq(customer_id))
        .order_by_asc(touchpoint::Column::OccurredAt)
        .order_by_asc(touchpoint::Column::Id)
        .all(conn)
        .await?;
    let consents = consent_event::of_tenant(tenant)
        .filter(consent_event::Column::CustomerId.eq(customer_id))
        .order_by_asc(consent_event::Column::CapturedAt)
        .order_by_asc(consent_event::Column::Id)
        .all(conn)
        .await?;
    // The person's reads, including those logged under ids since merged into it.
    let person = crate::profiles::customers::person_ids(conn, tenant, customer_id).await?;
    let feedback_cases = crate::cx::cases::export(conn, tenant, &person).await?;
    let accesses = access_log::Entity::find()
        .filter(access_log::Column::Tenant.eq(tenant.as_str()))
        .filter(access_log::Column::CustomerId.is_in(person.clone()))
        .order_by_asc(access_log::Column::Id)
        .all(conn)
        .await?;
    let records = source_record::of_tenant(tenant)
        .filter(source_record::Column::CustomerId.eq(customer_id))
        .order_by_asc(source_record::Column::Id)
        .all(conn)
        .await?;
    let trait_values = trait_value::of_tenant(tenant)
        .filter(trait_value::Column::CustomerId.eq(customer_id))
        .order_by_asc(trait_value::Column::Id)
        .all(conn)
        .await?;
    let merges = merge::of_tenant(tenant)
        .filter(
            sea_orm::Condition::any()
                .add(merge::Column::SurvivorId.eq(customer_id))
                .add(merge::Column::MergedId.eq(customer_id)),
        )
        .order_by_asc(merge::Column::Id)
        .all(conn)
        .await?;
    let external_scores = crate::storage::entities::external_score::of_tenant(tenant)
        .filter(crate::storage::entities::external_score::Column::CustomerId.eq(customer_id))
        .order_by_asc(crate::storage::entities::external_score::Column::Name)
        .all(conn)
        .await?;
    // What was derived about the person: the memberships and computed traits kept for them, and the change events
    // that named them (under every id merged into them).
    let derived_values = crate::storage::entities::derived_value::of_tenant(tenant)
        .filter(crate::storage::entities::derived_value::Column::CustomerId.eq(customer_id))
        .order_by_asc(crate::storage::entities::derived_value::Column::Key)
        .all(conn)
        .await?;
    let derived_events = crate::storage::entities::derived_event::of_tenant(tenant)
        .filter(crate::storage::entities::derived_event::Column::CustomerId.is_in(person.clone()))
        .order_by_asc(crate::storage::entities::derived_event::Column::Position)
        .all(conn)
        .await?;
    svc.access_log.record(caller, [customer_id], AccessCategory::Export);
    Ok(json!({
        "format": "kontakt.customer-export/1",
        "exportedAt": chrono::Utc::now(),
        "requestedId": requested_id,
        "customer": {
            "id": profile.id,
            "givenName": profile.given_name,
            "familyName": profile.family_name,
            "createdAt": profile.created_at,
            "updatedAt": profile.updated_at,
            "processingRestricted": profile.restricted,
            "mergedInto": profile.merged_into,
        },
        "identities": identities.iter().map(|i| json!({
            "id": i.id, "kind": i.kind, "source": (!i.source.is_empty()).then_some(&i.source), "value": i.value,
            "createdAt": i.created_at,
        })).collect::<Vec<_>>(),
        "touchpoints": touchpoints.iter().map(|t| json!({
            "id": t.id, "channel": t.channel, "type": t.kind, "stage": t.stage, "occurredAt": t.occurred_at,
            "receivedAt": t.received_at, "source": t.source, "idempotencyKey": t.idempotency_key,
            "properties": t.properties, "value": t.value, "currency": t.currency,
            "feedback": t.feedback_metric.as_ref().map(|m| json!({
                "metric": m, "score": t.feedback_score, "verbatim": t.feedback_verbatim })),
            "consentContext": t.consent,
        })).collect::<Vec<_>>(),
        "consentHistory": consents.iter().map(|c| json!({
            "id": c.id, "purpose": c.purpose, "channel": (!c.channel.is_empty()).then_some(&c.channel),
            "status": c.status, "capturedAt": c.captured_at, "recordedAt": c.recorded_at, "source": c.source,
            "policyVersion": c.policy_version, "legalBasis": c.legal_basis, "expiresAt": c.expires_at,
            "evidence": c.evidence,
        })).collect::<Vec<_>>(),
        "accessLog": accesses.iter().map(|a| json!({
            "id": a.id, "subject": a.subject, "purpose": a.purpose, "categories": a.categories,
            "requestId": a.request_id, "at": a.at,
        })).collect::<Vec<_>>(),
        "sourceRecords": records.iter().map(|r| json!({
            "id": r.id, "source": r.source, "sourceRecordId": r.source_record_id, "identities": r.identities,
            "traits": r.traits, "observedAt": r.observed_at, "receivedAt": r.received_at, "updatedAt": r.updated_at,
        })).collect::<Vec<_>>(),
        "traitHistory": trait_values.iter().map(|t| json!({
            "id": t.id, "name": t.name, "value": t.value, "source": t.source, "recordId": t.record_id,
            "observedAt": t.observed_at,
        })).collect::<Vec<_>>(),
        "feedbackCases": feedback_cases,
        "externalScores": external_scores.iter().map(|e| json!({
            "name": e.name, "value": e.value, "model": e.model, "computedAt": e.computed_at,
            "writtenBy": e.written_by, "writtenAt": e.written_at,
        })).collect::<Vec<_>>(),
        "derived": derived_values.iter().map(|d| json!({
            "key": d.key, "kind": d.kind, "version": d.version, "value": d.value, "since": d.since,
        })).collect::<Vec<_>>(),
        "derivedChanges": derived_events.iter().map(|e| json!({
            "position": e.position, "customerId": e.customer_id, "kind": e.kind, "key": e.key, "purpose": e.purpose,
            "cause": e.cause, "payload": e.payload, "at": e.at,
        })).collect::<Vec<_>>(),
        "merges": merges.iter().map(|m| json!({
            "id": m.id, "survivorId": m.survivor_id, "mergedId": m.merged_id, "reason": m.reason,
            "evidence": m.evidence, "mergedBy": m.merged_by, "createdAt": m.created_at, "undoneAt": m.undone_at,
        })).collect::<Vec<_>>(),
    }))
}
