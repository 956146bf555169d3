//! Which replica's log `toucan logs` shows for a distributed step: one choice, whether the
//! attempt's replicas are the local runtime's directories (`INCARNATION/ROLE-INDEX/`) or a
//! cluster's pods (labelled with both).

use toucan_core::engine::gang::{ReplicaId, Role};

/// Which replica's log of a distributed step: `--replica ROLE-INDEX` (the leader when
/// omitted) of `--incarnation N` (the last when omitted).
#[derive(Clone, Debug, Default)]
pub struct ReplicaChoice {
    pub replica: Option<String>,
    pub incarnation: Option<u32>,
}

impl ReplicaChoice {
    pub fn given(&self) -> bool {
        self.replica.is_some() || self.incarnation.is_some()
    }
}

/// The leader of a gang whose replicas `started` (`ROLE-INDEX` each): its chief when it has
/// one, else worker 0, as the gang plan says.
pub fn leader<'a>(mut started: impl Iterator<Item = &'a str>) -> String {
    let role = if started.any(|r| r.parse::<ReplicaId>().is_ok_and(|r| r.role == Role::Chief)) {
        Role::Chief
    } else {
        Role::Worker
    };
    ReplicaId { role, index: 0 }.to_string()
}

/// Chooses among the replicas of one attempt that started, each `(incarnation, ROLE-INDEX)`:
/// the incarnation `--incarnation` names, else the newest; in it, the replica `--replica`
/// names, else `leader`. `Ok`: its index in `started`; `Err` says why none fits, naming
/// those there are.
pub fn choose(
    started: &[(u32, &str)],
    leader: &str,
    choice: &ReplicaChoice,
) -> Result<usize, String> {
    let mut incarnations: Vec<u32> = started.iter().map(|(i, _)| *i).collect();
    incarnations.sort_unstable();
    incarnations.dedup();
    let incarnation = match choice.incarnation {
        Some(n) if incarnations.contains(&n) => n,
        Some(n) => {
            let known: Vec<String> = incarnations.iter().map(u32::to_string).collect();
            return Err(format!(
                "no incarnation {n} (incarnations: {})",
                known.join(", ")
            ));
        }
        None => *incarnations.last().ok_or("no replica ever started")?,
    };
    let mut names: Vec<&str> = started
        .iter()
        .filter(|(i, _)| *i == incarnation)
        .map(|(_, name)| *name)
        .collect();
    names.sort_unstable();
    names.dedup();
    let name = choice.replica.as_deref().unwrap_or(leader);
    started
        .iter()
        .position(|&(i, r)| (i, r) == (incarnation, name))
        .ok_or_else(|| {
            format!(
                "no replica {name:?} in incarnation {incarnation} (replicas: {})",
                names.join(", ")
            )
        })
}

/// Why `--replica`/`--incarnation` do not apply to a step.
pub fn not_distributed(run: &str, step: &str) -> String {
    format!(
        "step {step:?} of run {run:?} is not distributed: it has no replicas \
         (--replica, --incarnation)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choice(replica: Option<&str>, incarnation: Option<u32>) -> ReplicaChoice {
        ReplicaChoice {
            replica: replica.map(str::to_string),
            incarnation,
        }
    }

    const RESTARTED: &[(u32, &str)] = &[
        (0, "worker-0"),
        (0, "worker-1"),
        (0, "chief-0"),
        (1, "worker-1"),
        (1, "chief-0"),
        (1, "worker-0"),
    ];

    #[test]
    fn the_leader_is_the_chief_else_worker_zero() {
        let names = |s: &[&'static str]| leader(s.iter().copied());
        assert_eq!(names(&["worker-1", "chief-0", "ps-0"]), "chief-0");
        assert_eq!(names(&["worker-1", "worker-0", "evaluator-0"]), "worker-0");
        // A name that is no replica names no role.
        assert_eq!(names(&["chief", "chief-x"]), "worker-0");
        assert_eq!(names(&[]), "worker-0");
    }

    fn chosen(
        started: &[(u32, &'static str)],
        leader: &str,
        choice: &ReplicaChoice,
    ) -> Result<(u32, &'static str), String> {
        choose(started, leader, choice).map(|i| started[i])
    }

    #[test]
    fn by_default_the_leader_of_the_newest_incarnation() {
        assert_eq!(
            chosen(RESTARTED, "chief-0", &choice(None, None)),
            Ok((1, "chief-0"))
        );
        assert_eq!(
            chosen(RESTARTED, "chief-0", &choice(Some("worker-1"), Some(0))),
            Ok((0, "worker-1"))
        );
        assert_eq!(
            chosen(RESTARTED, "chief-0", &choice(None, Some(0))),
            Ok((0, "chief-0"))
        );
    }

    #[test]
    fn what_is_not_there_is_named_with_what_is() {
        assert_eq!(
            chosen(RESTARTED, "chief-0", &choice(Some("worker-7"), None)),
            Err(
                "no replica \"worker-7\" in incarnation 1 (replicas: chief-0, worker-0, worker-1)"
                    .into()
            )
        );
        assert_eq!(
            chosen(RESTARTED, "chief-0", &choice(None, Some(4))),
            Err("no incarnation 4 (incarnations: 0, 1)".into())
        );
        // The leader's pod of the newest incarnation is gone.
        assert_eq!(
            chosen(&[(2, "worker-1")], "worker-0", &choice(None, None)),
            Err("no replica \"worker-0\" in incarnation 2 (replicas: worker-1)".into())
        );
        assert_eq!(
            chosen(&[], "worker-0", &choice(None, None)),
            Err("no replica ever started".into())
        );
    }
}
