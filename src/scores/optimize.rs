//! Nelder-Mead minimisation with restarts, for the few-parameter maximum-likelihood fits of the score models.
//!
//! The standard simplex method (reflection 1, expansion 2, contraction ½, shrink ½; Nelder & Mead 1965, as in
//! Numerical Recipes and SciPy). A non-finite objective value counts as +∞, so the simplex walks away from parameter
//! regions where the likelihood overflows. A run stops when the simplex's values agree to `F_TOLERANCE` (relative) and
//! its points to `X_TOLERANCE`; it is then restarted from its best point with a fresh simplex (a collapsed simplex can
//! stop short of the minimum) until a restart no longer improves the value.

/// Relative spread of the simplex's values at which a run stops.
const F_TOLERANCE: f64 = 1e-13;
/// Largest coordinate distance from the best point at which a run stops.
const X_TOLERANCE: f64 = 1e-9;

/// The best point found.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Minimum {
    pub point: Vec<f64>,
    pub value: f64,
    pub evaluations: usize,
    /// False when the evaluation budget ran out first.
    pub converged: bool,
}

/// Minimises `objective` from `start`, with an initial simplex of `step` along each axis.
pub(crate) fn nelder_mead(
    mut objective: impl FnMut(&[f64]) -> f64,
    start: &[f64],
    step: f64,
    max_evaluations: usize,
    max_restarts: usize,
) -> Minimum {
    let mut evaluations = 0;
    let mut evaluate = |x: &[f64]| {
        evaluations += 1;
        let value = objective(x);
        if value.is_finite() { value } else { f64::INFINITY }
    };
    let mut best = run(&mut evaluate, start, step, max_evaluations);
    let mut converged = best.converged;
    for _ in 0..max_restarts {
        if !converged {
            break;
        }
        let next = run(&mut evaluate, &best.point, step, max_evaluations);
        let improved = next.value < best.value - F_TOLERANCE * 10.0 * (1.0 + best.value.abs());
        converged = next.converged;
        if next.value <= best.value {
            best = next;
        }
        if !improved {
            break;
        }
    }
    Minimum { point: best.point, value: best.value, evaluations, converged }
}

/// One Nelder-Mead run; `evaluations` counts this run's calls only for its budget.
fn run(evaluate: &mut impl FnMut(&[f64]) -> f64, start: &[f64], step: f64, max_evaluations: usize) -> Minimum {
    let n = start.len();
    if n == 0 {
        let value = evaluate(start);
        return Minimum { point: Vec::new(), value, evaluations: 1, converged: value.is_finite() };
    }
    let mut points: Vec<Vec<f64>> = Vec::with_capacity(n + 1);
    points.push(start.to_vec());
    for i in 0..n {
        let mut p = start.to_vec();
        p[i] += step;
        points.push(p);
    }
    let mut values: Vec<f64> = points.iter().map(|p| evaluate(p)).collect();
    let mut evaluations = n + 1;
    let mut converged = false;
    while evaluations < max_evaluations {
        // Order best (0) to worst (n).
        let mut order: Vec<usize> = (0..=n).collect();
        order.sort_by(|&i, &j| values[i].total_cmp(&values[j]));
        points = order.iter().map(|&i| points[i].clone()).collect();
        values = order.iter().map(|&i| values[i]).collect();

        let (f_best, f_worst) = (values[0], values[n]);
        let spread = (f_worst - f_best).abs();
        let size =
            points[1..].iter().flat_map(|p| p.iter().zip(&points[0]).map(|(a, b)| (a - b).abs())).fold(0.0, f64::max);
        if f_best.is_finite() && spread <= F_TOLERANCE * (1.0 + f_best.abs()) && size <= X_TOLERANCE {
            converged = true;
            break;
        }

        let centroid: Vec<f64> = (0..n).map(|k| points[..n].iter().map(|p| p[k]).sum::<f64>() / n as f64).collect();
        let along = |t: f64| -> Vec<f64> { (0..n).map(|k| centroid[k] + t * (points[n][k] - centroid[k])).collect() };

        let reflected = along(-1.0);
        let f_reflected = evaluate(&reflected);
        evaluations += 1;
        if f_reflected < values[0] {
            let expanded = along(-2.0);
            let f_expanded = evaluate(&expanded);
            evaluations += 1;
            if f_expanded < f_reflected {
                (points[n], values[n]) = (expanded, f_expanded);
            } else {
                (points[n], values[n]) = (reflected, f_reflected);
            }
            continue;
        }
        if f_reflected < values[n - 1] {
            (points[n], values[n]) = (reflected, f_reflected);
            continue;
        }
        let (contracted, limit) =
            if f_reflected < values[n] { (along(-0.5), f_reflected) } else { (along(0.5), values[n]) };
        let f_contracted = evaluate(&contracted);
        evaluations += 1;
        if f_contracted < limit {
            (points[n], values[n]) = (contracted, f_contracted);
            continue;
        }
        // Shrink towards the best point.
        for i in 1..=n {
            let shrunk: Vec<f64> = points[i].iter().zip(&points[0]).map(|(x, b)| b + 0.5 * (x - b)).collect();
            values[i] = evaluate(&shrunk);
            points[i] = shrunk;
            evaluations += 1;
        }
    }
    let best = (0..=n).min_by(|&i, &j| values[i].total_cmp(&values[j])).unwrap_or(0);
    Minimum { point: points[best].clone(), value: values[best], evaluations, converged }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_minimum_of_rosenbrock() {
        let rosenbrock = |x: &[f64]| (1.0 - x[0]).powi(2) + 100.0 * (x[1] - x[0] * x[0]).powi(2);
        let min = nelder_mead(rosenbrock, &[-1.2, 1.0], 0.5, 10_000, 5);
        assert!(min.converged);
        assert!((min.point[0] - 1.0).abs() < 1e-6 && (min.point[1] - 1.0).abs() < 1e-6, "{min:?}");
    }

    #[test]
    fn walks_away_from_non_finite_values_and_reports_an_exhausted_budget() {
        // Undefined (NaN) for x < 0: the minimum at x = 0.5 is still found from x = 2.
        let f = |x: &[f64]| if x[0] < 0.0 { f64::NAN } else { (x[0] - 0.5).powi(2) + (x[1] + 1.0).powi(2) };
        let min = nelder_mead(f, &[2.0, 2.0], 3.0, 10_000, 5);
        assert!(min.converged && (min.point[0] - 0.5).abs() < 1e-6, "{min:?}");

        let rosenbrock = |x: &[f64]| (1.0 - x[0]).powi(2) + 100.0 * (x[1] - x[0] * x[0]).powi(2);
        assert!(!nelder_mead(rosenbrock, &[-1.2, 1.0], 0.5, 20, 5).converged);
    }
}
