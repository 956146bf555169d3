//! One pass of an endpoint's monitoring, pure: from its samples (with their labels) and a
//! drift reference to the figures it exports and the breaches its alerts are made of.
//!
//! The shells (the local runtime's loop, the operator) call [`assess`] on a schedule with the
//! samples of the last [`lookback_ms`], and then
//!
//! - export [`Assessment::series`] as the gauges of [`super::rules`] (Prometheus evaluates the
//!   generated rules over them);
//! - move the endpoint's alerts with [`Assessment::breaches`] ([`super::alerts::advance`]),
//!   and act on the ones that fire ([`super::retrain::decide`]).
//!
//! What is judged, with the spec's thresholds:
//!
//! - **Drift**: every instance of the samples of the sliding `drift.window` is a row of
//!   features — the input statistics the server records (`width`, `height`, `channels`,
//!   `brightness`, `contrast`, `channel_means_0..`, `sharpness`) and the predicted class
//!   (`prediction`), and the model's embedding of the input (`embedding`, see
//!   [`super::embedding`]). Each feature is compared with the reference's by a test with a
//!   p-value — two-sample Kolmogorov–Smirnov for numbers, chi-squared for the class, the
//!   maximum mean discrepancy with up to [`EMBEDDING_PERMUTATIONS`] permutations, stopping at
//!   [`EMBEDDING_ENOUGH`] that reach the observed value, for embeddings (per
//!   version, against that version's embeddings in a reference window it served, else its
//!   model's reference embeddings; the newest [`EMBEDDING_ROWS`] of the
//!   group against as many of the reference's, evenly spaced) — over all traffic
//!   and per value of every slice (a
//!   slice value against the reference rows of the same value where the reference has at
//!   least `minSamples` of them, else against the whole reference). Groups with fewer than
//!   `minSamples` rows are not tested. A feature drifts when its effect reaches `effectSize`
//!   and, for tests with a p-value, Benjamini–Hochberg keeps it at `fdr` across every feature
//!   and group ([`super::drift::alert_decisions`]). A group with a drifted feature is a breach
//!   `drift/SLICE`. Evidently's defaults (which `toucan drift` follows) switch to distances
//!   without a p-value for a reference over 1,000 rows; nothing then bounds how often a
//!   distance crosses its threshold by chance on a window of a few hundred samples (against
//!   2,000 reference rows, a normed Wasserstein distance of 0.1 is crossed in 45 of 200
//!   undrifted windows of 600), so the loop keeps to tests the false discovery rate can
//!   control, with the effect size (KS's D, Cramér's V) as the bar for what matters.
//! - **Evaluation**: the newest window of `evaluation.window` whose labels have matured (its
//!   end at least `maturity` ago), per version and slice value. A floor breaches when the
//!   metric's confidence interval lies wholly on the wrong side of it
//!   (`floor/METRIC/VERSION/SLICE`); a version regresses when its interval lies wholly on the
//!   worse side of the interval of the version listed before it
//!   (`regression/METRIC/VERSION/SLICE`). These are the rules [`super::rules`] gives
//!   Prometheus, so both paths alert on the same evidence.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::alerts::{AlertKind, Breach};
use super::drift::{
    self, AlertPolicy, Column, ColumnKind, ColumnReport, Embeddings, StatTest, TestSpec,
};
use super::evaluation::{
    self, EvaluationOptions, EvaluationReport, LabelledSample, WindowMetrics, join::sample_time,
};
use super::rules::{self, ALL_TRAFFIC, Gauge};
use super::spec::{FloorBound, SliceSource};
use crate::api::{EndpointSpec, EvaluationMetric};
use crate::records::Millis;
use crate::serving::rollout::QualityObservation;
use crate::serving::{InputStats, PayloadSample};

/// The label of the predicted-class feature.
pub const PREDICTION_FEATURE: &str = "prediction";
/// The feature of the model's embeddings; its columns are `embedding/VERSION`.
pub const EMBEDDING_FEATURE: &str = "embedding";
/// The most embeddings of each side the MMD test compares: its cost grows with the square.
pub const EMBEDDING_ROWS: usize = 200;
/// The MMD test's permutations at most: its smallest p-value is `1 / 501`, small enough to
/// pass the false discovery rate control among a few dozen tests.
pub const EMBEDDING_PERMUTATIONS: usize = 500;
/// The MMD test stops once this many permuted discrepancies reached the observed one: its
/// p-value is then at least `10 / 500` (Besag and Clifford), and a window like its reference
/// costs a few dozen permutations.
pub const EMBEDDING_ENOUGH: usize = 10;

/// One row of the drift reference: an input's statistics and its class (the predicted one
/// for production samples, the true one for a training dataset), with the sample's
/// attributes for slicing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceRow {
    pub stats: InputStats,
    pub class: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    /// The version that served a production sample (none in a training dataset's rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The served model's embedding of the input, when the server recorded one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<Vec<f32>>,
}

impl ReferenceRow {
    /// A row per instance of each sample.
    pub fn of_samples<'a>(samples: impl IntoIterator<Item = &'a PayloadSample>) -> Vec<Self> {
        samples
            .into_iter()
            .flat_map(|s| {
                s.instances.iter().map(|i| ReferenceRow {
                    stats: i.stats.clone(),
                    class: i.class.clone(),
                    attributes: s.attributes.clone(),
                    version: Some(s.version.clone()),
                    embedding: i.embedding.clone(),
                })
            })
            .collect()
    }
}

/// What one pass is given.
#[derive(Clone, Copy, Debug)]
pub struct AssessInput<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub spec: &'a EndpointSpec,
    /// The endpoint's samples of at least the last [`lookback_ms`], each with its label if one
    /// arrived; older ones are left out.
    pub samples: &'a [LabelledSample],
    /// The drift reference's rows (empty without `drift`).
    pub reference: &'a [ReferenceRow],
    /// Each version's reference embeddings, read from its model (see [`super::embedding`]):
    /// what a version is compared with unless it has embeddings among `reference` (a
    /// reference window it served).
    pub embeddings: &'a BTreeMap<String, Embeddings>,
    pub now: Millis,
}

/// A value of one of [`super::rules::GAUGES`], its labels' values in the gauge's order.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub gauge: Gauge,
    pub labels: Vec<String>,
    pub value: f64,
}

/// The drift of one group (all traffic, or one slice value).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DriftGroup {
    /// `all`, or `NAME=VALUE`.
    pub slice: String,
    pub samples: u64,
    pub reference_samples: u64,
    /// Whether the group had `minSamples` rows and was tested.
    pub tested: bool,
    pub columns: Vec<ColumnReport>,
    /// The columns that drifted (effect size and false discovery rate control passed).
    pub drifted: Vec<String>,
}

/// The drift part of a pass.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DriftAssessment {
    pub window_start: Millis,
    pub window_end: Millis,
    pub groups: Vec<DriftGroup>,
}

/// One version and slice value of the newest matured evaluation window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionEvaluation {
    pub version: String,
    pub slice: String,
    pub window_start: Millis,
    pub window_end: Millis,
    pub metrics: WindowMetrics,
}

/// What one pass found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Assessment {
    pub drift: Option<DriftAssessment>,
    pub evaluation: Vec<VersionEvaluation>,
    pub series: Vec<Series>,
    pub breaches: Vec<Breach>,
    /// What could not be judged, one line each (a feature the reference lacks, no
    /// reference rows).
    pub problems: Vec<String>,
}

/// How far back a pass needs samples: the drift window, and two evaluation windows before the
/// maturity delay (the newest matured one may have started that long ago).
pub fn lookback_ms(spec: &EndpointSpec) -> Millis {
    let Some(m) = &spec.monitoring else { return 0 };
    let drift = m.drift.as_ref().map_or(0, |d| d.window_ms());
    let evaluation = m.evaluation.as_ref().map_or(0, |e| {
        e.window_ms()
            .saturating_mul(2)
            .saturating_add(e.maturity_ms())
    });
    Millis::try_from(drift.max(evaluation)).unwrap_or(Millis::MAX)
}

/// What a pass says when its read of `samples` stopped at `limit` (the newest ones): the
/// windows reaching back past the oldest read are judged on part of their samples.
pub fn read_limit_problem(samples: &[LabelledSample], limit: u32) -> Option<String> {
    if samples.len() < limit as usize {
        return None;
    }
    let oldest = samples.first().map_or(0, |s| s.sample.stored_at);
    let at = crate::time::rfc3339(oldest).unwrap_or_else(|_| oldest.to_string());
    Some(format!(
        "a pass reads at most {limit} samples: those stored before {at} were left out, so the \
         windows reaching back past it are judged on part of theirs (lower sampling.rate)"
    ))
}

/// How often a shell runs a pass: a twelfth of the shortest window, from 1 second to 1
/// minute, so an alert's `for` is judged on several passes.
pub fn pass_interval_ms(spec: &EndpointSpec) -> Millis {
    let Some(m) = &spec.monitoring else {
        return 60_000;
    };
    let shortest = [
        m.drift.as_ref().map(|d| d.window_ms()),
        m.evaluation.as_ref().map(|e| e.window_ms()),
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(720_000);
    Millis::try_from(shortest / 12)
        .unwrap_or(60_000)
        .clamp(1_000, 60_000)
}

/// Each version's live evaluation over its samples from `since` on whose labels have had
/// `maturity_ms` to arrive: what a rollout's evaluation gates compare
/// ([`crate::serving::rollout::VersionObservation::quality`]).
pub fn quality_since(
    samples: &[LabelledSample],
    since: Millis,
    maturity_ms: Millis,
    now: Millis,
) -> BTreeMap<String, QualityObservation> {
    let recent: Vec<LabelledSample> = samples
        .iter()
        .filter(|s| sample_time(&s.sample) >= since)
        .cloned()
        .collect();
    let mut options = EvaluationOptions::new(now, Millis::MAX / 4);
    options.maturity_ms = maturity_ms;
    let Ok(report) = evaluation::evaluate(&recent, &options) else {
        return BTreeMap::new();
    };
    report
        .windows
        .iter()
        .flat_map(|w| &w.groups)
        .filter(|g| g.slice_value.is_none())
        .filter_map(|g| {
            let (version, metrics) = (g.version.as_ref()?, g.metrics.as_ref()?);
            let scored = EvaluationMetric::ALL
                .into_iter()
                .filter_map(|m| Some((m, metric_estimate(metrics, m)?)))
                .collect();
            Some((
                version.clone(),
                QualityObservation {
                    labelled: metrics.records,
                    metrics: scored,
                },
            ))
        })
        .collect()
}

/// One pass (see the module docs).
pub fn assess(input: &AssessInput<'_>) -> Assessment {
    let mut out = Assessment::default();
    let Some(monitoring) = &input.spec.monitoring else {
        return out;
    };
    if let Some(drift) = &monitoring.drift {
        assess_drift(input, drift, &mut out);
    }
    if let Some(evaluation) = &monitoring.evaluation {
        assess_evaluation(input, evaluation, &mut out);
    }
    out
}

/// The slices of the spec, with the attribute each reads.
fn slices(spec: &EndpointSpec) -> Vec<(String, String)> {
    spec.monitoring
        .iter()
        .flat_map(|m| &m.slices)
        .filter_map(|s| {
            let attribute = match s.source().ok()? {
                SliceSource::Header(name) | SliceSource::Attribute(name) => name,
            };
            Some((s.name.clone(), attribute))
        })
        .collect()
}

// === drift ===

fn assess_drift(
    input: &AssessInput<'_>,
    drift: &crate::api::DriftMonitoring,
    out: &mut Assessment,
) {
    let window = Millis::try_from(drift.window_ms()).unwrap_or(Millis::MAX);
    let start = input.now.saturating_sub(window);
    let current = ReferenceRow::of_samples(
        input
            .samples
            .iter()
            .filter(|s| (start..input.now).contains(&sample_time(&s.sample)))
            .map(|s| &s.sample.sample),
    );
    let min = drift.min_samples() as usize;
    let features = drift.features();

    // The groups: all traffic, then each slice's values, each with its reference rows.
    let mut groups: Vec<(String, Vec<&ReferenceRow>, Vec<&ReferenceRow>)> = vec![(
        ALL_TRAFFIC.to_string(),
        current.iter().collect(),
        input.reference.iter().collect(),
    )];
    for (name, attribute) in slices(input.spec) {
        let mut values: BTreeMap<&str, Vec<&ReferenceRow>> = BTreeMap::new();
        for row in &current {
            let value = row.attributes.get(&attribute).map_or("", String::as_str);
            values.entry(value).or_default().push(row);
        }
        for (value, rows) in values {
            let same: Vec<&ReferenceRow> = input
                .reference
                .iter()
                .filter(|r| r.attributes.get(&attribute).map_or("", String::as_str) == value)
                .collect();
            let reference = if same.len() >= min {
                same
            } else {
                input.reference.iter().collect()
            };
            groups.push((rules::slice_label(&name, value), rows, reference));
        }
    }

    if input.reference.is_empty() {
        out.problems
            .push("the drift reference has no rows: nothing to compare with".to_string());
    } else if let Some(problem) = shape_mismatch(input.reference, &current) {
        out.problems.push(problem);
    }
    let mut assessed = Vec::new();
    let mut reports: Vec<(usize, ColumnReport)> = Vec::new();
    let mut unreferenced = std::collections::BTreeSet::new();
    for (index, (slice, rows, reference)) in groups.iter().enumerate() {
        let tested = rows.len() >= min && !reference.is_empty();
        if tested && features.contains(&EMBEDDING_FEATURE) {
            for (version, (count, current)) in embeddings_by_version(rows) {
                if count < min {
                    continue;
                }
                let Some(theirs) = reference_embeddings(input, reference, &version) else {
                    unreferenced.insert(version);
                    continue;
                };
                let column = format!("{EMBEDDING_FEATURE}/{version}");
                match drift::compare_embeddings(
                    &column,
                    &theirs.evenly(EMBEDDING_ROWS),
                    &current,
                    EMBEDDING_PERMUTATIONS,
                    0,
                    EMBEDDING_ENOUGH,
                ) {
                    Ok(report) => reports.push((index, report)),
                    Err(e) => out.problems.push(format!("slice {slice}: {column}: {e}")),
                }
            }
        }
        if tested {
            for (feature, cur, refr) in feature_columns(rows, reference, &features) {
                let test = match cur.kind() {
                    ColumnKind::Numeric => StatTest::Ks,
                    ColumnKind::Categorical | ColumnKind::Embedding => StatTest::ChiSquare,
                };
                let spec = TestSpec {
                    test,
                    threshold: None,
                };
                match drift::compare_columns(&feature, refr, cur, Some(spec)) {
                    Ok(report) => reports.push((index, report)),
                    Err(e) => out.problems.push(format!("slice {slice}: {e}")),
                }
            }
        }
        assessed.push(DriftGroup {
            slice: slice.clone(),
            samples: rows.len() as u64,
            reference_samples: reference.len() as u64,
            tested,
            columns: Vec::new(),
            drifted: Vec::new(),
        });
    }
    for version in unreferenced {
        out.problems.push(format!(
            "version {version}: its model carries no reference embeddings (trained by an older \
             toucan-worker), so its embeddings are not compared"
        ));
    }
    let policy = AlertPolicy {
        fdr: drift.fdr(),
        min_effect_size: drift.effect_size(),
    };
    let flat: Vec<ColumnReport> = reports.iter().map(|(_, r)| r.clone()).collect();
    let decisions = drift::alert_decisions(&flat, &policy);
    for ((index, report), decision) in reports.into_iter().zip(decisions) {
        let group = &mut assessed[index];
        if decision.alert {
            group.drifted.push(report.column.clone());
        }
        group.columns.push(report);
    }

    let labels = |slice: &str, r: &ColumnReport| {
        vec![
            input.namespace.to_string(),
            input.name.to_string(),
            slice.to_string(),
            r.column.clone(),
            r.test.name().to_string(),
        ]
    };
    for group in &assessed {
        for r in &group.columns {
            let l = labels(&group.slice, r);
            let detected = group.drifted.contains(&r.column);
            out.series.push(series(rules::DRIFT_SCORE, &l, r.statistic));
            if let Some(p) = r.p_value {
                out.series.push(series(rules::DRIFT_P_VALUE, &l, p));
            }
            out.series.push(series(
                rules::DRIFT_DETECTED,
                &l,
                if detected { 1.0 } else { 0.0 },
            ));
            out.series
                .push(series(rules::DRIFT_SAMPLES, &l, group.samples as f64));
        }
        if !group.drifted.is_empty() {
            let worst = group
                .columns
                .iter()
                .filter(|r| group.drifted.contains(&r.column))
                .max_by(|a, b| a.effect_size.total_cmp(&b.effect_size));
            let listed: Vec<String> = group
                .columns
                .iter()
                .filter(|r| group.drifted.contains(&r.column))
                .map(|r| format!("{} ({} {:.3})", r.column, r.test.name(), r.effect_size))
                .collect();
            out.breaches.push(Breach {
                key: format!("drift/{}", group.slice),
                kind: AlertKind::Drift,
                summary: format!(
                    "drift on slice {} over {} samples: {}",
                    group.slice,
                    group.samples,
                    listed.join(", ")
                ),
                window_start: start,
                window_end: input.now,
                value: worst.map(|r| r.effect_size),
                threshold: Some(drift.effect_size()),
            });
        }
    }
    out.drift = Some(DriftAssessment {
        window_start: start,
        window_end: input.now,
        groups: assessed,
    });
}

/// How many embeddings each version among `rows` has, and the newest [`EMBEDDING_ROWS`] of
/// them (`rows` are in time order).
fn embeddings_by_version(rows: &[&ReferenceRow]) -> BTreeMap<String, (usize, Embeddings)> {
    let mut by_version: BTreeMap<&str, Vec<&[f32]>> = BTreeMap::new();
    for row in rows {
        if let (Some(version), Some(embedding)) = (&row.version, &row.embedding) {
            by_version.entry(version).or_default().push(embedding);
        }
    }
    by_version
        .into_iter()
        .filter_map(|(version, vectors)| {
            let newest = &vectors[vectors.len().saturating_sub(EMBEDDING_ROWS)..];
            Some((version.to_string(), (vectors.len(), stack(newest)?)))
        })
        .collect()
}

/// A version's reference embeddings: all its embeddings among the reference rows (a
/// reference window that it served), else its model's.
fn reference_embeddings(
    input: &AssessInput<'_>,
    reference: &[&ReferenceRow],
    version: &str,
) -> Option<Embeddings> {
    let vectors: Vec<&[f32]> = reference
        .iter()
        .filter(|r| r.version.as_deref() == Some(version))
        .filter_map(|r| r.embedding.as_deref())
        .collect();
    stack(&vectors).or_else(|| input.embeddings.get(version).cloned())
}

/// Vectors as rows of [`Embeddings`], those of another length than the first left out; `None`
/// without any.
fn stack(vectors: &[&[f32]]) -> Option<Embeddings> {
    let dimension = vectors.first()?.len();
    let values = vectors
        .iter()
        .filter(|v| v.len() == dimension)
        .flat_map(|v| v.iter().map(|&x| f64::from(x)))
        .collect();
    Embeddings::new(dimension, values).ok()
}

/// Whether the reference's images and the endpoint's share no shape (`WIDTHxHEIGHTxCHANNELS`):
/// a reference of another kind of input (another dataset, or a model that changed its input),
/// against which every feature drifts.
fn shape_mismatch(reference: &[ReferenceRow], current: &[ReferenceRow]) -> Option<String> {
    let shapes = |rows: &[ReferenceRow]| {
        rows.iter()
            .map(|r| (r.stats.width, r.stats.height, r.stats.channels))
            .collect::<std::collections::BTreeSet<_>>()
    };
    let (theirs, ours) = (shapes(reference), shapes(current));
    if ours.is_empty() || theirs.intersection(&ours).next().is_some() {
        return None;
    }
    let shown = |set: &std::collections::BTreeSet<(u32, u32, u32)>| {
        set.iter()
            .take(3)
            .map(|(w, h, c)| format!("{w}x{h}x{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Some(format!(
        "the drift reference's images are {} and the endpoint's inputs {}: the reference does \
         not match the model's inputs (another dataset, or images the clients send at another \
         size)",
        shown(&theirs),
        shown(&ours)
    ))
}

fn series(gauge: Gauge, labels: &[String], value: f64) -> Series {
    Series {
        gauge,
        labels: labels.to_vec(),
        value,
    }
}

/// The features of `current` and `reference` as columns, in `features` order (`channel_means`
/// as one column per channel the two sides share).
fn feature_columns(
    current: &[&ReferenceRow],
    reference: &[&ReferenceRow],
    features: &[&str],
) -> Vec<(String, Column, Column)> {
    let numeric = |rows: &[&ReferenceRow], f: &dyn Fn(&InputStats) -> Option<f64>| {
        Column::Numeric(rows.iter().filter_map(|r| f(&r.stats)).collect())
    };
    let mut out = Vec::new();
    for &feature in features {
        let one: Option<fn(&InputStats) -> f64> = match feature {
            "width" => Some(|s| f64::from(s.width)),
            "height" => Some(|s| f64::from(s.height)),
            "channels" => Some(|s| f64::from(s.channels)),
            "brightness" => Some(|s| s.brightness),
            "contrast" => Some(|s| s.contrast),
            "sharpness" => Some(|s| s.sharpness),
            _ => None,
        };
        if let Some(get) = one {
            out.push((
                feature.to_string(),
                numeric(current, &|s| Some(get(s))),
                numeric(reference, &|s| Some(get(s))),
            ));
        } else if feature == "channel_means" {
            let channels = |rows: &[&ReferenceRow]| {
                rows.iter()
                    .map(|r| r.stats.channel_means.len())
                    .max()
                    .unwrap_or(0)
            };
            for c in 0..channels(current).min(channels(reference)) {
                let get = move |s: &InputStats| s.channel_means.get(c).copied();
                out.push((
                    format!("channel_means_{c}"),
                    numeric(current, &get),
                    numeric(reference, &get),
                ));
            }
        } else if feature == PREDICTION_FEATURE {
            let classes = |rows: &[&ReferenceRow]| {
                Column::Categorical(rows.iter().map(|r| r.class.clone()).collect())
            };
            out.push((feature.to_string(), classes(current), classes(reference)));
        }
    }
    out
}

// === evaluation ===

fn assess_evaluation(
    input: &AssessInput<'_>,
    evaluation: &crate::api::EvaluationMonitoring,
    out: &mut Assessment,
) {
    let window = Millis::try_from(evaluation.window_ms()).unwrap_or(Millis::MAX);
    let maturity = Millis::try_from(evaluation.maturity_ms()).unwrap_or(Millis::MAX);
    let mut passes: Vec<(Option<(String, String)>, EvaluationReport)> = Vec::new();
    for slice in std::iter::once(None).chain(slices(input.spec).into_iter().map(Some)) {
        let mut options = EvaluationOptions::new(input.now, window.max(1));
        options.maturity_ms = maturity;
        options.slice = slice.as_ref().map(|(_, attribute)| attribute.clone());
        match evaluation::evaluate(input.samples, &options) {
            Ok(report) => passes.push((slice, report)),
            Err(e) => out.problems.push(format!("evaluation: {e}")),
        }
    }
    for (slice, report) in &passes {
        // The newest window whose labels have all had `maturity` to arrive.
        let Some(newest) = report
            .windows
            .iter()
            .rev()
            .find(|w| w.end.saturating_add(maturity) <= input.now)
        else {
            continue;
        };
        for group in &newest.groups {
            let (Some(version), Some(metrics)) = (&group.version, &group.metrics) else {
                continue;
            };
            let slice_label = match (slice, &group.slice_value) {
                (None, None) => ALL_TRAFFIC.to_string(),
                (Some((name, _)), Some(value)) => rules::slice_label(name, value),
                _ => continue,
            };
            out.evaluation.push(VersionEvaluation {
                version: version.clone(),
                slice: slice_label,
                window_start: newest.start,
                window_end: newest.end,
                metrics: metrics.clone(),
            });
        }
    }

    for e in &out.evaluation {
        let base = [
            input.namespace.to_string(),
            input.name.to_string(),
            e.version.clone(),
            e.slice.clone(),
        ];
        out.series.push(series(
            rules::EVALUATION_SAMPLES,
            &base,
            e.metrics.records as f64,
        ));
        for metric in EvaluationMetric::ALL {
            let Some(estimate) = metric_estimate(&e.metrics, metric) else {
                continue;
            };
            let mut labels = base.to_vec();
            labels.push(metric.as_str().to_string());
            out.series
                .push(series(rules::EVALUATION, &labels, estimate.value));
            out.series
                .push(series(rules::EVALUATION_LOWER, &labels, estimate.lower));
            out.series
                .push(series(rules::EVALUATION_UPPER, &labels, estimate.upper));
        }
    }

    for floor in &evaluation.floors {
        let Ok(bound) = floor.bound() else { continue };
        for e in &out.evaluation {
            let Some(estimate) = metric_estimate(&e.metrics, floor.metric) else {
                continue;
            };
            let (breached, side, far, limit) = match bound {
                FloorBound::Min(min) => {
                    (estimate.upper < min, "below its floor", estimate.upper, min)
                }
                FloorBound::Max(max) => (
                    estimate.lower > max,
                    "above its ceiling",
                    estimate.lower,
                    max,
                ),
            };
            if breached {
                out.breaches.push(Breach {
                    key: format!("floor/{}/{}/{}", floor.metric.as_str(), e.version, e.slice),
                    kind: AlertKind::Floor,
                    summary: format!(
                        "{} of version {} on slice {} is {:.4} [{:.4}, {:.4}] over {} labels, \
                         {side} {limit}",
                        floor.metric.as_str(),
                        e.version,
                        e.slice,
                        estimate.value,
                        estimate.lower,
                        estimate.upper,
                        e.metrics.records
                    ),
                    window_start: e.window_start,
                    window_end: e.window_end,
                    value: Some(far),
                    threshold: Some(limit),
                });
            }
        }
    }

    for pair in input.spec.versions.windows(2) {
        let (previous, version) = (&pair[0].name, &pair[1].name);
        for e in out.evaluation.iter().filter(|e| &e.version == version) {
            let Some(before) = out
                .evaluation
                .iter()
                .find(|p| &p.version == previous && p.slice == e.slice)
            else {
                continue;
            };
            for metric in EvaluationMetric::ALL {
                let (Some(now), Some(then)) = (
                    metric_estimate(&e.metrics, metric),
                    metric_estimate(&before.metrics, metric),
                ) else {
                    continue;
                };
                let worse = if metric.higher_is_better() {
                    now.upper < then.lower
                } else {
                    now.lower > then.upper
                };
                if worse {
                    out.breaches.push(Breach {
                        key: format!("regression/{}/{version}/{}", metric.as_str(), e.slice),
                        kind: AlertKind::Regression,
                        summary: format!(
                            "{} of version {version} on slice {} is {:.4} [{:.4}, {:.4}], worse \
                             than version {previous}'s {:.4} [{:.4}, {:.4}]",
                            metric.as_str(),
                            e.slice,
                            now.value,
                            now.lower,
                            now.upper,
                            then.value,
                            then.lower,
                            then.upper
                        ),
                        window_start: e.window_start,
                        window_end: e.window_end,
                        value: Some(now.value),
                        threshold: Some(then.value),
                    });
                }
            }
        }
    }
}

/// A metric of a window, where the window has it (the log loss needs probabilities).
pub fn metric_estimate(
    metrics: &WindowMetrics,
    metric: EvaluationMetric,
) -> Option<evaluation::Estimate> {
    Some(match metric {
        EvaluationMetric::Accuracy => metrics.accuracy,
        EvaluationMetric::MacroF1 => metrics.macro_f1,
        EvaluationMetric::MacroPrecision => metrics.macro_precision,
        EvaluationMetric::MacroRecall => metrics.macro_recall,
        EvaluationMetric::LogLoss => metrics.log_loss?,
        EvaluationMetric::Ece => metrics.expected_calibration_error,
    })
}

/// The series in Prometheus's text exposition format, each family's `# HELP` and `# TYPE`
/// once, in [`super::rules::GAUGES`] order.
pub fn exposition(series: &[Series]) -> String {
    let mut out = String::new();
    for gauge in rules::GAUGES {
        let mut of_family = series.iter().filter(|s| s.gauge == gauge).peekable();
        if of_family.peek().is_none() {
            continue;
        }
        out.push_str(&format!("# HELP {} {}\n", gauge.name, gauge.help));
        out.push_str(&format!("# TYPE {} gauge\n", gauge.name));
        for s in of_family {
            let labels: Vec<String> = gauge
                .labels
                .iter()
                .zip(&s.labels)
                .map(|(name, value)| format!("{name}=\"{}\"", escape_label(value)))
                .collect();
            out.push_str(&format!(
                "{}{{{}}} {}\n",
                gauge.name,
                labels.join(","),
                prometheus_number(s.value)
            ));
        }
    }
    out
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn prometheus_number(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_string()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        format!("{value}")
    }
}
