//! The custom resource types of toucan (group `toucan.dev`, version `v1alpha1`).
//!
//! The same types are the manifest format of the local runtime (`toucan run FILE`) and the
//! objects the operator reconciles. Their OpenAPI schemas are generated with schemars and must
//! stay structural: no untagged or flattened enums, and free-form values are marked
//! `x-kubernetes-preserve-unknown-fields`.

mod endpoint;
mod pipeline;
mod pipeline_run;
pub(crate) mod schema;
mod training_job;
mod tuning_study;

pub mod labels;

pub use endpoint::*;
pub use pipeline::*;
pub use pipeline_run::*;
pub use training_job::*;
pub use tuning_study::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of every toucan resource.
pub const GROUP: &str = "toucan.dev";
/// The API version of every toucan resource.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as written in manifests.
pub const API_VERSION: &str = "toucan.dev/v1alpha1";

/// Every CustomResourceDefinition toucan installs, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        Pipeline::crd(),
        PipelineRun::crd(),
        TrainingJob::crd(),
        TuningStudy::crd(),
        Endpoint::crd(),
    ]
}

/// The CRDs as one multi-document YAML stream, as `toucan crds` prints it and
/// `charts/toucan/crds/` holds it.
pub fn crds_yaml() -> Result<String, serde_yaml_ng::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&crd)?);
    }
    Ok(out)
}
