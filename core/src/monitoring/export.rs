//! The labelled production samples of an alert's window as a CSV table: what
//! `{{alert.window.samples}}` hands a retraining run (a file on this machine, a blob of the
//! artifact store in a cluster).
//!
//! One row per instance of each labelled sample: `request_id`, `instance`, `version`,
//! `received_at`, `label` (the class someone gave the request), `prediction`, the input
//! statistics (`width`, `height`, `channels`, `brightness`, `contrast`, `sharpness`,
//! `channel_mean_0`...) and, where the endpoint records inputs (`sampling.inputs`), the
//! image itself as `pixel1`, `pixel2`... (integers in 0..=255 at the model's input size, HWC
//! order, as Kaggle's pixel tables have them). Fields are quoted as RFC 4180 says where they
//! need it.
//!
//! `toucan-worker ingest --add-train FILE.csv` reads such a table (its `label` and `pixel*`
//! columns): the labelled production samples join a dataset's training split.

use super::evaluation::LabelledSample;
use crate::serving::SampledInstance;

/// The CSV text of `samples` (those with a label).
pub fn labelled_samples_csv(samples: &[&LabelledSample]) -> String {
    let rows: Vec<(&LabelledSample, &SampledInstance, usize)> = samples
        .iter()
        .filter(|s| s.label.is_some())
        .flat_map(|s| {
            s.sample
                .sample
                .instances
                .iter()
                .enumerate()
                .map(move |(i, instance)| (*s, instance, i))
        })
        .collect();
    let channels = rows
        .iter()
        .map(|(_, i, _)| i.stats.channel_means.len())
        .max()
        .unwrap_or(0);
    let inputs = rows
        .iter()
        .map(|(_, i, _)| i.input.as_ref().map_or(0, Vec::len))
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
    .map(|s| (*s).to_string())
    .collect();
    header.extend((0..channels).map(|c| format!("channel_mean_{c}")));
    header.extend((1..=inputs).map(|c| format!("pixel{c}")));
    let mut out = line(&header);
    for (s, one, i) in rows {
        let sample = &s.sample.sample;
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
                .map(|p| (p.round().clamp(0.0, 255.0) as u8).to_string())
                .unwrap_or_default()
        }));
        out.push_str(&line(&fields));
    }
    out
}

fn line(fields: &[String]) -> String {
    let quoted: Vec<String> = fields.iter().map(|f| quote(f)).collect();
    format!("{}\r\n", quoted.join(","))
}

/// A field as RFC 4180 writes it: in double quotes (inner ones doubled) when it holds a
/// comma, a quote or a line break.
fn quote(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_that_need_it_are_quoted() {
        assert_eq!(quote("plain"), "plain");
        assert_eq!(quote("a,b"), "\"a,b\"");
        assert_eq!(quote("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(line(&["a".into(), "b,c".into()]), "a,\"b,c\"\r\n");
    }

    #[test]
    fn no_samples_is_the_header_alone() {
        let text = labelled_samples_csv(&[]);
        assert!(text.starts_with("request_id,instance,version,"), "{text}");
        assert_eq!(text.lines().count(), 1);
    }
}
