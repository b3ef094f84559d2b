//! A tenant's CX settings: the ground its customers' answers count on, the minimum answers a cell needs before its
//! value is shown, and the margin of error above which a value is flagged as low confidence.
use chrono::Utc;
use sea_orm::{ActiveValue::Set, EntityTrait, sea_query::OnConflict};

use crate::{
    auth::{Caller, Scope, TenantId},
    consent::policy::CxBasis,
    error::{ApiError, ApiResult},
    services::Services,
    storage::entities::cx_settings,
};

/// The defaults: analytics consent, 5 answers (as Qualtrics, Lattice and Hello Customer default), ±10 NPS points.
pub const DEFAULT_MIN_ANSWERS: u32 = 5;
pub const DEFAULT_LOW_CONFIDENCE_MARGIN: f64 = 10.0;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CxSettings {
    pub basis: CxBasis,
    /// A cell with fewer counted answers shows its counts but not its value (k-anonymity).
    pub min_answers: u32,
    /// A cell whose margin of error (in the metric's points: NPS points, CSAT/CES-share percentage points, CES mean
    /// points × 10) is above this is flagged `lowConfidence`.
    pub low_confidence_margin: f64,
}

impl Default for CxSettings {
    fn default() -> Self {
        CxSettings {
            basis: CxBasis::AnalyticsConsent,
            min_answers: DEFAULT_MIN_ANSWERS,
            low_confidence_margin: DEFAULT_LOW_CONFIDENCE_MARGIN,
        }
    }
}

pub fn basis_text(basis: CxBasis) -> &'static str {
    match basis {
        CxBasis::AnalyticsConsent => "analytics_consent",
        CxBasis::LegitimateInterest => "legitimate_interest",
    }
}

fn basis_of(text: &str) -> CxBasis {
    match text {
        "legitimate_interest" => CxBasis::LegitimateInterest,
        // Anything else (a newer version's word) counts on the strictest ground.
        _ => CxBasis::AnalyticsConsent,
    }
}

/// The tenant's settings (the defaults when it set none).
pub async fn of_tenant(conn: &impl sea_orm::ConnectionTrait, tenant: &TenantId) -> Result<CxSettings, sea_orm::DbErr> {
    let row = cx_settings::of_tenant(tenant).one(conn).await?;
    Ok(row
        .map(|r| CxSettings {
            basis: basis_of(&r.basis),
            min_answers: r.min_answers.max(1) as u32,
            low_confidence_margin: r.low_confidence_margin,
        })
        .unwrap_or_default())
}

/// Changes the tenant's settings. Needs `cx:write`. A change of basis recounts every answer of the tenant in the
/// same transaction, so the metrics never mix two rules.
pub async fn update(caller: &Caller, svc: &Services, wanted: CxSettings) -> ApiResult<CxSettings> {
    caller.require(Scope::CxWrite)?;
    if !(1..=1000).contains(&wanted.min_answers) {
        return Err(ApiError::validation("minAnswers", "from 1 to 1000"));
    }
    if !(wanted.low_confidence_margin.is_finite() && wanted.low_confidence_margin > 0.0) {
        return Err(ApiError::validation("lowConfidenceMargin", "a positive number of points"));
    }
    let tenant = caller.tenant();
    let txn = svc.db.begin_write().await?;
    let before = of_tenant(&txn, tenant).await?;
    let row = cx_settings::ActiveModel {
        tenant: Set(tenant.as_str().to_owned()),
        basis: Set(basis_text(wanted.basis).to_owned()),
        min_answers: Set(wanted.min_answers as i32),
        low_confidence_margin: Set(wanted.low_confidence_margin),
        updated_at: Set(Utc::now()),
        updated_by: Set(caller.subject().to_owned()),
    };
    cx_settings::Entity::insert(row)
        .on_conflict(
            OnConflict::column(cx_settings::Column::Tenant)
                .update_columns([
                    cx_settings::Column::Basis,
                    cx_settings::Column::MinAnswers,
                    cx_settings::Column::LowConfidenceMargin,
                    cx_settings::Column::UpdatedAt,
                    cx_settings::Column::UpdatedBy,
                ])
                .to_owned(),
        )
        .exec(&txn)
        .await?;
    if before.basis != wanted.basis {
        super::answers::recount_tenant(&txn, tenant).await?;
    }
    txn.commit().await?;
    Ok(wanted)
}
