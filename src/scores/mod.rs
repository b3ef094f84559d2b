//! Customer scores from purchase history (issue 10): RFM codes and segments, BG/NBD purchase and churn
//! predictions, Gamma-Gamma order values and CLV. Pure functions, no database and no GraphQL.
//!
//! The formulas and the test oracles are in `../shared/research/personalization.md` §2 and §8.2:
//!
//! - [`summary`] turns a customer's purchases into the modelling summary (x, t_x, T, m̄), as `lifetimes`'
//!   `summary_data_from_transaction_data` does.
//! - [`rfm`] scores recency, frequency and monetary value 1–5 against a tenant's quintile [`rfm::Breakpoints`] and
//!   names the segment.
//! - [`bgnbd`] fits BG/NBD (Fader, Hardie & Lee 2005) by maximum likelihood and gives P(alive) and the expected
//!   number of purchases in a horizon.
//! - [`gamma_gamma`] fits the Gamma-Gamma spend model (Fader & Hardie, note 025) and gives the expected average order
//!   value of a customer.
//! - [`clv`] combines both into the discounted customer lifetime value and the churn risk, with a refusal reason
//!   instead of a guess when a model is missing or the customer gives it nothing to work with.
//!
//! Fitting is a tenant-wide batch job (it takes milliseconds on the 2,357 CDNOW customers); scoring is per customer,
//! closed form, and meant for read time because T grows every day. Both models are validated against the published
//! CDNOW results (the data is in `tests/data/cdnow/`).
pub mod bgnbd;
pub mod clv;
pub mod gamma_gamma;
mod hypergeometric;
mod optimize;
pub mod rfm;
pub mod summary;

pub use summary::{PurchaseSummary, TimeUnit};

/// How a maximum-likelihood fit is run; the same options serve BG/NBD and Gamma-Gamma.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FitOptions {
    /// L2 penalty on the natural parameters, added to the mean negative log-likelihood as `penalizer · Σ θ²`
    /// (as `lifetimes`' `penalizer_coef`; typically 0.001–0.1 when a fit wanders off). 0 = plain maximum likelihood.
    pub penalizer: f64,
    /// BG/NBD: fewer customers than this and the fit is refused.
    pub min_customers: usize,
    /// Fewer customers with at least one repeat purchase than this and the fit is refused (for Gamma-Gamma: fewer
    /// returning customers with a positive mean repeat value).
    pub min_repeat_buyers: usize,
    /// Objective evaluations allowed per Nelder-Mead run.
    pub max_evaluations: usize,
    /// Nelder-Mead runs restarted from the best point so far, with a fresh simplex, until one no longer improves.
    pub max_restarts: usize,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            penalizer: 0.0,
            min_customers: 50,
            min_repeat_buyers: 10,
            max_evaluations: 20_000,
            max_restarts: 10,
        }
    }
}

/// Why a model was not fitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FitError {
    #[error(
        "too few customers to fit: {customers} customers, {repeat_buyers} repeat buyers (need {min_customers} and {min_repeat_buyers})"
    )]
    TooFewCustomers { customers: usize, repeat_buyers: usize, min_customers: usize, min_repeat_buyers: usize },
    #[error("customer {index} is invalid: {reason}")]
    InvalidCustomer { index: usize, reason: String },
    #[error("invalid fit options: {0}")]
    InvalidOptions(String),
    #[error("the fit did not converge after {evaluations} evaluations")]
    DidNotConverge { evaluations: usize },
    #[error("the fit reached non-finite values: {0}")]
    NonFinite(String),
    #[error("the fitted parameters are unusable: {0}")]
    Unusable(String),
}

/// A number a model could not compute.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("invalid model parameters: {0}")]
    InvalidParameters(String),
    #[error("the hypergeometric series did not converge (a={a}, b={b}, c={c}, z={z})")]
    SeriesDidNotConverge { a: f64, b: f64, c: f64, z: f64 },
    #[error("non-finite result: {0}")]
    NonFinite(String),
}

/// Returns `value` when it is finite, an error naming `what` otherwise.
pub(crate) fn finite(value: f64, what: &str) -> Result<f64, ModelError> {
    if value.is_finite() { Ok(value) } else { Err(ModelError::NonFinite(format!("{what} = {value}"))) }
}

#[cfg(test)]
pub(crate) mod cdnow {
    //! Reads the CDNOW summary shipped in `tests/data/cdnow/` (2,357 customers, weeks).
    use super::PurchaseSummary;

    const SUMMARY_WITH_VALUES: &str =
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/cdnow/cdnow_customers_summary_with_transactions.csv");
    const SUMMARY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/cdnow/cdnow_customers_summary.csv");

    /// `(ID, summary)` of every customer in `cdnow_customers_summary_with_transactions.csv` (ID,x,t_x,T,zbar).
    pub fn customers_with_values() -> Vec<(u32, PurchaseSummary)> {
        read(SUMMARY_WITH_VALUES, 5)
            .into_iter()
            .map(|f| {
                let mean = (f[1] > 0.0).then_some(f[4]);
                (f[0] as u32, PurchaseSummary::new(f[1] as u32, f[2], f[3], mean).expect("valid CDNOW row"))
            })
            .collect()
    }

    /// `(ID, summary)` of every customer in `cdnow_customers_summary.csv` (ID,frequency,recency,T).
    pub fn customers() -> Vec<(u32, PurchaseSummary)> {
        read(SUMMARY, 4)
            .into_iter()
            .map(|f| (f[0] as u32, PurchaseSummary::new(f[1] as u32, f[2], f[3], None).expect("valid CDNOW row")))
            .collect()
    }

    fn read(path: &str, columns: usize) -> Vec<Vec<f64>> {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
        let rows: Vec<Vec<f64>> = text
            .lines()
            .skip(1)
            .filter(|line| !line.trim().is_empty())
            .map(|line| line.split(',').map(|v| v.trim().parse::<f64>().expect("a number")).collect::<Vec<_>>())
            .collect();
        assert!(rows.iter().all(|r| r.len() == columns), "{path}: every row has {columns} columns");
        assert_eq!(rows.len(), 2357, "{path}: the CDNOW sample has 2,357 customers");
        rows
    }
}
