//! `get trials STUDY --cluster` and `describe study STUDY --cluster`: a TuningStudy of a
//! cluster with every trial. The resource's status holds a bounded summary; the trials are
//! in the operator's metadata store, read through its control-plane API by the study's id
//! (`status.studyId`).

use toucan_core::api::TuningStudy;

use super::{Cluster, ClusterArgs, finish};
use crate::Outcome;
use crate::commands::study::{StudyDoc, print_description, study_doc, trials_table};
use crate::output::{Format, print_structured};

/// `get trials NAME --cluster`.
pub async fn get_trials(args: &ClusterArgs, name: &str, format: Format) -> anyhow::Result<Outcome> {
    finish(
        async {
            let cluster = Cluster::connect(args).await?;
            let Some(doc) = fetch(&cluster, name).await? else {
                return Ok(Outcome::InvalidInput);
            };
            match format {
                Format::Table => println!("{}", trials_table(&doc)),
                format => print_structured(format, &doc.trials)?,
            }
            Ok(Outcome::Success)
        }
        .await,
    )
}

/// `describe study NAME --cluster`.
pub async fn describe_study(
    args: &ClusterArgs,
    name: &str,
    format: Format,
) -> anyhow::Result<Outcome> {
    finish(
        async {
            let cluster = Cluster::connect(args).await?;
            let Some(doc) = fetch(&cluster, name).await? else {
                return Ok(Outcome::InvalidInput);
            };
            match format {
                Format::Table => print_description(&doc),
                format => print_structured(format, &doc)?,
            }
            Ok(Outcome::Success)
        }
        .await,
    )
}

/// The study with its trials; `None` (said on stderr) when it is missing or not started.
async fn fetch(cluster: &Cluster, name: &str) -> anyhow::Result<Option<StudyDoc>> {
    let namespace = &cluster.namespace;
    let Some(object) = cluster.get::<TuningStudy>(name).await? else {
        eprintln!("error: no TuningStudy {name:?} in namespace {namespace:?}");
        return Ok(None);
    };
    let study: TuningStudy = serde_json::from_value(serde_json::to_value(object)?)?;
    let Some(id) = study.status.as_ref().and_then(|s| s.study_id.clone()) else {
        let why = study
            .status
            .as_ref()
            .and_then(|s| s.message.clone())
            .unwrap_or_else(|| "the operator has not started it yet".to_string());
        eprintln!("error: TuningStudy {namespace}/{name} has no trials: {why}");
        return Ok(None);
    };
    match cluster.api.study(&id).await {
        Ok(detail) => Ok(Some(study_doc(
            detail.study,
            study.spec.objective.clone(),
            detail.trials,
        ))),
        Err(e) => {
            eprintln!("error: the study's trials are unavailable: {}", e.explain());
            Ok(None)
        }
    }
}
