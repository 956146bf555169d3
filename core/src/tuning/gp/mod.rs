//! Gaussian-process search: a GP with a Matérn 5/2 kernel over the trials' coordinates
//! ([`kernel`]), hyperparameters fitted by maximum a posteriori ([`fit`]), and the next
//! trial where the expected improvement over the best trial is largest ([`acquisition`]).
//!
//! Objectives are standardised before the fit. Past [`MAX_POINTS`] observations the GP is
//! fitted to the best half and the most recent half of that many, which keeps the cost of a
//! suggestion bounded (the fit is cubic in the number of points).

mod acquisition;
mod fit;
mod kernel;
mod lbfgs;
mod linalg;

use super::rng::TrialRng;
use super::sampler::{Observation, random_point};
use super::space::{Point, SearchSpace};

/// The most observations the GP is fitted to.
pub(crate) const MAX_POINTS: usize = 300;

/// The suggestion from at least two completed observations.
pub(crate) fn gp_point(
    space: &SearchSpace,
    observations: &[Observation],
    candidates: usize,
    rng: &mut TrialRng,
) -> Point {
    let chosen = select(observations);
    let points: Vec<&Point> = chosen.iter().map(|(p, _)| *p).collect();
    let losses: Vec<f64> = chosen.iter().map(|(_, l)| *l).collect();
    let n = points.len();
    let mean = losses.iter().sum::<f64>() / n as f64;
    let var = losses.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / n as f64;
    let sd = if var > 0.0 { var.sqrt() } else { 1.0 };
    let y: Vec<f64> = losses.iter().map(|l| (l - mean) / sd).collect();
    let dims = space.len();
    let mut diffs = vec![0.0; n * n * dims];
    let mut d = Vec::with_capacity(dims);
    for i in 0..n {
        for j in 0..i {
            kernel::differences(space, points[i], points[j], &mut d);
            let at = (i * n + j) * dims;
            diffs[at..at + dims].copy_from_slice(&d);
        }
    }
    let data = fit::Data { n, dims, diffs, y };
    match fit::fit(&data) {
        Some(posterior) => {
            acquisition::maximise(space, &points, &data.y, &posterior, candidates, rng)
        }
        None => random_point(space, rng),
    }
}

/// The completed observations the GP is fitted to: all of them, or past [`MAX_POINTS`] the
/// best half and the most recent half.
fn select(observations: &[Observation]) -> Vec<(&Point, f64)> {
    let completed: Vec<(usize, &Point, f64)> = observations
        .iter()
        .enumerate()
        .filter_map(|(i, o)| o.loss.map(|l| (i, &o.point, l)))
        .collect();
    if completed.len() <= MAX_POINTS {
        return completed.into_iter().map(|(_, p, l)| (p, l)).collect();
    }
    let mut by_loss: Vec<usize> = (0..completed.len()).collect();
    by_loss.sort_by(|&a, &b| completed[a].2.total_cmp(&completed[b].2).then(a.cmp(&b)));
    let mut keep = vec![false; completed.len()];
    for &i in by_loss.iter().take(MAX_POINTS / 2) {
        keep[i] = true;
    }
    let mut recent = completed.len();
    let mut kept = MAX_POINTS / 2;
    while kept < MAX_POINTS && recent > 0 {
        recent -= 1;
        if !keep[recent] {
            keep[recent] = true;
            kept += 1;
        }
    }
    completed
        .into_iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .map(|((_, p, l), _)| (p, l))
        .collect()
}
