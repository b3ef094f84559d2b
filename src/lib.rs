//! Kontakt: a GraphQL API that unifies customer records into profiles and enforces consent on every read.
pub mod app;
pub mod auth;
pub mod changes;
pub mod cli;
pub mod config;
pub mod consent;
pub mod error;
pub mod graphql;
pub mod http;
pub mod jobs;
pub mod pagination;
pub mod privacy;
pub mod profiles;
pub mod services;
pub mod storage;
pub mod telemetry;
pub mod touchpoints;
