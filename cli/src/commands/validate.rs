//! `toucan validate FILE...`: every error in every document, nothing written. A PipelineRun
//! must name a Pipeline among the files, as `toucan run` requires.

use std::path::PathBuf;

use toucan_core::manifest;

use crate::Outcome;

pub fn validate(files: &[PathBuf]) -> anyhow::Result<Outcome> {
    match manifest::load(files) {
        Ok(docs) => {
            let mut errors = manifest::check_pipeline_refs(&docs);
            for d in &docs {
                errors.extend(super::run::missing_local_inputs(d));
            }
            if !errors.is_empty() {
                for e in &errors {
                    eprintln!("{e}");
                }
                return Ok(Outcome::InvalidInput);
            }
            println!("{} document(s) valid", docs.len());
            Ok(Outcome::Success)
        }
        Err(diagnostics) => Ok(super::invalid_input(&diagnostics, None)),
    }
}
