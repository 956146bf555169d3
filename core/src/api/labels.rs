//! The labels and annotations toucan puts on the objects it makes (step pods, service
//! accounts): written by the operator, read by the operator and by `toucan` against a cluster.

/// Who manages the object (the Kubernetes recommended label).
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "toucan-operator";
/// The PipelineRun's name (shortened with a hash when longer than a label value may be).
pub const RUN_LABEL: &str = "toucan.dev/run";
/// The PipelineRun's UID: what a run's pods are selected by.
pub const RUN_UID_LABEL: &str = "toucan.dev/run-uid";
pub const STEP_LABEL: &str = "toucan.dev/step";
/// The attempt number.
pub const ATTEMPT_LABEL: &str = "toucan.dev/attempt";
/// On a distributed step's pods and Service: the Service's name (one per attempt).
pub const GANG_LABEL: &str = "toucan.dev/gang";
/// On a distributed step's pods: the replica (`worker-1`).
pub const REPLICA_LABEL: &str = "toucan.dev/replica";
/// On a distributed step's pods: the gang's incarnation (`0`, then one more at each restart).
pub const INCARNATION_LABEL: &str = "toucan.dev/incarnation";
/// On a PipelineRun: `"true"` suspends its distributed steps' gangs.
pub const SUSPEND_ANNOTATION: &str = "toucan.dev/suspend";
/// The run's id in the metadata store, exactly.
pub const RUN_ID_ANNOTATION: &str = "toucan.dev/run-id";
/// The node (`train`, `shard[3]`), exactly.
pub const NODE_ANNOTATION: &str = "toucan.dev/node";
/// On a PipelineRun or Pipeline: the directory relative `path:` inputs are read from, in the
/// image of the step that has them.
pub const SOURCE_DIR_ANNOTATION: &str = "toucan.dev/source-dir";
/// On a PipelineRun: its `path:` inputs, already in the artifact store, as JSON
/// `{STEP: {INPUT: ArtifactRef}}` (`toucan submit` writes it); the operator then stores
/// nothing itself.
pub const STAGED_INPUTS_ANNOTATION: &str = "toucan.dev/staged-inputs";
/// On a PipelineRun: the id (in the metadata store) of an earlier run whose steps' newest
/// checkpoints its steps start from (a tuning study's promoted trial, whose larger budget
/// trains on from where the smaller one ended).
pub const CHECKPOINTS_FROM_ANNOTATION: &str = "toucan.dev/checkpoints-from";
/// The step pod's main container.
pub const STEP_CONTAINER: &str = "step";
