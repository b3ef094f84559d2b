//! The purposes a person consents to (DOMAIN.md): a closed set. A decision or a caller may name one channel of a
//! purpose as well (`marketing:email`); the channel is not part of the purpose.
use std::{fmt, str::FromStr};

/// Why data is used, as a consent decision names it. Stored in `consent_events.purpose` as `as_str` writes it.
/// The variants are in the order of their texts, so sorting by purpose sorts by text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConsentPurpose {
    /// Measuring and analysing behaviour.
    Analytics,
    /// Marketing, per channel (email, sms, push, phone) or for all of them.
    Marketing,
    /// Tailoring the customer's experience from their behaviour (DOMAIN rule 1).
    Personalization,
    /// Building a profile of the person (segments, scores).
    Profiling,
    /// Sharing with or selling to third parties (do-not-sell, Global Privacy Control: DOMAIN rule 9).
    Sharing,
}

impl ConsentPurpose {
    pub const ALL: [ConsentPurpose; 5] = [
        ConsentPurpose::Analytics,
        ConsentPurpose::Marketing,
        ConsentPurpose::Personalization,
        ConsentPurpose::Profiling,
        ConsentPurpose::Sharing,
    ];

    /// The stored text.
    pub const fn as_str(self) -> &'static str {
        match self {
            ConsentPurpose::Analytics => "analytics",
            ConsentPurpose::Marketing => "marketing",
            ConsentPurpose::Personalization => "personalization",
            ConsentPurpose::Profiling => "profiling",
            ConsentPurpose::Sharing => "sharing",
        }
    }

    /// The purposes, comma-separated, for error messages.
    pub fn list() -> String {
        ConsentPurpose::ALL.map(ConsentPurpose::as_str).join(", ")
    }
}

impl FromStr for ConsentPurpose {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ConsentPurpose::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown purpose `{s}`: one of {}", ConsentPurpose::list()))
    }
}

impl fmt::Display for ConsentPurpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_round_trip_and_sort_like_the_enum() {
        for p in ConsentPurpose::ALL {
            assert_eq!(p.as_str().parse::<ConsentPurpose>(), Ok(p));
        }
        let mut texts = ConsentPurpose::ALL.map(ConsentPurpose::as_str);
        texts.sort();
        assert_eq!(texts, ConsentPurpose::ALL.map(ConsentPurpose::as_str));
        assert!("support".parse::<ConsentPurpose>().is_err());
        assert!("Marketing".parse::<ConsentPurpose>().is_err());
    }
}
