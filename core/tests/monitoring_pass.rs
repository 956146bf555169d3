//! One pass of monitoring ([`assess`]) and the alerts it moves ([`advance`]), on synthetic
//! streams from a seeded generator:
//!
//! - A/A: 200 windows of samples drawn like the reference raise at most the configured false
//!   discovery rate of drift alerts (5% of 200 windows), with a reference over and under the
//!   1,000 rows where Evidently's defaults switch to distances (the loop keeps to tests with
//!   p-values on both sides of it); the same stream shifted by 0.4 standard deviations in
//!   brightness alerts in every one of 50 windows;
//! - a version's embeddings are compared with its model's reference embeddings (or its own in
//!   a reference window) by MMD: quiet when undrifted, drifting alone when they moved;
//! - a window under `minSamples` is not judged, however far it moved;
//! - a slice that moved alone alerts alone;
//! - floors and regressions alert on the interval, per version and slice;
//! - the exported gauges are well-formed Prometheus text with the rules' labels.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use toucan_core::api::{Endpoint, EndpointSpec};
use toucan_core::monitoring::alerts::{AlertKind, AlertPhase, advance};
use toucan_core::monitoring::assess::{
    AssessInput, Assessment, ReferenceRow, assess, exposition, lookback_ms, read_limit_problem,
};
use toucan_core::monitoring::drift::Embeddings;
use toucan_core::monitoring::embedding;
use toucan_core::monitoring::evaluation::{LabelRecord, LabelledSample};
use toucan_core::records::{AlertRecord, Millis, SampleRecord};
use toucan_core::serving::{InputStats, PayloadSample, SampledInstance};
use toucan_core::time::rfc3339;

const HOUR: Millis = 3_600_000;
const CLASSES: usize = 10;

/// SplitMix64, and normal draws by Box-Muller.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let u = self.uniform().max(f64::MIN_POSITIVE);
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize % n
    }
}

/// How a stream's samples are drawn.
#[derive(Clone)]
struct Draw {
    version: &'static str,
    /// Added to the brightness (whose standard deviation is 0.05).
    shift: f64,
    /// The chance a sample's label is its prediction.
    accuracy: f64,
    attributes: Vec<(&'static str, &'static str)>,
    /// Whether instances carry an embedding, and what is added to each of its numbers (drawn
    /// from a standard normal).
    embedding: Option<f64>,
}

impl Draw {
    fn of(version: &'static str) -> Draw {
        Draw {
            version,
            shift: 0.0,
            accuracy: 0.9,
            attributes: Vec::new(),
            embedding: None,
        }
    }
}

/// A vector of [`embedding::DIMENSIONS`] standard normal draws, each plus `shift`.
fn embedding_of(rng: &mut Rng, shift: f64) -> Vec<f32> {
    (0..embedding::DIMENSIONS)
        .map(|_| (rng.normal() + shift) as f32)
        .collect()
}

fn stats(rng: &mut Rng, shift: f64) -> InputStats {
    let brightness = 0.3 + 0.05 * rng.normal() + shift;
    InputStats {
        width: 28,
        height: 28,
        channels: 1,
        brightness,
        contrast: 0.2 + 0.03 * rng.normal(),
        channel_means: vec![brightness],
        sharpness: (0.01 + 0.002 * rng.normal()).abs(),
    }
}

/// `n` samples spread over `[start, start + span)`, each labelled at once.
fn stream(
    rng: &mut Rng,
    draw: &Draw,
    start: Millis,
    span: Millis,
    n: usize,
) -> Vec<LabelledSample> {
    (0..n)
        .map(|i| {
            let at = start + span * i as Millis / n as Millis;
            let predicted = rng.below(CLASSES);
            let truth = if rng.uniform() < draw.accuracy {
                predicted
            } else {
                (predicted + 1 + rng.below(CLASSES - 1)) % CLASSES
            };
            let mut probabilities = vec![0.4 / (CLASSES - 1) as f32; CLASSES];
            probabilities[predicted] = 0.6;
            let request_id = format!("{}-{at}-{i}-{}", draw.version, rng.next());
            LabelledSample {
                sample: SampleRecord {
                    endpoint: "default/fashion".into(),
                    sample: PayloadSample {
                        request_id: request_id.clone(),
                        model: "fashion".into(),
                        version: draw.version.into(),
                        received_at: rfc3339(at).unwrap(),
                        protocol: "v1".into(),
                        latency_ms: 1.0,
                        instances: vec![SampledInstance {
                            stats: stats(rng, draw.shift),
                            input: None,
                            embedding: draw.embedding.map(|shift| embedding_of(rng, shift)),
                            label: predicted as i64,
                            class: format!("c{predicted}"),
                            probabilities,
                        }],
                        attributes: draw
                            .attributes
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect::<BTreeMap<_, _>>(),
                    },
                    stored_at: at,
                },
                label: Some(LabelRecord {
                    endpoint: "default/fashion".into(),
                    request_id,
                    label: format!("c{truth}"),
                    labelled_at: at,
                    received_at: at,
                }),
            }
        })
        .collect()
}

fn reference(rng: &mut Rng, n: usize) -> Vec<ReferenceRow> {
    (0..n)
        .map(|_| ReferenceRow {
            stats: stats(rng, 0.0),
            class: format!("c{}", rng.below(CLASSES)),
            attributes: BTreeMap::new(),
            version: None,
            embedding: None,
        })
        .collect()
}

fn spec(monitoring: &str) -> EndpointSpec {
    let text = format!(
        "apiVersion: toucan.dev/v1alpha1
kind: Endpoint
metadata: {{name: fashion}}
spec:
  versions:
    - {{name: v1, model: {{digest: \"sha256:{zero}\"}}}}
    - {{name: v2, model: {{digest: \"sha256:{zero}\"}}}}
  traffic: [{{version: v1, weight: 50}}, {{version: v2, weight: 50}}]
  monitoring:
{monitoring}",
        zero = "0".repeat(64)
    );
    let endpoint: Endpoint = serde_yaml_ng::from_str(&text).unwrap();
    endpoint.spec
}

fn pass(
    spec: &EndpointSpec,
    samples: &[LabelledSample],
    reference: &[ReferenceRow],
    now: Millis,
) -> Assessment {
    pass_with_embeddings(spec, samples, reference, &BTreeMap::new(), now)
}

fn pass_with_embeddings(
    spec: &EndpointSpec,
    samples: &[LabelledSample],
    reference: &[ReferenceRow],
    embeddings: &BTreeMap<String, Embeddings>,
    now: Millis,
) -> Assessment {
    assess(&AssessInput {
        namespace: "default",
        name: "fashion",
        spec,
        samples,
        reference,
        embeddings,
        now,
    })
}

const DRIFT: &str = "    drift: {reference: {window: {start: \"2026-01-01T00:00:00Z\", end: \"2026-01-02T00:00:00Z\"}}, window: 1h, minSamples: 500}\n";

/// How many of `windows` hourly windows of 600 samples (drawn by `draw`) raise a drift
/// breach against `reference_rows` reference rows, with the effect-size bar `effect`.
fn windows_with_drift(
    seed: u64,
    reference_rows: usize,
    draw: &Draw,
    effect: f64,
    windows: i64,
) -> usize {
    let spec = spec(&DRIFT.replace(
        "minSamples: 500",
        &format!("minSamples: 500, effectSize: {effect}"),
    ));
    let mut rng = Rng(seed);
    let reference = reference(&mut rng, reference_rows);
    (0..windows)
        .filter(|w| {
            let start = 100 * HOUR + w * HOUR;
            let samples = stream(&mut rng, draw, start, HOUR, 600);
            let found = pass(&spec, &samples, &reference, start + HOUR);
            assert!(found.problems.is_empty(), "{:?}", found.problems);
            let group = &found.drift.as_ref().unwrap().groups[0];
            assert!(group.tested && group.samples == 600, "{group:?}");
            !found.breaches.is_empty()
        })
        .count()
}

#[test]
fn an_a_a_stream_stays_under_the_false_discovery_rate_and_a_shift_alerts_every_window() {
    let same = Draw::of("v1");
    let shifted = Draw {
        shift: 0.02,
        ..Draw::of("v1")
    };
    // 5% of 200 windows.
    let allowed = 10;
    for (rows, path) in [(2_000, "large reference"), (800, "small reference")] {
        let false_alerts = windows_with_drift(7, rows, &same, 0.1, 200);
        // With the effect-size bar lowered to nothing, Benjamini-Hochberg alone gives the 5%
        // of windows it promises under no drift (13 and 9 of 200 here), within three standard
        // deviations of Binomial(200, 0.05); each feature tested at 0.05 on its own would give
        // about 30%.
        let bh_only = windows_with_drift(7, rows, &same, 1e-9, 200);
        assert!(
            bh_only <= 19,
            "{path}: {bh_only} of 200 windows alerted on p-values alone"
        );
        assert!(
            false_alerts <= allowed,
            "{path}: {false_alerts} of 200 undrifted windows alerted"
        );
        let found = windows_with_drift(8, rows, &shifted, 0.1, 50);
        assert_eq!(
            found, 50,
            "{path}: a 0.4 sd shift alerted in {found} of 50 windows"
        );
    }
}

/// The columns of the all-traffic group that drifted.
fn drifted(found: &Assessment) -> Vec<String> {
    found.drift.as_ref().unwrap().groups[0].drifted.clone()
}

#[test]
fn embeddings_are_compared_per_version_with_their_models_reference() {
    let spec = spec(DRIFT);
    let mut rng = Rng(23);
    let rows: Vec<f32> = (0..embedding::MAX_REFERENCE_ROWS)
        .flat_map(|_| embedding_of(&mut rng, 0.0))
        .collect();
    let theirs = Embeddings::new(
        embedding::DIMENSIONS,
        rows.iter().map(|&v| f64::from(v)).collect(),
    )
    .unwrap();
    let models = BTreeMap::from([("v1".to_string(), theirs)]);
    let reference = reference(&mut rng, 2_000);
    let undrifted = Draw {
        embedding: Some(0.0),
        ..Draw::of("v1")
    };
    // Undrifted windows: the test runs, and alerts at most at the false discovery rate.
    let mut alerts = 0;
    for w in 0..12 {
        let now = (w + 1) * HOUR;
        let samples = stream(&mut rng, &undrifted, now - HOUR, HOUR, 600);
        let found = pass_with_embeddings(&spec, &samples, &reference, &models, now);
        let group = &found.drift.as_ref().unwrap().groups[0];
        let column = group
            .columns
            .iter()
            .find(|c| c.column == "embedding/v1")
            .expect("the embeddings were compared");
        assert_eq!(column.test.name(), "mmd");
        assert_eq!((column.reference_size, column.current_size), (200, 200));
        assert!(found.problems.is_empty(), "{:?}", found.problems);
        alerts += usize::from(!group.drifted.is_empty());
    }
    assert!(alerts <= 1, "{alerts} of 12 undrifted windows alerted");

    // Moved by 0.3 standard deviations in every direction: the embeddings alone drift.
    let moved = Draw {
        embedding: Some(0.3),
        ..Draw::of("v1")
    };
    let samples = stream(&mut rng, &moved, 20 * HOUR, HOUR, 600);
    let found = pass_with_embeddings(&spec, &samples, &reference, &models, 21 * HOUR);
    assert_eq!(drifted(&found), ["embedding/v1"]);
    let breach = &found.breaches[0];
    assert!(
        breach.summary.contains("embedding/v1 (mmd "),
        "{}",
        breach.summary
    );

    // A version without a model reference is not compared, and the pass says why; with a
    // reference window, its embeddings there are the reference.
    let v2 = Draw {
        embedding: Some(0.0),
        ..Draw::of("v2")
    };
    let samples = stream(&mut rng, &v2, 30 * HOUR, HOUR, 600);
    let found = pass_with_embeddings(&spec, &samples, &reference, &models, 31 * HOUR);
    assert!(
        found
            .problems
            .iter()
            .any(|p| p.contains("version v2") && p.contains("no reference embeddings")),
        "{:?}",
        found.problems
    );
    let window = ReferenceRow::of_samples(
        stream(&mut rng, &v2, 0, HOUR, 600)
            .iter()
            .map(|s| &s.sample.sample),
    );
    let shifted = stream(
        &mut rng,
        &Draw {
            embedding: Some(0.3),
            ..Draw::of("v2")
        },
        30 * HOUR,
        HOUR,
        600,
    );
    let found = pass_with_embeddings(&spec, &shifted, &window, &models, 31 * HOUR);
    assert!(found.problems.is_empty(), "{:?}", found.problems);
    assert_eq!(drifted(&found), ["embedding/v2"]);
}

#[test]
fn a_window_under_min_samples_is_not_judged() {
    let spec = spec(DRIFT);
    let mut rng = Rng(1);
    let reference = reference(&mut rng, 2_000);
    let far = Draw {
        shift: 0.5,
        ..Draw::of("v1")
    };
    let samples = stream(&mut rng, &far, 0, HOUR, 499);
    let found = pass(&spec, &samples, &reference, HOUR);
    assert!(found.breaches.is_empty());
    assert!(!found.drift.unwrap().groups[0].tested);
    let samples = stream(&mut rng, &far, 0, HOUR, 500);
    let found = pass(&spec, &samples, &reference, HOUR);
    assert_eq!(found.breaches.len(), 1);
    assert_eq!(found.breaches[0].key, "drift/all");
    assert_eq!(found.breaches[0].kind, AlertKind::Drift);
    assert!(
        found.breaches[0].summary.contains("brightness"),
        "{}",
        found.breaches[0].summary
    );
    // Samples older than the window are not part of it.
    let found = pass(&spec, &samples, &reference, 3 * HOUR);
    assert!(found.breaches.is_empty());
}

#[test]
fn a_reference_of_other_images_is_a_problem_named_as_such() {
    let spec = spec(DRIFT);
    let mut rng = Rng(6);
    let mut reference = reference(&mut rng, 600);
    for row in &mut reference {
        row.stats.channels = 3;
        row.stats.channel_means = vec![0.3; 3];
    }
    let samples = stream(&mut rng, &Draw::of("v1"), 0, HOUR, 500);
    let found = pass(&spec, &samples, &reference, HOUR);
    assert_eq!(found.problems.len(), 1, "{:?}", found.problems);
    assert!(
        found.problems[0].contains("28x28x3") && found.problems[0].contains("28x28x1"),
        "{}",
        found.problems[0]
    );
    // The same shape: no problem.
    let reference = self::reference(&mut rng, 600);
    assert!(pass(&spec, &samples, &reference, HOUR).problems.is_empty());
}

#[test]
fn a_slice_that_moved_alone_alerts_alone() {
    let spec = spec(&format!(
        "    slices: [{{name: source, from: header.x-source}}]\n{DRIFT}"
    ));
    let mut rng = Rng(2);
    let reference = reference(&mut rng, 2_000);
    let web = Draw {
        attributes: vec![("x-source", "web")],
        ..Draw::of("v1")
    };
    let mobile = Draw {
        shift: 0.05,
        attributes: vec![("x-source", "mobile")],
        ..Draw::of("v1")
    };
    let mut samples = stream(&mut rng, &web, 0, HOUR, 3_000);
    samples.extend(stream(&mut rng, &mobile, 0, HOUR, 600));
    let found = pass(&spec, &samples, &reference, HOUR);
    let keys: Vec<&str> = found.breaches.iter().map(|b| b.key.as_str()).collect();
    assert!(keys.contains(&"drift/source=mobile"), "{keys:?}");
    assert!(!keys.contains(&"drift/source=web"), "{keys:?}");
    let groups = &found.drift.unwrap().groups;
    let web = groups.iter().find(|g| g.slice == "source=web").unwrap();
    assert!(web.tested && web.drifted.is_empty(), "{web:?}");
}

const EVALUATION: &str = "    evaluation: {window: 1h, maturity: 10m, floors: [{metric: accuracy, min: 0.85}], for: 0s}\n";

#[test]
fn floors_and_regressions_alert_on_the_interval_per_version() {
    let spec = spec(EVALUATION);
    let mut rng = Rng(3);
    let good = Draw::of("v1");
    let worse = Draw {
        accuracy: 0.7,
        ..Draw::of("v2")
    };
    let mut samples = stream(&mut rng, &good, 0, HOUR, 800);
    samples.extend(stream(&mut rng, &worse, 0, HOUR, 800));
    // The window's labels have not matured yet: nothing is judged.
    let early = pass(&spec, &samples, &[], HOUR + 5 * 60_000);
    assert!(early.evaluation.is_empty() && early.breaches.is_empty());
    let found = pass(&spec, &samples, &[], HOUR + 10 * 60_000);
    let mut keys: Vec<&str> = found.breaches.iter().map(|b| b.key.as_str()).collect();
    keys.sort_unstable();
    assert!(keys.contains(&"floor/accuracy/v2/all"), "{keys:?}");
    assert!(keys.contains(&"regression/accuracy/v2/all"), "{keys:?}");
    assert!(!keys.iter().any(|k| k.contains("/v1/")), "{keys:?}");
    let v1 = found.evaluation.iter().find(|e| e.version == "v1").unwrap();
    assert!(
        (v1.metrics.accuracy.value - 0.9).abs() < 0.04,
        "{:?}",
        v1.metrics.accuracy
    );
    assert_eq!(v1.metrics.records, 800);

    // A floor near the true level does not fire on the value alone.
    let near = spec_with_floor(0.9);
    let found = pass(&near, &stream(&mut rng, &good, 0, HOUR, 800), &[], 2 * HOUR);
    assert!(found.breaches.is_empty(), "{:?}", found.breaches);
}

fn spec_with_floor(min: f64) -> EndpointSpec {
    spec(&format!(
        "    evaluation: {{window: 1h, maturity: 10m, floors: [{{metric: accuracy, min: {min}}}]}}\n"
    ))
}

#[test]
fn a_breach_becomes_an_alert_that_fires_after_its_hold_and_resolves() {
    let spec = spec(DRIFT);
    let mut rng = Rng(4);
    let reference = reference(&mut rng, 2_000);
    let far = Draw {
        shift: 0.1,
        ..Draw::of("v1")
    };
    let hold = 15 * 60_000;
    let mut open: Vec<AlertRecord> = Vec::new();
    let mut phases = Vec::new();
    // Every 5 minutes for 2.5 hours: drifted samples for the first hour only.
    let drifted = stream(&mut rng, &far, 0, HOUR, 3_000);
    for tick in 1..=30 {
        let now = tick * 5 * 60_000;
        let recent: Vec<LabelledSample> = drifted
            .iter()
            .filter(|s| s.sample.stored_at < now)
            .cloned()
            .collect();
        let found = pass(&spec, &recent, &reference, now);
        for change in advance("default/fashion", &open, &found.breaches, |_| hold, now) {
            if let Some(t) = change.transition {
                phases.push((now / 60_000, t));
            }
            open.retain(|r| r.key != change.record.key);
            if change.record.phase.is_open() {
                open.push(change.record);
            }
        }
    }
    // 500 samples have arrived at minute 10: pending then, firing 15 minutes later. The
    // hour's window holds its last 500 drifted samples at minute 110 and fewer after: the
    // alert resolves 15 minutes after that last breach.
    assert_eq!(
        phases,
        [
            (10, AlertPhase::Pending),
            (25, AlertPhase::Firing),
            (125, AlertPhase::Resolved)
        ]
    );
}

#[test]
fn the_gauges_are_prometheus_text_with_the_rules_labels() {
    let spec = spec(&format!("{DRIFT}{EVALUATION}"));
    let mut rng = Rng(5);
    let reference = reference(&mut rng, 2_000);
    let far = Draw {
        shift: 0.1,
        ..Draw::of("v1")
    };
    let samples = stream(&mut rng, &far, 0, HOUR, 600);
    assert_eq!(lookback_ms(&spec), 2 * HOUR + 10 * 60_000);
    let found = pass(&spec, &samples, &reference, HOUR + 10 * 60_000);
    let text = exposition(&found.series);
    assert!(
        text.starts_with("# HELP toucan_endpoint_evaluation "),
        "{text}"
    );
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
            .to_string()
    };
    let accuracy = line(
        "toucan_endpoint_evaluation{namespace=\"default\",endpoint=\"fashion\",version=\"v1\",slice=\"all\",metric=\"accuracy\"} ",
    );
    let value: f64 = accuracy.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((0.8..1.0).contains(&value), "{accuracy}");
    line(
        "toucan_endpoint_evaluation_samples{namespace=\"default\",endpoint=\"fashion\",version=\"v1\",slice=\"all\"} 600",
    );
    line(
        "toucan_endpoint_drift_detected{namespace=\"default\",endpoint=\"fashion\",slice=\"all\",feature=\"brightness\",test=\"ks\"} 1",
    );
    line(
        "toucan_endpoint_drift_detected{namespace=\"default\",endpoint=\"fashion\",slice=\"all\",feature=\"width\",test=\"ks\"} 0",
    );
    line(
        "toucan_endpoint_drift_samples{namespace=\"default\",endpoint=\"fashion\",slice=\"all\",feature=\"prediction\",test=\"chisquare\"} 500",
    );
    // Each family's HELP and TYPE once.
    assert_eq!(
        text.matches("# TYPE toucan_endpoint_drift_score gauge")
            .count(),
        1
    );
}

#[test]
fn a_read_cut_at_its_limit_is_a_problem_that_says_from_when() {
    let mut rng = Rng(3);
    let samples = stream(&mut rng, &Draw::of("v1"), HOUR, HOUR, 10);
    assert_eq!(read_limit_problem(&samples, 11), None);
    let problem = read_limit_problem(&samples, 10).unwrap();
    assert!(
        problem.contains("at most 10 samples") && problem.contains("1970-01-01T01:00:00"),
        "{problem}"
    );
}
