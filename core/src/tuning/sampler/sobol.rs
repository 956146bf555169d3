//! Sobol search: a low-discrepancy sequence over the unit cube, one point per trial index.
//!
//! The sequence comes from the `sobol` crate (Joe and Kuo's direction numbers, up to 100
//! dimensions here). Scrambling is a random digital shift seeded by the study's seed: every
//! coordinate's 32 bits are XORed with the same seeded word for the whole study, which keeps
//! the sequence's stratification and makes it depend on the seed. Unscrambled, the first
//! point (the all-zero corner) is skipped.

use std::sync::OnceLock;

use sobol::Sobol;
use sobol::params::JoeKuoD6;

use super::super::rng::{Purpose, TrialRng};
use super::super::space::{Point, SearchSpace};

/// The direction numbers, parsed once (they are constant data compiled into the crate).
fn directions() -> &'static JoeKuoD6 {
    static DIRECTIONS: OnceLock<JoeKuoD6> = OnceLock::new();
    DIRECTIONS.get_or_init(JoeKuoD6::minimal)
}

/// Point `index` of the sequence, mapped onto the space.
pub(crate) fn sobol_point(space: &SearchSpace, seed: u64, index: u32, scrambled: bool) -> Point {
    let dims = space.len().max(1);
    let position = if scrambled {
        index
    } else {
        index.saturating_add(1)
    };
    let raw: Vec<u32> = Sobol::<u32>::new(dims, directions())
        .nth(position as usize)
        .unwrap_or_else(|| vec![0; dims]);
    let mut shift = TrialRng::new(seed, 0, Purpose::Study);
    let mut point: Point = space
        .parameters()
        .iter()
        .zip(raw)
        .map(|(p, bits)| {
            let bits = if scrambled {
                bits ^ shift.bits32()
            } else {
                bits
            };
            let u = f64::from(bits) / 4_294_967_296.0;
            Some(p.domain.uniform(u))
        })
        .collect();
    space.deactivate(&mut point);
    point
}
