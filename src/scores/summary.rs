//! The modelling summary of a customer's purchases (x, t_x, T, m̄), the input of BG/NBD, Gamma-Gamma and CLV.
//!
//! As `lifetimes`' `summary_data_from_transaction_data(freq="D")` (and PyMC-Marketing's `rfm_summary` with
//! `include_first_transaction=False`):
//!
//! - purchases are grouped by **UTC calendar day**: several purchases on one day count as one purchase whose value is
//!   their sum (a basket split into orders is one visit); purchases after `now` are ignored;
//! - **x** = number of purchase days − 1 (repeat purchases: the first purchase only marks the start);
//! - **t_x** (recency) = last purchase day − first purchase day;
//! - **T** (age) = the day of `now` − first purchase day;
//! - **m̄** = mean value of the repeat purchase days (the first day's value excluded), none when x = 0.
//!
//! Times are whole days, expressed in days or weeks (days / 7, as in the CDNOW data) by [`TimeUnit`]. A model's
//! parameters are only valid for summaries in the unit it was fitted with.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ModelError;

/// One purchase: when it happened and what it was worth (in the tenant's currency).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Purchase {
    pub at: DateTime<Utc>,
    pub value: f64,
}

/// The unit of t_x and T (and therefore of a fitted model's α and of prediction horizons).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TimeUnit {
    Days,
    Weeks,
}

impl TimeUnit {
    /// Days in one unit.
    pub fn days(self) -> f64 {
        match self {
            TimeUnit::Days => 1.0,
            TimeUnit::Weeks => 7.0,
        }
    }

    /// Units in a month of CLV: 30 days, or 4.345 weeks (as `lifetimes`' `_customer_lifetime_value`).
    pub fn per_month(self) -> f64 {
        match self {
            TimeUnit::Days => 30.0,
            TimeUnit::Weeks => 4.345,
        }
    }
}

/// A customer's (x, t_x, T, m̄): validated, so every model can take it as it is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawSummary")]
pub struct PurchaseSummary {
    repeat_purchases: u32,
    recency: f64,
    age: f64,
    mean_repeat_value: Option<f64>,
}

#[derive(Deserialize)]
struct RawSummary {
    repeat_purchases: u32,
    recency: f64,
    age: f64,
    mean_repeat_value: Option<f64>,
}

impl TryFrom<RawSummary> for PurchaseSummary {
    type Error = ModelError;

    fn try_from(raw: RawSummary) -> Result<Self, Self::Error> {
        PurchaseSummary::new(raw.repeat_purchases, raw.recency, raw.age, raw.mean_repeat_value)
    }
}

impl PurchaseSummary {
    /// Checks and builds a summary: t_x and T finite with 0 ≤ t_x ≤ T, t_x = 0 when x = 0, and m̄ (when given)
    /// finite; m̄ is dropped when x = 0 (there is no repeat purchase to average).
    pub fn new(
        repeat_purchases: u32,
        recency: f64,
        age: f64,
        mean_repeat_value: Option<f64>,
    ) -> Result<Self, ModelError> {
        if !recency.is_finite() || !age.is_finite() {
            return Err(ModelError::InvalidInput(format!("non-finite recency {recency} or age {age}")));
        }
        if recency < 0.0 || recency > age {
            return Err(ModelError::InvalidInput(format!("need 0 <= recency (t_x = {recency}) <= age (T = {age})")));
        }
        if repeat_purchases == 0 && recency != 0.0 {
            return Err(ModelError::InvalidInput(format!("recency t_x = {recency} with no repeat purchase")));
        }
        if let Some(value) = mean_repeat_value.filter(|v| !v.is_finite()) {
            return Err(ModelError::InvalidInput(format!("non-finite mean repeat value {value}")));
        }
        let mean_repeat_value = mean_repeat_value.filter(|_| repeat_purchases > 0);
        Ok(PurchaseSummary { repeat_purchases, recency: recency + 0.0, age: age + 0.0, mean_repeat_value })
    }

    /// The summary of `purchases` at `now` in `unit` (see the module doc); `Ok(None)` when there is no purchase at or
    /// before `now`. A non-finite value is an error.
    pub fn from_purchases(
        purchases: &[Purchase],
        now: DateTime<Utc>,
        unit: TimeUnit,
    ) -> Result<Option<Self>, ModelError> {
        if let Some(bad) = purchases.iter().find(|p| !p.value.is_finite()) {
            return Err(ModelError::InvalidInput(format!("non-finite purchase value {} at {}", bad.value, bad.at)));
        }
        // (UTC day number, value of that day), in day order.
        let mut days: Vec<(i64, f64)> =
            purchases.iter().filter(|p| p.at <= now).map(|p| (day_of(p.at), p.value)).collect();
        days.sort_by_key(|(day, _)| *day);
        let mut per_day: Vec<(i64, f64)> = Vec::with_capacity(days.len());
        for (day, value) in days {
            match per_day.last_mut() {
                Some((last, sum)) if *last == day => *sum += value,
                _ => per_day.push((day, value)),
            }
        }
        let (Some(&(first, _)), Some(&(last, _))) = (per_day.first(), per_day.last()) else {
            return Ok(None);
        };
        let repeat_days = &per_day[1..];
        let repeat_purchases = u32::try_from(repeat_days.len())
            .map_err(|_| ModelError::InvalidInput(format!("{} purchase days", per_day.len())))?;
        let mean_repeat_value = (!repeat_days.is_empty())
            .then(|| repeat_days.iter().map(|(_, v)| v).sum::<f64>() / repeat_days.len() as f64);
        let in_units = |days: i64| days as f64 / unit.days();
        Self::new(repeat_purchases, in_units(last - first), in_units(day_of(now) - first), mean_repeat_value).map(Some)
    }

    /// x: the number of repeat purchases (purchase periods after the first).
    pub fn repeat_purchases(&self) -> u32 {
        self.repeat_purchases
    }

    /// t_x: time from the first to the last purchase.
    pub fn recency(&self) -> f64 {
        self.recency
    }

    /// T: time from the first purchase to the end of observation ("now").
    pub fn age(&self) -> f64 {
        self.age
    }

    /// m̄: mean value of the repeat purchases; none for a one-time buyer.
    pub fn mean_repeat_value(&self) -> Option<f64> {
        self.mean_repeat_value
    }
}

/// Days since 1970-01-01 of the UTC calendar day of `at`.
fn day_of(at: DateTime<Utc>) -> i64 {
    at.timestamp().div_euclid(86_400)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(day: u32, hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, day, hour, 0, 0).single().expect("a valid date")
    }

    #[test]
    fn summarises_purchases_by_day_excluding_the_first_from_the_mean() {
        // Jan 1: 10; Jan 3: 5 + 15 (one purchase day worth 20); Jan 8: 40; Jan 30: after now, ignored.
        // Now = Jan 15 23:00. Days: first 1, last 8, now 15 → x = 2, t_x = 7, T = 14; m̄ = (20 + 40) / 2 = 30.
        let purchases = [
            Purchase { at: at(8, 9), value: 40.0 },
            Purchase { at: at(1, 12), value: 10.0 },
            Purchase { at: at(3, 1), value: 5.0 },
            Purchase { at: at(3, 23), value: 15.0 },
            Purchase { at: at(30, 0), value: 999.0 },
        ];
        let days = PurchaseSummary::from_purchases(&purchases, at(15, 23), TimeUnit::Days).unwrap().unwrap();
        assert_eq!(days.repeat_purchases(), 2);
        assert_eq!(days.recency(), 7.0);
        assert_eq!(days.age(), 14.0);
        assert_eq!(days.mean_repeat_value(), Some(30.0));

        let weeks = PurchaseSummary::from_purchases(&purchases, at(15, 23), TimeUnit::Weeks).unwrap().unwrap();
        assert_eq!(weeks.recency(), 1.0);
        assert_eq!(weeks.age(), 2.0);
    }

    #[test]
    fn one_time_buyer_and_no_purchase() {
        let one_day = [Purchase { at: at(2, 8), value: 10.0 }, Purchase { at: at(2, 9), value: 12.0 }];
        let summary = PurchaseSummary::from_purchases(&one_day, at(9, 0), TimeUnit::Days).unwrap().unwrap();
        assert_eq!((summary.repeat_purchases(), summary.recency(), summary.age()), (0, 0.0, 7.0));
        assert_eq!(summary.mean_repeat_value(), None);

        assert_eq!(PurchaseSummary::from_purchases(&[], at(9, 0), TimeUnit::Days), Ok(None));
        assert_eq!(PurchaseSummary::from_purchases(&one_day, at(1, 0), TimeUnit::Days), Ok(None));
    }

    #[test]
    fn refuses_invalid_summaries() {
        assert!(PurchaseSummary::new(1, 5.0, 4.0, None).is_err());
        assert!(PurchaseSummary::new(0, 1.0, 4.0, None).is_err());
        assert!(PurchaseSummary::new(1, f64::NAN, 4.0, None).is_err());
        assert!(PurchaseSummary::new(1, 1.0, 4.0, Some(f64::INFINITY)).is_err());
        assert_eq!(PurchaseSummary::new(0, 0.0, 4.0, Some(3.0)).unwrap().mean_repeat_value(), None);
        let nan = [Purchase { at: at(2, 8), value: f64::NAN }];
        assert!(PurchaseSummary::from_purchases(&nan, at(9, 0), TimeUnit::Days).is_err());
        let json = r#"{"repeat_purchases":1,"recency":9.0,"age":4.0,"mean_repeat_value":null}"#;
        assert!(serde_json::from_str::<PurchaseSummary>(json).is_err());
    }
}
