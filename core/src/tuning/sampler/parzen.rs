//! The Parzen estimator TPE models good and bad trials with: a weighted mixture with one
//! component per observed trial plus one broad prior component.
//!
//! A component is a product over parameters (multivariate: one component draws all of a
//! candidate's coordinates together, keeping what made a trial good together). Numeric
//! coordinates get a normal kernel truncated to `[0, 1]` whose width is the larger gap to
//! the neighbouring observed values of that parameter (so kernels narrow where good trials
//! crowd), clipped below so that few observations cannot collapse it; categorical ones a
//! distribution that favours the observed choice. A parameter the observed trial did not
//! have (its `when` failed) is uniform in that component, and a candidate's density is taken
//! over the parameters it has, so conditional spaces need no special case.

use statrs::function::erf::erfc;

use super::super::rng::TrialRng;
use super::super::space::{Domain, Point, SearchSpace};

/// Weight of the prior component, relative to one observation.
const PRIOR_WEIGHT: f64 = 1.0;
/// The most observations the bandwidth's lower clip shrinks for.
const MAX_CLIP_COMPONENTS: f64 = 100.0;
/// Draws of a truncated normal before falling back to a uniform one.
const MAX_REJECTIONS: usize = 64;

/// One kernel of one component on one parameter.
#[derive(Clone, Debug)]
enum Kernel {
    /// Uniform over the parameter's values (the prior, or the trial lacked the parameter).
    Uniform,
    /// Normal(mu, sigma) truncated to [0, 1]; `log_norm` is the log of its mass there.
    Normal { mu: f64, sigma: f64, log_norm: f64 },
    /// Categorical choice `observed` favoured over the others.
    Choice { observed: usize },
}

/// A weighted mixture over the space.
#[derive(Clone, Debug)]
pub(crate) struct Parzen<'a> {
    space: &'a SearchSpace,
    /// Per component: log weight (normalized) and one kernel per parameter.
    components: Vec<(f64, Vec<Kernel>)>,
}

impl<'a> Parzen<'a> {
    /// The estimator of `points` with their `weights`.
    pub(crate) fn new(space: &'a SearchSpace, points: &[&Point], weights: &[f64]) -> Self {
        let n = points.len();
        let total: f64 = weights.iter().sum::<f64>() + PRIOR_WEIGHT;
        let widths: Vec<Vec<f64>> = (0..space.len()).map(|d| widths(points, d)).collect();
        let mut components = Vec::with_capacity(n + 1);
        for (i, (point, w)) in points.iter().zip(weights).enumerate() {
            let kernels = space
                .parameters()
                .iter()
                .zip(point.iter())
                .enumerate()
                .map(|(d, (p, c))| match (c, &p.domain) {
                    (None, _) => Kernel::Uniform,
                    (Some(c), Domain::Categorical { .. }) => Kernel::Choice {
                        observed: *c as usize,
                    },
                    (Some(c), domain) => normal(*c, widths[d][i].max(min_sigma(domain))),
                })
                .collect();
            components.push(((w / total).ln(), kernels));
        }
        let prior = space
            .parameters()
            .iter()
            .map(|p| match p.domain {
                Domain::Categorical { .. } => Kernel::Uniform,
                _ => normal(0.5, 1.0),
            })
            .collect();
        components.push(((PRIOR_WEIGHT / total).ln(), prior));
        Parzen { space, components }
    }

    /// A draw: one component by weight, each coordinate from its kernel, snapped to the
    /// parameter's values, then conditions applied.
    pub(crate) fn sample(&self, rng: &mut TrialRng) -> Point {
        let u = rng.uniform();
        let mut acc = 0.0;
        let mut chosen = &self.components[self.components.len() - 1].1;
        for (log_w, kernels) in &self.components {
            acc += log_w.exp();
            if u < acc {
                chosen = kernels;
                break;
            }
        }
        let mut point: Point = self
            .space
            .parameters()
            .iter()
            .zip(chosen)
            .map(|(p, k)| Some(draw(&p.domain, k, rng)))
            .collect();
        self.space.deactivate(&mut point);
        point
    }

    /// The log density of `point` over the parameters it has.
    pub(crate) fn log_density(&self, point: &Point) -> f64 {
        let mut terms = Vec::with_capacity(self.components.len());
        for (log_w, kernels) in &self.components {
            let mut log_p = *log_w;
            for ((p, k), c) in self.space.parameters().iter().zip(kernels).zip(point) {
                if let Some(c) = c {
                    log_p += log_kernel(&p.domain, k, *c);
                }
            }
            terms.push(log_p);
        }
        log_sum_exp(&terms)
    }
}

/// Each point's kernel width on parameter `d`: the larger of the gaps to its neighbours among
/// the points that have the parameter, with the range's ends as outer neighbours (the
/// outermost points take the gap on their inner side only), clipped to
/// `[1 / min(100, kernels + 1), 1]` with the prior counted as a kernel.
fn widths(points: &[&Point], d: usize) -> Vec<f64> {
    let mut present: Vec<(f64, usize)> = points
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p[d].map(|c| (c, i)))
        .collect();
    present.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let kernels = present.len() as f64 + 1.0;
    let min = 1.0 / MAX_CLIP_COMPONENTS.min(kernels + 1.0);
    let mut out = vec![1.0; points.len()];
    let m = present.len();
    for (k, &(c, i)) in present.iter().enumerate() {
        let left = if k == 0 { 0.0 } else { present[k - 1].0 };
        let right = if k + 1 == m { 1.0 } else { present[k + 1].0 };
        let width = match (k, m) {
            (_, 1) => (c - left).max(right - c),
            (0, _) => right - c,
            (k, m) if k + 1 == m => c - left,
            _ => (c - left).max(right - c),
        };
        out[i] = width.clamp(min, 1.0);
    }
    out
}

/// Half a grid step: a finite domain's kernel never gets narrower than its values' spacing.
fn min_sigma(domain: &Domain) -> f64 {
    match domain.choices() {
        Some(k) if k > 1 => 0.5 / (k - 1) as f64,
        _ => 0.0,
    }
}

fn normal(mu: f64, sigma: f64) -> Kernel {
    let mass = std_cdf((1.0 - mu) / sigma) - std_cdf(-mu / sigma);
    Kernel::Normal {
        mu,
        sigma,
        log_norm: mass.max(f64::MIN_POSITIVE).ln(),
    }
}

fn std_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

fn categorical_probability(k: usize, observed: usize, choice: usize) -> f64 {
    let base = PRIOR_WEIGHT / k as f64;
    let hit = if choice == observed { 1.0 } else { 0.0 };
    (hit + base) / (1.0 + PRIOR_WEIGHT)
}

fn draw(domain: &Domain, kernel: &Kernel, rng: &mut TrialRng) -> f64 {
    match (kernel, domain) {
        (Kernel::Uniform, _) => domain.uniform(rng.uniform()),
        (Kernel::Normal { mu, sigma, .. }, _) => {
            let x = (0..MAX_REJECTIONS)
                .map(|_| mu + sigma * rng.normal())
                .find(|x| (0.0..=1.0).contains(x))
                .unwrap_or_else(|| rng.uniform());
            domain.snap(x)
        }
        (Kernel::Choice { observed }, Domain::Categorical { values }) => {
            let k = values.len();
            let u = rng.uniform();
            let mut acc = 0.0;
            for j in 0..k {
                acc += categorical_probability(k, *observed, j);
                if u < acc {
                    return j as f64;
                }
            }
            (k - 1) as f64
        }
        (Kernel::Choice { .. }, _) => domain.uniform(rng.uniform()),
    }
}

fn log_kernel(domain: &Domain, kernel: &Kernel, c: f64) -> f64 {
    match (kernel, domain) {
        (Kernel::Uniform, Domain::Categorical { values }) => -(values.len() as f64).ln(),
        (Kernel::Uniform, _) => 0.0,
        (
            Kernel::Normal {
                mu,
                sigma,
                log_norm,
            },
            _,
        ) => {
            let z = (c - mu) / sigma;
            -0.5 * z * z - sigma.ln() - 0.5 * (std::f64::consts::TAU).ln() - log_norm
        }
        (Kernel::Choice { observed }, Domain::Categorical { values }) => {
            categorical_probability(values.len(), *observed, c as usize).ln()
        }
        (Kernel::Choice { .. }, _) => 0.0,
    }
}

/// log(sum(exp(terms))) without overflow.
pub(crate) fn log_sum_exp(terms: &[f64]) -> f64 {
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln()
}
