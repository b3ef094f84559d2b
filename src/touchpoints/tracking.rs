//! The Segment HTTP Tracking API's events (track, page, screen, identify, group, alias) in Kontakt's words:
//! touchpoints, identities and consents. Existing Segment SDKs send here by changing only their host.
use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{Map, Value, json};

use super::{
    ingest::{FeedbackInput, TouchpointInput},
    model::{Channel, FeedbackMetric, TouchpointType},
};
use crate::{
    consent::{ConsentStatus, RecordConsent},
    error::{ApiError, ApiResult},
    profiles::{Identity, IdentityKind, customers::IdentifyInput, customers::IdentityInput},
    services::DomainSettings,
};

/// The source every tracking `userId` belongs to: one namespace per tenant, shared by web, app and server SDKs.
pub const USER_ID_SOURCE: &str = "user_id";
const MAX_EVENT_BYTES: usize = 32 * 1024;

/// What the HTTP edge knows about the request an event came in.
#[derive(Debug, Clone)]
pub struct TrackingRequest<'a> {
    pub source: &'a str,
    /// `Sec-GPC: 1`: the browser asks not to sell or share.
    pub global_privacy_control: bool,
    pub received_at: DateTime<Utc>,
}

/// A translated event.
#[derive(Debug, Clone)]
pub enum TrackedEvent {
    Touchpoint(Box<TouchpointInput>),
    Identify(IdentifyInput),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Track,
    Page,
    Screen,
    Identify,
    Group,
    Alias,
}

impl EventType {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "track" => EventType::Track,
            "page" => EventType::Page,
            "screen" => EventType::Screen,
            "identify" => EventType::Identify,
            "group" => EventType::Group,
            "alias" => EventType::Alias,
            _ => return None,
        })
    }
}

fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn pointer<'a>(event: &'a Value, path: &str) -> Option<&'a Value> {
    event.pointer(path).filter(|v| !v.is_null())
}

/// Translates one event. `forced` is the type the endpoint implies (`/v1/track` → track); `/v1/batch` reads
/// each event's `type`.
pub fn translate(
    event: &Value,
    forced: Option<EventType>,
    request: &TrackingRequest<'_>,
    settings: &DomainSettings,
) -> ApiResult<TrackedEvent> {
    if !event.is_object() {
        return Err(ApiError::validation("event", "must be a JSON object"));
    }
    if event.to_string().len() > MAX_EVENT_BYTES {
        return Err(ApiError::validation("event", format!("larger than {MAX_EVENT_BYTES} bytes")));
    }
    let kind = match forced {
        Some(kind) => kind,
        None => {
            let raw = event.get("type").and_then(Value::as_str).unwrap_or_default();
            EventType::parse(raw)
                .ok_or_else(|| ApiError::validation("type", "one of track, page, screen, identify, group, alias"))?
        }
    };
    let traits = match kind {
        EventType::Identify | EventType::Group => {
            pointer(event, "/traits").or_else(|| pointer(event, "/context/traits"))
        }
        _ => pointer(event, "/context/traits"),
    };
    let identities = identities_of(event, kind, traits, settings)?;
    let consents = consents_of(event, request)?;

    if matches!(kind, EventType::Identify | EventType::Group | EventType::Alias) {
        let name = |keys: &[&str]| traits.and_then(|t| keys.iter().find_map(|k| text(t.get(*k))));
        return Ok(TrackedEvent::Identify(IdentifyInput {
            identities,
            given_name: name(&["firstName", "first_name"]),
            family_name: name(&["lastName", "last_name"]),
            consents,
        }));
    }

    let occurred_at = match text(pointer(event, "/timestamp").or_else(|| pointer(event, "/originalTimestamp"))) {
        Some(raw) => DateTime::parse_from_rfc3339(&raw)
            .map_err(|_| ApiError::validation("timestamp", "an ISO 8601 time such as 2026-11-22T10:00:00Z"))?
            .with_timezone(&Utc),
        None => request.received_at,
    }
    .trunc_subsecs(6);
    let key = match text(event.get("messageId")) {
        Some(id) if id.len() <= 128 => id,
        Some(_) => return Err(ApiError::validation("messageId", "longer than 128 characters")),
        // No messageId: a key derived from the content still makes replays harmless.
        None => format!("derived:{}", uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, event.to_string().as_bytes())),
    };
    let mut properties = match pointer(event, "/properties") {
        Some(Value::Object(map)) => map.clone(),
        Some(_) => return Err(ApiError::validation("properties", "must be an object")),
        None => Map::new(),
    };
    let name = text(event.get("event")).or_else(|| text(event.get("name")));
    let touchpoint_type = match kind {
        EventType::Page => TouchpointType::PageView,
        EventType::Screen => TouchpointType::ScreenView,
        _ => {
            let name =
                name.as_deref().ok_or_else(|| ApiError::validation("event", "a track call needs its event name"))?;
            type_of_track(name)
        }
    };
    if let Some(name) = &name {
        properties.entry(if kind == EventType::Track { "event" } else { "name" }).or_insert(json!(name));
    }
    if kind == EventType::Page
        && let Some(url) = pointer(event, "/context/page/url")
    {
        properties.entry("url").or_insert(url.clone());
    }
    let number = |keys: &[&str]| keys.iter().find_map(|k| properties.get(*k).and_then(Value::as_f64));
    let value = match touchpoint_type {
        TouchpointType::Purchase | TouchpointType::Return => number(&["revenue", "total", "value"]),
        _ => None,
    };
    let currency = properties.get("currency").and_then(Value::as_str).map(str::to_owned);
    let feedback = if touchpoint_type == TouchpointType::SurveyResponse { feedback_of(&properties)? } else { None };

    Ok(TrackedEvent::Touchpoint(Box::new(TouchpointInput {
        customer_id: None,
        identities,
        channel: channel_of(event, request.source),
        kind: touchpoint_type,
        stage: None,
        occurred_at,
        source: request.source.to_owned(),
        idempotency_key: key,
        properties: Some(Value::Object(properties)),
        value,
        currency,
        feedback,
        consents,
        consent_context: pointer(event, "/context/consent").cloned(),
    })))
}

fn identities_of(
    event: &Value,
    kind: EventType,
    traits: Option<&Value>,
    settings: &DomainSettings,
) -> ApiResult<Vec<IdentityInput>> {
    let mut identities = Vec::new();
    let mut push = |kind: IdentityKind, raw: Option<String>, source: Option<&str>, field: &str| -> ApiResult<()> {
        if let Some(value) = raw {
            // Validate here so the error names the tracking field, not our internal one.
            Identity::parse(kind, &value, source, settings, field)?;
            identities.push(IdentityInput { kind, value, source: source.map(str::to_owned) });
        }
        Ok(())
    };
    push(IdentityKind::AnonymousId, text(event.get("anonymousId")), None, "anonymousId")?;
    push(IdentityKind::ExternalId, text(event.get("userId")), Some(USER_ID_SOURCE), "userId")?;
    if kind == EventType::Alias {
        push(IdentityKind::AnonymousId, text(event.get("previousId")), None, "previousId")?;
    }
    if let Some(traits) = traits {
        push(IdentityKind::Email, text(traits.get("email")), None, "traits.email")?;
        push(IdentityKind::Phone, text(traits.get("phone")), None, "traits.phone")?;
    }
    push(IdentityKind::DeviceId, text(pointer(event, "/context/device/id")), None, "context.device.id")?;
    if identities.is_empty() {
        return Err(ApiError::validation("userId", "an event needs a userId or an anonymousId"));
    }
    Ok(identities)
}

/// `context.channel` as Segment SDKs send it (`browser`, `mobile`, `server`) or one of Kontakt's channels; else
/// what the context shows (an app, a page), else the write key's source when it names a channel.
fn channel_of(event: &Value, source: &str) -> Channel {
    let raw = event.pointer("/context/channel").and_then(Value::as_str).unwrap_or_default().to_ascii_lowercase();
    match raw.as_str() {
        "browser" | "web" => Channel::Web,
        "mobile" | "app" | "mobile_app" => Channel::MobileApp,
        other => Channel::parse(other).unwrap_or(if event.pointer("/context/app").is_some() {
            Channel::MobileApp
        } else if event.pointer("/context/page").is_some() || event.pointer("/context/userAgent").is_some() {
            Channel::Web
        } else {
            Channel::parse(&source.to_ascii_lowercase()).unwrap_or(Channel::Other)
        }),
    }
}

/// Segment's e-commerce, email and support event names map to touchpoint types; the rest are `CUSTOM`.
fn type_of_track(name: &str) -> TouchpointType {
    let normal = name.trim().to_ascii_lowercase().replace(['_', '-'], " ");
    match normal.as_str() {
        "order completed" | "checkout completed" | "purchase" | "purchased" => TouchpointType::Purchase,
        "order refunded" | "product returned" | "return" => TouchpointType::Return,
        "order delivered" | "delivery" | "delivered" => TouchpointType::Delivery,
        "email sent" | "email delivered" => TouchpointType::EmailSent,
        "email opened" => TouchpointType::EmailOpen,
        "email link clicked" | "email clicked" => TouchpointType::EmailClick,
        "ad viewed" | "ad impression" => TouchpointType::AdImpression,
        "ad clicked" => TouchpointType::AdClick,
        "store visited" | "store visit" => TouchpointType::StoreVisit,
        "ticket created" | "support ticket created" => TouchpointType::SupportTicket,
        "call completed" | "support call" => TouchpointType::SupportCall,
        "chat started" | "support chat" => TouchpointType::SupportChat,
        "review submitted" | "product reviewed" => TouchpointType::Review,
        "survey responded" | "survey response" | "survey submitted" => TouchpointType::SurveyResponse,
        _ => TouchpointType::Custom,
    }
}

/// `{"nps": 9}`, `{"csat": 4}`, `{"ces": 6}` or `{"metric": "nps", "score": 9}`, with optional `comment`.
fn feedback_of(properties: &Map<String, Value>) -> ApiResult<Option<FeedbackInput>> {
    let verbatim =
        properties.get("comment").or_else(|| properties.get("verbatim")).and_then(Value::as_str).map(str::to_owned);
    for metric in FeedbackMetric::ALL {
        if let Some(score) = properties.get(metric.as_str()).and_then(Value::as_i64) {
            return Ok(Some(FeedbackInput { metric: *metric, score: score.clamp(-1, 1000) as i32, verbatim }));
        }
    }
    match (properties.get("metric").and_then(Value::as_str), properties.get("score").and_then(Value::as_i64)) {
        (Some(metric), Some(score)) => {
            let metric = FeedbackMetric::parse(&metric.to_ascii_lowercase())
                .ok_or_else(|| ApiError::validation("properties.metric", "one of nps, csat, ces"))?;
            Ok(Some(FeedbackInput { metric, score: score.clamp(-1, 1000) as i32, verbatim }))
        }
        _ => Ok(None),
    }
}

/// `context.consent.categoryPreferences` (Segment's consent object) and Global Privacy Control as consents.
fn consents_of(event: &Value, request: &TrackingRequest<'_>) -> ApiResult<Vec<RecordConsent>> {
    let captured_at = Some(request.received_at);
    let decision = |purpose: &str, granted: bool, source: &str| RecordConsent {
        customer_id: uuid::Uuid::nil(),
        purpose: purpose.to_owned(),
        channel: None,
        status: if granted { ConsentStatus::Granted } else { ConsentStatus::Denied },
        captured_at,
        source: source.to_owned(),
        policy_version: None,
        legal_basis: Some("consent".to_owned()),
        expires_at: None,
        evidence: None,
    };
    let mut consents = Vec::new();
    if let Some(Value::Object(preferences)) = pointer(event, "/context/consent/categoryPreferences") {
        for (category, granted) in preferences {
            let Some(granted) = granted.as_bool() else {
                return Err(ApiError::validation(
                    "context.consent.categoryPreferences",
                    "values must be true or false",
                ));
            };
            let purpose = match category.to_ascii_lowercase().as_str() {
                "advertising" | "marketing" => "marketing",
                "analytics" | "statistics" => "analytics",
                "personalization" | "personalisation" | "functional" => "personalization",
                "profiling" => "profiling",
                "sharing" | "sale" | "data sharing" => "sharing",
                _ => continue,
            };
            consents.push(decision(purpose, granted, request.source));
        }
    }
    if request.global_privacy_control {
        consents.retain(|c| c.purpose != "sharing");
        consents.push(decision("sharing", false, "global_privacy_control"));
    }
    Ok(consents)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> TrackingRequest<'static> {
        TrackingRequest { source: "web", global_privacy_control: true, received_at: Utc::now() }
    }

    #[test]
    fn a_track_call_becomes_a_purchase_with_identities_and_consents() {
        let event = json!({
            "type": "track", "event": "Order Completed", "messageId": "m-1", "anonymousId": "a-1", "userId": "u-1",
            "timestamp": "2026-11-01T10:00:00.123456789Z", "properties": { "revenue": 49.5, "currency": "EUR" },
            "context": { "channel": "browser", "traits": { "email": "A@B.dk" },
                         "consent": { "categoryPreferences": { "Advertising": false, "Analytics": true } } }
        });
        let TrackedEvent::Touchpoint(tp) = translate(&event, None, &request(), &DomainSettings::default()).unwrap()
        else {
            panic!("a touchpoint")
        };
        assert_eq!(tp.kind, TouchpointType::Purchase);
        assert_eq!(tp.channel, Channel::Web);
        assert_eq!(tp.value, Some(49.5));
        assert_eq!(tp.idempotency_key, "m-1");
        assert_eq!(tp.identities.len(), 3);
        let purposes: Vec<(&str, ConsentStatus)> = tp.consents.iter().map(|c| (c.purpose.as_str(), c.status)).collect();
        assert_eq!(
            purposes,
            vec![
                ("marketing", ConsentStatus::Denied),
                ("analytics", ConsentStatus::Granted),
                ("sharing", ConsentStatus::Denied)
            ]
        );
    }

    #[test]
    fn bad_events_name_their_field() {
        let settings = DomainSettings::default();
        let missing_ids = json!({ "type": "page" });
        let err = translate(&missing_ids, None, &request(), &settings).unwrap_err();
        assert!(matches!(err, ApiError::Validation { ref field, .. } if field == "userId"));
        let bad_email = json!({ "type": "identify", "userId": "u", "traits": { "email": "nope" } });
        let err = translate(&bad_email, None, &request(), &settings).unwrap_err();
        assert!(matches!(err, ApiError::Validation { ref field, .. } if field == "traits.email"));
        let bad_type = json!({ "type": "explode", "userId": "u" });
        assert!(translate(&bad_type, None, &request(), &settings).is_err());
    }
}
