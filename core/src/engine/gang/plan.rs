//! A gang's layout and policies, checked once: roles in their canonical order, exit-code rules
//! with the defaults appended, the restart budget and the checkpoint interval.

use std::fmt;
use std::str::FromStr;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};

use crate::api::{FailureAction, Gang, SuccessPolicy};
use crate::suggest::unknown_name_hint;

/// The most replicas of one role.
pub const MAX_REPLICAS: u32 = 1024;
/// Whole-gang restarts after failures when `failurePolicy.maxRestarts` is omitted.
pub const DEFAULT_MAX_RESTARTS: u32 = 3;
/// The exit code of `toucan-worker train` stopped by a signal after writing a checkpoint.
pub const CHECKPOINTED_EXIT: i32 = 75;

/// A replica's role. The order is the ranks' order: the chief is rank 0, then the workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Chief,
    Worker,
    Ps,
    Evaluator,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Chief, Role::Worker, Role::Ps, Role::Evaluator];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Chief => "chief",
            Role::Worker => "worker",
            Role::Ps => "ps",
            Role::Evaluator => "evaluator",
        }
    }

    /// Chief and worker replicas train together (they form torch.distributed's world).
    pub fn trains(self) -> bool {
        matches!(self, Role::Chief | Role::Worker)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
                format!(
                    "unknown role {s:?}{}",
                    unknown_name_hint(s, &names, "roles")
                )
            })
    }
}

/// One replica of a gang: `worker-1`, as it is written in JSON too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct ReplicaId {
    pub role: Role,
    pub index: u32,
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.role, self.index)
    }
}

impl From<ReplicaId> for String {
    fn from(r: ReplicaId) -> String {
        r.to_string()
    }
}

impl TryFrom<String> for ReplicaId {
    type Error = String;
    fn try_from(s: String) -> Result<ReplicaId, String> {
        s.parse()
    }
}

impl FromStr for ReplicaId {
    type Err = String;
    /// `worker-1`.
    fn from_str(s: &str) -> Result<ReplicaId, String> {
        let (role, index) = s
            .rsplit_once('-')
            .ok_or_else(|| format!("{s:?} is not a replica: write ROLE-INDEX, as worker-0"))?;
        let index = index
            .parse()
            .map_err(|_| format!("{s:?} is not a replica: {index:?} is not an index"))?;
        Ok(ReplicaId {
            role: role.parse()?,
            index,
        })
    }
}

/// An inclusive range of exit codes and what it means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitRule {
    pub first: i32,
    pub last: i32,
    pub action: FailureAction,
}

/// The defaults after a job's own rules: a checkpointed stop restarts, a program's error
/// fails, a signal (OOM kill, SIGKILL) restarts.
pub const DEFAULT_RULES: [ExitRule; 3] = [
    ExitRule {
        first: CHECKPOINTED_EXIT,
        last: CHECKPOINTED_EXIT,
        action: FailureAction::Restart,
    },
    ExitRule {
        first: 1,
        last: 127,
        action: FailureAction::Fail,
    },
    ExitRule {
        first: 128,
        last: 255,
        action: FailureAction::Restart,
    },
];

/// How often replicas checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CheckpointEvery {
    Epochs(u32),
    Steps(u64),
}

impl CheckpointEvery {
    /// `1 epoch`, `2 epochs`, `500 steps`.
    pub fn parse(text: &str) -> Result<CheckpointEvery, String> {
        let bad = || format!("{text:?} is not an interval: write `N epochs` or `N steps`");
        let (count, unit) = text
            .trim()
            .split_once(char::is_whitespace)
            .ok_or_else(bad)?;
        let unit = unit.trim();
        match unit {
            "epoch" | "epochs" => match count.parse::<u32>() {
                Ok(n) if n >= 1 => Ok(CheckpointEvery::Epochs(n)),
                _ => Err(bad()),
            },
            "step" | "steps" => match count.parse::<u64>() {
                Ok(n) if n >= 1 => Ok(CheckpointEvery::Steps(n)),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }

    /// As `toucan-worker train` reads it from `TOUCAN_CHECKPOINT_EVERY`.
    pub fn env_value(self) -> String {
        match self {
            CheckpointEvery::Epochs(n) => format!("{n} epochs"),
            CheckpointEvery::Steps(n) => format!("{n} steps"),
        }
    }
}

/// A gang, checked: what the engine and the env contract work from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GangPlan {
    /// Replicas per role, chief first.
    pub roles: Vec<(Role, u32)>,
    pub success_policy: SuccessPolicy,
    /// The job's rules, then [`DEFAULT_RULES`]; the first match wins.
    pub rules: Vec<ExitRule>,
    pub max_restarts: u32,
    pub checkpoint_every: Option<CheckpointEvery>,
}

/// A problem with a gang's fields: the path below the step or job spec (`roles.foo`), and
/// what is wrong.
pub type GangProblem = (String, String);

impl GangPlan {
    /// Checks a gang's fields, reporting every problem with its path.
    pub fn new(gang: Gang<'_>) -> Result<GangPlan, Vec<GangProblem>> {
        let mut problems = Vec::new();
        let mut roles = Vec::new();
        for (name, spec) in gang.roles {
            let path = format!("roles.{name}");
            let role = match name.parse::<Role>() {
                Ok(r) => r,
                Err(e) => {
                    problems.push((path, e));
                    continue;
                }
            };
            if spec.replicas < 1 || spec.replicas > MAX_REPLICAS {
                problems.push((
                    format!("{path}.replicas"),
                    format!("{} replicas: give 1 to {MAX_REPLICAS}", spec.replicas),
                ));
            } else if role == Role::Chief && spec.replicas > 1 {
                problems.push((
                    format!("{path}.replicas"),
                    format!("{} chiefs: a job has one chief at most", spec.replicas),
                ));
            }
            roles.push((role, spec.replicas));
        }
        roles.sort();
        let has = |r: Role| roles.iter().any(|(role, _)| *role == r);
        if gang.roles.is_empty() {
            problems.push(("roles".into(), "give at least one role".into()));
        } else if !has(Role::Chief) && !has(Role::Worker) && problems.is_empty() {
            problems.push((
                "roles".into(),
                "a job needs a chief or workers: ps and evaluator replicas do not train".into(),
            ));
        }
        if has(Role::Ps) && !has(Role::Worker) {
            problems.push((
                "roles.ps".into(),
                "parameter servers serve workers: add a worker role".into(),
            ));
        }
        let success_policy = gang.success_policy.unwrap_or_default();
        if success_policy == SuccessPolicy::AllWorkers && !has(Role::Worker) {
            problems.push((
                "successPolicy".into(),
                "AllWorkers waits for the worker role, which this job lacks (use ChiefOrWorker0)"
                    .into(),
            ));
        }
        let mut rules = Vec::new();
        if let Some(policy) = gang.failure_policy {
            for (i, rule) in policy.rules.iter().enumerate() {
                let path = format!("failurePolicy.rules[{i}].exitCodes");
                if rule.exit_codes.is_empty() {
                    problems.push((path.clone(), "give at least one exit code".into()));
                }
                for (j, code) in rule.exit_codes.iter().enumerate() {
                    let path = format!("{path}[{j}]");
                    let (first, last) = match exit_range(code) {
                        Ok(r) => r,
                        Err(e) => {
                            problems.push((path, e));
                            continue;
                        }
                    };
                    let earlier = rules
                        .iter()
                        .position(|r: &(ExitRule, String)| r.0.first <= last && first <= r.0.last);
                    if let Some(k) = earlier {
                        problems.push((
                            path,
                            format!(
                                "{} overlaps {} at {}: the first match wins, so write each code once",
                                range_text(first, last),
                                range_text(rules[k].0.first, rules[k].0.last),
                                rules[k].1,
                            ),
                        ));
                        continue;
                    }
                    rules.push((
                        ExitRule {
                            first,
                            last,
                            action: rule.action,
                        },
                        format!("failurePolicy.rules[{i}].exitCodes[{j}]"),
                    ));
                }
            }
        }
        let checkpoint_every = match gang.checkpoint.and_then(|c| c.every.as_deref()) {
            None => None,
            Some(text) => match CheckpointEvery::parse(text) {
                Ok(every) => Some(every),
                Err(e) => {
                    problems.push(("checkpoint.every".into(), e));
                    None
                }
            },
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut rules: Vec<ExitRule> = rules.into_iter().map(|(r, _)| r).collect();
        rules.extend(DEFAULT_RULES);
        Ok(GangPlan {
            roles,
            success_policy,
            rules,
            max_restarts: gang
                .failure_policy
                .and_then(|p| p.max_restarts)
                .unwrap_or(DEFAULT_MAX_RESTARTS),
            checkpoint_every,
        })
    }

    /// Every replica, chief first, then by role and index.
    pub fn replicas(&self) -> impl Iterator<Item = ReplicaId> + '_ {
        self.roles
            .iter()
            .flat_map(|&(role, n)| (0..n).map(move |index| ReplicaId { role, index }))
    }

    pub fn count(&self, role: Role) -> u32 {
        self.roles
            .iter()
            .find(|(r, _)| *r == role)
            .map_or(0, |(_, n)| *n)
    }

    pub fn total(&self) -> u32 {
        self.roles.iter().map(|(_, n)| n).sum()
    }

    /// The replica whose outputs are the job's: the chief, else worker 0. Rank 0.
    pub fn leader(&self) -> ReplicaId {
        let role = if self.count(Role::Chief) > 0 {
            Role::Chief
        } else {
            Role::Worker
        };
        ReplicaId { role, index: 0 }
    }

    /// The replicas that train together: chief and workers.
    pub fn world_size(&self) -> u32 {
        self.count(Role::Chief) + self.count(Role::Worker)
    }

    /// A training replica's torch.distributed rank: the chief is 0, then the workers.
    pub fn rank(&self, replica: ReplicaId) -> Option<u32> {
        match replica.role {
            Role::Chief => Some(0),
            Role::Worker => Some(self.count(Role::Chief) + replica.index),
            Role::Ps | Role::Evaluator => None,
        }
    }

    /// What an exit code means: the first matching rule's action; a code no rule covers
    /// (outside 1-255) fails.
    pub fn action(&self, code: i32) -> FailureAction {
        self.rules
            .iter()
            .find(|r| r.first <= code && code <= r.last)
            .map_or(FailureAction::Fail, |r| r.action)
    }

    /// The role layout as it enters the cache key: `chief=1,worker=2`.
    pub fn layout(&self) -> String {
        self.roles
            .iter()
            .map(|(r, n)| format!("{r}={n}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn range_text(first: i32, last: i32) -> String {
    if first == last {
        first.to_string()
    } else {
        format!("{first}-{last}")
    }
}

/// `3` or `"128-255"`, within 1-255.
fn exit_range(code: &IntOrString) -> Result<(i32, i32), String> {
    let check = |n: i64| -> Result<i32, String> {
        match n {
            0 => Err("exit code 0 is success, not a failure".into()),
            1..=255 => Ok(n as i32),
            _ => Err(format!(
                "exit code {n} is out of range: exit codes are 1 to 255"
            )),
        }
    };
    match code {
        IntOrString::Int(n) => check(i64::from(*n)).map(|n| (n, n)),
        IntOrString::String(text) => {
            let bad = || format!("{text:?} is not an exit code or a range like \"128-255\"");
            let (a, b) = match text.split_once('-') {
                Some((a, b)) => (a.trim(), b.trim()),
                None => (text.trim(), text.trim()),
            };
            let a = check(a.parse::<i64>().map_err(|_| bad())?)?;
            let b = check(b.parse::<i64>().map_err(|_| bad())?)?;
            if a > b {
                return Err(format!(
                    "{text:?} is an empty range: write the lower code first"
                ));
            }
            Ok((a, b))
        }
    }
}
