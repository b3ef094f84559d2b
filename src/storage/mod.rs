//! Storage: the database (sea-orm entities, scoped queries, migrations), the cache and pub/sub.
pub mod breaker;
pub mod cache;
pub mod db;
pub mod entities;
pub mod keys;
pub mod pubsub;
pub mod window;

pub use cache::Cache;
pub use db::Database;
pub use pubsub::PubSub;
