//! Masking of directly identifying fields for callers without `pii:read` (DOMAIN.md, privacy rule 7).
//!
//! Free-form JSON (touchpoint `properties`, custom trait values) and free text (feedback `verbatim`) have no schema
//! saying which parts are personal, so [`Disclosure::free_form`] decides by two rules: a value under a key that is
//! personal by name ([`PERSONAL_KEYS`], [`PERSONAL_KEY_PARTS`]) is masked whole, and e-mail addresses and phone
//! numbers are masked wherever they stand in a text. Numbers, booleans and other texts stay as they are, so prices,
//! SKUs, counts and timestamps keep their use. Custom traits a tenant declares `personal` are masked whole.
use serde_json::Value;

use crate::{
    auth::{Caller, Scope},
    profiles::IdentityKind,
    services::Services,
};

/// Keys of free-form JSON whose values are personal by name, compared lower-cased without `_`, `-`, `.` and
/// spaces (`first_name`, `firstName` and `First-Name` are one key).
pub const PERSONAL_KEYS: [&str; 21] = [
    "email",
    "mail",
    "phone",
    "mobile",
    "tel",
    "telephone",
    "name",
    "firstname",
    "lastname",
    "fullname",
    "givenname",
    "familyname",
    "surname",
    "address",
    "street",
    "ip",
    "ipaddress",
    "birthdate",
    "dateofbirth",
    "dob",
    "ssn",
];

/// Parts that make any key personal (`customer_email`, `billing_address`, `contact_phone`, `recipient_last_name`).
pub const PERSONAL_KEY_PARTS: [&str; 9] =
    ["email", "phone", "mobile", "address", "street", "firstname", "lastname", "fullname", "surname"];

/// Whether a key of free-form JSON names personal data (see [`PERSONAL_KEYS`]).
pub fn is_personal_key(key: &str) -> bool {
    let key: String =
        key.chars().filter(|c| !matches!(c, '_' | '-' | '.' | ' ')).flat_map(char::to_lowercase).collect();
    PERSONAL_KEYS.contains(&key.as_str()) || PERSONAL_KEY_PARTS.iter().any(|part| key.contains(part))
}

/// What one caller may see of personal fields. Every view of a personal field goes through it.
#[derive(Debug, Clone, Copy)]
pub struct Disclosure {
    reveal: bool,
    /// The region of phone numbers written without `+country code` (the tenant's default), for free-form text.
    phone_region: Option<phonenumber::country::Id>,
}

impl Disclosure {
    pub fn for_caller(caller: &Caller) -> Self {
        Disclosure { reveal: caller.has(Scope::PiiRead), phone_region: None }
    }

    /// For a caller, knowing the default phone region: what free-form views need to find local phone numbers.
    pub fn for_request(caller: &Caller, svc: &Services) -> Self {
        Disclosure { phone_region: svc.settings.default_phone_region, ..Self::for_caller(caller) }
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

impl Disclosure {
    /// Free-form JSON (touchpoint `properties`, custom trait values): values under personal keys are masked whole
    /// (texts as by [`Disclosure::json`], numbers become `***`), e-mail addresses and phone numbers inside any other
    /// text are masked, everything else is served as it is.
    pub fn free_form(&self, value: &Value) -> Value {
        if self.reveal {
            return value.clone();
        }
        match value {
            Value::String(s) => Value::String(self.mask_contacts(s)),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.free_form(v)).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), if is_personal_key(k) { self.whole(v) } else { self.free_form(v) }))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// Free text written by the person (feedback `verbatim`): the text stays readable, the e-mail addresses and
    /// phone numbers in it are masked.
    pub fn free_text(&self, text: &str) -> String {
        if self.reveal { text.to_owned() } else { self.mask_contacts(text) }
    }

    /// A trait's value: masked whole when the trait is personal (core traits by kind, custom ones as the tenant
    /// declared them), otherwise as free-form JSON.
    pub fn trait_value(&self, personal: bool, value: &Value) -> Value {
        if personal { self.json(value) } else { self.free_form(value) }
    }

    /// A value under a personal key, masked whole.
    fn whole(&self, value: &Value) -> Value {
        match value {
            Value::String(s) if is_email(s.trim()) => Value::String(self.identity(IdentityKind::Email, s.trim())),
            Value::String(s) if self.is_phone(s.trim()) => Value::String(self.identity(IdentityKind::Phone, s.trim())),
            Value::String(s) => Value::String(keep_first(s, 1)),
            Value::Number(_) => Value::String("***".into()),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.whole(v)).collect()),
            Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), self.whole(v))).collect()),
            other => other.clone(),
        }
    }

    /// Masks every e-mail address and phone number inside a text; the rest of the text stays.
    fn mask_contacts(&self, text: &str) -> String {
        // E-mail addresses: words (between white space) holding one, trimmed of punctuation around it.
        let mut out = String::with_capacity(text.len());
        for piece in text.split_inclusive(char::is_whitespace) {
            let word = piece.trim_end_matches(char::is_whitespace);
            let space = &piece[word.len()..];
            let core = word.trim_matches(|c: char| !(c.is_alphanumeric() || matches!(c, '@' | '+' | '_' | '-')));
            if core.contains('@') && is_email(core) {
                let start = word.find(core).unwrap_or(0);
                out.push_str(&word[..start]);
                out.push_str(&self.identity(IdentityKind::Email, core));
                out.push_str(&word[start + core.len()..]);
            } else {
                out.push_str(word);
            }
            out.push_str(space);
        }
        // Phone numbers: runs of digits, spaces, `-`, `.`, `(` and `)` (with an optional leading `+`) that stand
        // apart (not inside a word, an id such as `ORD-20123456` or a path) and read as a phone number.
        let chars: Vec<char> = out.chars().collect();
        let mut masked = String::with_capacity(out.len());
        let mut i = 0;
        while i < chars.len() {
            let starts_run = (chars[i] == '+' || chars[i].is_ascii_digit())
                && (i == 0 || !(chars[i - 1].is_alphanumeric() || "+-_/.#".contains(chars[i - 1])));
            if starts_run {
                let mut end = i + 1;
                let mut last_digit = chars[i].is_ascii_digit().then_some(i);
                while end < chars.len()
                    && (chars[end].is_ascii_digit() || matches!(chars[end], ' ' | '-' | '.' | '(' | ')'))
                {
                    if chars[end].is_ascii_digit() {
                        last_digit = Some(end);
                    }
                    end += 1;
                }
                if let Some(last) = last_digit {
                    let run: String = chars[i..=last].iter().collect();
                    let at_boundary = chars.get(last + 1).is_none_or(|c| !c.is_alphanumeric());
                    if at_boundary && self.is_phone(&run) {
                        masked.push_str(&self.identity(IdentityKind::Phone, &run));
                        i = last + 1;
                        continue;
                    }
                }
            }
            masked.push(chars[i]);
            i += 1;
        }
        masked
    }

    /// A phone number, conservatively: 8–15 digits, and either written with `+country code` (and parsing as a
    /// number), or a valid number of the default region. Prices, SKUs, counts and timestamps are not.
    fn is_phone(&self, text: &str) -> bool {
        let digits = text.chars().filter(char::is_ascii_digit).count();
        if !(8..=15).contains(&digits) || !text.chars().all(|c| c.is_ascii_digit() || " -.()+".contains(c)) {
            return false;
        }
        if let Some(rest) = text.strip_prefix('+') {
            return !rest.contains('+') && phonenumber::parse(None, text).is_ok();
        }
        let Some(region) = self.phone_region else { return false };
        !text.contains('+') && phonenumber::parse(Some(region), text).is_ok_and(|n| n.is_valid())
    }
}

/// `local@domain.tld`, loosely: one `@`, a non-empty local part, a domain with a dot inside.
fn is_email(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else { return false };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !text.chars().any(char::is_whitespace)
}

fn keep_first(value: &str, n: usize) -> String {
    let head: String = value.chars().take(n).collect();
    format!("{head}***")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASKED: Disclosure = Disclosure { reveal: false, phone_region: Some(phonenumber::country::Id::DK) };
    const NO_REGION: Disclosure = Disclosure { reveal: false, phone_region: None };
    const REVEALED: Disclosure = Disclosure { reveal: true, phone_region: None };

    #[test]
    fn masks_emails_phones_names_and_ids() {
        assert_eq!(MASKED.identity(IdentityKind::Email, "jane@example.com"), "j***@example.com");
        assert_eq!(MASKED.identity(IdentityKind::Phone, "+4520123456"), "+45******56");
        assert_eq!(MASKED.name(Some("Jane")).as_deref(), Some("J***"));
        assert_eq!(MASKED.identity(IdentityKind::DeviceId, "abcdef123456"), "abcd***");
        assert_eq!(MASKED.identity(IdentityKind::LoyaltyId, "12"), "***");
    }

    #[test]
    fn free_form_masks_personal_keys_and_contact_data_and_nothing_else() {
        let value = serde_json::json!({
            "email": "ann@example.com", "note": "call +4520123456", "sku": "12345678", "price": 19.99,
            "Customer_Phone": 4520123456_u64, "firstName": "Ann", "items": [{ "name": "Ann", "qty": 2 }],
            "at": "2026-01-15T10:30:00Z", "order": "ORD-20123456", "count": 20123456, "page": "/p/20123456",
        });
        assert_eq!(
            MASKED.free_form(&value),
            serde_json::json!({
                "email": "a***@example.com", "note": "call +45******56", "sku": "12345678", "price": 19.99,
                "Customer_Phone": "***", "firstName": "A***", "items": [{ "name": "A***", "qty": 2 }],
                "at": "2026-01-15T10:30:00Z", "order": "ORD-20123456", "count": 20123456, "page": "/p/20123456",
            })
        );
        assert_eq!(REVEALED.free_form(&value), value);
    }

    #[test]
    fn free_text_keeps_the_words_and_masks_contacts() {
        let cases = [
            ("Mail me at ann@example.com, thanks", "Mail me at a***@example.com, thanks"),
            ("<ann@example.com>", "<a***@example.com>"),
            ("call +45 20 12 34 56 today", "call +45**********56 today"),
            ("ring 20 12 34 56.", "ring 20 ******56."),
            ("ring 20123456", "ring 201***56"),
            ("order 12345678 cost 19.99 on 2026-01-15 10:30", "order 12345678 cost 19.99 on 2026-01-15 10:30"),
            ("a@b is not an address, 5 stars", "a@b is not an address, 5 stars"),
            ("SKU12345678 and +12", "SKU12345678 and +12"),
        ];
        for (text, want) in cases {
            assert_eq!(MASKED.free_text(text), want, "{text}");
            assert_eq!(REVEALED.free_text(text), text);
        }
        // Without a default region only numbers written with `+country code` are phone numbers.
        assert_eq!(NO_REGION.free_text("ring 20123456 or +4520123456"), "ring 20123456 or +45******56");
    }

    #[test]
    fn personal_keys_by_name() {
        for key in ["email", "E-Mail", "first_name", "lastName", "billing_address", "contactPhone", "ip", "name"] {
            assert!(is_personal_key(key), "{key}");
        }
        for key in ["sku", "price", "product_name", "page", "campaign", "zip_ip_free"] {
            assert!(!is_personal_key(key), "{key}");
        }
    }
}
