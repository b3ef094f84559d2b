//! The statistics of CX metrics (DOMAIN.md "Metrics, exactly"; research/personalization.md §4): each metric's value
//! from the counts of its answers, a confidence interval by the method that suits it (adjusted Wald for NPS, Wilson
//! for shares, t for means), the margin of error, and a two-sided z-test for the change between two cells. Pure.
use statrs::distribution::{ContinuousCDF, Normal, StudentsT};

use crate::touchpoints::FeedbackMetric;

/// The answers of one cell, by score: `counts[i]` answers scored `low + i` on the metric's scale.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScoreCounts {
    pub counts: Vec<u64>,
}

impl ScoreCounts {
    pub fn new(metric: FeedbackMetric) -> Self {
        let (low, high) = metric.range();
        ScoreCounts { counts: vec![0; (high - low + 1) as usize] }
    }

    /// Adds `n` answers (negative: removes) scored `score`; a score off the scale is ignored.
    pub fn add(&mut self, metric: FeedbackMetric, score: i32, n: i64) {
        let (low, high) = metric.range();
        if (low..=high).contains(&score) {
            let slot = &mut self.counts[(score - low) as usize];
            *slot = (*slot as i64 + n).max(0) as u64;
        }
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Answers scored from `from` to `to` (inclusive) on the metric's scale.
    pub fn between(&self, metric: FeedbackMetric, from: i32, to: i32) -> u64 {
        let (low, _) = metric.range();
        self.counts.iter().enumerate().filter(|(i, _)| (from..=to).contains(&(low + *i as i32))).map(|(_, n)| n).sum()
    }

    fn mean_and_sd(&self, metric: FeedbackMetric) -> Option<(f64, Option<f64>)> {
        let (low, _) = metric.range();
        let n = self.total();
        if n == 0 {
            return None;
        }
        let score = |i: usize| (low + i as i32) as f64;
        let mean = self.counts.iter().enumerate().map(|(i, c)| score(i) * *c as f64).sum::<f64>() / n as f64;
        let sd = (n > 1).then(|| {
            let ss: f64 = self.counts.iter().enumerate().map(|(i, c)| (score(i) - mean).powi(2) * *c as f64).sum();
            (ss / (n - 1) as f64).sqrt()
        });
        Some((mean, sd))
    }
}

/// The three groups each scale's answers fall into, best first: NPS promoters (9–10), passives (7–8), detractors
/// (0–6); CSAT satisfied (4–5), neutral (3), dissatisfied (1–2); CES easy (5–7), neutral (4), difficult (1–3).
pub fn groups(metric: FeedbackMetric) -> [(i32, i32); 3] {
    match metric {
        FeedbackMetric::Nps => [(9, 10), (7, 8), (0, 6)],
        FeedbackMetric::Csat => [(4, 5), (3, 3), (1, 2)],
        FeedbackMetric::Ces => [(5, 7), (4, 4), (1, 3)],
    }
}

/// Which of the three groups a score is in (0 best … 2 worst).
pub fn group_of(metric: FeedbackMetric, score: i32) -> usize {
    groups(metric).iter().position(|(from, to)| (*from..=*to).contains(&score)).unwrap_or(2)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntervalMethod {
    AdjustedWald,
    Wilson,
    T,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
    pub method: IntervalMethod,
}

/// A cell's figures. `value` is the metric (NPS −100..100; CSAT % of 4–5; CES mean 1–7), `standard_error` its
/// standard error (for comparing cells), `interval` and `margin` at the asked level; `share` is the percentage of
/// the best group (NPS promoters, CSAT satisfied, CES easy), `mean` the mean score.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub answers: u64,
    pub value: f64,
    pub mean: f64,
    pub share: f64,
    pub standard_error: f64,
    pub interval: Option<Interval>,
    /// Half the interval's width, in the value's units.
    pub margin: Option<f64>,
    /// The margin of error, in percentage points, of the percentage the metric is read by: the NPS itself, the
    /// CSAT share, the CES share of 5–7 (what `lowConfidence` compares with the tenant's threshold).
    pub margin_points: Option<f64>,
}

/// The z of a two-sided interval at `level` (0.95 → 1.96).
pub fn z_of(level: f64) -> f64 {
    Normal::standard().inverse_cdf(1.0 - (1.0 - level) / 2.0)
}

/// Wilson's interval for `k` successes of `n`, as fractions.
pub fn wilson(k: u64, n: u64, z: f64) -> (f64, f64) {
    let (k, n) = (k as f64, n as f64);
    let p = k / n;
    let z2 = z * z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = z / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// The adjusted-Wald interval of an NPS (Rocks 2016): ¾ added to the promoters and the detractors and 3 to n, then
/// the variance (p + d − (p − d)²)/n. Returns (centre, margin) in NPS points.
pub fn nps_adjusted_wald(promoters: u64, detractors: u64, n: u64, z: f64) -> (f64, f64) {
    let n = n as f64 + 3.0;
    let p = (promoters as f64 + 0.75) / n;
    let d = (detractors as f64 + 0.75) / n;
    let variance = (p + d - (p - d).powi(2)) / n;
    ((p - d) * 100.0, z * variance.sqrt() * 100.0)
}

/// The figures of one cell at confidence `level` (e.g. 0.95). `None` for a cell without answers.
pub fn summarize(metric: FeedbackMetric, counts: &ScoreCounts, level: f64) -> Option<Summary> {
    let n = counts.total();
    let (mean, sd) = counts.mean_and_sd(metric)?;
    let z = z_of(level);
    let nf = n as f64;
    let [best, _, worst] = groups(metric);
    let good = counts.between(metric, best.0, best.1);
    let share = good as f64 / nf * 100.0;
    let (share_low, share_high) = wilson(good, n, z);
    let share_margin = (share_high - share_low) * 50.0;
    Some(match metric {
        FeedbackMetric::Nps => {
            let bad = counts.between(metric, worst.0, worst.1);
            let (p, d) = (good as f64 / nf, bad as f64 / nf);
            let value = (p - d) * 100.0;
            let se = ((p + d - (p - d).powi(2)) / nf).sqrt() * 100.0;
            let (centre, margin) = nps_adjusted_wald(good, bad, n, z);
            let interval = Interval {
                low: (centre - margin).max(-100.0),
                high: (centre + margin).min(100.0),
                method: IntervalMethod::AdjustedWald,
            };
            Summary {
                answers: n,
                value,
                mean,
                share,
                standard_error: se,
                interval: Some(interval),
                margin: Some(margin),
                margin_points: Some(margin),
            }
        }
        FeedbackMetric::Csat => {
            let se = (share / 100.0 * (1.0 - share / 100.0) / nf).sqrt() * 100.0;
            let interval =
                Interval { low: share_low * 100.0, high: share_high * 100.0, method: IntervalMethod::Wilson };
            Summary {
                answers: n,
                value: share,
                mean,
                share,
                standard_error: se,
                interval: Some(interval),
                margin: Some(share_margin),
                margin_points: Some(share_margin),
            }
        }
        FeedbackMetric::Ces => {
            // The t interval needs a spread: one answer has none.
            let (interval, margin, se) = match sd {
                Some(sd) => {
                    let t = StudentsT::new(0.0, 1.0, nf - 1.0)
                        .map(|dist| dist.inverse_cdf(1.0 - (1.0 - level) / 2.0))
                        .unwrap_or(z);
                    let se = sd / nf.sqrt();
                    let margin = t * se;
                    let (low, high) = metric.range();
                    let interval = Interval {
                        low: (mean - margin).max(low as f64),
                        high: (mean + margin).min(high as f64),
                        method: IntervalMethod::T,
                    };
                    (Some(interval), Some(margin), se)
                }
                None => (None, None, 0.0),
            };
            Summary {
                answers: n,
                value: mean,
                mean,
                share,
                standard_error: se,
                interval,
                margin,
                margin_points: Some(share_margin),
            }
        }
    })
}

/// A change between two cells: the difference, its z and two-sided p-value (z = Δ / √(SE₁² + SE₂²)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Change {
    pub previous: f64,
    pub delta: f64,
    pub z: Option<f64>,
    pub p_value: Option<f64>,
}

pub fn change(current: &Summary, previous: &Summary) -> Change {
    let delta = current.value - previous.value;
    let se = (current.standard_error.powi(2) + previous.standard_error.powi(2)).sqrt();
    let (z, p_value) = if se > 0.0 {
        let z = delta / se;
        (Some(z), Some(2.0 * (1.0 - Normal::standard().cdf(z.abs()))))
    } else {
        (None, None)
    };
    Change { previous: previous.value, delta, z, p_value }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nps(promoters: u64, passives: u64, detractors: u64) -> ScoreCounts {
        let mut c = ScoreCounts::new(FeedbackMetric::Nps);
        c.add(FeedbackMetric::Nps, 10, promoters as i64);
        c.add(FeedbackMetric::Nps, 8, passives as i64);
        c.add(FeedbackMetric::Nps, 3, detractors as i64);
        c
    }

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    #[test]
    fn the_worked_nps_example_of_the_research_notes() {
        // n = 400, 45 % promoters, 20 % detractors: NPS 25, SE 3.8 points, ±7.5; adjusted Wald 24.8 ± 7.5.
        let s = summarize(FeedbackMetric::Nps, &nps(180, 140, 80), 0.95).expect("answers");
        assert_eq!(s.answers, 400);
        assert!(close(s.value, 25.0, 1e-9), "{s:?}");
        assert!(close(s.standard_error, 3.8, 0.05), "{s:?}");
        assert!(close(1.96 * s.standard_error, 7.5, 0.05), "{s:?}");
        let interval = s.interval.expect("interval");
        assert_eq!(interval.method, IntervalMethod::AdjustedWald);
        assert!(close((interval.low + interval.high) / 2.0, 24.8, 0.05), "{interval:?}");
        assert!(close(s.margin.expect("margin"), 7.5, 0.05), "{s:?}");
    }

    #[test]
    fn a_thousand_answers_know_the_nps_to_about_five_points() {
        // CYBAEA's rule of thumb: with 1000 responses, within ±5 points at worst (variance 1 → 1.96 · 100/√1000 = 6.2;
        // with a realistic mix, under 5).
        let s = summarize(FeedbackMetric::Nps, &nps(450, 350, 200), 0.95).expect("answers");
        assert!(s.margin.expect("margin") < 5.5 && s.margin.expect("margin") > 4.5, "{s:?}");
        let worst = summarize(FeedbackMetric::Nps, &nps(500, 0, 500), 0.95).expect("answers");
        assert!(close(worst.margin.expect("margin"), 6.2, 0.05), "{worst:?}");
    }

    #[test]
    fn wilson_matches_a_hand_computation() {
        // 8 of 10 at 95 %: 0.4902 – 0.9433 (Wilson 1927, as every statistics text tabulates it).
        let (low, high) = wilson(8, 10, z_of(0.95));
        assert!(close(low, 0.4902, 0.0005) && close(high, 0.9433, 0.0005), "{low} {high}");
        // Never outside 0..1, even at the edges.
        let (low, high) = wilson(0, 3, z_of(0.95));
        assert!(low == 0.0 && high > 0.0 && high < 1.0);
    }

    #[test]
    fn csat_is_the_share_of_fours_and_fives_with_its_mean() {
        let mut c = ScoreCounts::new(FeedbackMetric::Csat);
        for score in [5, 5, 4, 3, 1] {
            c.add(FeedbackMetric::Csat, score, 1);
        }
        let s = summarize(FeedbackMetric::Csat, &c, 0.95).expect("answers");
        assert!(close(s.value, 60.0, 1e-9) && close(s.mean, 3.6, 1e-9), "{s:?}");
        assert_eq!(s.interval.map(|i| i.method), Some(IntervalMethod::Wilson));
    }

    #[test]
    fn ces_is_a_mean_with_a_t_interval() {
        // Scores 4, 5, 6, 7: mean 5.5, s = 1.291, t(3, 0.975) = 3.182 → ± 2.054.
        let mut c = ScoreCounts::new(FeedbackMetric::Ces);
        for score in [4, 5, 6, 7] {
            c.add(FeedbackMetric::Ces, score, 1);
        }
        let s = summarize(FeedbackMetric::Ces, &c, 0.95).expect("answers");
        assert!(close(s.value, 5.5, 1e-9) && close(s.share, 75.0, 1e-9), "{s:?}");
        assert!(close(s.margin.expect("margin"), 2.054, 0.002), "{s:?}");
        assert_eq!(s.interval.map(|i| i.method), Some(IntervalMethod::T));
        // One answer has no spread: no interval rather than a made-up one.
        let mut one = ScoreCounts::new(FeedbackMetric::Ces);
        one.add(FeedbackMetric::Ces, 6, 1);
        assert_eq!(summarize(FeedbackMetric::Ces, &one, 0.95).expect("answer").interval, None);
    }

    #[test]
    fn a_change_is_tested_with_both_standard_errors() {
        let before = summarize(FeedbackMetric::Nps, &nps(180, 140, 80), 0.95).expect("answers");
        let after = summarize(FeedbackMetric::Nps, &nps(220, 120, 60), 0.95).expect("answers");
        let c = change(&after, &before);
        assert!(close(c.delta, 15.0, 1e-9));
        // z = 15 / √(3.83² + 3.67²) ≈ 2.83 → p ≈ 0.005.
        assert!(close(c.z.expect("z"), 2.83, 0.01), "{c:?}");
        assert!(c.p_value.expect("p") < 0.01, "{c:?}");
        let same = change(&before, &before);
        assert_eq!(same.delta, 0.0);
        assert!(close(same.p_value.expect("p"), 1.0, 1e-9));
    }
}
