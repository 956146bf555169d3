//! The labelled production samples of an alert's window as a CSV file on this machine: what
//! `{{alert.window.samples}}` names for a local retraining run (the table is core's
//! [`labelled_samples_csv`]). Written to a temporary file and renamed, so a reader never
//! sees half a file.

use std::path::Path;

use anyhow::Context;
use toucan_core::monitoring::evaluation::LabelledSample;
use toucan_core::monitoring::export::labelled_samples_csv;

/// Writes `samples` (those with a label) to `path`.
pub fn write(path: &Path, samples: &[&LabelledSample]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, labelled_samples_csv(samples).as_bytes())?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
