//! The seeded train/valid/test split.
//!
//! The record order is a Fisher-Yates shuffle driven by ChaCha8 seeded with `--seed`; the
//! shuffled order is cut by the ratios, train first. ChaCha8's output is fixed by its
//! specification and the shuffle is written here (not `rand`'s `SliceRandom`, whose algorithm
//! may change between versions), so a seed gives the same split on every machine and release.

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

/// Returns, for each split (train, valid, test), the indices of its records in `0..n`.
pub fn split_indices(n: usize, ratios: [u32; 3], seed: u64) -> [Vec<usize>; 3] {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for i in (1..n).rev() {
        let j = uniform_below(&mut rng, i as u64 + 1) as usize;
        order.swap(i, j);
    }
    let total: u64 = ratios.iter().map(|&r| r as u64).sum::<u64>().max(1);
    let n_train = (n as u64 * ratios[0] as u64 / total) as usize;
    let n_valid = (n as u64 * ratios[1] as u64 / total) as usize;
    let valid_end = (n_train + n_valid).min(n);
    [
        order[..n_train].to_vec(),
        order[n_train..valid_end].to_vec(),
        order[valid_end..].to_vec(),
    ]
}

/// An unbiased integer in `0..bound` (Lemire's multiply-and-reject).
fn uniform_below(rng: &mut ChaCha8Rng, bound: u64) -> u64 {
    let threshold = bound.wrapping_neg() % bound;
    loop {
        let product = rng.next_u64() as u128 * bound as u128;
        if (product as u64) >= threshold {
            return (product >> 64) as u64;
        }
    }
}

/// Parses `80:10:10`.
pub fn parse_ratios(s: &str) -> Result<[u32; 3], String> {
    let parts: Vec<&str> = s.split(':').collect();
    let parsed: Result<Vec<u32>, _> = parts.iter().map(|p| p.trim().parse::<u32>()).collect();
    match parsed.as_deref() {
        Ok(&[train, valid, test]) if train > 0 && train as u64 + valid as u64 + test as u64 > 0 => {
            Ok([train, valid, test])
        }
        _ => Err(format!(
            "invalid split {s:?}: expected TRAIN:VALID:TEST with non-negative integers and TRAIN > 0, e.g. 80:10:10"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_default_ratios_give_80_10_10() {
        let [train, valid, test] = split_indices(70_000, [80, 10, 10], 0);
        assert_eq!(
            (train.len(), valid.len(), test.len()),
            (56_000, 7_000, 7_000)
        );
    }

    #[test]
    fn the_seed_decides_the_order() {
        assert_eq!(
            split_indices(100, [8, 1, 1], 7),
            split_indices(100, [8, 1, 1], 7)
        );
        assert_ne!(
            split_indices(100, [8, 1, 1], 7),
            split_indices(100, [8, 1, 1], 8)
        );
    }

    #[test]
    fn parses_ratios() {
        assert_eq!(parse_ratios("80:10:10"), Ok([80, 10, 10]));
        assert_eq!(parse_ratios("9:1:0"), Ok([9, 1, 0]));
        for bad in ["80:20", "a:b:c", "0:5:5", "-1:1:1"] {
            assert!(parse_ratios(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn every_record_lands_in_exactly_one_split(
            n in 0usize..500, a in 1u32..10, b in 0u32..10, c in 0u32..10, seed in any::<u64>()
        ) {
            let splits = split_indices(n, [a, b, c], seed);
            let mut all: Vec<usize> = splits.concat();
            all.sort_unstable();
            prop_assert_eq!(all, (0..n).collect::<Vec<_>>());
        }
    }
}
