//! Touchpoints: the vocabulary (channels, types, journey stages, feedback), ingestion at volume, timelines,
//! the journey summary and the cross-customer feed.
pub mod ingest;
pub mod model;
pub mod stages;
pub mod timeline;
pub mod tracking;

pub use ingest::{ItemOutcome, TouchpointInput, record_touchpoints};
pub use model::{Channel, Feedback, FeedbackMetric, JourneyStage, Touchpoint, TouchpointType};
