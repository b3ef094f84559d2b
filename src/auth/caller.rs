//! The caller of a request: tenant, subject, scopes and the purpose it acts for.
use std::{collections::BTreeSet, fmt, str::FromStr};

use crate::error::{ApiError, ApiResult};

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
}

impl Scope {
    pub const ALL: [Scope; 7] = [
        Scope::ProfilesRead,
        Scope::ProfilesWrite,
        Scope::TouchpointsRead,
        Scope::TouchpointsWrite,
        Scope::ConsentWrite,
        Scope::PiiRead,
        Scope::PrivacyAdmin,
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
        }
    }
}

impl FromStr for Scope {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == s).ok_or(())
    }
}

/// Why the caller reads data (`personalization`, `analytics`, `support`, …). Tenants may add their own purposes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Purpose(String);

impl Purpose {
    pub fn parse(raw: &str) -> ApiResult<Self> {
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && raw.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | ':'));
        if ok {
            Ok(Purpose(raw.to_owned()))
        } else {
            Err(ApiError::validation("purpose", "1–64 lower-case letters, digits, `_`, `-` or `:`"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
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
            purpose: Purpose("ingestion".to_owned()),
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
