//! A drift reference read from a dataset: the rows `toucan-worker ingest` writes beside the
//! dataset (`reference.json`: the input statistics and class of up to 2,000 training
//! records).

use anyhow::Context;
use toucan_core::api::ArtifactSource;
use toucan_core::monitoring::assess::ReferenceRow;
use toucan_core::records::ArtifactKind;
use toucan_store::artifacts::Digest;
use toucan_store::metadata::MetadataStore;

use crate::home::Home;

/// The file of a dataset that holds its reference rows.
pub const REFERENCE_FILE: &str = "reference.json";

/// The reference rows of the dataset `source` names: a step's output of a local run (or of
/// the newest run of a pipeline of that name).
pub async fn dataset_rows(
    store: &dyn MetadataStore,
    home: &Home,
    source: &ArtifactSource,
) -> anyhow::Result<Vec<ReferenceRow>> {
    let step =
        crate::commands::serve::output_step(store, &source.run, &source.step, &source.artifact)
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
    let artifact = step
        .outputs
        .artifacts
        .get(&source.artifact)
        .with_context(|| format!("the step has no output {:?}", source.artifact))?;
    anyhow::ensure!(
        artifact.kind == ArtifactKind::Dir,
        "{} is a file; a dataset is the directory `toucan-worker ingest` writes",
        artifact.digest
    );
    let artifacts = home.open_artifacts()?;
    let manifest = artifacts
        .manifest(&Digest::parse(&artifact.digest).map_err(|e| anyhow::anyhow!("{e}"))?)
        .await?;
    let entry = manifest
        .entries
        .iter()
        .find(|e| e.path == REFERENCE_FILE)
        .and_then(|e| e.digest.clone())
        .with_context(|| {
            format!(
                "dataset {} has no {REFERENCE_FILE} (ingested by an older toucan-worker: \
                 run the ingest step again)",
                artifact.digest
            )
        })?;
    let bytes = artifacts
        .get_blob(&Digest::parse(&entry).map_err(|e| anyhow::anyhow!("{e}"))?)
        .await?;
    serde_json::from_slice(&bytes).with_context(|| format!("reading {REFERENCE_FILE}"))
}
