//! The Segment HTTP Tracking API's events (track, page, screen, identify, group, alias) in Kontakt's words:
//! touchpoints, identities and consents. Existing Segment SDKs send here by changing only their host.
use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{Map, Value, json};

use super::{
    ingest::{self, BatchItem, BatchOutcome, FeedbackInput, ItemOutcome, TouchpointInput},
    model::{Channel, FeedbackMetric, JourneyStage, TouchpointType},
};
use crate::{
    auth::Caller,
    consent::{ConsentPurpose, ConsentStatus, RecordConsent},
    error::{ApiError, ApiResult},
    profiles::{Identity, IdentityKind, customers::IdentifyInput, customers::IdentityInput},
    services::{DomainSettings, Services},
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

/// What became of one tracked event.
#[derive(Debug)]
pub enum EventOutcome {
    /// A new touchpoint.
    Stored,
    /// Its `messageId` was seen before: nothing was written.
    Duplicate,
    /// An identify, group or alias call was applied.
    Identified,
    /// An identity belongs to an erased person: dropped.
    Suppressed,
    Rejected(ApiError),
}

/// Translates and records a batch of events (one event for the single-event endpoints) in one domain call, so the
/// batch limit and the one idempotency lookup per batch apply; one outcome per event, in order. An event that does
/// not translate is rejected in its place; identify/group/alias calls are applied at their place between the
/// touchpoints (see `ingest::record_batch`). `Err` is for the whole batch (too large, a missing scope, or the
/// database failing before any event was written).
pub async fn record_events(
    caller: &Caller,
    svc: &Services,
    request: &TrackingRequest<'_>,
    events: &[Value],
    forced: Option<EventType>,
) -> ApiResult<Vec<EventOutcome>> {
    ingest::check_batch_size(events.len(), "batch")?;
    let mut outcomes: Vec<Option<EventOutcome>> = Vec::with_capacity(events.len());
    let mut items = Vec::with_capacity(events.len());
    for event in events {
        match translate(event, forced, request, &svc.settings) {
            Ok(TrackedEvent::Touchpoint(input)) => items.push(BatchItem::Touchpoint(input)),
            Ok(TrackedEvent::Identify(input)) => items.push(BatchItem::Identify(input)),
            Err(err) => {
                outcomes.push(Some(EventOutcome::Rejected(err)));
                continue;
            }
        }
        outcomes.push(None);
    }
    let recorded = if items.is_empty() { Vec::new() } else { ingest::record_batch(caller, svc, items).await? };
    let mut recorded = recorded.into_iter().map(|outcome| match outcome {
        BatchOutcome::Touchpoint(ItemOutcome::Created(_)) => EventOutcome::Stored,
        BatchOutcome::Touchpoint(ItemOutcome::Duplicate(_)) => EventOutcome::Duplicate,
        BatchOutcome::Touchpoint(ItemOutcome::Suppressed) | BatchOutcome::Identify(Ok(None)) => {
            EventOutcome::Suppressed
        }
        BatchOutcome::Touchpoint(ItemOutcome::Rejected(err)) | BatchOutcome::Identify(Err(err)) => {
            EventOutcome::Rejected(err)
        }
        BatchOutcome::Identify(Ok(Some(_))) => EventOutcome::Identified,
    });
    Ok(outcomes
        .into_iter()
        .map(|outcome| {
            outcome.or_else(|| recorded.next()).unwrap_or_else(|| {
                EventOutcome::Rejected(ApiError::internal(anyhow::anyhow!("no outcome for a tracked event")))
            })
        })
        .collect())
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
    // The stage is derived at ingestion (the tenant's journey rules, else this table's stage for the event name,
    // which `stages::default_stage_of` reads back from `properties.event`).
    let touchpoint_type = match kind {
        EventType::Page => TouchpointType::PageView,
        EventType::Screen => TouchpointType::ScreenView,
        _ => {
            let name =
                name.as_deref().ok_or_else(|| ApiError::validation("event", "a track call needs its event name"))?;
            track_event(name).map_or(TouchpointType::Custom, |mapped| mapped.kind)
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
        channel: channel_of(event, kind, request.source),
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

/// A `page` call is a web page view and a `screen` call an app screen, whichever SDK sent them (server SDKs send no
/// `context.page`/`context.app`) and whatever the write key's source is called. A `track` call takes
/// `context.channel` (or RudderStack's top-level `channel`) as Segment SDKs send it (`browser`, `mobile`) or one of
/// Kontakt's channels; else what the context shows (an app, a page, a device, a browser's user agent), else the write
/// key's source when it names a channel, else `OTHER`.
fn channel_of(event: &Value, kind: EventType, source: &str) -> Channel {
    match kind {
        EventType::Page => return Channel::Web,
        EventType::Screen => return Channel::MobileApp,
        _ => {}
    }
    let raw = pointer(event, "/context/channel")
        .or_else(|| pointer(event, "/channel"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_ascii_lowercase();
    match raw.as_str() {
        "browser" | "web" => Channel::Web,
        "mobile" | "app" | "mobile_app" => Channel::MobileApp,
        other => Channel::parse(other).unwrap_or(if pointer(event, "/context/app").is_some() {
            Channel::MobileApp
        } else if pointer(event, "/context/page").is_some() {
            Channel::Web
        } else if pointer(event, "/context/device").is_some() {
            Channel::MobileApp
        } else if pointer(event, "/context/userAgent").is_some() {
            Channel::Web
        } else {
            Channel::parse(&source.to_ascii_lowercase()).unwrap_or(Channel::Other)
        }),
    }
}

/// One row of [`TRACK_EVENTS`]: the names an event goes by and the touchpoint type and journey stage it becomes.
#[derive(Debug, Clone, Copy)]
pub struct TrackEvent {
    /// Segment's spelling first (its e-commerce spec v2, email and support events), then common variants.
    pub names: &'static [&'static str],
    pub kind: TouchpointType,
    pub stage: JourneyStage,
}

const fn row(names: &'static [&'static str], kind: TouchpointType, stage: JourneyStage) -> TrackEvent {
    TrackEvent { names, kind, stage }
}

/// What a `track` call's event name means: the one table (README.md shows it; a unit test keeps the two equal).
/// Names match ignoring case, `_` and `-` (`order_completed` is `Order Completed`). An event not named here is a
/// `CUSTOM` touchpoint in the `USAGE` stage. Every tracked touchpoint keeps its event name in `properties.event`.
pub const TRACK_EVENTS: &[TrackEvent] = {
    use JourneyStage as S;
    use TouchpointType as T;
    &[
        // E-commerce spec v2: browsing, promotions, ordering, coupons, wishlists, sharing, reviews.
        row(&["Products Searched", "Product List Viewed", "Product List Filtered"], T::Custom, S::Consideration),
        row(&["Promotion Viewed"], T::AdImpression, S::Awareness),
        row(&["Promotion Clicked"], T::AdClick, S::Consideration),
        row(&["Product Clicked", "Product Viewed"], T::Custom, S::Consideration),
        row(&["Product Added", "Product Removed", "Cart Viewed"], T::Custom, S::Consideration),
        row(
            &["Product Added to Wishlist", "Product Removed from Wishlist", "Wishlist Product Added to Cart"],
            T::Custom,
            S::Consideration,
        ),
        row(
            &["Checkout Started", "Checkout Step Viewed", "Checkout Step Completed", "Payment Info Entered"],
            T::Custom,
            S::Purchase,
        ),
        row(&["Coupon Entered", "Coupon Applied", "Coupon Denied", "Coupon Removed"], T::Custom, S::Purchase),
        row(&["Order Completed", "Checkout Completed", "Purchase", "Purchased"], T::Purchase, S::Purchase),
        row(&["Order Updated", "Order Cancelled"], T::Custom, S::Purchase),
        row(&["Order Refunded", "Product Returned", "Return"], T::Return, S::Support),
        row(&["Order Delivered", "Delivery", "Delivered"], T::Delivery, S::Onboarding),
        row(&["Product Reviewed", "Review Submitted"], T::Review, S::Renewal),
        row(&["Product Shared", "Cart Shared"], T::Custom, S::Renewal),
        // Email, ads, stores, support and surveys.
        row(&["Email Sent", "Email Delivered"], T::EmailSent, S::Consideration),
        row(&["Email Opened"], T::EmailOpen, S::Consideration),
        row(&["Email Link Clicked", "Email Clicked"], T::EmailClick, S::Consideration),
        row(&["Ad Viewed", "Ad Impression"], T::AdImpression, S::Awareness),
        row(&["Ad Clicked"], T::AdClick, S::Consideration),
        row(&["Store Visited", "Store Visit"], T::StoreVisit, S::Consideration),
        row(&["Ticket Created", "Support Ticket Created"], T::SupportTicket, S::Support),
        row(&["Call Completed", "Support Call"], T::SupportCall, S::Support),
        row(&["Chat Started", "Support Chat"], T::SupportChat, S::Support),
        row(&["Survey Responded", "Survey Response", "Survey Submitted"], T::SurveyResponse, S::Renewal),
    ]
};

fn normal_event_name(name: &str) -> String {
    name.replace(['_', '-'], " ").split_whitespace().collect::<Vec<_>>().join(" ").to_ascii_lowercase()
}

/// The row of [`TRACK_EVENTS`] naming `name`, if any.
pub fn track_event(name: &str) -> Option<&'static TrackEvent> {
    let normal = normal_event_name(name);
    TRACK_EVENTS.iter().find(|row| row.names.iter().any(|n| normal_event_name(n) == normal))
}

/// [`TRACK_EVENTS`] as the Markdown table README.md shows.
pub fn track_events_markdown() -> String {
    let mut table = String::from("| event name | type | stage |\n| --- | --- | --- |\n");
    for row in TRACK_EVENTS {
        table.push_str(&format!(
            "| {} | `{}` | `{}` |\n",
            row.names.join(", "),
            row.kind.as_str().to_ascii_uppercase(),
            row.stage.as_str().to_ascii_uppercase()
        ));
    }
    table
}

/// `{"nps": 9}`, `{"csat": 4}`, `{"ces": 6}` or `{"metric": "nps", "score": 9}`, with optional `comment`.
fn feedback_of(properties: &Map<String, Value>) -> ApiResult<Option<FeedbackInput>> {
    let verbatim =
        properties.get("comment").or_else(|| properties.get("verbatim")).and_then(Value::as_str).map(str::to_owned);
    let about_touchpoint_id = match properties.get("aboutTouchpointId") {
        None | Some(Value::Null) => None,
        Some(about) => Some(about.as_str().and_then(|s| uuid::Uuid::parse_str(s).ok()).ok_or_else(|| {
            ApiError::validation("properties.aboutTouchpointId", "the id of a touchpoint of the same customer")
        })?),
    };
    for metric in FeedbackMetric::ALL {
        if let Some(score) = properties.get(metric.as_str()).and_then(Value::as_i64) {
            let score = score.clamp(-1, 1000) as i32;
            return Ok(Some(FeedbackInput { metric: *metric, score, verbatim, about_touchpoint_id }));
        }
    }
    match (properties.get("metric").and_then(Value::as_str), properties.get("score").and_then(Value::as_i64)) {
        (Some(metric), Some(score)) => {
            let metric = FeedbackMetric::parse(&metric.to_ascii_lowercase())
                .ok_or_else(|| ApiError::validation("properties.metric", "one of nps, csat, ces"))?;
            Ok(Some(FeedbackInput { metric, score: score.clamp(-1, 1000) as i32, verbatim, about_touchpoint_id }))
        }
        _ => Ok(None),
    }
}

/// `context.consent.categoryPreferences` (Segment's consent object) and Global Privacy Control as consents.
fn consents_of(event: &Value, request: &TrackingRequest<'_>) -> ApiResult<Vec<RecordConsent>> {
    let captured_at = Some(request.received_at);
    let decision = |purpose: ConsentPurpose, granted: bool, source: &str| RecordConsent {
        customer_id: uuid::Uuid::nil(),
        purpose: purpose.as_str().to_owned(),
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
                "advertising" | "marketing" => ConsentPurpose::Marketing,
                "analytics" | "statistics" => ConsentPurpose::Analytics,
                "personalization" | "personalisation" | "functional" => ConsentPurpose::Personalization,
                "profiling" => ConsentPurpose::Profiling,
                "sharing" | "sale" | "data sharing" => ConsentPurpose::Sharing,
                _ => continue,
            };
            consents.push(decision(purpose, granted, request.source));
        }
    }
    if request.global_privacy_control {
        consents.retain(|c| c.purpose != ConsentPurpose::Sharing.as_str());
        consents.push(decision(ConsentPurpose::Sharing, false, "global_privacy_control"));
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
    fn every_track_event_name_is_in_one_row_and_readme_shows_the_table() {
        let mut seen = std::collections::HashSet::new();
        for row in TRACK_EVENTS {
            for name in row.names {
                assert!(seen.insert(normal_event_name(name)), "{name} is in two rows");
                assert_eq!(track_event(name).map(|r| r.kind), Some(row.kind));
            }
        }
        assert_eq!(track_event("order_completed").map(|r| r.stage), Some(JourneyStage::Purchase));
        assert_eq!(track_event("  product  viewed ").map(|r| r.stage), Some(JourneyStage::Consideration));
        assert!(track_event("Trial Extended").is_none());
        // The table sits in a list item, indented.
        let readme: Vec<&str> = include_str!("../../README.md").lines().map(str::trim_start).collect();
        let readme = readme.join("\n");
        assert!(
            readme.contains(&track_events_markdown()),
            "README.md's table of track events differs from TRACK_EVENTS; paste this:\n{}",
            track_events_markdown()
        );
    }

    #[test]
    fn page_and_screen_take_their_channel_from_the_call() {
        let request = TrackingRequest { source: "webshop", global_privacy_control: false, received_at: Utc::now() };
        let settings = DomainSettings::default();
        let channel = |event: Value| match translate(&event, None, &request, &settings).unwrap() {
            TrackedEvent::Touchpoint(tp) => tp.channel,
            TrackedEvent::Identify(_) => panic!("a touchpoint"),
        };
        assert_eq!(channel(json!({ "type": "page", "userId": "u" })), Channel::Web);
        assert_eq!(
            channel(json!({ "type": "screen", "userId": "u", "context": { "channel": "server" } })),
            Channel::MobileApp
        );
        assert_eq!(
            channel(json!({ "type": "track", "event": "x", "userId": "u", "channel": "mobile" })),
            Channel::MobileApp
        );
        assert_eq!(channel(json!({ "type": "track", "event": "x", "userId": "u" })), Channel::Other);
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
