//! The caller of a request: tenant, subject, scopes and the purpose it acts for.
use std::{collections::BTreeSet, fmt, str::FromStr};

use crate::{
    consent::ConsentPurpose,
    error::{ApiError, ApiResult},
};

/// A tenant (brand or workspace). Every row and every query carries one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(String);

impl TenantId {
    pub fn parse(raw: &str) -> ApiResult<Self> {
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && raw.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if ok {
            Ok(TenantId(raw.to_owned()))
        } else {
            Err(ApiError::validation("tenant", "1–64 characters of letters, digits, `-`, `_` or `.`"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a token allows. Unknown scopes in a token are ignored, not errors: tokens are often shared with other APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    ProfilesRead,
    ProfilesWrite,
    TouchpointsRead,
    TouchpointsWrite,
    ConsentWrite,
    PiiRead,
    PrivacyAdmin,
    /// Read CX metrics and feedback cases (aggregates; per-customer answers stay personalization data).
    CxRead,
    /// Configure CX settings and feedback rules, and work feedback cases.
    CxWrite,
}

impl Scope {
    pub const ALL: [Scope; 9] = [
        Scope::ProfilesRead,
        Scope::ProfilesWrite,
        Scope::TouchpointsRead,
        Scope::TouchpointsWrite,
        Scope::ConsentWrite,
        Scope::PiiRead,
        Scope::PrivacyAdmin,
        Scope::CxRead,
        Scope::CxWrite,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::ProfilesRead => "profiles:read",
            Scope::ProfilesWrite => "profiles:write",
            Scope::TouchpointsRead => "touchpoints:read",
            Scope::TouchpointsWrite => "touchpoints:write",
            Scope::ConsentWrite => "consent:write",
            Scope::PiiRead => "pii:read",
            Scope::PrivacyAdmin => "privacy:admin",
            Scope::CxRead => "cx:read",
            Scope::CxWrite => "cx:write",
        }
    }
}

impl FromStr for Scope {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == s).ok_or(())
    }
}

/// What a caller acts for: a consent purpose (reads of personalization data need that consent), or one of the
/// purposes that consent does not govern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PurposeKind {
    /// A purpose the customer consents to (`personalization`, `marketing`, `analytics`, `profiling`, `sharing`).
    Consent(ConsentPurpose),
    /// `support`: serves the customer operationally; reads the raw history without a consent.
    Support,
    /// `privacy_admin`: privacy officers (with `privacy:admin`); sees everything, restricted customers included.
    PrivacyAdmin,
    /// `ingestion`: the tracking API's write keys; reads nothing.
    Ingestion,
    /// `job`: a background job acting for the caller who asked for it; never in a token.
    Job,
}

impl PurposeKind {
    const OTHERS: [(PurposeKind, &'static str); 3] = [
        (PurposeKind::Support, "support"),
        (PurposeKind::PrivacyAdmin, "privacy_admin"),
        (PurposeKind::Ingestion, "ingestion"),
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PurposeKind::Consent(p) => p.as_str(),
            PurposeKind::Job => "job",
            other => PurposeKind::OTHERS.iter().find(|(k, _)| *k == other).map_or("", |(_, text)| text),
        }
    }

    fn parse(raw: &str) -> Option<Self> {
        raw.parse::<ConsentPurpose>()
            .ok()
            .map(PurposeKind::Consent)
            .or_else(|| PurposeKind::OTHERS.iter().find(|(_, text)| *text == raw).map(|(k, _)| *k))
    }

    /// Every purpose a caller may act for, comma-separated, for error messages.
    fn list() -> String {
        let mut all: Vec<&str> = ConsentPurpose::ALL.iter().map(|p| p.as_str()).collect();
        all.extend(PurposeKind::OTHERS.iter().map(|(_, text)| *text));
        all.join(", ")
    }
}

/// Why the caller reads data, from the token's `purpose` claim: a purpose of the closed set (`PurposeKind`),
/// and for a consent purpose optionally one channel (`marketing:email`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Purpose {
    kind: PurposeKind,
    channel: Option<String>,
    /// As written: `purpose` or `purpose:channel`.
    text: String,
}

impl Purpose {
    /// `VALIDATION` for a purpose outside the set, or a channel that is not 1–32 lower-case letters, digits, `_`
    /// or `-` (a channel only after a consent purpose).
    pub fn parse(raw: &str) -> ApiResult<Self> {
        let (name, channel) = match raw.split_once(':') {
            Some((name, channel)) => (name, Some(channel)),
            None => (raw, None),
        };
        let kind = PurposeKind::parse(name).ok_or_else(|| {
            ApiError::validation("purpose", format!("unknown purpose `{name}`: one of {}", PurposeKind::list()))
        })?;
        if let Some(channel) = channel {
            let ok = !channel.is_empty()
                && channel.len() <= 32
                && channel.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'));
            if !ok {
                return Err(ApiError::validation(
                    "purpose",
                    "the channel after `:` must be 1–32 lower-case letters, digits, `_` or `-` (marketing:email)",
                ));
            }
            if !matches!(kind, PurposeKind::Consent(_)) {
                return Err(ApiError::validation("purpose", format!("`{name}` takes no channel")));
            }
        }
        Ok(Purpose { kind, channel: channel.map(str::to_owned), text: raw.to_owned() })
    }

    pub fn kind(&self) -> PurposeKind {
        self.kind
    }

    /// The consent purpose and channel a read for this purpose needs, if consent governs it.
    pub fn consent(&self) -> Option<(ConsentPurpose, Option<&str>)> {
        match self.kind {
            PurposeKind::Consent(p) => Some((p, self.channel.as_deref())),
            _ => None,
        }
    }

    /// As written in the token.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// The authenticated caller of one request. Built only from a verified token (or by the system for jobs).
#[derive(Debug, Clone)]
pub struct Caller {
    tenant: TenantId,
    subject: String,
    scopes: BTreeSet<Scope>,
    purpose: Purpose,
    /// The request this caller made, for the access log.
    request_id: Option<String>,
}

impl Caller {
    pub(crate) fn new(tenant: TenantId, subject: String, scopes: BTreeSet<Scope>, purpose: Purpose) -> Self {
        Caller { tenant, subject, scopes, purpose, request_id: None }
    }

    /// The caller behind a tracking-API write key: may write events, identities and the consents they carry,
    /// and read nothing.
    pub fn for_write_key(tenant: TenantId, source: &str) -> Self {
        Caller {
            tenant,
            subject: format!("write-key:{source}"),
            scopes: [Scope::TouchpointsWrite, Scope::ProfilesWrite, Scope::ConsentWrite].into_iter().collect(),
            purpose: Purpose { kind: PurposeKind::Ingestion, channel: None, text: "ingestion".to_owned() },
            request_id: None,
        }
    }

    /// The caller a background job acts as: the subject who asked for it, with the scopes its kind needs, and a
    /// purpose (`job`) no token can carry.
    pub fn for_job(tenant: TenantId, subject: String, scopes: BTreeSet<Scope>) -> Self {
        Caller {
            tenant,
            subject,
            scopes,
            purpose: Purpose { kind: PurposeKind::Job, channel: None, text: "job".to_owned() },
            request_id: None,
        }
    }

    /// The receiver of a webhook's deliveries: may read derived data for the webhook's purpose, nothing else.
    pub fn for_webhook(tenant: TenantId, webhook: uuid::Uuid, purpose: Purpose) -> Self {
        Caller {
            tenant,
            subject: format!("webhook:{webhook}"),
            scopes: [Scope::ProfilesRead].into_iter().collect(),
            purpose,
            request_id: None,
        }
    }

    /// Ties the caller to the request it made (set by the HTTP edge).
    pub fn with_request_id(mut self, request_id: Option<String>) -> Self {
        self.request_id = request_id.map(|id| id.chars().take(64).collect());
        self
    }

    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }

    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }

    pub fn purpose(&self) -> &Purpose {
        &self.purpose
    }

    pub fn scopes(&self) -> impl Iterator<Item = Scope> + '_ {
        self.scopes.iter().copied()
    }

    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    /// `FORBIDDEN` unless the token grants `scope`.
    pub fn require(&self, scope: Scope) -> ApiResult<()> {
        if self.has(scope) { Ok(()) } else { Err(ApiError::Forbidden(scope.as_str().to_owned())) }
    }
}
