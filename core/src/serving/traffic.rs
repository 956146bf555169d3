//! The traffic split in force: the spec's `traffic`, moved by the rollout's state.
//!
//! Both shells (the operator and `toucan serve`) derive what the router applies and what
//! `status.traffic` shows from [`effective_traffic`] alone, so a split is never computed
//! twice in two ways. A rollout's candidate takes its weight from the other versions in
//! proportion to what the spec gives them, rounded by the largest remainder so that the
//! weights always sum to 100.

use super::rollout::RolloutState;
use crate::api::{EndpointSpec, MAX_VERSIONS, TrafficTarget};

/// The split as written: `spec.traffic`, or 100 to the first version when it is omitted.
pub fn declared_traffic(spec: &EndpointSpec) -> Vec<(String, u32)> {
    if spec.traffic.is_empty() {
        return spec
            .versions
            .first()
            .map(|v| vec![(v.name.clone(), 100)])
            .unwrap_or_default();
    }
    spec.traffic
        .iter()
        .map(|t| (t.version.clone(), t.weight))
        .collect()
}

/// The split the router applies now: the declared one, with the rollout's candidate at the
/// weight `rollout` gives it. The rollout state counts only while the spec still rolls out
/// that candidate and declares it as a version; otherwise the spec's split is in force as
/// written.
pub fn effective_traffic(
    spec: &EndpointSpec,
    rollout: Option<&RolloutState>,
) -> Vec<(String, u32)> {
    let declared = declared_traffic(spec);
    let Some(state) = rollout else {
        return declared;
    };
    let current = spec
        .rollout
        .as_ref()
        .is_some_and(|r| r.candidate == state.candidate)
        && spec.version(&state.candidate).is_some();
    if current {
        with_candidate(&declared, &state.candidate, state.weight)
    } else {
        declared
    }
}

/// `declared` with `candidate` at `weight` (at most 100) and the other entries sharing the
/// rest in proportion to their declared weights, in the declared order (the candidate last
/// when it was not declared). When the others declare no weight at all there is nothing to
/// take from: `declared` is returned unchanged (the manifest checks refuse such a rollout).
pub fn with_candidate(
    declared: &[(String, u32)],
    candidate: &str,
    weight: u32,
) -> Vec<(String, u32)> {
    let weight = weight.min(100);
    let others: u64 = declared
        .iter()
        .filter(|(name, _)| name != candidate)
        .map(|(_, w)| u64::from(*w))
        .sum();
    if others == 0 {
        return declared.to_vec();
    }
    let rest = u64::from(100 - weight);
    // Each other entry's floor share, then the leftover units to the largest remainders
    // (the earlier entry first on a tie).
    let mut shares: Vec<(usize, u64, u64)> = declared
        .iter()
        .enumerate()
        .filter(|(_, (name, _))| name != candidate)
        .map(|(i, (_, w))| {
            let exact = rest * u64::from(*w);
            (i, exact / others, exact % others)
        })
        .collect();
    let given: u64 = shares.iter().map(|(_, floor, _)| floor).sum();
    let mut by_remainder: Vec<usize> = (0..shares.len()).collect();
    by_remainder.sort_by(|&a, &b| shares[b].2.cmp(&shares[a].2).then(a.cmp(&b)));
    for &k in by_remainder.iter().take((rest - given) as usize) {
        shares[k].1 += 1;
    }
    let mut out: Vec<(String, u32)> = declared
        .iter()
        .map(|(name, _)| (name.clone(), if name == candidate { weight } else { 0 }))
        .collect();
    for (i, share, _) in shares {
        // A share is at most `rest`, itself at most 100.
        out[i].1 = u32::try_from(share).unwrap_or(100);
    }
    if !declared.iter().any(|(name, _)| name == candidate) {
        out.push((candidate.to_string(), weight));
    }
    out
}

/// The split as one short line for the status and its printer column: `v1=90,v2=10`. At
/// most [`MAX_VERSIONS`] entries are shown, then `+N more`.
pub fn traffic_summary(split: &[(String, u32)]) -> String {
    let mut parts: Vec<String> = split
        .iter()
        .take(MAX_VERSIONS)
        .map(|(name, weight)| format!("{name}={weight}"))
        .collect();
    if split.len() > MAX_VERSIONS {
        parts.push(format!("+{} more", split.len() - MAX_VERSIONS));
    }
    parts.join(",")
}

/// The split as `status.traffic` holds it.
pub fn traffic_targets(split: &[(String, u32)]) -> Vec<TrafficTarget> {
    split
        .iter()
        .map(|(version, weight)| TrafficTarget {
            version: version.clone(),
            weight: *weight,
        })
        .collect()
}

/// The weights a Gateway API route gives the versions: the split in force, none for a version
/// `ready` says has no ready replica. A route's weights are relative, so the others take that
/// share in proportion, as the router does.
pub fn ready_weights(
    split: &[(String, u32)],
    ready: impl Fn(&str) -> bool,
) -> std::collections::BTreeMap<String, u32> {
    split
        .iter()
        .map(|(version, weight)| {
            let weight = if ready(version) { *weight } else { 0 };
            (version.clone(), weight)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ModelRef, ModelVersion, RolloutPhase, RolloutSpec};
    use crate::duration::Duration;
    use proptest::prelude::*;

    fn split(entries: &[(&str, u32)]) -> Vec<(String, u32)> {
        entries.iter().map(|(n, w)| (n.to_string(), *w)).collect()
    }

    fn spec(versions: &[&str], traffic: &[(&str, u32)], candidate: Option<&str>) -> EndpointSpec {
        EndpointSpec {
            versions: versions
                .iter()
                .map(|name| ModelVersion {
                    name: name.to_string(),
                    model: ModelRef {
                        digest: Some(format!("sha256:{}", "0".repeat(64))),
                        ..ModelRef::default()
                    },
                    ..ModelVersion::default()
                })
                .collect(),
            traffic: traffic_targets(&split(traffic)),
            shadow: None,
            batching: None,
            autoscaling: None,
            rollout: candidate.map(|c| RolloutSpec {
                candidate: c.to_string(),
                steps: None,
                interval: Duration::parse("10m").unwrap(),
                gates: Vec::new(),
                on_failure: None,
                min_requests: None,
                evaluation_gates: Vec::new(),
                min_labels: None,
            }),
            sampling: None,
            router: None,
            monitoring: None,
        }
    }

    fn state(candidate: &str, weight: u32, phase: RolloutPhase) -> RolloutState {
        RolloutState {
            candidate: candidate.to_string(),
            model: String::new(),
            step: 0,
            weight,
            phase,
            since: 0,
            reason: None,
        }
    }

    #[test]
    fn the_first_version_takes_everything_by_default() {
        let s = spec(&["v1", "v2"], &[], None);
        assert_eq!(declared_traffic(&s), split(&[("v1", 100)]));
        assert_eq!(effective_traffic(&s, None), split(&[("v1", 100)]));
    }

    #[test]
    fn the_candidate_takes_its_weight_from_the_others_in_proportion() {
        type Weights = &'static [(&'static str, u32)];
        let cases: &[(Weights, &str, u32, Weights)] = &[
            (
                &[("v1", 90), ("v2", 10)],
                "v2",
                25,
                &[("v1", 75), ("v2", 25)],
            ),
            (&[("v1", 100)], "v2", 10, &[("v1", 90), ("v2", 10)]),
            (
                &[("v1", 60), ("v2", 40)],
                "v3",
                50,
                &[("v1", 30), ("v2", 20), ("v3", 50)],
            ),
            // 90 split 1:1:1 is 30 each; 85 is 28.33 each: the first gets the extra unit.
            (
                &[("a", 1), ("b", 1), ("c", 1)],
                "d",
                15,
                &[("a", 29), ("b", 28), ("c", 28), ("d", 15)],
            ),
            (
                &[("v1", 90), ("v2", 10)],
                "v2",
                0,
                &[("v1", 100), ("v2", 0)],
            ),
            (
                &[("v1", 90), ("v2", 10)],
                "v2",
                100,
                &[("v1", 0), ("v2", 100)],
            ),
            // Nothing to take from: as declared.
            (
                &[("v1", 0), ("v2", 100)],
                "v2",
                10,
                &[("v1", 0), ("v2", 100)],
            ),
        ];
        for (declared, candidate, weight, want) in cases {
            assert_eq!(
                with_candidate(&split(declared), candidate, *weight),
                split(want),
                "{declared:?} {candidate} {weight}"
            );
        }
    }

    #[test]
    fn the_rollout_counts_only_while_the_spec_rolls_out_its_candidate() {
        let rolling = spec(&["v1", "v2"], &[("v1", 100)], Some("v2"));
        let at_25 = state("v2", 25, RolloutPhase::Progressing);
        assert_eq!(
            effective_traffic(&rolling, Some(&at_25)),
            split(&[("v1", 75), ("v2", 25)])
        );
        let promoted = state("v2", 100, RolloutPhase::Promoted);
        assert_eq!(
            effective_traffic(&rolling, Some(&promoted)),
            split(&[("v1", 0), ("v2", 100)])
        );
        // The rollout was removed, or now rolls out another version: the spec as written.
        let done = spec(&["v1", "v2"], &[("v2", 100)], None);
        assert_eq!(
            effective_traffic(&done, Some(&promoted)),
            split(&[("v2", 100)])
        );
        let other = spec(&["v1", "v2", "v3"], &[("v1", 100)], Some("v3"));
        assert_eq!(
            effective_traffic(&other, Some(&at_25)),
            split(&[("v1", 100)])
        );
    }

    #[test]
    fn summaries_are_short() {
        assert_eq!(
            traffic_summary(&split(&[("v1", 90), ("v2", 10)])),
            "v1=90,v2=10"
        );
        let many: Vec<(String, u32)> = (0..20).map(|i| (format!("v{i}"), 5)).collect();
        let line = traffic_summary(&many);
        assert!(line.ends_with(",v15=5,+4 more"), "{line}");
    }

    proptest! {
        /// The weights sum to 100, the candidate has exactly its weight, and every other
        /// version is within one unit of its exact proportional share, the larger declared
        /// weight never getting less.
        #[test]
        fn splits_sum_to_100_in_proportion(
            weights in prop::collection::vec(0u32..=100, 1..8),
            candidate in 0usize..9,
            weight in 0u32..=100,
        ) {
            let declared: Vec<(String, u32)> =
                weights.iter().enumerate().map(|(i, w)| (format!("v{i}"), *w)).collect();
            let name = format!("v{candidate}");
            let others: u32 = declared.iter().filter(|(n, _)| *n != name).map(|(_, w)| w).sum();
            let out = with_candidate(&declared, &name, weight);
            if others == 0 {
                prop_assert_eq!(out, declared);
                return Ok(());
            }
            prop_assert_eq!(out.iter().map(|(_, w)| w).sum::<u32>(), 100);
            let got = |n: &str| out.iter().find(|(m, _)| m == n).map(|(_, w)| *w);
            prop_assert_eq!(got(&name), Some(weight));
            for (n, w) in declared.iter().filter(|(n, _)| *n != name) {
                let exact = f64::from(100 - weight) * f64::from(*w) / f64::from(others);
                let share = f64::from(got(n).unwrap());
                prop_assert!((share - exact).abs() < 1.0, "{n}: {share} vs {exact}");
                for (m, v) in declared.iter().filter(|(m, _)| *m != name) {
                    if w > v {
                        prop_assert!(got(n) >= got(m));
                    }
                }
            }
        }
    }

    #[test]
    fn a_version_without_a_ready_replica_gets_no_route_weight() {
        let split = vec![
            ("v1".to_string(), 72),
            ("v2".to_string(), 8),
            ("v3".to_string(), 20),
        ];
        let weights = ready_weights(&split, |v| v != "v3");
        assert_eq!(
            weights.into_iter().collect::<Vec<_>>(),
            [
                ("v1".to_string(), 72),
                ("v2".to_string(), 8),
                ("v3".to_string(), 0)
            ]
        );
    }
}
