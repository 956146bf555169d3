//! Samplers: from the study and what its trials reported to the point of the next trial.
//!
//! Every sampler is a pure function of the study, the observations and a generator seeded by
//! the trial's index ([`TrialRng`]), so the suggestion for trial `i` is the same however
//! often, and after however many restarts, it is computed from the same ledger.

mod grid;
mod parzen;
mod random;
mod sobol;
mod tpe;

use super::gp;
use super::ledger::{Trial, TrialLedger, TrialState};
use super::rng::{Purpose, TrialRng};
use super::space::{Point, SearchSpace};
use super::study::{Algorithm, Study};

pub(crate) use grid::grid_point;
pub(crate) use random::random_point;

/// A trial the model learns from.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Observation {
    /// Its parameters.
    pub point: Point,
    /// Its objective as a loss (smaller is better); `None` for a trial stopped early, which
    /// counts as worse than every completed one.
    pub loss: Option<f64>,
}

/// The trials of earlier studies (warm start), then `trials` of this study, that finished
/// with an objective or were stopped early, as observations. Warm-start trials whose values
/// lie outside this study's space are left out.
pub(crate) fn observations(
    study: &Study,
    trials: &[Trial],
    ledger: &TrialLedger,
) -> Vec<Observation> {
    let warm = ledger.warm_start.iter().flat_map(|w| w.trials.iter());
    warm.chain(trials.iter())
        .filter_map(|t| {
            let loss = match (t.state, t.objective) {
                (TrialState::Succeeded, Some(o)) => Some(study.goal.loss(o)),
                (TrialState::Stopped, _) => None,
                _ => return None,
            };
            let point = study.space.encode(&t.params)?;
            Some(Observation { point, loss })
        })
        .collect()
}

/// The point of trial `index`; `None` when a grid has no combination left.
pub(crate) fn suggest(study: &Study, observations: &[Observation], index: u32) -> Option<Point> {
    let space = &study.space;
    let mut rng = TrialRng::new(study.seed, index, Purpose::Suggest);
    let completed = observations.iter().filter(|o| o.loss.is_some()).count();
    let point = match &study.algorithm {
        Algorithm::Grid => return grid_point(space, u64::from(index)),
        Algorithm::Random | Algorithm::Hyperband(_) | Algorithm::Asha(_) => {
            random_point(space, &mut rng)
        }
        Algorithm::Sobol { scrambled } => sobol::sobol_point(space, study.seed, index, *scrambled),
        Algorithm::Tpe(s) if completed >= s.startup_trials as usize && completed > 0 => {
            tpe::tpe_point(space, observations, s.candidates as usize, &mut rng)
        }
        Algorithm::Gp(s) if completed >= s.startup_trials.max(2) as usize => {
            gp::gp_point(space, observations, s.candidates as usize, &mut rng)
        }
        Algorithm::Tpe(_) | Algorithm::Gp(_) => random_point(space, &mut rng),
    };
    Some(point)
}

/// Whether `space` has a point at `index` of the grid (for finished-ness of grid studies).
pub(crate) fn grid_has(space: &SearchSpace, index: u64) -> bool {
    grid_point(space, index).is_some()
}
