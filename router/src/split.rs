//! Which version a request goes to, and whether it is mirrored: pure decisions over the
//! request's key and the versions' weights and readiness.
//!
//! The key (the sticky header's value, or the request id) is hashed into `[0, 1)` by
//! [`toucan_core::serving::unit_interval`] under the salt `route`, and the versions share the
//! interval by weight ([`toucan_core::serving::pick`]). A version without a ready replica has
//! its weight set to zero, which hands its share to the others in proportion to theirs. The
//! shadow decision uses its own salt, so being mirrored says nothing about the version chosen.

use toucan_core::serving::{pick, unit_interval};

/// Salt of the routing decision; every router (and anything that predicts routing) uses it.
pub const ROUTE_SALT: &str = "route";
/// Salt of the mirroring decision.
pub const SHADOW_SALT: &str = "shadow";

/// What the split needs to know of one version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionShare {
    pub weight: u32,
    pub ready_replicas: usize,
}

/// The weights in force: each version's configured weight, or zero when it has no ready
/// replica.
pub fn effective_weights(versions: &[VersionShare]) -> Vec<u32> {
    versions
        .iter()
        .map(|v| if v.ready_replicas > 0 { v.weight } else { 0 })
        .collect()
}

/// The key that decides the version: the sticky header's value when the endpoint has one and
/// the request carries it, the request id otherwise.
pub fn route_key<'a>(sticky_value: Option<&'a str>, request_id: &'a str) -> &'a str {
    match sticky_value {
        Some(value) if !value.is_empty() => value,
        _ => request_id,
    }
}

/// The index of the version `key` goes to; `None` when no version has both weight and a
/// ready replica.
pub fn choose_version(versions: &[VersionShare], key: &str) -> Option<usize> {
    let weighted: Vec<(usize, u32)> = effective_weights(versions)
        .into_iter()
        .enumerate()
        .collect();
    pick(&weighted, unit_interval(key, ROUTE_SALT)).copied()
}

/// Whether the request `request_id` is one of the `percent` (in `[0, 100]`) that are mirrored.
pub fn mirrored(request_id: &str, percent: f64) -> bool {
    percent > 0.0 && unit_interval(request_id, SHADOW_SALT) < percent / 100.0
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn share(weight: u32, ready_replicas: usize) -> VersionShare {
        VersionShare {
            weight,
            ready_replicas,
        }
    }

    fn counts(versions: &[VersionShare], n: usize) -> Vec<usize> {
        let mut counts = vec![0; versions.len()];
        for i in 0..n {
            if let Some(v) = choose_version(versions, &format!("req-{i}")) {
                counts[v] += 1;
            }
        }
        counts
    }

    #[test]
    fn a_version_without_ready_replicas_hands_its_share_to_the_others_in_proportion() {
        // 60/30/10 with the middle version down: 60/0/10, i.e. 6/7 and 1/7.
        let versions = [share(60, 2), share(30, 0), share(10, 1)];
        assert_eq!(effective_weights(&versions), vec![60, 0, 10]);
        let c = counts(&versions, 14_000);
        assert_eq!(c[1], 0);
        // Binomial(14000, 1/7): sd ≈ 41; 5 sd.
        assert!((c[2] as f64 - 2000.0).abs() < 205.0, "{c:?}");
        assert_eq!(c[0] + c[2], 14_000);
    }

    #[test]
    fn no_version_with_weight_and_a_ready_replica_means_no_choice() {
        assert_eq!(choose_version(&[share(1, 0), share(0, 3)], "k"), None);
        assert_eq!(choose_version(&[], "k"), None);
        assert_eq!(choose_version(&[share(0, 3), share(5, 1)], "k"), Some(1));
    }

    #[test]
    fn the_sticky_value_decides_when_present_and_not_empty() {
        assert_eq!(route_key(Some("user-7"), "req-1"), "user-7");
        assert_eq!(route_key(Some(""), "req-1"), "req-1");
        assert_eq!(route_key(None, "req-1"), "req-1");
    }

    #[test]
    fn mirroring_takes_the_percent_asked_and_is_independent_of_routing() {
        let versions = [share(50, 1), share(50, 1)];
        let ids: Vec<String> = (0..10_000).map(|i| format!("req-{i}")).collect();
        let mirrored_ids: Vec<&String> = ids.iter().filter(|id| mirrored(id, 20.0)).collect();
        // Binomial(10000, 0.2): sd = 40; 5 sd.
        assert!((mirrored_ids.len() as f64 - 2000.0).abs() < 200.0);
        let to_second = mirrored_ids
            .iter()
            .filter(|id| choose_version(&versions, id) == Some(1))
            .count();
        // Half of the mirrored ones go to each version: Binomial(~2000, 0.5), sd ≈ 22.
        assert!((to_second as f64 - mirrored_ids.len() as f64 / 2.0).abs() < 112.0);
        assert!(ids.iter().all(|id| !mirrored(id, 0.0)));
        assert!(ids.iter().all(|id| mirrored(id, 100.0)));
    }

    proptest! {
        #[test]
        fn the_chosen_version_has_weight_and_a_ready_replica(
            versions in prop::collection::vec((0u32..5, 0usize..3), 0..6),
            key in "[a-z0-9]{1,12}",
        ) {
            let versions: Vec<VersionShare> =
                versions.into_iter().map(|(w, r)| share(w, r)).collect();
            let any_eligible = versions.iter().any(|v| v.weight > 0 && v.ready_replicas > 0);
            match choose_version(&versions, &key) {
                Some(i) => {
                    prop_assert!(versions[i].weight > 0 && versions[i].ready_replicas > 0);
                }
                None => prop_assert!(!any_eligible),
            }
        }
    }
}
