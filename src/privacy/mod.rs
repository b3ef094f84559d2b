//! Privacy rules: what a caller may see of personal data (masking lives here and nowhere else).
pub mod access_log;
pub mod erasure;
pub mod export;
pub mod mask;
pub mod restriction;
pub mod suppression;

pub use mask::Disclosure;
