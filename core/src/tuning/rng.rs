//! Per-trial randomness: every draw for trial `i` comes from a generator seeded by the
//! study's seed, `i` and a purpose, never from a stream shared across calls, so a suggestion
//! depends only on the seed and the ledger, whenever and however often it is computed.

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

/// What a generator is for; separate purposes never share draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// The trial's parameters.
    Suggest,
    /// A study-wide draw (Sobol's digital shift), independent of the trial.
    Study,
}

/// A seeded generator with the draws samplers need.
#[derive(Clone, Debug)]
pub(crate) struct TrialRng(ChaCha8Rng);

impl TrialRng {
    /// The generator of `purpose` for trial `index` of a study seeded with `seed`.
    pub(crate) fn new(seed: u64, index: u32, purpose: Purpose) -> Self {
        let mut h = Sha256::new();
        h.update(b"toucan.tuning.rng.v1");
        h.update(seed.to_be_bytes());
        h.update(index.to_be_bytes());
        h.update([purpose as u8]);
        TrialRng(ChaCha8Rng::from_seed(h.finalize().into()))
    }

    /// A uniform draw in `[0, 1)` with 53 random bits.
    pub(crate) fn uniform(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A standard normal draw (Box-Muller).
    pub(crate) fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// 32 random bits.
    pub(crate) fn bits32(&mut self) -> u32 {
        self.0.next_u32()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_on_seed_index_and_purpose_only() {
        let draw = |seed, index, purpose| TrialRng::new(seed, index, purpose).uniform();
        assert_eq!(draw(7, 3, Purpose::Suggest), draw(7, 3, Purpose::Suggest));
        assert_ne!(draw(7, 3, Purpose::Suggest), draw(7, 4, Purpose::Suggest));
        assert_ne!(draw(7, 3, Purpose::Suggest), draw(8, 3, Purpose::Suggest));
        assert_ne!(draw(7, 3, Purpose::Suggest), draw(7, 3, Purpose::Study));
    }

    #[test]
    fn draws_are_in_range() {
        let mut rng = TrialRng::new(1, 1, Purpose::Suggest);
        for _ in 0..1000 {
            let u = rng.uniform();
            assert!((0.0..1.0).contains(&u));
            assert!(rng.normal().is_finite());
        }
    }
}
