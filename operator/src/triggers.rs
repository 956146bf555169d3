//! Which watch events wake a PipelineRun's reconcile, and in which [`Class`] of the queue; and
//! which Pipeline a scheduled run's change wakes ([`pipeline_of`]).
//!
//! Every reconcile reads the run's document and its pods, so a wake-up that cannot change
//! anything still costs store and API round trips, and under load it takes a worker slot from a
//! run that has something to do. Two filters keep those out:
//!
//! - a PipelineRun wakes its reconcile when its spec (its generation, which deletion also bumps),
//!   its finalizers or its `toucan.dev/suspend` annotation change, not when its status does: the
//!   operator writes that status itself, at the end of the reconcile that decided it;
//! - a step pod wakes its run when it ends, when its deletion starts, and when it is gone: the
//!   only pod changes the run controller acts on. Its creation (the operator's own) and its way
//!   through Pending and Running do not, except for a gang's pod, whose start and whose mark
//!   for eviction (`DisruptionTarget`) its gang's engine hears of.
//!
//! The stores behind both watches still see every event: the filters sit after the reflectors.
//! A relist passes everything, so nothing is missed across a broken watch.
//!
//! A pod's change and a launcher's report are work for a run in progress ([`Class::Active`]);
//! so is a change to a run the operator has taken on (its finalizer or a status is written) or
//! that is being deleted. Any other run is a new run ([`Class::New`]), served after the work in
//! progress.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use toucan_core::api::{Pipeline, PipelineRun};

use crate::queue::Class;
use crate::run::FINALIZER;
use crate::run::gang::{GANG_LABEL, SUSPEND_ANNOTATION};
use crate::run::pods::{PodOutcome, outcome};

/// The queue class of a reconcile that a change to `run` asks for.
pub fn run_class(run: &PipelineRun) -> Class {
    // The operator's finalizer is its first write to a run: from then on the run is under way,
    // and its start should not wait behind new runs a second time.
    let taken_on = run.status.is_some() || run.finalizers().iter().any(|f| f == FINALIZER);
    if taken_on || run.metadata.deletion_timestamp.is_some() {
        Class::Active
    } else {
        Class::New
    }
}

/// A predicate on a PipelineRun's `toucan.dev/suspend` annotation (with `generation` and
/// `finalizers`, what wakes a run).
pub fn suspend_annotation(run: &PipelineRun) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    run.annotations().get(SUSPEND_ANNOTATION).hash(&mut hasher);
    Some(hasher.finish())
}

/// The PipelineRun that owns `pod`, if any.
pub fn run_of(pod: &Pod) -> Option<ObjectRef<PipelineRun>> {
    let namespace = pod.metadata.namespace.as_deref();
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .find_map(|o| ObjectRef::from_owner_ref(namespace, o, ()))
}

/// The Pipeline that owns `run` (its schedule started it), if any.
pub fn pipeline_of(run: &PipelineRun) -> Option<ObjectRef<Pipeline>> {
    let namespace = run.namespace();
    run.owner_references()
        .iter()
        .find_map(|o| ObjectRef::from_owner_ref(namespace.as_deref(), o, ()))
}

/// What the run controller can see of a pod: whether it ended and whether it is being deleted;
/// of a gang's pod also whether it started and whether it is marked for eviction, which its
/// gang's engine hears of.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct PodView {
    ended: bool,
    deleting: bool,
    gang_started: bool,
    gang_disrupted: bool,
}

impl PodView {
    fn of(pod: &Pod) -> Self {
        let gang = pod
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(GANG_LABEL));
        let status = pod.status.as_ref();
        PodView {
            ended: matches!(outcome(pod), PodOutcome::Ended { .. }),
            deleting: pod.metadata.deletion_timestamp.is_some(),
            gang_started: gang
                && status
                    .and_then(|s| s.phase.as_deref())
                    .is_some_and(|p| p != "Pending"),
            gang_disrupted: gang
                && status.and_then(|s| s.conditions.as_ref()).is_some_and(|c| {
                    c.iter()
                        .any(|c| c.type_ == "DisruptionTarget" && c.status == "True")
                }),
        }
    }
}

/// Passes the pod watch events that change what the run controller sees; see the module docs.
///
/// Stateful: keep one per watch stream, used in order (`StreamExt::filter`).
#[derive(Debug, Default)]
pub struct PodChanges {
    seen: HashMap<String, PodView>,
}

impl PodChanges {
    /// Whether `event` should reach the controller.
    pub fn passes(&mut self, event: &Result<watcher::Event<Pod>, watcher::Error>) -> bool {
        let Ok(event) = event else {
            return true;
        };
        match event {
            watcher::Event::Init => {
                self.seen.clear();
                true
            }
            watcher::Event::InitApply(pod) => {
                if let Some(uid) = &pod.metadata.uid {
                    self.seen.insert(uid.clone(), PodView::of(pod));
                }
                true
            }
            watcher::Event::InitDone => true,
            watcher::Event::Apply(pod) => {
                let Some(uid) = &pod.metadata.uid else {
                    return true;
                };
                let view = PodView::of(pod);
                // A pod not seen before was created live and whole: that is no news.
                let before = self.seen.insert(uid.clone(), view).unwrap_or_default();
                view != before
            }
            watcher::Event::Delete(pod) => {
                if let Some(uid) = &pod.metadata.uid {
                    self.seen.remove(uid);
                }
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStatus, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::run::pods::STEP_CONTAINER;

    fn pod(uid: &str, phase: &str) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.uid = Some(uid.into());
        let terminated = matches!(phase, "Succeeded" | "Failed").then(|| ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: i32::from(phase == "Failed"),
                ..Default::default()
            }),
            ..Default::default()
        });
        pod.status = Some(PodStatus {
            phase: Some(phase.into()),
            container_statuses: Some(vec![ContainerStatus {
                name: STEP_CONTAINER.into(),
                state: terminated,
                ..Default::default()
            }]),
            ..Default::default()
        });
        pod
    }

    fn apply(pod: Pod) -> Result<watcher::Event<Pod>, watcher::Error> {
        Ok(watcher::Event::Apply(pod))
    }

    #[test]
    fn a_pod_wakes_its_run_when_it_ends_not_on_its_way_there() {
        let mut f = PodChanges::default();
        assert!(!f.passes(&apply(pod("a", "Pending"))), "created");
        assert!(!f.passes(&apply(pod("a", "Pending"))), "scheduled");
        assert!(!f.passes(&apply(pod("a", "Running"))), "running");
        assert!(f.passes(&apply(pod("a", "Succeeded"))), "ended");
        assert!(!f.passes(&apply(pod("a", "Succeeded"))), "same again");
    }

    #[test]
    fn a_pod_first_seen_ended_wakes_its_run() {
        let mut f = PodChanges::default();
        assert!(f.passes(&apply(pod("b", "Failed"))));
    }

    #[test]
    fn deletion_wakes_the_run_when_it_starts_and_when_the_pod_is_gone() {
        let mut f = PodChanges::default();
        let mut p = pod("c", "Running");
        assert!(!f.passes(&apply(p.clone())));
        p.metadata.deletion_timestamp = Some(Time(Default::default()));
        assert!(f.passes(&apply(p.clone())), "deletion started");
        assert!(!f.passes(&apply(p.clone())), "still terminating");
        assert!(f.passes(&Ok(watcher::Event::Delete(p))), "gone");
    }

    #[test]
    fn a_run_not_yet_taken_on_is_new_and_one_taken_on_or_deleted_is_active() {
        let spec = toucan_core::api::PipelineRunSpec {
            pipeline_ref: None,
            pipeline_spec: None,
            params: Vec::new(),
        };
        let mut run = PipelineRun::new("r", spec);
        assert_eq!(run_class(&run), Class::New);
        run.metadata.deletion_timestamp = Some(Time(Default::default()));
        assert_eq!(run_class(&run), Class::Active, "deleted before it started");
        run.metadata.deletion_timestamp = None;
        run.metadata.finalizers = Some(vec!["someone.else/keep".into()]);
        assert_eq!(run_class(&run), Class::New, "another's finalizer");
        run.metadata.finalizers = Some(vec![FINALIZER.into()]);
        assert_eq!(run_class(&run), Class::Active, "the operator's finalizer");
        run.metadata.finalizers = None;
        run.status = Some(Default::default());
        assert_eq!(run_class(&run), Class::Active, "a status");
    }

    #[test]
    fn a_pod_wakes_the_run_that_owns_it() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
        let mut p = pod("e", "Succeeded");
        p.metadata.namespace = Some("ns".into());
        assert_eq!(run_of(&p), None, "no owner");
        p.metadata.owner_references = Some(vec![
            OwnerReference {
                api_version: "apps/v1".into(),
                kind: "ReplicaSet".into(),
                name: "other".into(),
                ..Default::default()
            },
            OwnerReference {
                api_version: toucan_core::api::API_VERSION.into(),
                kind: "PipelineRun".into(),
                name: "train".into(),
                ..Default::default()
            },
        ]);
        assert_eq!(run_of(&p), Some(ObjectRef::new("train").within("ns")));
    }

    #[test]
    fn a_scheduled_run_wakes_the_pipeline_that_owns_it() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
        let spec = toucan_core::api::PipelineRunSpec {
            pipeline_ref: None,
            pipeline_spec: None,
            params: Vec::new(),
        };
        let mut run = PipelineRun::new("nightly-1", spec);
        run.metadata.namespace = Some("ml".into());
        assert_eq!(pipeline_of(&run), None, "started by hand");
        run.metadata.owner_references = Some(vec![OwnerReference {
            api_version: toucan_core::api::API_VERSION.into(),
            kind: "Pipeline".into(),
            name: "nightly".into(),
            ..Default::default()
        }]);
        assert_eq!(
            pipeline_of(&run),
            Some(ObjectRef::new("nightly").within("ml"))
        );
    }

    #[test]
    fn a_relist_passes_everything_and_is_the_new_baseline() {
        let mut f = PodChanges::default();
        assert!(f.passes(&Ok(watcher::Event::Init)));
        assert!(f.passes(&Ok(watcher::Event::InitApply(pod("d", "Running")))));
        assert!(f.passes(&Ok(watcher::Event::InitDone)));
        assert!(!f.passes(&apply(pod("d", "Running"))));
        assert!(f.passes(&apply(pod("d", "Failed"))));
    }
}
