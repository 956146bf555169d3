//! The labelled production samples of an alert's window as a CSV file: what
//! `{{alert.window.samples}}` names for a retraining run on this machine.
//!
//! One row per instance: `request_id`, `instance`, `version`, `received_at`, `label` (the
//! class someone gave the request), `prediction`, the input statistics (`width`, `height`,
//! `channels`, `brightness`, `contrast`, `sharpness`, `channel_mean_0`...) and, where the
//! endpoint records inputs (`sampling.inputs`), the model input itself as `input_0`,
//! `input_1`... (preprocessed, row-major). Written to a temporary file and renamed, so a
//! reader never sees half a file.

use std::path::Path;

use anyhow::Context;
use toucan_core::monitoring::evaluation::LabelledSample;
use toucan_core::serving::SampledInstance;

fn instance<'a>((s, i): &(&'a LabelledSample, usize)) -> &'a SampledInstance {
    &s.sample.sample.instances[*i]
}

/// Writes `samples` (those with a label) to `path`.
pub fn write(path: &Path, samples: &[&LabelledSample]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let rows: Vec<(&LabelledSample, usize)> = samples
        .iter()
        .filter(|s| s.label.is_some())
        .flat_map(|s| (0..s.sample.sample.instances.len()).map(move |i| (*s, i)))
        .collect();
    let channels = rows
        .iter()
        .map(|r| instance(r).stats.channel_means.len())
        .max()
        .unwrap_or(0);
    let inputs = rows
        .iter()
        .map(|r| instance(r).input.as_ref().map_or(0, Vec::len))
        .max()
        .unwrap_or(0);
    let mut header: Vec<String> = [
        "request_id",
        "instance",
        "version",
        "received_at",
        "label",
        "prediction",
        "width",
        "height",
        "channels",
        "brightness",
        "contrast",
        "sharpness",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    header.extend((0..channels).map(|c| format!("channel_mean_{c}")));
    header.extend((0..inputs).map(|c| format!("input_{c}")));

    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    {
        let mut out = csv::Writer::from_writer(&mut tmp);
        out.write_record(&header)?;
        for row in &rows {
            let (s, i) = row;
            let sample = &s.sample.sample;
            let one = instance(row);
            let stats = &one.stats;
            let mut fields = vec![
                sample.request_id.clone(),
                i.to_string(),
                sample.version.clone(),
                sample.received_at.clone(),
                s.label
                    .as_ref()
                    .map(|l| l.label.clone())
                    .unwrap_or_default(),
                one.class.clone(),
                stats.width.to_string(),
                stats.height.to_string(),
                stats.channels.to_string(),
                stats.brightness.to_string(),
                stats.contrast.to_string(),
                stats.sharpness.to_string(),
            ];
            fields.extend((0..channels).map(|c| {
                stats
                    .channel_means
                    .get(c)
                    .map(f64::to_string)
                    .unwrap_or_default()
            }));
            fields.extend((0..inputs).map(|c| {
                one.input
                    .as_ref()
                    .and_then(|v| v.get(c))
                    .map(f32::to_string)
                    .unwrap_or_default()
            }));
            out.write_record(&fields)?;
        }
        out.flush()?;
    }
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
