//! Masking of directly identifying fields for callers without `pii:read` (DOMAIN.md, privacy rule 7).
use crate::{
    auth::{Caller, Scope},
    profiles::IdentityKind,
};

/// What one caller may see of personal fields. Every view of a personal field goes through it.
#[derive(Debug, Clone, Copy)]
pub struct Disclosure {
    reveal: bool,
}

impl Disclosure {
    pub fn for_caller(caller: &Caller) -> Self {
        Disclosure { reveal: caller.has(Scope::PiiRead) }
    }

    pub fn reveals_pii(&self) -> bool {
        self.reveal
    }

    /// A person's name: `Ann` becomes `A***`.
    pub fn name(&self, name: Option<&str>) -> Option<String> {
        name.map(|n| if self.reveal { n.to_owned() } else { keep_first(n, 1) })
    }

    /// An identity value: `ann@example.com` becomes `a***@example.com`, `+4520123456` becomes `+45*******56`.
    pub fn identity(&self, kind: IdentityKind, value: &str) -> String {
        if self.reveal {
            return value.to_owned();
        }
        match kind {
            IdentityKind::Email => match value.split_once('@') {
                Some((local, domain)) => format!("{}@{domain}", keep_first(local, 1)),
                None => keep_first(value, 1),
            },
            IdentityKind::Phone => {
                let chars: Vec<char> = value.chars().collect();
                if chars.len() <= 5 {
                    "***".to_owned()
                } else {
                    let head: String = chars[..3].iter().collect();
                    let tail: String = chars[chars.len() - 2..].iter().collect();
                    format!("{head}{}{tail}", "*".repeat(chars.len() - 5))
                }
            }
            _ => keep_first(value, 4.min(value.chars().count() / 3)),
        }
    }
}

impl Disclosure {
    /// A JSON document of personal data (a source record's identities or traits): every text masked.
    pub fn json(&self, value: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        if self.reveal {
            return value.clone();
        }
        match value {
            Value::String(s) if s.contains('@') => Value::String(self.identity(IdentityKind::Email, s)),
            Value::String(s) => Value::String(keep_first(s, 1)),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.json(v)).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| {
                        // Field names and the kinds of identities are not personal; their values are.
                        let keep = matches!(k.as_str(), "kind" | "source") && v.is_string();
                        (k.clone(), if keep { v.clone() } else { self.json(v) })
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

fn keep_first(value: &str, n: usize) -> String {
    let head: String = value.chars().take(n).collect();
    format!("{head}***")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASKED: Disclosure = Disclosure { reveal: false };

    #[test]
    fn masks_emails_phones_names_and_ids() {
        assert_eq!(MASKED.identity(IdentityKind::Email, "jane@example.com"), "j***@example.com");
        assert_eq!(MASKED.identity(IdentityKind::Phone, "+4520123456"), "+45******56");
        assert_eq!(MASKED.name(Some("Jane")).as_deref(), Some("J***"));
        assert_eq!(MASKED.identity(IdentityKind::DeviceId, "abcdef123456"), "abcd***");
        assert_eq!(MASKED.identity(IdentityKind::LoyaltyId, "12"), "***");
    }
}
