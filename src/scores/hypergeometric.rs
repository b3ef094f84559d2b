//! The Gauss hypergeometric function ₂F₁(a, b; c; z) for 0 ≤ z < 1, by its power series, as BG/NBD's equation (10)
//! needs it.
//!
//! ₂F₁(a, b; c; z) = Σₙ (a)ₙ (b)ₙ / ((c)ₙ n!) zⁿ. Each term is the previous one times
//! (a + n)(b + n) / ((c + n)(n + 1)) · z, so no factorial or Pochhammer symbol is formed. For many repeat purchases the
//! terms grow a long way before they fall (their peak can exceed f64), so the sum is kept as `mantissa · e^ln_scale`
//! and rescaled whenever it grows past 1e200; the caller combines `ln_scale` with its other factors in log space.
//! The series stops when the next terms, bounded by a geometric tail with the current term ratio, are below 1e-12 of
//! the sum; it is an error when that does not happen within `MAX_TERMS` terms (z very close to 1) or when c is 0 or a
//! negative integer (a pole).
use super::ModelError;

/// Relative size of the remaining tail at which the series stops.
const RELATIVE_TOLERANCE: f64 = 1e-12;
/// Terms summed at most (z = 0.999 needs about 40,000).
const MAX_TERMS: usize = 200_000;
/// Rescale when the running sum or term exceeds this.
const RESCALE_ABOVE: f64 = 1e200;

/// ₂F₁(a, b; c; z) as `(mantissa, ln_scale)`: the value is `mantissa · exp(ln_scale)`.
pub(crate) fn hyp2f1_scaled(a: f64, b: f64, c: f64, z: f64) -> Result<(f64, f64), ModelError> {
    if ![a, b, c, z].iter().all(|v| v.is_finite()) {
        return Err(ModelError::InvalidInput(format!("2F1 arguments a={a}, b={b}, c={c}, z={z}")));
    }
    if !(0.0..1.0).contains(&z) {
        return Err(ModelError::InvalidInput(format!("2F1 needs 0 <= z < 1, got {z}")));
    }
    if c <= 0.0 && c == c.round() {
        return Err(ModelError::InvalidInput(format!("2F1 has a pole at c = {c}")));
    }
    let mut term = 1.0_f64;
    let mut sum = 1.0_f64;
    let mut ln_scale = 0.0_f64;
    for n in 0..MAX_TERMS {
        let k = n as f64;
        let ratio = (a + k) * (b + k) / ((c + k) * (k + 1.0)) * z;
        term *= ratio;
        sum += term;
        if !sum.is_finite() || !term.is_finite() {
            return Err(ModelError::NonFinite(format!("2F1({a}, {b}; {c}; {z}) after {n} terms")));
        }
        if term == 0.0 {
            return Ok((sum, ln_scale));
        }
        if sum.abs() > RESCALE_ABOVE || term.abs() > RESCALE_ABOVE {
            sum /= RESCALE_ABOVE;
            term /= RESCALE_ABOVE;
            ln_scale += RESCALE_ABOVE.ln();
        }
        // The ratio tends to z; once below 1, the tail after this term is at most term·ρ/(1 − ρ) with ρ the larger of
        // the current ratio and z (the ratio approaches z monotonically for large n).
        let rho = ratio.abs().max(z);
        if ratio.abs() < 1.0 && rho < 1.0 {
            let tail = term.abs() * rho / (1.0 - rho);
            if tail <= RELATIVE_TOLERANCE * sum.abs() {
                return Ok((sum, ln_scale));
            }
        }
    }
    Err(ModelError::SeriesDidNotConverge { a, b, c, z })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hyp2f1(a: f64, b: f64, c: f64, z: f64) -> f64 {
        let (mantissa, ln_scale) = hyp2f1_scaled(a, b, c, z).unwrap();
        mantissa * ln_scale.exp()
    }

    fn close(actual: f64, expected: f64, relative: f64) -> bool {
        ((actual - expected) / expected).abs() <= relative
    }

    #[test]
    fn matches_closed_forms() {
        // 2F1(1, 1; 2; z) = −ln(1 − z) / z
        for z in [0.0001_f64, 0.3, 0.9, 0.99] {
            let expected = -(1.0 - z).ln() / z;
            assert!(close(hyp2f1(1.0, 1.0, 2.0, z), expected, 1e-10), "z = {z}");
        }
        // 2F1(a, b; b; z) = (1 − z)^−a
        assert!(close(hyp2f1(2.5, 3.0, 3.0, 0.7), 0.3_f64.powf(-2.5), 1e-10));
        // 2F1(1/2, 1/2; 3/2; z²) = arcsin(z) / z
        assert!(close(hyp2f1(0.5, 0.5, 1.5, 0.25), 0.5_f64.asin() / 0.5, 1e-10));
        assert_eq!(hyp2f1(1.0, 1.0, 2.0, 0.0), 1.0);
    }

    #[test]
    fn large_terms_are_kept_in_log_scale() {
        // 2F1(a, b; b; z) = (1 − z)^−a with a large: about 10^400, beyond f64.
        let (mantissa, ln_scale) = hyp2f1_scaled(400.0, 2.0, 2.0, 0.9).unwrap();
        let ln_value = mantissa.ln() + ln_scale;
        assert!(close(ln_value, -400.0 * 0.1_f64.ln(), 1e-10), "{ln_value}");
    }

    #[test]
    fn refuses_poles_bad_arguments_and_non_convergence() {
        assert!(hyp2f1_scaled(1.0, 1.0, -2.0, 0.5).is_err());
        assert!(hyp2f1_scaled(1.0, 1.0, 2.0, 1.0).is_err());
        assert!(hyp2f1_scaled(1.0, f64::NAN, 2.0, 0.5).is_err());
        assert!(matches!(hyp2f1_scaled(1.0, 1.0, 2.0, 0.999_999_9), Err(ModelError::SeriesDidNotConverge { .. })));
    }
}
