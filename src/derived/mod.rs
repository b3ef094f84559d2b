//! Derived personalization data: values computed from a customer's history (scores today), each served only under a
//! permit for the caller's purpose and only for customers who may be profiled (`consent::policy::profiling_allowed`).
pub mod actions;
pub mod catalog;
pub mod definitions;
pub mod engagement;
pub mod events;
pub mod maintain;
pub mod scores;
pub mod webhooks;
