//! Gang admission: whether every replica of a gang fits the nodes at once. Pure: nodes and
//! pods in, a verdict out, tested without a cluster.
//!
//! A gang's pods are created with a scheduling gate, so the scheduler places none of them
//! until the operator removes the gates of all of them together. It does so only when a
//! placement of the whole gang exists on the room the nodes have left: their allocatable
//! resources less the requests of the pods bound to them and of the pods released but not
//! yet placed. Two gangs that each fit alone but not together are then admitted one after
//! the other instead of each holding half of the accelerators the other needs.
//!
//! The placement is first-fit, largest replicas first, over the nodes a replica may use (its
//! node selector matched, the nodes' `NoSchedule` and `NoExecute` taints tolerated, the node
//! schedulable). It is the scheduler's own choice only in simple cases, so an admitted gang
//! may still wait a moment for the scheduler; it never holds a node the other gang needs
//! before it can run whole.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use toucan_core::manifest::parse_quantity;

/// The resources admission counts: every pod also takes one of its node's `pods`.
pub const COUNTED: &[&str] = &["cpu", "memory", "nvidia.com/gpu", "google.com/tpu", "pods"];

/// Amounts by resource name, in base units (cores, bytes, devices, pods).
pub type Amounts = BTreeMap<&'static str, f64>;

/// What a replica asks of a node.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Demand {
    pub requests: Amounts,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
}

/// One node as admission sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Room {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub schedulable: bool,
    pub allocatable: Amounts,
    /// What is left once the pods on it are counted.
    pub free: Amounts,
}

/// Whether a gang may be released.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Every replica has room now.
    Fits,
    /// Not now; it would on the nodes as they are when empty.
    Wait(String),
    /// Not even on empty nodes.
    Never(String),
}

/// The demand of a pod: its containers' requests (their limits where a request is missing, as
/// the API server defaults them), one `pods`, its selector and tolerations.
pub fn demand(pod: &Pod) -> Demand {
    let mut requests = Amounts::new();
    requests.insert("pods", 1.0);
    let Some(spec) = &pod.spec else {
        return Demand {
            requests,
            ..Demand::default()
        };
    };
    for c in &spec.containers {
        let r = c.resources.as_ref();
        let asked = r.and_then(|r| r.requests.as_ref());
        let limited = r.and_then(|r| r.limits.as_ref());
        for &name in COUNTED {
            let q = asked
                .and_then(|m| m.get(name))
                .or_else(|| limited.and_then(|m| m.get(name)));
            if let Some(amount) = q.and_then(|q| parse_quantity(&q.0).ok()) {
                *requests.entry(name).or_default() += amount;
            }
        }
    }
    Demand {
        requests,
        node_selector: spec.node_selector.clone().unwrap_or_default(),
        tolerations: spec.tolerations.clone().unwrap_or_default(),
    }
}

/// The room of `nodes` once `pods` are counted: the pods bound to a node take from it; those
/// released but not yet bound are placed first, as the scheduler will place them.
pub fn rooms(nodes: &[Node], pods: &[Pod]) -> Vec<Room> {
    let mut rooms: Vec<Room> = nodes.iter().map(room).collect();
    let mut unbound = Vec::new();
    for pod in pods.iter().filter(|p| !finished(p)) {
        let spec = pod.spec.as_ref();
        match spec.and_then(|s| s.node_name.as_deref()) {
            Some(node) => {
                if let Some(r) = rooms.iter_mut().find(|r| r.name == node) {
                    take(&mut r.free, &demand(pod).requests);
                }
            }
            None if spec.is_some_and(|s| s.scheduling_gates.iter().flatten().next().is_none()) => {
                unbound.push(demand(pod));
            }
            None => {}
        }
    }
    // Placed where they fit; one that fits nowhere takes nothing.
    let _ = place(&mut rooms, unbound);
    rooms
}

/// Whether `gang` fits `rooms` now, or ever.
pub fn admit(rooms: &[Room], gang: &[Demand]) -> Verdict {
    let mut now = rooms.to_vec();
    if place(&mut now, gang.to_vec()) {
        return Verdict::Fits;
    }
    let mut empty: Vec<Room> = rooms
        .iter()
        .map(|r| Room {
            free: r.allocatable.clone(),
            ..r.clone()
        })
        .collect();
    if place(&mut empty, gang.to_vec()) {
        return Verdict::Wait(format!(
            "waiting for room: {} (free on the nodes it may use: {})",
            asked_text(gang),
            room_text(rooms, gang, |r| &r.free)
        ));
    }
    Verdict::Never(format!(
        "the gang can never fit the cluster: {}, and the nodes it may use have {}",
        asked_text(gang),
        room_text(rooms, gang, |r| &r.allocatable)
    ))
}

/// First fit, largest first; whether every demand found a node. `rooms` keeps what the
/// placed ones took.
fn place(rooms: &mut [Room], mut demands: Vec<Demand>) -> bool {
    demands.sort_by(|a, b| size(b).total_cmp(&size(a)));
    let mut all = true;
    for d in &demands {
        match rooms
            .iter_mut()
            .find(|r| eligible(r, d) && has_room(&r.free, &d.requests))
        {
            Some(r) => take(&mut r.free, &d.requests),
            None => all = false,
        }
    }
    all
}

/// Accelerators first, then cores, then memory: the scarcest placed first.
fn size(d: &Demand) -> f64 {
    let get = |k| d.requests.get(k).copied().unwrap_or(0.0);
    (get("nvidia.com/gpu") + get("google.com/tpu")) * 1e15 + get("cpu") * 1e12 + get("memory")
}

fn eligible(room: &Room, d: &Demand) -> bool {
    room.schedulable
        && d.node_selector
            .iter()
            .all(|(k, v)| room.labels.get(k) == Some(v))
        && room
            .taints
            .iter()
            .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
            .all(|t| d.tolerations.iter().any(|tol| tolerates(tol, t)))
}

fn tolerates(tol: &Toleration, taint: &Taint) -> bool {
    if tol
        .effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != taint.effect)
    {
        return false;
    }
    match (tol.key.as_deref(), tol.operator.as_deref()) {
        // An empty key with Exists tolerates everything.
        (None | Some(""), Some("Exists")) => true,
        (Some(key), Some("Exists")) => key == taint.key,
        (Some(key), _) => key == taint.key && tol.value == taint.value,
        (None, _) => false,
    }
}

/// Whether `free` holds `asked`. A resource the node does not list has none of it.
fn has_room(free: &Amounts, asked: &Amounts) -> bool {
    asked
        .iter()
        .all(|(k, v)| *v <= 0.0 || free.get(k).copied().unwrap_or(0.0) + 1e-9 >= *v)
}

fn take(free: &mut Amounts, asked: &Amounts) {
    for (k, v) in asked {
        *free.entry(k).or_default() -= v;
    }
}

fn room(node: &Node) -> Room {
    let status = node.status.as_ref();
    let mut allocatable = Amounts::new();
    let listed = status.and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()));
    for &name in COUNTED {
        if let Some(amount) = listed
            .and_then(|m| m.get(name))
            .and_then(|q| parse_quantity(&q.0).ok())
        {
            allocatable.insert(name, amount);
        }
    }
    let spec = node.spec.as_ref();
    Room {
        name: node.metadata.name.clone().unwrap_or_default(),
        labels: node.metadata.labels.clone().unwrap_or_default(),
        taints: spec.and_then(|s| s.taints.clone()).unwrap_or_default(),
        schedulable: !spec.and_then(|s| s.unschedulable).unwrap_or(false),
        free: allocatable.clone(),
        allocatable,
    }
}

fn finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// The resources a gang asks for, in all: `2 replicas ask for 8 nvidia.com/gpu, 4 cpu`.
fn asked_text(gang: &[Demand]) -> String {
    let totals = totals(gang.iter().map(|d| &d.requests));
    format!(
        "its {} replica{} ask for {}",
        gang.len(),
        if gang.len() == 1 { "" } else { "s" },
        amounts_text(&totals, &totals)
    )
}

/// What the nodes usable by every replica of `gang` have of what it asks for.
fn room_text(rooms: &[Room], gang: &[Demand], of: impl Fn(&Room) -> &Amounts) -> String {
    let asked = totals(gang.iter().map(|d| &d.requests));
    let usable: Vec<&Room> = rooms
        .iter()
        .filter(|r| gang.iter().any(|d| eligible(r, d)))
        .collect();
    if usable.is_empty() {
        return "none (no node matches its node selector and tolerations)".into();
    }
    let have = totals(usable.iter().map(|r| of(r)));
    amounts_text(&have, &asked)
}

fn totals<'a>(each: impl Iterator<Item = &'a Amounts>) -> Amounts {
    let mut out = Amounts::new();
    for a in each {
        for (k, v) in a {
            *out.entry(k).or_default() += v.max(0.0);
        }
    }
    out
}

/// `amounts`, limited to the resources `asked` names (but `pods`), scarcest first.
fn amounts_text(amounts: &Amounts, asked: &Amounts) -> String {
    let order = ["nvidia.com/gpu", "google.com/tpu", "cpu", "memory"];
    let parts: Vec<String> = order
        .iter()
        .filter(|k| asked.get(*k).is_some_and(|v| *v > 0.0))
        .map(|k| {
            let v = amounts.get(k).copied().unwrap_or(0.0).max(0.0);
            match *k {
                "memory" => format!("{:.1}Gi memory", v / f64::from(1u32 << 30)),
                "cpu" => format!("{} cpu", trim(v)),
                other => format!("{} {other}", trim(v)),
            }
        })
        .collect();
    if parts.is_empty() {
        "room for its pods".into()
    } else {
        parts.join(", ")
    }
}

fn trim(v: f64) -> String {
    let text = format!("{v:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use k8s_openapi::api::core::v1::{
        Container, NodeSpec, NodeStatus, PodSchedulingGate, PodSpec, PodStatus,
        ResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn node(name: &str, gpus: u32, taint: Option<&str>) -> Node {
        let q = |s: &str| Quantity(s.into());
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                taints: taint.map(|key| {
                    vec![Taint {
                        key: key.into(),
                        value: Some("true".into()),
                        effect: "NoSchedule".into(),
                        ..Taint::default()
                    }]
                }),
                ..NodeSpec::default()
            }),
            status: Some(NodeStatus {
                allocatable: Some(BTreeMap::from([
                    ("cpu".into(), q("16")),
                    ("memory".into(), q("64Gi")),
                    ("pods".into(), q("110")),
                    ("nvidia.com/gpu".into(), q(&gpus.to_string())),
                ])),
                ..NodeStatus::default()
            }),
        }
    }

    fn pod(gpus: u32, node: Option<&str>, gated: bool, phase: &str) -> Pod {
        Pod {
            spec: Some(PodSpec {
                node_name: node.map(String::from),
                scheduling_gates: gated.then(|| {
                    vec![PodSchedulingGate {
                        name: "toucan.dev/gang".into(),
                    }]
                }),
                containers: vec![Container {
                    name: "step".into(),
                    resources: Some(ResourceRequirements {
                        requests: Some(BTreeMap::from([("cpu".into(), Quantity("1".into()))])),
                        limits: Some(BTreeMap::from([(
                            "nvidia.com/gpu".into(),
                            Quantity(gpus.to_string()),
                        )])),
                        ..ResourceRequirements::default()
                    }),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    fn gang(replicas: usize, gpus: u32) -> Vec<Demand> {
        (0..replicas)
            .map(|_| demand(&pod(gpus, None, true, "Pending")))
            .collect()
    }

    #[test]
    fn a_gang_waits_while_another_holds_the_accelerators_it_needs() {
        // Six GPUs on two nodes; a gang of two 2-GPU replicas runs on them.
        let nodes = [node("a", 4, None), node("b", 2, None)];
        let running = [
            pod(2, Some("a"), false, "Running"),
            pod(2, Some("b"), false, "Running"),
        ];
        let rooms = rooms(&nodes, &running);
        assert_eq!(admit(&rooms, &gang(1, 2)), Verdict::Fits);
        let verdict = admit(&rooms, &gang(2, 2));
        let Verdict::Wait(why) = verdict else {
            panic!("{verdict:?}")
        };
        assert!(
            why.contains("its 2 replicas ask for 4 nvidia.com/gpu, 2 cpu")
                && why.contains("free on the nodes it may use: 2 nvidia.com/gpu"),
            "{why}"
        );
        // Finished pods hold nothing: the same gang fits once they are done.
        let done = [
            pod(2, Some("a"), false, "Succeeded"),
            pod(2, Some("b"), false, "Failed"),
        ];
        assert_eq!(
            admit(&super::rooms(&nodes, &done), &gang(2, 2)),
            Verdict::Fits
        );
    }

    #[test]
    fn released_pods_not_yet_placed_count_but_gated_ones_do_not() {
        let nodes = [node("a", 4, None)];
        let released = [pod(4, None, false, "Pending")];
        assert!(matches!(
            admit(&rooms(&nodes, &released), &gang(1, 4)),
            Verdict::Wait(_)
        ));
        let gated = [pod(4, None, true, "Pending")];
        assert_eq!(admit(&rooms(&nodes, &gated), &gang(1, 4)), Verdict::Fits);
    }

    #[test]
    fn a_gang_larger_than_the_cluster_never_fits() {
        let nodes = [node("a", 4, None), node("b", 2, None)];
        let verdict = admit(&rooms(&nodes, &[]), &gang(2, 4));
        let Verdict::Never(why) = verdict else {
            panic!("{verdict:?}")
        };
        assert_eq!(
            why,
            "the gang can never fit the cluster: its 2 replicas ask for 8 nvidia.com/gpu, 2 cpu, \
             and the nodes it may use have 6 nvidia.com/gpu, 32 cpu"
        );
        // Enough GPUs in all, but no node has 3 of them for one replica.
        let split = [node("a", 2, None), node("b", 2, None)];
        assert!(matches!(
            admit(&rooms(&split, &[]), &gang(1, 3)),
            Verdict::Never(_)
        ));
    }

    #[test]
    fn taints_and_selectors_decide_which_nodes_a_replica_may_use() {
        let nodes = [node("tainted", 8, Some("cluster.toucan.dev/scripted"))];
        let mut replicas = gang(1, 4);
        assert!(matches!(
            admit(&rooms(&nodes, &[]), &replicas),
            Verdict::Never(ref why) if why.contains("none (no node matches")
        ));
        replicas[0].tolerations.push(Toleration {
            key: Some("cluster.toucan.dev/scripted".into()),
            operator: Some("Exists".into()),
            ..Toleration::default()
        });
        assert_eq!(admit(&rooms(&nodes, &[]), &replicas), Verdict::Fits);
        replicas[0]
            .node_selector
            .insert("pool".into(), "big".into());
        assert!(matches!(
            admit(&rooms(&nodes, &[]), &replicas),
            Verdict::Never(_)
        ));
    }
}
