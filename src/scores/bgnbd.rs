//! BG/NBD ("beta-geometric / negative binomial distribution", Fader, Hardie & Lee 2005, "Counting your customers
//! the easy way"): how many purchases a customer will make, and whether they are still a customer at all.
//!
//! The model: while alive, a customer buys as a Poisson process of rate λ, λ ~ Gamma(r, α) across customers; after
//! each purchase they drop out for good with probability p, p ~ Beta(a, b). From a customer's (x, t_x, T)
//! ([`PurchaseSummary`]):
//!
//! - **Log-likelihood** (paper eq. 6, written as `lifetimes`' `BetaGeoFitter._negative_log_likelihood`):
//!   ln L = A₁ + A₂ + ln(e^A₃ + [x > 0] e^A₄), with
//!   A₁ = lnΓ(r + x) − lnΓ(r) + r ln α,
//!   A₂ = lnΓ(a + b) + lnΓ(b + x) − lnΓ(b) − lnΓ(a + b + x),
//!   A₃ = −(r + x) ln(α + T),
//!   A₄ = ln a − ln(b + x − 1) − (r + x) ln(α + t_x);
//!   the sum of exponentials is taken with log-sum-exp.
//! - **Fit**: maximum likelihood of (r, α, a, b) by Nelder-Mead on their logarithms (so they stay positive), over
//!   identical (x, t_x, T) rows aggregated with weights, minimising the mean negative log-likelihood plus an optional
//!   L2 penalty `penalizer · (r² + α² + a² + b²)` ([`super::FitOptions`]). `lifetimes` rescales time before
//!   penalising, so with a penalizer the two fits differ; without one they are the same maximum.
//! - **P(alive | x, t_x, T)** = 1 / (1 + a / (b + x − 1) · ((α + T) / (α + t_x))^(r + x)) for x > 0, and 1 for
//!   x = 0 (a known artefact of the model: one-time buyers never look dead; see [`super::clv`]).
//! - **E[purchases in (T, T + t] | x, t_x, T)** (paper eq. 10) =
//!   (a + b + x − 1)/(a − 1) · [1 − ((α + T)/(α + T + t))^(r + x) · ₂F₁(r + x, b + x; a + b + x − 1; t/(α + T + t))]
//!   · P(alive | x, t_x, T), with ₂F₁ by its series (`hypergeometric`).
//!
//! All times are in the unit the model was fitted in (days or weeks).
use serde::{Deserialize, Serialize};
use statrs::function::gamma::ln_gamma;

use super::hypergeometric::hyp2f1_scaled;
use super::optimize::nelder_mead;
use super::{FitError, FitOptions, ModelError, PurchaseSummary, finite};

/// The population parameters of BG/NBD: purchase rate λ ~ Gamma(shape r, rate α), drop-out p ~ Beta(a, b).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawParams")]
pub struct BgNbdParams {
    r: f64,
    alpha: f64,
    a: f64,
    b: f64,
}

#[derive(Deserialize)]
struct RawParams {
    r: f64,
    alpha: f64,
    a: f64,
    b: f64,
}

impl TryFrom<RawParams> for BgNbdParams {
    type Error = ModelError;

    fn try_from(raw: RawParams) -> Result<Self, Self::Error> {
        BgNbdParams::new(raw.r, raw.alpha, raw.a, raw.b)
    }
}

/// The outcome of a fit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BgNbdFit {
    pub params: BgNbdParams,
    /// Total log-likelihood of the customers at `params` (without the penalty): −9582.4 on CDNOW.
    pub log_likelihood: f64,
    pub customers: usize,
    /// Customers with x > 0.
    pub repeat_buyers: usize,
    /// Distinct (x, t_x, T) rows the likelihood was computed over.
    pub distinct_rows: usize,
    pub evaluations: usize,
}

impl BgNbdParams {
    /// Checks that every parameter is finite and positive.
    pub fn new(r: f64, alpha: f64, a: f64, b: f64) -> Result<Self, ModelError> {
        if [r, alpha, a, b].iter().all(|v| v.is_finite() && *v > 0.0) {
            Ok(BgNbdParams { r, alpha, a, b })
        } else {
            Err(ModelError::InvalidParameters(format!("BG/NBD needs r, α, a, b > 0, got {r}, {alpha}, {a}, {b}")))
        }
    }

    pub fn r(&self) -> f64 {
        self.r
    }

    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    pub fn a(&self) -> f64 {
        self.a
    }

    pub fn b(&self) -> f64 {
        self.b
    }

    /// The log-likelihood of one customer's (x, t_x, T).
    pub fn customer_log_likelihood(&self, customer: &PurchaseSummary) -> Result<f64, ModelError> {
        let row = Row { x: customer.repeat_purchases(), t_x: customer.recency(), age: customer.age(), weight: 1.0 };
        finite(weighted_log_likelihood(self, &[row]), "BG/NBD log-likelihood")
    }

    /// The total log-likelihood of `customers`.
    pub fn log_likelihood(&self, customers: &[PurchaseSummary]) -> Result<f64, ModelError> {
        let rows = aggregate(customers.iter().map(|c| (*c, 1)));
        finite(weighted_log_likelihood(self, &rows), "BG/NBD log-likelihood")
    }

    /// P(alive | x, t_x, T): the probability that the customer has not dropped out (1 for x = 0).
    pub fn p_alive(&self, customer: &PurchaseSummary) -> Result<f64, ModelError> {
        let x = customer.repeat_purchases();
        if x == 0 {
            return Ok(1.0);
        }
        finite(logistic(-self.ln_odds_dead(customer)), "P(alive)")
    }

    /// ln of a/(b + x − 1) · ((α + T)/(α + t_x))^(r + x), the odds of having dropped out (x > 0).
    fn ln_odds_dead(&self, customer: &PurchaseSummary) -> f64 {
        let x = f64::from(customer.repeat_purchases());
        let BgNbdParams { r, alpha, a, b } = *self;
        (a / (b + x - 1.0)).ln() + (r + x) * ((alpha + customer.age()).ln() - (alpha + customer.recency()).ln())
    }

    /// E[number of purchases in (T, T + horizon] | x, t_x, T], equation (10), `horizon` in the model's time unit.
    pub fn expected_purchases(&self, customer: &PurchaseSummary, horizon: f64) -> Result<f64, ModelError> {
        if !horizon.is_finite() || horizon < 0.0 {
            return Err(ModelError::InvalidInput(format!("horizon must be finite and >= 0, got {horizon}")));
        }
        if horizon == 0.0 {
            return Ok(0.0);
        }
        let BgNbdParams { r, alpha, a, b } = *self;
        if (a - 1.0).abs() < 1e-9 {
            // (a + b + x − 1)/(a − 1) · [1 − …] is 0/0 at a = 1.
            return Err(ModelError::InvalidParameters(format!("equation (10) is undefined at a = 1 (a = {a})")));
        }
        let x = f64::from(customer.repeat_purchases());
        let age = customer.age();
        let z = horizon / (alpha + age + horizon);
        let (mantissa, ln_scale) = hyp2f1_scaled(r + x, b + x, a + b + x - 1.0, z)?;
        let ln_shrink = (alpha + age).ln() - (alpha + age + horizon).ln();
        let product = mantissa * (ln_scale + (r + x) * ln_shrink).exp();
        let alive = self.p_alive(customer)?;
        let expected = finite((a + b + x - 1.0) / (a - 1.0) * (1.0 - product) * alive, "expected purchases")?;
        match expected {
            e if e >= 0.0 => Ok(e),
            e if e > -1e-9 => Ok(0.0), // rounding around 0 for tiny horizons
            e => Err(ModelError::NonFinite(format!("negative expected purchases {e}"))),
        }
    }
}

/// Fits BG/NBD to `customers` by maximum likelihood (see the module doc).
pub fn fit(customers: &[PurchaseSummary], options: &FitOptions) -> Result<BgNbdFit, FitError> {
    fit_weighted(&customers.iter().map(|c| (*c, 1)).collect::<Vec<_>>(), options)
}

/// Fits BG/NBD to rows of (summary, number of customers with that summary): what a `GROUP BY x, t_x, T` gives.
pub fn fit_weighted(rows: &[(PurchaseSummary, u64)], options: &FitOptions) -> Result<BgNbdFit, FitError> {
    if !options.penalizer.is_finite() || options.penalizer < 0.0 {
        return Err(FitError::InvalidOptions(format!("penalizer must be >= 0, got {}", options.penalizer)));
    }
    let rows = aggregate(rows.iter().copied());
    let customers: u64 = rows.iter().map(|r| r.weight as u64).sum();
    let repeat_buyers: u64 = rows.iter().filter(|r| r.x > 0).map(|r| r.weight as u64).sum();
    let (customers, repeat_buyers) = (customers as usize, repeat_buyers as usize);
    if customers < options.min_customers || repeat_buyers < options.min_repeat_buyers {
        return Err(FitError::TooFewCustomers {
            customers,
            repeat_buyers,
            min_customers: options.min_customers,
            min_repeat_buyers: options.min_repeat_buyers,
        });
    }
    let total_weight = customers as f64;
    let objective = |log_params: &[f64]| -> f64 {
        let [r, alpha, a, b] = [log_params[0].exp(), log_params[1].exp(), log_params[2].exp(), log_params[3].exp()];
        let params = BgNbdParams { r, alpha, a, b };
        let penalty = options.penalizer * (r * r + alpha * alpha + a * a + b * b);
        -weighted_log_likelihood(&params, &rows) / total_weight + penalty
    };
    // Start at r = a = b = 1 and α at a tenth of the longest age (where `lifetimes`' time scaling starts it).
    let max_age = rows.iter().map(|r| r.age).fold(0.0, f64::max);
    let start = [0.0, (max_age / 10.0).max(1e-3).ln(), 0.0, 0.0];
    if !objective(&start).is_finite() {
        return Err(FitError::NonFinite("the log-likelihood at the starting point".into()));
    }
    let minimum = nelder_mead(objective, &start, 1.0, options.max_evaluations, options.max_restarts);
    if !minimum.converged {
        return Err(FitError::DidNotConverge { evaluations: minimum.evaluations });
    }
    let p = &minimum.point;
    let params = BgNbdParams::new(p[0].exp(), p[1].exp(), p[2].exp(), p[3].exp())
        .map_err(|e| FitError::NonFinite(e.to_string()))?;
    let log_likelihood = weighted_log_likelihood(&params, &rows);
    if !log_likelihood.is_finite() {
        return Err(FitError::NonFinite(format!("log-likelihood {log_likelihood} at {params:?}")));
    }
    Ok(BgNbdFit {
        params,
        log_likelihood,
        customers,
        repeat_buyers,
        distinct_rows: rows.len(),
        evaluations: minimum.evaluations,
    })
}

/// One distinct (x, t_x, T) and how many customers have it.
#[derive(Debug, Clone, Copy)]
struct Row {
    x: u32,
    t_x: f64,
    age: f64,
    weight: f64,
}

/// Merges identical (x, t_x, T), sorted by x (so the lnΓ terms of one x are computed once per evaluation).
fn aggregate(customers: impl Iterator<Item = (PurchaseSummary, u64)>) -> Vec<Row> {
    let mut rows: Vec<Row> = customers
        .filter(|(_, count)| *count > 0)
        .map(|(c, count)| Row { x: c.repeat_purchases(), t_x: c.recency(), age: c.age(), weight: count as f64 })
        .collect();
    rows.sort_by(|p, q| p.x.cmp(&q.x).then(p.t_x.total_cmp(&q.t_x)).then(p.age.total_cmp(&q.age)));
    let mut merged: Vec<Row> = Vec::with_capacity(rows.len());
    for row in rows {
        match merged.last_mut() {
            Some(last) if last.x == row.x && last.t_x == row.t_x && last.age == row.age => last.weight += row.weight,
            _ => merged.push(row),
        }
    }
    merged
}

/// Σ weight · ln L over `rows` (sorted by x); NaN or ±∞ when the parameters make it non-finite.
fn weighted_log_likelihood(params: &BgNbdParams, rows: &[Row]) -> f64 {
    let BgNbdParams { r, alpha, a, b } = *params;
    let shared = -ln_gamma(r) + r * alpha.ln() + ln_gamma(a + b) - ln_gamma(b);
    let (ln_a, mut current_x, mut per_x) = (a.ln(), None, 0.0);
    let mut total = 0.0;
    for row in rows {
        let x = f64::from(row.x);
        if current_x != Some(row.x) {
            // A₁ + A₂ depend on x only.
            per_x = shared + ln_gamma(r + x) + ln_gamma(b + x) - ln_gamma(a + b + x);
            current_x = Some(row.x);
        }
        let a3 = -(r + x) * (alpha + row.age).ln();
        let ll = if row.x == 0 {
            per_x + a3
        } else {
            let a4 = ln_a - (b + x - 1.0).ln() - (r + x) * (alpha + row.t_x).ln();
            let high = a3.max(a4);
            per_x + high + ((a3 - high).exp() + (a4 - high).exp()).ln()
        };
        total += row.weight * ll;
    }
    total
}

/// 1 / (1 + e^−v), without overflow for large |v|.
fn logistic(v: f64) -> f64 {
    if v >= 0.0 { 1.0 / (1.0 + (-v).exp()) } else { v.exp() / (1.0 + v.exp()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scores::cdnow;

    /// The published CDNOW fit (Fader, Hardie & Lee 2005; `lifetimes` docs).
    fn published() -> BgNbdParams {
        BgNbdParams::new(0.2426, 4.4135, 0.7929, 2.4258).unwrap()
    }

    fn summary(x: u32, t_x: f64, age: f64) -> PurchaseSummary {
        PurchaseSummary::new(x, t_x, age, None).unwrap()
    }

    #[test]
    fn per_customer_values_with_the_published_parameters() {
        // research/personalization.md §2.2: customer 1 (2, 30.43, 38.86) → P(alive) 0.727, 1.56 purchases in 52 weeks;
        // customer 2 (1, 1.71, 38.86) → 0.212 and 0.26. Tolerances: half a unit of the last published digit, plus
        // the rounding of the published parameters (4 digits).
        let params = published();
        let first = summary(2, 30.43, 38.86);
        let second = summary(1, 1.71, 38.86);
        let (p1, e1) = (params.p_alive(&first).unwrap(), params.expected_purchases(&first, 52.0).unwrap());
        let (p2, e2) = (params.p_alive(&second).unwrap(), params.expected_purchases(&second, 52.0).unwrap());
        assert!((p1 - 0.727).abs() < 0.001, "P(alive) of customer 1 = {p1}");
        // And to 1e-9 of an independent evaluation with mpmath (hyp2f1 at 50 digits) at the same parameters.
        assert!((p1 - 0.726607997300).abs() < 1e-9 && (e1 - 1.558584005670).abs() < 1e-9, "{p1} {e1}");
        assert!((p2 - 0.212224459248).abs() < 1e-9 && (e2 - 0.259904760947).abs() < 1e-9, "{p2} {e2}");
        assert!((e1 - 1.56).abs() < 0.005, "52-week purchases of customer 1 = {e1}");
        assert!((p2 - 0.212).abs() < 0.001, "P(alive) of customer 2 = {p2}");
        assert!((e2 - 0.26).abs() < 0.005, "52-week purchases of customer 2 = {e2}");
        // One-time buyers are alive by construction.
        assert_eq!(params.p_alive(&summary(0, 0.0, 38.86)), Ok(1.0));
    }

    #[test]
    fn published_log_likelihood_of_cdnow() {
        // The paper reports LL = −9582.4 at its estimates; mpmath gives −9582.42556 at the 4-digit parameters.
        let customers: Vec<PurchaseSummary> = cdnow::customers().into_iter().map(|(_, c)| c).collect();
        let ll = published().log_likelihood(&customers).unwrap();
        assert!((ll + 9582.4).abs() < 0.05, "LL = {ll}");
        assert!((ll + 9582.425561).abs() < 1e-5, "LL = {ll}");
    }

    #[test]
    fn fits_cdnow_to_the_published_parameters() {
        let customers: Vec<PurchaseSummary> = cdnow::customers().into_iter().map(|(_, c)| c).collect();
        let started = std::time::Instant::now();
        let fit = fit(&customers, &FitOptions::default()).unwrap();
        let elapsed = started.elapsed();
        eprintln!("CDNOW BG/NBD fit: {fit:?} in {elapsed:?}");
        assert_eq!((fit.customers, fit.repeat_buyers), (2357, 946));
        // 0.1% relative: the published values are rounded to 4 decimals (up to 0.02% of r), and the likelihood is
        // flat enough near its maximum that optimisers stop a little apart; this fit lands within 0.003%.
        let p = fit.params;
        for (name, got, published) in
            [("r", p.r(), 0.2426), ("alpha", p.alpha(), 4.4135), ("a", p.a(), 0.7929), ("b", p.b(), 2.4258)]
        {
            assert!(((got - published) / published).abs() < 0.001, "{name} = {got}, published {published}");
        }
        // `lifetimes` reports about −9582.43 at its optimum; the optimum is at least the published parameters' LL.
        assert!((fit.log_likelihood + 9582.43).abs() < 0.03, "LL = {}", fit.log_likelihood);
        assert!(fit.log_likelihood >= published().log_likelihood(&customers).unwrap());
        assert!(elapsed.as_secs_f64() < 1.0, "fit took {elapsed:?}");

        // The per-customer values with the fitted parameters.
        let alive = fit.params.p_alive(&summary(2, 30.43, 38.86)).unwrap();
        let expected = fit.params.expected_purchases(&summary(1, 1.71, 38.86), 52.0).unwrap();
        assert!((alive - 0.727).abs() < 0.002 && (expected - 0.26).abs() < 0.005, "{alive} {expected}");
    }

    #[test]
    fn refuses_too_few_customers_and_bad_options() {
        let few: Vec<PurchaseSummary> = (0..40).map(|i| summary(i % 3, f64::from(i % 3), 10.0)).collect();
        assert!(matches!(fit(&few, &FitOptions::default()), Err(FitError::TooFewCustomers { customers: 40, .. })));
        let one_timers: Vec<PurchaseSummary> = (0..100).map(|_| summary(0, 0.0, 10.0)).collect();
        assert!(matches!(
            fit(&one_timers, &FitOptions::default()),
            Err(FitError::TooFewCustomers { repeat_buyers: 0, .. })
        ));
        let options = FitOptions { penalizer: -1.0, ..FitOptions::default() };
        assert!(matches!(fit(&few, &options), Err(FitError::InvalidOptions(_))));
    }

    #[test]
    fn aggregated_and_weighted_fits_agree() {
        let customers: Vec<PurchaseSummary> = cdnow::customers().into_iter().map(|(_, c)| c).collect();
        let doubled: Vec<(PurchaseSummary, u64)> = customers.iter().map(|c| (*c, 2)).collect();
        let ll_single = published().log_likelihood(&customers).unwrap();
        let rows = aggregate(doubled.iter().copied());
        assert!(rows.len() < 1100, "{} distinct rows", rows.len());
        assert!((weighted_log_likelihood(&published(), &rows) - 2.0 * ll_single).abs() < 1e-6);
    }

    #[test]
    fn predictions_behave_at_the_limits() {
        let params = published();
        let customer = summary(2, 30.43, 38.86);
        assert_eq!(params.expected_purchases(&customer, 0.0), Ok(0.0));
        assert!(params.expected_purchases(&customer, -1.0).is_err());
        // Longer horizons, more purchases; more purchases, lower drop-out risk at the same recency.
        let mut previous = 0.0;
        for horizon in [1.0, 10.0, 52.0, 200.0, 1000.0] {
            let e = params.expected_purchases(&customer, horizon).unwrap();
            assert!(e > previous, "{horizon}: {e}");
            previous = e;
        }
        // A heavy buyer (many repeat purchases) stays finite: the 2F1 terms exceed f64 on the way.
        let heavy = summary(300, 38.0, 38.86);
        // mpmath (50 digits): 488.201937465.
        let e = params.expected_purchases(&heavy, 520.0).unwrap();
        assert!((e - 488.201937465).abs() < 1e-6, "{e}");
        // Parameters at a = 1 make equation (10) 0/0: refused rather than NaN.
        let at_one = BgNbdParams::new(0.24, 4.4, 1.0, 2.4).unwrap();
        assert!(at_one.expected_purchases(&customer, 52.0).is_err());
        assert!(BgNbdParams::new(0.0, 4.4, 0.8, 2.4).is_err());
        assert!(serde_json::from_str::<BgNbdParams>(r#"{"r":-1,"alpha":1,"a":1,"b":1}"#).is_err());
    }
}
