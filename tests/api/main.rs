//! Kontakt's API tests: the real server over HTTP, on SQLite always and on PostgreSQL + Redis when
//! `TEST_DATABASE_URL` / `TEST_REDIS_URL` are set (one test binary, so it links once).
#[macro_use]
mod common;

mod actions;
mod auth;
mod cases;
mod cli;
mod cluster;
mod consent;
mod contract;
mod customers;
mod cx;
mod definitions;
mod derived_changes;
mod disclosure;
mod faults;
mod feed;
mod http_spec;
mod instances;
mod jobs;
mod journeys;
mod limits;
mod loaders;
mod merges;
mod privacy;
mod rate_limits;
mod records;
mod resolution;
mod schema;
mod scores;
mod snapshots;
mod subscriptions;
mod touchpoints;
mod tracking;
mod traits;
