//! Privacy rules: what a caller may see of personal data (masking lives here and nowhere else).
pub mod mask;
pub mod restriction;

pub use mask::Disclosure;
