//! RFM: recency, frequency and monetary value of a customer, scored 1–5 against the tenant's quintiles, the 3-digit
//! code and a named segment.
//!
//! **Raw values** ([`RfmValues`], research/personalization.md §2.1), from the purchases at or before `now`:
//! - R = whole days since the last purchase (`now − last`, rounded down);
//! - F = number of purchases (every purchase, the first included: the segmentation definition, unlike the
//!   modelling summary's repeat purchase days in [`super::summary`]);
//! - M = mean order value (sum of values / F).
//!
//! **Breakpoints** ([`Breakpoints`]) are the exact 20th, 40th, 60th and 80th percentiles of each raw value over the
//! tenant's customers, by linear interpolation between order statistics (Hyndman & Fan type 7, numpy's and
//! pandas' default): for sorted values x₀ ≤ … ≤ xₙ₋₁ the p-quantile is x_⌊h⌋ + (h − ⌊h⌋)(x_⌊h⌋₊₁ − x_⌊h⌋) with
//! h = (n − 1)p. The caller recomputes them every few minutes and stores them as JSON.
//!
//! **Scores**: F and M score 1 + the number of breakpoints strictly below the value; R is reversed, 5 − the number
//! of breakpoints strictly below (the most recent fifth scores 5). A value equal to a breakpoint therefore falls in
//! the lower bin, as pandas' right-closed `qcut` bins. With many ties (a tenant where most customers bought once)
//! several breakpoints are equal and some scores never occur: every customer who bought once gets F = 1, whatever
//! their share. Scores are a function of the value and the breakpoints only, so they are deterministic.
//!
//! **Code**: the three scores as digits, R first: "545".
//!
//! **Segments** ([`Segment`]): the usual R × FM grid of RFM segment maps (the "RFM segments" grid of Putler and of
//! the common R-by-F regular expressions, extended with `Lost`), where FM = ⌊(F + M) / 2⌋, so a customer needs both
//! F and M high to reach a high FM:
//!
//! | R \ FM | 1 | 2 | 3 | 4 | 5 |
//! |---|---|---|---|---|---|
//! | **5** | new customers | potential loyalist | potential loyalist | champions | champions |
//! | **4** | promising | potential loyalist | potential loyalist | loyal | loyal |
//! | **3** | about to sleep | about to sleep | need attention | loyal | loyal |
//! | **2** | hibernating | hibernating | at risk | at risk | cannot lose them |
//! | **1** | lost | hibernating | at risk | at risk | cannot lose them |
//!
//! (PyMC-Marketing's `rfm_segments` uses quartiles and five coarser segments; research/personalization.md §8.2 wants
//! the map configurable per tenant later. This grid is the default.)
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ModelError;
use super::summary::Purchase;

/// A customer's raw R, F and M at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RfmValues {
    /// Whole days since the last purchase.
    pub recency_days: f64,
    /// Number of purchases.
    pub frequency: u64,
    /// Mean order value.
    pub monetary: f64,
}

impl RfmValues {
    /// The raw values of `purchases` at `now`; `Ok(None)` when there is no purchase at or before `now`. A non-finite
    /// purchase value is an error.
    pub fn from_purchases(purchases: &[Purchase], now: DateTime<Utc>) -> Result<Option<Self>, ModelError> {
        if let Some(bad) = purchases.iter().find(|p| !p.value.is_finite()) {
            return Err(ModelError::InvalidInput(format!("non-finite purchase value {} at {}", bad.value, bad.at)));
        }
        let past = || purchases.iter().filter(|p| p.at <= now);
        let Some(last) = past().map(|p| p.at).max() else {
            return Ok(None);
        };
        let frequency = past().count() as u64;
        let total: f64 = past().map(|p| p.value).sum();
        Ok(Some(RfmValues {
            recency_days: (now - last).num_days() as f64,
            frequency,
            monetary: total / frequency as f64,
        }))
    }
}

/// The 20th, 40th, 60th and 80th percentiles of one raw value over a tenant's customers, non-decreasing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "[f64; 4]", into = "[f64; 4]")]
pub struct Quintiles([f64; 4]);

impl TryFrom<[f64; 4]> for Quintiles {
    type Error = ModelError;

    fn try_from(cuts: [f64; 4]) -> Result<Self, Self::Error> {
        Quintiles::new(cuts)
    }
}

impl From<Quintiles> for [f64; 4] {
    fn from(quintiles: Quintiles) -> Self {
        quintiles.0
    }
}

impl Quintiles {
    /// Checks that the four cuts are finite and non-decreasing.
    pub fn new(cuts: [f64; 4]) -> Result<Self, ModelError> {
        if cuts.iter().all(|c| c.is_finite()) && cuts.windows(2).all(|w| w[0] <= w[1]) {
            Ok(Quintiles(cuts))
        } else {
            Err(ModelError::InvalidInput(format!("quintile breakpoints must be finite and non-decreasing: {cuts:?}")))
        }
    }

    /// The exact quintiles of `values` (see the module doc); an error when there are none or one is not finite.
    pub fn of(values: &[f64]) -> Result<Self, ModelError> {
        if values.is_empty() {
            return Err(ModelError::InvalidInput("no values to take quintiles of".into()));
        }
        if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
            return Err(ModelError::InvalidInput(format!("non-finite value {bad}")));
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        // h = (n − 1)·k/5 in integers: ⌊h⌋ and the fraction (0, ⅕, …, ⅘) are exact, and so is the interpolation
        // ((5 − j)·x_low + j·x_high)/5 whenever the result is representable (42, not 41.999999999999986), so
        // a value equal to a breakpoint stays equal to it.
        let quintile = |k: usize| {
            let steps = (sorted.len() - 1) * k;
            let (low, j) = (steps / 5, steps % 5);
            let high = (low + 1).min(sorted.len() - 1);
            if j == 0 || sorted[low] == sorted[high] {
                sorted[low]
            } else {
                ((5 - j) as f64 * sorted[low] + j as f64 * sorted[high]) / 5.0
            }
        };
        Quintiles::new([quintile(1), quintile(2), quintile(3), quintile(4)])
    }

    pub fn cuts(&self) -> [f64; 4] {
        self.0
    }

    /// 1 + the number of cuts strictly below `value`: 1–5, higher values score higher.
    pub fn score(&self, value: f64) -> u8 {
        1 + self.0.iter().filter(|cut| **cut < value).count() as u8
    }

    /// 6 − [`Self::score`]: 1–5, lower values score higher (recency).
    pub fn score_reversed(&self, value: f64) -> u8 {
        6 - self.score(value)
    }
}

/// A tenant's RFM breakpoints.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Breakpoints {
    pub recency_days: Quintiles,
    pub frequency: Quintiles,
    pub monetary: Quintiles,
    /// Customers the breakpoints were computed from.
    pub customers: usize,
}

impl Breakpoints {
    /// The quintiles of each raw value over `customers` (customers without purchases have no values and are not
    /// among them); an error when there are none or a value is not finite.
    pub fn of(customers: &[RfmValues]) -> Result<Self, ModelError> {
        let column = |value: fn(&RfmValues) -> f64| customers.iter().map(value).collect::<Vec<_>>();
        Ok(Breakpoints {
            recency_days: Quintiles::of(&column(|c| c.recency_days))?,
            frequency: Quintiles::of(&column(|c| c.frequency as f64))?,
            monetary: Quintiles::of(&column(|c| c.monetary))?,
            customers: customers.len(),
        })
    }

    /// Scores `values` against these breakpoints.
    pub fn score(&self, values: &RfmValues) -> RfmScore {
        let r = self.recency_days.score_reversed(values.recency_days);
        let f = self.frequency.score(values.frequency as f64);
        let m = self.monetary.score(values.monetary);
        RfmScore { values: *values, r, f, m, segment: Segment::of(r, f, m) }
    }
}

/// A customer's RFM scores (each 1–5) and segment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RfmScore {
    /// The raw values scored.
    pub values: RfmValues,
    pub r: u8,
    pub f: u8,
    pub m: u8,
    pub segment: Segment,
}

impl RfmScore {
    /// The 3-digit code, R first: "545".
    pub fn code(&self) -> String {
        format!("{}{}{}", self.r, self.f, self.m)
    }
}

/// The named RFM segments (see the grid in the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Segment {
    Champions,
    Loyal,
    PotentialLoyalist,
    NewCustomers,
    Promising,
    NeedAttention,
    AboutToSleep,
    AtRisk,
    CannotLoseThem,
    Hibernating,
    Lost,
}

impl Segment {
    /// The segment of scores R, F, M (1–5; out-of-range scores are clamped) by the R × FM grid.
    pub fn of(r: u8, f: u8, m: u8) -> Segment {
        let r = r.clamp(1, 5);
        let fm = (f.clamp(1, 5) + m.clamp(1, 5)) / 2;
        match (r, fm) {
            (5, 4..) => Segment::Champions,
            (5, 1) => Segment::NewCustomers,
            (4 | 5, 2 | 3) => Segment::PotentialLoyalist,
            (4, 1) => Segment::Promising,
            (3 | 4, 4..) => Segment::Loyal,
            (3, 3) => Segment::NeedAttention,
            (3, _) => Segment::AboutToSleep,
            (_, 5) => Segment::CannotLoseThem,
            (_, 3 | 4) => Segment::AtRisk,
            (1, 1) => Segment::Lost,
            _ => Segment::Hibernating,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn values(recency_days: f64, frequency: u64, monetary: f64) -> RfmValues {
        RfmValues { recency_days, frequency, monetary }
    }

    /// Ten customers A–J whose quintiles and codes are computed by hand below.
    fn ten_customers() -> Vec<RfmValues> {
        vec![
            values(1.0, 8, 100.0),    // A
            values(3.0, 1, 25.0),     // B
            values(5.0, 2, 40.0),     // C
            values(10.0, 1, 60.0),    // D
            values(20.0, 5, 80.0),    // E
            values(30.0, 1, 20.0),    // F
            values(60.0, 3, 50.0),    // G
            values(90.0, 2, 30.0),    // H
            values(180.0, 12, 200.0), // I
            values(365.0, 1, 10.0),   // J
        ]
    }

    #[test]
    fn ten_customers_by_hand() {
        // n = 10, h = 9p: p = 0.2 → h 1.8, 0.4 → 3.6, 0.6 → 5.4, 0.8 → 7.2.
        // R sorted 1 3 5 10 20 30 60 90 180 365:  3+0.8·2 = 4.6, 10+0.6·10 = 16, 30+0.4·30 = 42, 90+0.2·90 = 108.
        // F sorted 1 1 1 1 2 2 3 5 8 12 (ties):   1+0.8·0 = 1,   1+0.6·1 = 1.6, 2+0.4·1 = 2.4, 5+0.2·3 = 5.6.
        // M sorted 10 20 25 30 40 50 60 80 100 200: 20+0.8·5 = 24, 30+0.6·10 = 36, 50+0.4·10 = 54, 80+0.2·20 = 84.
        let customers = ten_customers();
        let breakpoints = Breakpoints::of(&customers).unwrap();
        assert_eq!(breakpoints.recency_days.cuts(), [4.6, 16.0, 42.0, 108.0]);
        assert_eq!(breakpoints.frequency.cuts(), [1.0, 1.6, 2.4, 5.6]);
        assert_eq!(breakpoints.monetary.cuts(), [24.0, 36.0, 54.0, 84.0]);
        assert_eq!(breakpoints.customers, 10);

        // r = 5 − cuts below R; f, m = 1 + cuts below. FM = ⌊(f + m)/2⌋.
        //    R    cuts<  r | F  cuts<  f | M   cuts< m | FM | segment
        // A  1    0      5 | 8  4      5 | 100 4     5 | 5  | champions
        // B  3    0      5 | 1  0      1 | 25  1     2 | 1  | new customers
        // C  5    1      4 | 2  2      3 | 40  2     3 | 3  | potential loyalist
        // D  10   1      4 | 1  0      1 | 60  3     4 | 2  | potential loyalist
        // E  20   2      3 | 5  3      4 | 80  3     4 | 4  | loyal
        // F  30   2      3 | 1  0      1 | 20  0     1 | 1  | about to sleep
        // G  60   3      2 | 3  3      4 | 50  2     3 | 3  | at risk
        // H  90   3      2 | 2  2      3 | 30  1     2 | 2  | hibernating
        // I  180  4      1 | 12 4      5 | 200 4     5 | 5  | cannot lose them
        // J  365  4      1 | 1  0      1 | 10  0     1 | 1  | lost
        let expected = [
            ("555", Segment::Champions),
            ("512", Segment::NewCustomers),
            ("433", Segment::PotentialLoyalist),
            ("414", Segment::PotentialLoyalist),
            ("344", Segment::Loyal),
            ("311", Segment::AboutToSleep),
            ("243", Segment::AtRisk),
            ("232", Segment::Hibernating),
            ("155", Segment::CannotLoseThem),
            ("111", Segment::Lost),
        ];
        for (customer, (code, segment)) in customers.iter().zip(expected) {
            let score = breakpoints.score(customer);
            assert_eq!((score.code().as_str(), score.segment), (code, segment), "{customer:?}");
        }
    }

    #[test]
    fn values_on_a_breakpoint_fall_in_the_lower_bin() {
        let quintiles = Quintiles::new([4.6, 16.0, 42.0, 108.0]).unwrap();
        assert_eq!(quintiles.score(16.0), 2);
        assert_eq!(quintiles.score_reversed(16.0), 4);
        assert_eq!(quintiles.score(16.000001), 3);
        // All values equal: every cut equals them, everyone scores 1 (reversed: 5).
        let same = Quintiles::of(&[3.0; 7]).unwrap();
        assert_eq!((same.score(3.0), same.score_reversed(3.0)), (1, 5));
        assert_eq!(Quintiles::of(&[7.0]).unwrap().cuts(), [7.0; 4]);
    }

    #[test]
    fn the_grid_names_every_cell() {
        assert_eq!(Segment::of(3, 3, 3), Segment::NeedAttention);
        assert_eq!(Segment::of(3, 3, 4), Segment::NeedAttention); // FM = ⌊7/2⌋ = 3
        assert_eq!(Segment::of(2, 5, 5), Segment::CannotLoseThem);
        assert_eq!(Segment::of(1, 1, 2), Segment::Lost);
        assert_eq!(Segment::of(1, 2, 2), Segment::Hibernating);
        assert_eq!(Segment::of(5, 4, 4), Segment::Champions);
        assert_eq!(Segment::of(4, 1, 1), Segment::Promising);
        let mut seen = std::collections::HashSet::new();
        for r in 1..=5 {
            for f in 1..=5 {
                for m in 1..=5 {
                    seen.insert(Segment::of(r, f, m));
                }
            }
        }
        assert_eq!(seen.len(), 11, "every segment is reachable");
    }

    #[test]
    fn raw_values_from_purchases() {
        let at = |day: u32, hour: u32| Utc.with_ymd_and_hms(2024, 3, day, hour, 0, 0).single().unwrap();
        let purchases = [
            Purchase { at: at(1, 10), value: 30.0 },
            Purchase { at: at(1, 11), value: 10.0 },
            Purchase { at: at(5, 9), value: 20.0 },
            Purchase { at: at(25, 9), value: 500.0 }, // after now
        ];
        // Last purchase Mar 5 09:00, now Mar 12 08:00: 6 days 23 hours → 6 whole days; 3 purchases; 60 / 3 = 20.
        let raw = RfmValues::from_purchases(&purchases, at(12, 8)).unwrap().unwrap();
        assert_eq!(raw, values(6.0, 3, 20.0));
        assert_eq!(RfmValues::from_purchases(&purchases, at(1, 0)), Ok(None));
        assert!(RfmValues::from_purchases(&[Purchase { at: at(1, 0), value: f64::NAN }], at(2, 0)).is_err());
    }

    #[test]
    fn breakpoints_round_trip_through_json_and_refuse_bad_cuts() {
        let breakpoints = Breakpoints::of(&ten_customers()).unwrap();
        let json = serde_json::to_string(&breakpoints).unwrap();
        assert_eq!(serde_json::from_str::<Breakpoints>(&json).unwrap(), breakpoints);
        let unsorted = json.replace("[4.6,16.0,42.0,108.0]", "[16.0,4.6,42.0,108.0]");
        assert_ne!(unsorted, json);
        assert!(serde_json::from_str::<Breakpoints>(&unsorted).is_err());
        assert!(Breakpoints::of(&[]).is_err());
        assert!(Quintiles::of(&[1.0, f64::NAN]).is_err());
    }
}
