//! Customer lifetime value and churn risk of one customer, from the fitted BG/NBD and Gamma-Gamma models, with a
//! refusal reason instead of a guess.
//!
//! - **CLV** over H months (as `lifetimes`' `utils._customer_lifetime_value`):
//!   CLV = Σᵢ₌₁..H E[order value] · (E[purchases in (T, T + i·m]] − E[purchases in (T, T + (i − 1)·m]]) / (1 + d)ⁱ,
//!   with m the length of a month in the model's time unit (30 days or 4.345 weeks, [`TimeUnit::per_month`]), d the
//!   monthly discount rate (default 0.01), E[order value] from Gamma-Gamma and E[purchases] from BG/NBD eq. (10).
//! - **Churn risk** = 1 − P(alive). It is refused for one-time buyers (`ONE_TIME_BUYER`): BG/NBD gives them
//!   P(alive) = 1 whatever their age, a known artefact (research/personalization.md §2.2), so 0 would be a guess.
//!
//! Scores are computed on read: T grows every day, so a stored score is stale the next morning. The caller passes the
//! models as [`Model`]: fitted (with when and which version, echoed in the score), refused by the fit, or never fitted.
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::bgnbd::BgNbdParams;
use super::gamma_gamma::GammaGammaParams;
use super::{FitError, ModelError, PurchaseSummary, TimeUnit, finite};

/// Longest CLV horizon accepted (100 years).
const MAX_MONTHS: u32 = 1200;

/// A tenant's model as the caller has it.
#[derive(Debug, Clone, PartialEq)]
pub enum Model<P> {
    /// No fit has run yet.
    NotFitted,
    /// The last fit was refused (too few customers, did not converge, …).
    Refused(FitError),
    Fitted(FittedModel<P>),
}

/// Fitted parameters and where they come from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FittedModel<P> {
    pub params: P,
    pub fitted_at: Option<DateTime<Utc>>,
    pub version: Option<String>,
}

/// The provenance of a model used in a score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelStamp {
    pub fitted_at: Option<DateTime<Utc>>,
    pub version: Option<String>,
}

impl<P> FittedModel<P> {
    fn stamp(&self) -> ModelStamp {
        ModelStamp { fitted_at: self.fitted_at, version: self.version.clone() }
    }
}

/// Why a score is not given.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[serde(tag = "code", content = "detail", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Refusal {
    #[error("the model has not been fitted")]
    NotFitted,
    #[error("too few customers to fit the model")]
    TooFewCustomers,
    #[error("the model fit failed: {0}")]
    FitFailed(String),
    #[error("the customer has no purchases")]
    NoPurchases,
    #[error("one-time buyer: BG/NBD's P(alive) is 1 by construction")]
    OneTimeBuyer,
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("numerical failure: {0}")]
    Numerical(String),
}

impl Refusal {
    /// The refusal as a stable code (`NOT_FITTED`, `TOO_FEW_CUSTOMERS`, …), for an API's insufficiency field.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::NotFitted => "NOT_FITTED",
            Refusal::TooFewCustomers => "TOO_FEW_CUSTOMERS",
            Refusal::FitFailed(_) => "FIT_FAILED",
            Refusal::NoPurchases => "NO_PURCHASES",
            Refusal::OneTimeBuyer => "ONE_TIME_BUYER",
            Refusal::InvalidInput(_) => "INVALID_INPUT",
            Refusal::Numerical(_) => "NUMERICAL",
        }
    }
}

impl From<ModelError> for Refusal {
    fn from(error: ModelError) -> Self {
        match error {
            ModelError::InvalidInput(reason) => Refusal::InvalidInput(reason),
            other => Refusal::Numerical(other.to_string()),
        }
    }
}

/// The model to use, or why there is none.
fn fitted<P>(model: &Model<P>) -> Result<&FittedModel<P>, Refusal> {
    match model {
        Model::NotFitted => Err(Refusal::NotFitted),
        Model::Refused(FitError::TooFewCustomers { .. }) => Err(Refusal::TooFewCustomers),
        Model::Refused(other) => Err(Refusal::FitFailed(other.to_string())),
        Model::Fitted(fitted) => Ok(fitted),
    }
}

/// The horizon and discounting of a CLV.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClvOptions {
    /// H, in months.
    pub months: u32,
    /// d, per month.
    pub monthly_discount: f64,
    /// The length of a month in the time unit of the summaries and of the BG/NBD fit ([`TimeUnit::per_month`]).
    pub units_per_month: f64,
}

impl ClvOptions {
    /// 12 months at 1 % a month (`lifetimes`' defaults) for summaries and a model in `unit`.
    pub fn twelve_months(unit: TimeUnit) -> Self {
        ClvOptions { months: 12, monthly_discount: 0.01, units_per_month: unit.per_month() }
    }
}

/// The discounted CLV of `customer` over `options.months` months, given its expected order value (see the module
/// doc). 0 for a horizon of 0 months.
pub fn customer_lifetime_value(
    purchases: &BgNbdParams,
    expected_order_value: f64,
    customer: &PurchaseSummary,
    options: &ClvOptions,
) -> Result<f64, ModelError> {
    let ClvOptions { months, monthly_discount, units_per_month: month } = *options;
    if months > MAX_MONTHS {
        return Err(ModelError::InvalidInput(format!("a horizon of {months} months is over {MAX_MONTHS}")));
    }
    if !monthly_discount.is_finite() || monthly_discount <= -1.0 {
        return Err(ModelError::InvalidInput(format!(
            "monthly discount must be finite and > -1, got {monthly_discount}"
        )));
    }
    if !month.is_finite() || month <= 0.0 {
        return Err(ModelError::InvalidInput(format!("a month must be a positive time, got {month}")));
    }
    finite(expected_order_value, "expected order value")?;
    let (mut clv, mut before) = (0.0, 0.0);
    for i in 1..=months {
        let cumulative = purchases.expected_purchases(customer, f64::from(i) * month)?;
        clv += expected_order_value * (cumulative - before) / (1.0 + monthly_discount).powi(i as i32);
        before = cumulative;
    }
    finite(clv, "CLV")
}

/// A customer's churn risk and its provenance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Churn {
    pub inputs: PurchaseSummary,
    pub purchase_model: ModelStamp,
    pub p_alive: f64,
    /// 1 − P(alive).
    pub churn_risk: f64,
}

/// Where a churn risk falls: under 0.3, 0.3 to 0.7, over 0.7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChurnBand {
    Low,
    Medium,
    High,
}

impl ChurnBand {
    pub fn of(churn_risk: f64) -> ChurnBand {
        if churn_risk < 0.3 {
            ChurnBand::Low
        } else if churn_risk <= 0.7 {
            ChurnBand::Medium
        } else {
            ChurnBand::High
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ChurnBand::Low => "LOW",
            ChurnBand::Medium => "MEDIUM",
            ChurnBand::High => "HIGH",
        }
    }
}

/// The churn risk of a customer; refused without purchases, without a fitted BG/NBD, and for a one-time buyer.
pub fn churn(customer: Option<&PurchaseSummary>, purchase_model: &Model<BgNbdParams>) -> Result<Churn, Refusal> {
    let customer = customer.ok_or(Refusal::NoPurchases)?;
    let model = fitted(purchase_model)?;
    if customer.repeat_purchases() == 0 {
        return Err(Refusal::OneTimeBuyer);
    }
    let p_alive = model.params.p_alive(customer)?;
    Ok(Churn { inputs: *customer, purchase_model: model.stamp(), p_alive, churn_risk: 1.0 - p_alive })
}

/// A customer's value scores, with everything they were computed from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Score {
    /// The summary scored.
    pub inputs: PurchaseSummary,
    pub options: ClvOptions,
    pub purchase_model: ModelStamp,
    pub spend_model: ModelStamp,
    pub p_alive: f64,
    /// 1 − P(alive), or why not (`ONE_TIME_BUYER`).
    pub churn_risk: Result<f64, Refusal>,
    /// E[purchases] over the horizon (`options.months` months).
    pub expected_purchases: f64,
    /// Gamma-Gamma's expected average order value.
    pub expected_order_value: f64,
    /// Discounted CLV over the horizon.
    pub clv: f64,
}

/// Scores a customer: refused without purchases (`NO_PURCHASES`), without both models fitted (`NOT_FITTED`,
/// `TOO_FEW_CUSTOMERS`, `FIT_FAILED`), and when a number cannot be computed.
pub fn score(
    customer: Option<&PurchaseSummary>,
    purchase_model: &Model<BgNbdParams>,
    spend_model: &Model<GammaGammaParams>,
    options: &ClvOptions,
) -> Result<Score, Refusal> {
    let customer = customer.ok_or(Refusal::NoPurchases)?;
    let purchases = fitted(purchase_model)?;
    let spend = fitted(spend_model)?;
    let p_alive = purchases.params.p_alive(customer)?;
    let expected_order_value = spend.params.expected_order_value(customer)?;
    let horizon = f64::from(options.months) * options.units_per_month;
    let expected_purchases = purchases.params.expected_purchases(customer, horizon)?;
    let clv = customer_lifetime_value(&purchases.params, expected_order_value, customer, options)?;
    Ok(Score {
        inputs: *customer,
        options: *options,
        purchase_model: purchases.stamp(),
        spend_model: spend.stamp(),
        p_alive,
        churn_risk: if customer.repeat_purchases() == 0 { Err(Refusal::OneTimeBuyer) } else { Ok(1.0 - p_alive) },
        expected_purchases,
        expected_order_value,
        clv,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published_bgnbd() -> BgNbdParams {
        BgNbdParams::new(0.2426, 4.4135, 0.7929, 2.4258).unwrap()
    }

    fn published_gamma_gamma() -> GammaGammaParams {
        GammaGammaParams::new(6.25, 3.74, 15.45).unwrap()
    }

    /// CDNOW customer 1: x = 2, t_x = 30.43, T = 38.86 weeks, m̄ = 22.35.
    fn customer_one() -> PurchaseSummary {
        PurchaseSummary::new(2, 30.43, 38.86, Some(22.35)).unwrap()
    }

    fn fitted<P>(params: P) -> Model<P> {
        Model::Fitted(FittedModel { params, fitted_at: None, version: Some("test".into()) })
    }

    #[test]
    fn clv_of_cdnow_customer_one() {
        let (bgnbd, gamma_gamma, customer) = (published_bgnbd(), published_gamma_gamma(), customer_one());
        let options = ClvOptions::twelve_months(TimeUnit::Weeks);
        let order_value = gamma_gamma.expected_order_value(&customer).unwrap();
        // w = 12.5 / 15.24 = 0.82021; 0.17979 · 35.2418 + 0.82021 · 22.35 = 24.668
        assert!((order_value - 24.668).abs() < 0.001, "{order_value}");
        let clv = customer_lifetime_value(&bgnbd, order_value, &customer, &options).unwrap();

        // The monthly sum written out, month by month, from eq. (10) at 4.345, 8.69, … weeks.
        let monthly: f64 = (1..=12)
            .map(|i| {
                let to = bgnbd.expected_purchases(&customer, 4.345 * f64::from(i)).unwrap();
                let from = bgnbd.expected_purchases(&customer, 4.345 * f64::from(i - 1)).unwrap();
                order_value * (to - from) / 1.01_f64.powi(i)
            })
            .sum();
        assert!((clv - monthly).abs() < 1e-9, "{clv} vs {monthly}");
        // Computed independently with mpmath (hyp2f1 at 50 digits) from the same parameters: E[purchases in 52.14
        // weeks] = 1.562017, CLV = 36.292036.
        assert!((clv - 36.292036).abs() < 1e-6, "CLV = {clv}");
        // Bounded by the undiscounted value of the horizon's purchases.
        let undiscounted = order_value * bgnbd.expected_purchases(&customer, 12.0 * 4.345).unwrap();
        assert!(clv < undiscounted && clv > undiscounted / 1.01_f64.powi(12));
    }

    #[test]
    fn matches_the_lifetimes_quickstart() {
        // `lifetimes`' Quickstart fits both models on CDNOW (weeks) and prints `customer_lifetime_value(bgf, …,
        // time=12, discount_rate=0.01)` with the default `freq="D"`: 30 time units a month, so 30 *weeks* here.
        // It prints 140.096218, 18.943466 and 38.180575 for customers 1–3 (and 24.658619 and 35.170981 as their
        // expected average profits). Our own fits reproduce them to 1e-6 relative; the tolerance, 1e-4, leaves
        // room for the two optimisers stopping at slightly different points of a flat maximum.
        let customers: Vec<PurchaseSummary> =
            crate::scores::cdnow::customers_with_values().into_iter().map(|(_, c)| c).collect();
        let options = crate::scores::FitOptions::default();
        let bgnbd = crate::scores::bgnbd::fit(&customers, &options).unwrap().params;
        let gamma_gamma = crate::scores::gamma_gamma::fit(&customers, &options).unwrap().params;
        let lifetimes_month = ClvOptions { months: 12, monthly_discount: 0.01, units_per_month: 30.0 };
        let close = |got: f64, published: f64| ((got - published) / published).abs() < 1e-4;
        for (customer, published_value, published_clv) in [
            (&customers[0], 24.658619, 140.096218),
            (&customers[1], 18.911489, 18.943466),
            (&customers[2], 35.170981, 38.180575),
        ] {
            let value = gamma_gamma.expected_order_value(customer).unwrap();
            let clv = customer_lifetime_value(&bgnbd, value, customer, &lifetimes_month).unwrap();
            assert!(close(value, published_value) && close(clv, published_clv), "{customer:?}: {value} {clv}");
        }
    }

    #[test]
    fn clv_limits_and_monotonicity() {
        let (bgnbd, customer) = (published_bgnbd(), customer_one());
        let clv = |months: u32, monthly_discount: f64| {
            let options = ClvOptions { months, monthly_discount, units_per_month: 4.345 };
            customer_lifetime_value(&bgnbd, 24.668, &customer, &options).unwrap()
        };
        assert_eq!(clv(0, 0.01), 0.0);
        assert!(clv(12, 0.0) > clv(12, 0.01) && clv(12, 0.01) > clv(12, 0.05));
        assert!(clv(24, 0.01) > clv(12, 0.01) && clv(12, 0.01) > clv(1, 0.01));
        let options = ClvOptions { months: 12, monthly_discount: f64::NAN, units_per_month: 4.345 };
        assert!(customer_lifetime_value(&bgnbd, 24.668, &customer, &options).is_err());
        let options = ClvOptions { months: 5000, ..ClvOptions::twelve_months(TimeUnit::Weeks) };
        assert!(customer_lifetime_value(&bgnbd, 24.668, &customer, &options).is_err());
    }

    #[test]
    fn score_carries_inputs_and_provenance() {
        let options = ClvOptions::twelve_months(TimeUnit::Weeks);
        let customer = customer_one();
        let score =
            score(Some(&customer), &fitted(published_bgnbd()), &fitted(published_gamma_gamma()), &options).unwrap();
        assert_eq!(score.inputs, customer);
        assert_eq!(score.purchase_model.version.as_deref(), Some("test"));
        assert!((score.p_alive - 0.727).abs() < 0.001);
        assert_eq!(score.churn_risk, Ok(1.0 - score.p_alive));
        assert!((score.clv - 36.292036).abs() < 1e-6);
        assert!((score.expected_purchases - 1.562017).abs() < 1e-6, "{}", score.expected_purchases);

        let one_timer = PurchaseSummary::new(0, 0.0, 38.86, None).unwrap();
        let score =
            super::score(Some(&one_timer), &fitted(published_bgnbd()), &fitted(published_gamma_gamma()), &options)
                .unwrap();
        assert_eq!(score.churn_risk, Err(Refusal::OneTimeBuyer));
        assert!(score.clv > 0.0);
    }

    #[test]
    fn refusals_instead_of_guesses() {
        let options = ClvOptions::twelve_months(TimeUnit::Weeks);
        let customer = customer_one();
        let spend = fitted(published_gamma_gamma());
        let refused = |model: &Model<BgNbdParams>| score(Some(&customer), model, &spend, &options).unwrap_err();
        assert_eq!(refused(&Model::NotFitted).code(), "NOT_FITTED");
        let too_few =
            FitError::TooFewCustomers { customers: 3, repeat_buyers: 1, min_customers: 50, min_repeat_buyers: 10 };
        assert_eq!(refused(&Model::Refused(too_few)).code(), "TOO_FEW_CUSTOMERS");
        assert_eq!(refused(&Model::Refused(FitError::DidNotConverge { evaluations: 9 })).code(), "FIT_FAILED");
        let none = score(None, &fitted(published_bgnbd()), &spend, &options).unwrap_err();
        assert_eq!(none.code(), "NO_PURCHASES");
        assert_eq!(churn(None, &fitted(published_bgnbd())).unwrap_err(), Refusal::NoPurchases);

        let one_timer = PurchaseSummary::new(0, 0.0, 38.86, None).unwrap();
        assert_eq!(churn(Some(&one_timer), &fitted(published_bgnbd())).unwrap_err().code(), "ONE_TIME_BUYER");
        let churn = churn(Some(&customer), &fitted(published_bgnbd())).unwrap();
        assert!((churn.churn_risk - 0.273).abs() < 0.001, "{}", churn.churn_risk);
        let json = serde_json::to_value(Refusal::OneTimeBuyer).unwrap();
        assert_eq!(json["code"], "ONE_TIME_BUYER");
    }
}
