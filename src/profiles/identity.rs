//! Identity kinds and normalisation: what makes two identifiers "the same person" is decided here only.
use std::{fmt, str::FromStr};

use phonenumber::Mode;

use crate::{
    error::{ApiError, ApiResult},
    services::DomainSettings,
};

/// The kinds of identifier that point at a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, async_graphql::Enum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IdentityKind {
    Email,
    Phone,
    DeviceId,
    AnonymousId,
    LoyaltyId,
    CrmId,
    /// A source system's own user id; meaningful only together with its source.
    ExternalId,
}

impl IdentityKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            IdentityKind::Email => "email",
            IdentityKind::Phone => "phone",
            IdentityKind::DeviceId => "device_id",
            IdentityKind::AnonymousId => "anonymous_id",
            IdentityKind::LoyaltyId => "loyalty_id",
            IdentityKind::CrmId => "crm_id",
            IdentityKind::ExternalId => "external_id",
        }
    }

    const ALL: [IdentityKind; 7] = [
        IdentityKind::Email,
        IdentityKind::Phone,
        IdentityKind::DeviceId,
        IdentityKind::AnonymousId,
        IdentityKind::LoyaltyId,
        IdentityKind::CrmId,
        IdentityKind::ExternalId,
    ];
}

impl FromStr for IdentityKind {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        IdentityKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or(())
    }
}

impl fmt::Display for IdentityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A normalised identity: only `Identity::parse` makes one, so every stored or matched value is normalised.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    kind: IdentityKind,
    source: String,
    value: String,
}

const MAX_IDENTITY_LEN: usize = 256;

impl Identity {
    /// Normalises and validates: email trimmed and lower-cased, phone to E.164, other kinds trimmed.
    /// `field` names the input in the error.
    pub fn parse(
        kind: IdentityKind,
        value: &str,
        source: Option<&str>,
        settings: &DomainSettings,
        field: &str,
    ) -> ApiResult<Self> {
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return Err(ApiError::validation(field, "identity value is empty"));
        }
        if trimmed.len() > MAX_IDENTITY_LEN {
            return Err(ApiError::validation(
                field,
                format!("identity value is longer than {MAX_IDENTITY_LEN} characters"),
            ));
        }
        let value = match kind {
            IdentityKind::Email => {
                normalise_email(trimmed).ok_or_else(|| ApiError::validation(field, "not an email address"))?
            }
            IdentityKind::Phone => normalise_phone(trimmed, settings.default_phone_region).ok_or_else(|| {
                ApiError::validation(
                    field,
                    "not a valid phone number (give +country code, or configure a default region)",
                )
            })?,
            _ => trimmed.to_owned(),
        };
        let source = match (kind, source.map(str::trim).filter(|s| !s.is_empty())) {
            (IdentityKind::ExternalId, Some(source)) if source.len() <= 64 => source.to_owned(),
            (IdentityKind::ExternalId, Some(_)) => {
                return Err(ApiError::validation(field, "source is longer than 64 characters"));
            }
            (IdentityKind::ExternalId, None) => {
                return Err(ApiError::validation(field, "an EXTERNAL_ID needs its source"));
            }
            (_, _) => String::new(),
        };
        Ok(Identity { kind, source, value })
    }

    /// Parses a list of identities as a caller gave them, dropping repeats; errors name `identities[i].value`.
    pub fn parse_all(
        inputs: &[super::customers::IdentityInput],
        settings: &DomainSettings,
    ) -> ApiResult<Vec<Identity>> {
        let mut identities: Vec<Identity> = Vec::with_capacity(inputs.len());
        for (i, raw) in inputs.iter().enumerate() {
            let field = format!("identities[{i}].value");
            let identity = Identity::parse(raw.kind, &raw.value, raw.source.as_deref(), settings, &field)?;
            if !identities.contains(&identity) {
                identities.push(identity);
            }
        }
        Ok(identities)
    }

    /// Rebuilds an identity read back from storage (already normalised when it was written).
    pub(crate) fn from_stored(kind: IdentityKind, source: String, value: String) -> Self {
        Identity { kind, source, value }
    }

    pub fn kind(&self) -> IdentityKind {
        self.kind
    }

    pub fn source(&self) -> Option<&str> {
        (!self.source.is_empty()).then_some(self.source.as_str())
    }

    pub fn stored_source(&self) -> &str {
        &self.source
    }

    pub fn value(&self) -> &str {
        &self.value
    }
}

fn normalise_email(raw: &str) -> Option<String> {
    let email = raw.to_lowercase();
    let (local, domain) = email.rsplit_once('@')?;
    let ok = !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.chars().any(char::is_whitespace);
    ok.then_some(email)
}

fn normalise_phone(raw: &str, region: Option<phonenumber::country::Id>) -> Option<String> {
    let region = if raw.starts_with('+') { None } else { Some(region?) };
    let number = phonenumber::parse(region, raw).ok()?;
    phonenumber::is_valid(&number).then(|| number.format().mode(Mode::E164).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(kind: IdentityKind, value: &str) -> ApiResult<Identity> {
        let settings =
            DomainSettings { default_phone_region: Some(phonenumber::country::Id::DK), ..Default::default() };
        Identity::parse(kind, value, None, &settings, "value")
    }

    #[test]
    fn emails_are_trimmed_and_lower_cased() {
        assert_eq!(parse(IdentityKind::Email, "  Ann.Larsen@Example.COM ").unwrap().value(), "ann.larsen@example.com");
        assert!(parse(IdentityKind::Email, "no-at-sign").is_err());
        assert!(parse(IdentityKind::Email, "   ").is_err());
    }

    #[test]
    fn phones_become_e164_with_the_default_region() {
        assert_eq!(parse(IdentityKind::Phone, "20 12 34 56").unwrap().value(), "+4520123456");
        assert_eq!(parse(IdentityKind::Phone, "+49 30 901820").unwrap().value(), "+4930901820");
        assert!(parse(IdentityKind::Phone, "12").is_err());
    }

    #[test]
    fn external_ids_need_a_source() {
        assert!(parse(IdentityKind::ExternalId, "u-1").is_err());
        let settings = DomainSettings::default();
        let id = Identity::parse(IdentityKind::ExternalId, "u-1", Some("shop"), &settings, "v").unwrap();
        assert_eq!(id.source(), Some("shop"));
    }
}
