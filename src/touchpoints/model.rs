//! The touchpoint vocabulary and the default journey-stage rules.
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::storage::entities::touchpoint;

/// Declares a closed vocabulary with stable storage names (`snake_case`) and a GraphQL enum.
macro_rules! vocabulary {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, async_graphql::Enum)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(text: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == text)
            }
        }

        /// In JSON (definition bodies) as GraphQL names it: `CALL_CENTER`.
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.as_str().to_ascii_uppercase())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                Self::parse(&text.to_ascii_lowercase()).ok_or_else(|| {
                    let names: Vec<String> = Self::ALL.iter().map(|v| v.as_str().to_ascii_uppercase()).collect();
                    serde::de::Error::custom(format!("unknown {} `{text}`: one of {}", stringify!($name), names.join(", ")))
                })
            }
        }
    };
}

vocabulary!(
    /// Where an interaction happens.
    Channel {
        Web => "web", MobileApp => "mobile_app", Store => "store", CallCenter => "call_center", Email => "email",
        Sms => "sms", Push => "push", Social => "social", Ads => "ads", Chat => "chat", Event => "event",
        Partner => "partner", Other => "other",
    }
);

vocabulary!(
    /// What happened.
    TouchpointType {
        PageView => "page_view", ScreenView => "screen_view", AdImpression => "ad_impression", AdClick => "ad_click",
        EmailSent => "email_sent", EmailOpen => "email_open", EmailClick => "email_click", StoreVisit => "store_visit",
        Purchase => "purchase", Return => "return", Delivery => "delivery", SupportTicket => "support_ticket",
        SupportCall => "support_call", SupportChat => "support_chat", Review => "review",
        SurveyResponse => "survey_response", Custom => "custom",
    }
);

vocabulary!(
    /// Where in the customer journey a touchpoint sits.
    JourneyStage {
        Awareness => "awareness", Consideration => "consideration", Purchase => "purchase",
        Onboarding => "onboarding", Usage => "usage", Support => "support", Renewal => "renewal",
    }
);

vocabulary!(
    /// The survey scale of a feedback answer.
    FeedbackMetric { Nps => "nps", Csat => "csat", Ces => "ces" }
);

impl FeedbackMetric {
    /// The valid answers: NPS 0–10, CSAT 1–5, CES 1–7 (DOMAIN.md).
    pub const fn range(self) -> (i32, i32) {
        match self {
            FeedbackMetric::Nps => (0, 10),
            FeedbackMetric::Csat => (1, 5),
            FeedbackMetric::Ces => (1, 7),
        }
    }
}

impl JourneyStage {
    /// The default stage of a touchpoint whose sender gave none.
    pub fn default_for(kind: TouchpointType, channel: Channel) -> Self {
        use TouchpointType as T;
        match kind {
            T::AdImpression => JourneyStage::Awareness,
            T::AdClick | T::PageView | T::ScreenView | T::StoreVisit | T::EmailOpen | T::EmailClick => {
                JourneyStage::Consideration
            }
            T::EmailSent if channel == Channel::Email => JourneyStage::Consideration,
            T::Purchase => JourneyStage::Purchase,
            T::Delivery => JourneyStage::Onboarding,
            T::Return | T::SupportTicket | T::SupportCall | T::SupportChat => JourneyStage::Support,
            T::Review | T::SurveyResponse => JourneyStage::Renewal,
            T::EmailSent | T::Custom => JourneyStage::Usage,
        }
    }
}

/// A survey answer attached to a touchpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Feedback {
    pub metric: FeedbackMetric,
    pub score: i16,
    pub verbatim: Option<String>,
}

/// One interaction, as the domain hands it out.
#[derive(Debug, Clone)]
pub struct Touchpoint {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub channel: Channel,
    pub kind: TouchpointType,
    pub stage: JourneyStage,
    pub occurred_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub source: String,
    pub idempotency_key: String,
    pub properties: Option<serde_json::Value>,
    pub value: Option<f64>,
    pub currency: Option<String>,
    pub feedback: Option<Feedback>,
}

impl Touchpoint {
    /// Rows with an unknown vocabulary word (written by a newer version) are skipped rather than failing a page.
    pub(crate) fn from_row(m: touchpoint::Model) -> Option<Self> {
        let feedback = match (m.feedback_metric.as_deref().and_then(FeedbackMetric::parse), m.feedback_score) {
            (Some(metric), Some(score)) => Some(Feedback { metric, score, verbatim: m.feedback_verbatim }),
            _ => None,
        };
        Some(Touchpoint {
            id: m.id,
            customer_id: m.customer_id,
            channel: Channel::parse(&m.channel)?,
            kind: TouchpointType::parse(&m.kind)?,
            stage: JourneyStage::parse(&m.stage)?,
            occurred_at: m.occurred_at,
            received_at: m.received_at,
            source: m.source,
            idempotency_key: m.idempotency_key,
            properties: m.properties,
            value: m.value,
            currency: m.currency,
            feedback,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_round_trips_and_every_type_has_a_stage() {
        for kind in TouchpointType::ALL {
            assert_eq!(TouchpointType::parse(kind.as_str()), Some(*kind));
            let _ = JourneyStage::default_for(*kind, Channel::Web);
        }
        assert_eq!(JourneyStage::default_for(TouchpointType::Purchase, Channel::Store), JourneyStage::Purchase);
        assert_eq!(Channel::parse("nope"), None);
    }
}
