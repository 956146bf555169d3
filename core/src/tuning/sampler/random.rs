//! Random search: every parameter drawn independently and uniformly (on the log of a
//! log-scaled range; every choice of a finite domain equally likely).

use super::super::rng::TrialRng;
use super::super::space::{Point, SearchSpace};

/// A uniform point; parameters whose condition fails are left out. Every parameter takes
/// one draw whether it is active or not, so a condition never shifts the others' draws.
pub(crate) fn random_point(space: &SearchSpace, rng: &mut TrialRng) -> Point {
    let mut point: Point = space
        .parameters()
        .iter()
        .map(|p| Some(p.domain.uniform(rng.uniform())))
        .collect();
    space.deactivate(&mut point);
    point
}
