//! Labels joined to payload samples by request id, and what a joined sample says.
//!
//! A model server records a sampled request (its request id, time, version, prediction and
//! attributes); later someone says what the right answer was (a label for that request id).
//! The store keeps both and returns each sample with its label, if any ([`LabelledSample`]);
//! [`join_labels`] does the same for rows held in memory.
//!
//! - **The time of a sample** is when its server received the request (`receivedAt`), or when
//!   the store received it if that text is unreadable.
//! - **The model's classes** are what its predictions say: every instance carries the
//!   probability of each class and the index and name of the predicted one, so the number of
//!   classes is the length of the probability vectors and a class is known by name once it
//!   has been predicted ([`ModelClasses`]).
//! - **A request of several instances** is evaluated by its first instance: a label names one
//!   class per request id.
//! - **Probabilities** arrive as `f32`; each row is widened to `f64` and, when its sum is
//!   within [`F32_ROW_SUM_TOLERANCE`] of 1, divided by that sum, so that the rounding of a
//!   softmax in single precision does not make the log loss undefined.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::classification::argmax;
use crate::records::{Millis, SampleRecord};
use crate::serving::PayloadSample;
use crate::time::parse_rfc3339;

/// How far from 1 the sum of a row of `f32` probabilities may be and still be renormalised.
pub const F32_ROW_SUM_TOLERANCE: f64 = 1e-4;

/// A label someone gave a request: the class that was right.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Label {
    pub request_id: String,
    /// The class's name, as the model's predictions name it.
    pub label: String,
    /// When the answer became known (milliseconds since the epoch).
    #[cfg_attr(feature = "openapi", schema(value_type = i64))]
    pub labelled_at: Millis,
}

/// A label as the metadata store keeps it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelRecord {
    /// The endpoint (`NAMESPACE/NAME` in a cluster).
    pub endpoint: String,
    pub request_id: String,
    pub label: String,
    #[cfg_attr(feature = "openapi", schema(value_type = i64))]
    pub labelled_at: Millis,
    /// When the store received it (or its latest correction).
    #[cfg_attr(feature = "openapi", schema(value_type = i64))]
    pub received_at: Millis,
}

/// What storing a batch of labels did, label by label.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelCounts {
    /// Labels of samples that had none.
    pub added: u64,
    /// Labels that replaced a different one (corrections).
    pub updated: u64,
    /// Labels already stored with the same value, left as they were.
    pub unchanged: u64,
    /// Labels whose request id has no sample: not stored.
    pub unknown: u64,
}

/// A payload sample and its label, if one arrived.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelledSample {
    pub sample: SampleRecord,
    pub label: Option<LabelRecord>,
}

/// Joins `labels` to `samples` by request id (labels of other endpoints are not looked at;
/// the last label of a request id wins). Keeps the samples' order.
pub fn join_labels(samples: Vec<SampleRecord>, labels: &[LabelRecord]) -> Vec<LabelledSample> {
    let by_request: HashMap<(&str, &str), &LabelRecord> = labels
        .iter()
        .map(|l| ((l.endpoint.as_str(), l.request_id.as_str()), l))
        .collect();
    samples
        .into_iter()
        .map(|sample| {
            let label = by_request
                .get(&(sample.endpoint.as_str(), sample.sample.request_id.as_str()))
                .map(|l| (*l).clone());
            LabelledSample { sample, label }
        })
        .collect()
}

/// When the sample's request was received (see the module docs).
pub fn sample_time(record: &SampleRecord) -> Millis {
    parse_rfc3339(&record.sample.received_at).unwrap_or(record.stored_at)
}

/// How long after its request a sample may reach the store, at most: servers ship them in
/// batches, a few seconds apart.
pub const MAX_SHIPPING_DELAY_MS: Millis = 10 * 60 * 1000;

/// The storing times that hold every sample of requests received in `received` (to filter
/// by [`sample_time`] then).
pub fn stored_range(received: std::ops::Range<Millis>) -> std::ops::Range<Millis> {
    received.start..received.end.saturating_add(MAX_SHIPPING_DELAY_MS)
}

/// The classes a model's predictions reveal (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelClasses {
    names: Vec<Option<String>>,
}

impl ModelClasses {
    /// The classes of the predictions in `samples`.
    pub fn of<'a>(samples: impl IntoIterator<Item = &'a PayloadSample>) -> ModelClasses {
        let mut names: Vec<Option<String>> = Vec::new();
        for instance in samples.into_iter().flat_map(|s| &s.instances) {
            if names.len() < instance.probabilities.len() {
                names.resize(instance.probabilities.len(), None);
            }
            if let Ok(i) = usize::try_from(instance.label)
                && i < names.len()
                && names[i].is_none()
            {
                names[i] = Some(instance.class.clone());
            }
        }
        ModelClasses { names }
    }

    /// How many classes the model has.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The index of the class called `name`, if a prediction named it.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n.as_deref() == Some(name))
    }

    /// The names known so far, in class order.
    pub fn known(&self) -> impl Iterator<Item = &str> {
        self.names.iter().flatten().map(String::as_str)
    }

    /// Every class's name, `#INDEX` for a class never predicted yet.
    pub fn names(&self) -> Vec<String> {
        self.names
            .iter()
            .enumerate()
            .map(|(i, n)| n.clone().unwrap_or_else(|| format!("#{i}")))
            .collect()
    }
}

/// The first of `labels` that names no class of the model, with why; `None` when every label
/// names one, or when no class is known yet (with no sample stored, every label will be
/// counted as unknown anyway).
pub fn first_unknown_class(labels: &[Label], classes: &ModelClasses) -> Option<(usize, String)> {
    if classes.is_empty() {
        return None;
    }
    let i = labels
        .iter()
        .position(|l| classes.index_of(&l.label).is_none())?;
    let known: Vec<&str> = classes.known().collect();
    Some((
        i,
        format!(
            "{:?} is not a class of the model (its predictions name {})",
            labels[i].label,
            known.join(", ")
        ),
    ))
}

/// One sample ready to be evaluated.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Scored<'a> {
    pub version: &'a str,
    pub at: Millis,
    pub attributes: &'a BTreeMap<String, String>,
    /// The predicted class and the probabilities, `None` when the sample's prediction does
    /// not fit the model's classes.
    pub prediction: Option<(usize, Vec<f64>)>,
    pub label: LabelState,
}

/// Whether a sample's label can be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LabelState {
    None,
    /// The true class, and when it became known.
    Class {
        class: usize,
        labelled_at: Millis,
    },
    /// A label that names no class of the model, or of a sample whose prediction is unusable.
    Unusable,
}

/// Reads what the evaluation needs of each sample, against the model's classes.
pub(crate) fn score<'a>(samples: &'a [LabelledSample], classes: &ModelClasses) -> Vec<Scored<'a>> {
    samples
        .iter()
        .map(|s| {
            let prediction = prediction(&s.sample.sample, classes.len());
            let label = match &s.label {
                None => LabelState::None,
                Some(l) => match (classes.index_of(&l.label), &prediction) {
                    (Some(class), Some(_)) => LabelState::Class {
                        class,
                        labelled_at: l.labelled_at,
                    },
                    _ => LabelState::Unusable,
                },
            };
            Scored {
                version: &s.sample.sample.version,
                at: sample_time(&s.sample),
                attributes: &s.sample.sample.attributes,
                prediction,
                label,
            }
        })
        .collect()
}

fn prediction(sample: &PayloadSample, classes: usize) -> Option<(usize, Vec<f64>)> {
    let instance = sample.instances.first()?;
    if classes == 0 || instance.probabilities.len() != classes {
        return None;
    }
    let mut probabilities: Vec<f64> = instance
        .probabilities
        .iter()
        .map(|&p| f64::from(p))
        .collect();
    if probabilities.iter().any(|p| !p.is_finite()) {
        return None;
    }
    let sum: f64 = probabilities.iter().sum();
    if (sum - 1.0).abs() <= F32_ROW_SUM_TOLERANCE {
        probabilities.iter_mut().for_each(|p| *p /= sum);
    }
    let predicted = usize::try_from(instance.label)
        .ok()
        .filter(|&i| i < classes)
        .unwrap_or_else(|| argmax(&probabilities));
    Some((predicted, probabilities))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serving::{InputStats, SampledInstance};

    pub(crate) fn sample(
        request_id: &str,
        label: i64,
        class: &str,
        probs: &[f32],
    ) -> PayloadSample {
        PayloadSample {
            request_id: request_id.into(),
            model: "m".into(),
            version: "v1".into(),
            received_at: "2026-01-01T00:00:00Z".into(),
            protocol: "v1".into(),
            latency_ms: 1.0,
            instances: vec![SampledInstance {
                stats: InputStats {
                    width: 1,
                    height: 1,
                    channels: 1,
                    brightness: 0.0,
                    contrast: 0.0,
                    channel_means: vec![0.0],
                    sharpness: 0.0,
                },
                input: None,
                embedding: None,
                label,
                class: class.into(),
                probabilities: probs.to_vec(),
            }],
            attributes: BTreeMap::new(),
        }
    }

    #[test]
    fn classes_come_from_the_predictions() {
        let samples = [
            sample("a", 2, "bag", &[0.1, 0.2, 0.7]),
            sample("b", 0, "shirt", &[0.8, 0.1, 0.1]),
        ];
        let classes = ModelClasses::of(&samples);
        assert_eq!(classes.len(), 3);
        assert_eq!(classes.index_of("bag"), Some(2));
        assert_eq!(classes.index_of("shirt"), Some(0));
        assert_eq!(classes.index_of("coat"), None);
        assert_eq!(classes.names(), ["shirt", "#1", "bag"]);
        assert_eq!(classes.known().collect::<Vec<_>>(), ["shirt", "bag"]);
        let label = |name: &str| Label {
            request_id: "r".into(),
            label: name.into(),
            labelled_at: 0,
        };
        assert_eq!(
            first_unknown_class(&[label("bag"), label("coat"), label("hat")], &classes),
            Some((
                1,
                "\"coat\" is not a class of the model (its predictions name shirt, bag)".into()
            ))
        );
        assert_eq!(first_unknown_class(&[label("bag")], &classes), None);
        assert_eq!(
            first_unknown_class(&[label("coat")], &ModelClasses::default()),
            None
        );
    }

    #[test]
    fn labels_join_by_endpoint_and_request_id() {
        let record = |id: &str| SampleRecord {
            endpoint: "ns/e".into(),
            sample: sample(id, 0, "shirt", &[1.0, 0.0]),
            stored_at: 5,
        };
        let label = |endpoint: &str, id: &str| LabelRecord {
            endpoint: endpoint.into(),
            request_id: id.into(),
            label: "shirt".into(),
            labelled_at: 9,
            received_at: 10,
        };
        let joined = join_labels(
            vec![record("a"), record("b")],
            &[
                label("ns/e", "b"),
                label("ns/other", "a"),
                label("ns/e", "zz"),
            ],
        );
        assert_eq!(joined.len(), 2);
        assert_eq!(joined[0].label, None);
        assert_eq!(joined[1].label, Some(label("ns/e", "b")));
        // The sample's own time, not the store's, unless it is unreadable.
        assert_eq!(sample_time(&joined[0].sample), 1_767_225_600_000);
        let mut garbled = record("c");
        garbled.sample.received_at = "yesterday".into();
        assert_eq!(sample_time(&garbled), 5);
    }

    #[test]
    fn f32_rows_are_renormalised_and_misfits_are_unusable() {
        let (predicted, p) = prediction(&sample("a", 1, "x", &[0.3, 0.700_01]), 2).unwrap();
        assert_eq!(predicted, 1);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        // A row far from summing to 1 is left alone (its log loss is then undefined).
        let (_, p) = prediction(&sample("a", 0, "x", &[0.7, 0.7]), 2).unwrap();
        assert_eq!(p, [0.699_999_988_079_071, 0.699_999_988_079_071]);
        // Wrong width, no instance, a bad predicted index (argmax instead).
        assert_eq!(prediction(&sample("a", 0, "x", &[1.0]), 2), None);
        let mut empty = sample("a", 0, "x", &[1.0, 0.0]);
        empty.instances.clear();
        assert_eq!(prediction(&empty, 2), None);
        assert_eq!(
            prediction(&sample("a", 9, "x", &[0.25, 0.75]), 2)
                .unwrap()
                .0,
            1
        );
    }
}
