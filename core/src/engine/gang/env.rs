//! The env contract every replica gets, in both runtimes: Kubeflow's `TF_CONFIG`, the
//! torch.distributed variables, and toucan's own. Only the addresses differ between runtimes
//! (loopback ports locally, stable DNS names behind a headless Service in a cluster).

use std::collections::BTreeMap;

use super::{GangPlan, ReplicaId, Role};

/// The variables toucan sets for every replica; a job's `env` may not set them.
pub const RESERVED: &[&str] = &[
    "TF_CONFIG",
    "MASTER_ADDR",
    "MASTER_PORT",
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
    "TOUCAN_CHECKPOINT_DIR",
    "TOUCAN_CHECKPOINT_EVERY",
    "TOUCAN_ROLE",
    "TOUCAN_REPLICA",
    "TOUCAN_REPLICA_INDEX",
    "TOUCAN_INCARNATION",
];

/// One replica's address: where its peers reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// The env contract of replica `me` of gang incarnation `incarnation`, with every replica's
/// address from `address`.
pub fn contract(
    plan: &GangPlan,
    me: ReplicaId,
    incarnation: u32,
    address: impl Fn(ReplicaId) -> Address,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    // Kubeflow's shape: the evaluator is not part of the training cluster.
    let mut cluster = serde_json::Map::new();
    for &(role, n) in &plan.roles {
        if role == Role::Evaluator {
            continue;
        }
        let hosts: Vec<serde_json::Value> = (0..n)
            .map(|index| address(ReplicaId { role, index }).to_string().into())
            .collect();
        cluster.insert(role.as_str().to_string(), hosts.into());
    }
    let tf_config = serde_json::json!({
        "cluster": cluster,
        "task": {"type": me.role.as_str(), "index": me.index},
        "environment": "cloud",
    });
    env.insert("TF_CONFIG".into(), tf_config.to_string());
    if let Some(rank) = plan.rank(me) {
        let master = address(plan.leader());
        env.insert("MASTER_ADDR".into(), master.host);
        env.insert("MASTER_PORT".into(), master.port.to_string());
        env.insert("WORLD_SIZE".into(), plan.world_size().to_string());
        env.insert("RANK".into(), rank.to_string());
        // One replica per pod (or process): its local rank is always 0.
        env.insert("LOCAL_RANK".into(), "0".into());
    }
    if let Some(every) = plan.checkpoint_every {
        env.insert("TOUCAN_CHECKPOINT_EVERY".into(), every.env_value());
    }
    env.insert("TOUCAN_ROLE".into(), me.role.as_str().into());
    env.insert("TOUCAN_REPLICA".into(), me.to_string());
    env.insert("TOUCAN_REPLICA_INDEX".into(), me.index.to_string());
    env.insert("TOUCAN_INCARNATION".into(), incarnation.to_string());
    env
}
