//! TuningStudies applied to the real test cluster: a study runs its trials as PipelineRuns and
//! finishes with its best trial in status and every trial in the store; an operator killed
//! ten times during a study of the Fashion-MNIST pipeline leaves exactly the trials an
//! undisturbed one ran; an invalid study
//! runs nothing; a study of hundreds of trials keeps its object small; median stopping stops a
//! trial whose pushed metrics are clearly worse; a study of a Pipeline waits for it and passes
//! typed params; a deadline ends a study; warm-start studies are read, and a missing or
//! incompatible one is named.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Harness, Operator, repo};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use toucan_core::api::{PipelineRun, TuningStudy, TuningStudyStatus};
use toucan_core::tuning::{TrialState, child_name};
use toucan_store::metadata::MetadataStore;

/// A step that writes the quadratic `(x - 0.3)^2 + (y + 0.2)^2` as its output param `value`,
/// after a while (so that there is time to kill the operator ten times during a study).
const QUADRATIC: &str = "sleep 3; awk -v x=\"$1\" -v y=\"$2\" 'BEGIN { printf \"%.12f\\n\", (x - 0.3)^2 + (y + 0.2)^2 }' > \"$0\"";

fn study(name: &str, spec: serde_json::Value) -> TuningStudy {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "toucan.dev/v1alpha1",
        "kind": "TuningStudy",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

/// Twelve TPE trials over the quadratic, two at a time.
fn quadratic_study(name: &str) -> TuningStudy {
    study(
        name,
        serde_json::json!({
            "objective": {"metric": "value", "goal": "minimize"},
            "parameters": [
                {"name": "x", "type": "double", "min": -1.0, "max": 1.0},
                {"name": "y", "type": "double", "min": -1.0, "max": 1.0},
            ],
            "algorithm": {"name": "tpe", "seed": 11, "startupTrials": 4},
            "budget": {"maxTrials": 12, "parallelTrials": 2},
            "trial": {
                "image": "busybox",
                "command": ["sh", "-c", QUADRATIC, "{{outputs.params.value}}",
                            "{{trial.params.x}}", "{{trial.params.y}}"],
                "outputs": {"params": [{"name": "value"}]},
            },
        }),
    )
}

/// Twelve TPE trials of `examples/fashion-mnist` at a small size (a linear model for one epoch
/// on one thread, with an export gate no such model clears, so that export is skipped), over
/// the learning rate and the batch size, two at a time; the objective is the evaluate step's
/// test accuracy. Its namespace needs the Pipeline ([`apply_fashion`]).
fn fashion_study(name: &str) -> TuningStudy {
    study(
        name,
        serde_json::json!({
            "objective": {"metric": "accuracy", "goal": "maximize"},
            "parameters": [
                {"name": "learning_rate", "type": "double", "min": 0.0005, "max": 0.05,
                 "scale": "log"},
                {"name": "batch_size", "type": "discrete", "values": [64, 128, 256]},
            ],
            "algorithm": {"name": "tpe", "seed": 11, "startupTrials": 4},
            "budget": {"maxTrials": 12, "parallelTrials": 2},
            "trial": {
                "pipelineRef": {"name": "fashion-mnist"},
                "params": [
                    {"name": "model", "value": "linear"},
                    {"name": "epochs", "value": "1"},
                    {"name": "threads", "value": "1"},
                    {"name": "min_accuracy", "value": "0.99"},
                    {"name": "learning_rate", "value": "{{trial.params.learning_rate}}"},
                    {"name": "batch_size", "value": "{{trial.params.batch_size}}"},
                ],
                "objectiveFrom": "{{steps.evaluate.outputs.params.accuracy}}",
            },
        }),
    )
}

/// `examples/fashion-mnist`'s Pipeline in `ns`, its `path:` inputs read from the example.
fn apply_fashion(h: &Harness, ns: &str) {
    let example = repo()
        .join("examples/fashion-mnist")
        .canonicalize()
        .unwrap();
    h.kubectl_ok(&[
        "apply",
        "-n",
        ns,
        "-f",
        example.join("pipeline.yaml").to_str().unwrap(),
    ]);
    h.kubectl_ok(&[
        "annotate",
        "-n",
        ns,
        "pipeline/fashion-mnist",
        &format!("toucan.dev/source-dir={}", example.display()),
    ]);
}

/// A namespace for a study, with the artifact store's Secret its step pods need (S3).
async fn create_namespace(h: &Harness, ns: &str) {
    h.kubectl_ok(&["create", "namespace", ns]);
    h.artifacts_secret(ns);
}

async fn wait_study(
    h: &Harness,
    ns: &str,
    name: &str,
    what: &str,
    timeout: Duration,
    f: impl Fn(&TuningStudyStatus) -> bool,
) -> TuningStudy {
    let api: Api<TuningStudy> = Api::namespaced(h.client(), ns);
    let deadline = Instant::now() + timeout;
    loop {
        let study = api.get(name).await.unwrap();
        if f(study
            .status
            .as_ref()
            .unwrap_or(&TuningStudyStatus::default()))
        {
            return study;
        }
        if Instant::now() >= deadline {
            let runs: Vec<_> = child_runs(h, ns, name)
                .await
                .into_iter()
                .map(|r| (r.name_any(), r.status))
                .collect();
            panic!(
                "study {ns}/{name}: {what}: never happened; last status {:#?}\ntrial runs: \
                 {runs:#?}\n{}",
                study.status,
                operator_logs(h)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The last lines of every operator's log in the harness, for a failure's message.
fn operator_logs(h: &Harness) -> String {
    let mut out = String::new();
    let mut logs: Vec<_> = std::fs::read_dir(h.dir.path())
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    logs.retain(|p: &std::path::PathBuf| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("operator-") && n.ends_with(".log"))
    });
    logs.sort();
    for log in logs {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        out.push_str(&format!("--- {} (last 150 lines)\n", log.display()));
        for line in &lines[lines.len().saturating_sub(150)..] {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn phase(status: &TuningStudyStatus) -> &str {
    status.phase.as_deref().unwrap_or("")
}

fn is_over(status: &TuningStudyStatus) -> bool {
    matches!(phase(status), "Succeeded" | "Failed")
}

/// A study's trials in the store: (name, parameters as JSON, state), by index.
async fn stored_trials(
    store: &Arc<dyn MetadataStore>,
    study: &TuningStudy,
) -> Vec<(String, String, TrialState)> {
    store
        .list_trials(&study.uid().unwrap())
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.trial.name.clone(),
                serde_json::to_string(&r.trial.params).unwrap(),
                r.trial.state,
            )
        })
        .collect()
}

async fn child_runs(h: &Harness, ns: &str, study: &str) -> Vec<PipelineRun> {
    let api: Api<PipelineRun> = Api::namespaced(h.client(), ns);
    api.list(&ListParams::default().labels(&format!("toucan.dev/study={study}")))
        .await
        .unwrap()
        .items
}

fn operator_for(h: &Harness, identity: &str, ns: &str) -> Operator {
    h.operator(identity, &["--leader-elect=false", "--watch-namespace", ns])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_study_finishes_and_a_killed_operator_resumes_it_exactly() {
    let Some(h) = Harness::start("studies").await else {
        return;
    };
    let started = Instant::now();
    h.apply_crds();
    let store = toucan_store::metadata::open(&h.db_url).await.unwrap();
    create_namespace(&h, "calm").await;
    create_namespace(&h, "chaos").await;
    // Two operators, one namespace each: the same study runs undisturbed in `calm` and with
    // its operator killed ten times in `chaos`.
    let calm_operator = operator_for(&h, "calm", "calm");
    let mut chaos_operator = operator_for(&h, "chaos-0", "chaos");
    calm_operator.ready().await;
    chaos_operator.ready().await;
    for ns in ["calm", "chaos"] {
        apply_fashion(&h, ns);
        let api: Api<TuningStudy> = Api::namespaced(h.client(), ns);
        api.create(&PostParams::default(), &fashion_study("fmnist"))
            .await
            .unwrap();
    }
    // An objective from a step the trial does not have: refused at its field path.
    let calm: Api<TuningStudy> = Api::namespaced(h.client(), "calm");
    let mut bad = quadratic_study("bad");
    bad.spec.trial.objective_from = Some("{{steps.evaluate.outputs.params.value}}".into());
    calm.create(&PostParams::default(), &bad).await.unwrap();

    let chaos: Api<TuningStudy> = Api::namespaced(h.client(), "chaos");
    let chaos_study = chaos.get("fmnist").await.unwrap();
    let mut kills = 0;
    let mut last = stored_trials(&store, &chaos_study).await;
    let mut since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(300);
    while kills < 10 {
        // Kill it once it saved progress, or a second after it became ready, a little later
        // each time, so that the kills land at different points of a reconcile.
        let now = stored_trials(&store, &chaos_study).await;
        if now != last || since.elapsed() > Duration::from_secs(1) {
            tokio::time::sleep(Duration::from_millis((kills * 73) % 300)).await;
            let trials = stored_trials(&store, &chaos_study).await;
            let ended = trials.iter().filter(|t| t.2.is_finished()).count();
            assert!(
                ended < 12,
                "the study ended after {kills} kills; the test kills too slowly: {trials:#?}\n{:#?}\n{:#?}",
                chaos.get("fmnist").await.unwrap().status,
                child_runs(&h, "chaos", "fmnist")
                    .await
                    .iter()
                    .map(|r| r.status.clone())
                    .collect::<Vec<_>>()
            );
            chaos_operator.kill();
            kills += 1;
            chaos_operator = operator_for(&h, &format!("chaos-{kills}"), "chaos");
            chaos_operator.ready().await;
            since = Instant::now();
            last = stored_trials(&store, &chaos_study).await;
        }
        assert!(
            Instant::now() < deadline,
            "no progress after {kills} kills:\n{}",
            chaos_operator.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let killed_at = stored_trials(&store, &chaos_study).await;

    let mut done = Vec::new();
    for ns in ["calm", "chaos"] {
        let study = wait_study(&h, ns, "fmnist", "ended", Duration::from_secs(300), is_over).await;
        let status = study.status.clone().unwrap();
        assert_eq!(phase(&status), "Succeeded", "{ns}: {status:#?}");
        let counts = status.trials.clone().unwrap();
        assert_eq!(
            (counts.succeeded, counts.failed),
            (12, 0),
            "{ns}: {status:#?}"
        );
        let best = status.best.clone().unwrap();
        assert_eq!(
            best.params.keys().collect::<Vec<_>>(),
            ["batch_size", "learning_rate"],
            "{ns}: {best:#?}"
        );
        let condition = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Succeeded")
            .unwrap();
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_str()),
            ("True", "MaxTrials")
        );
        assert_eq!(status.study_id, study.uid());
        let trials = stored_trials(&store, &study).await;
        assert_eq!(trials.len(), 12, "{ns}: {trials:#?}");
        assert!(
            trials.iter().all(|t| t.2 == TrialState::Succeeded),
            "{ns}: {trials:#?}"
        );
        // One run per trial, named from the study and the trial, none duplicated by a restart.
        let mut runs: Vec<String> = child_runs(&h, ns, "fmnist")
            .await
            .iter()
            .map(|r| r.name_any())
            .collect();
        runs.sort();
        let mut expected: Vec<String> = trials.iter().map(|t| child_name("fmnist", &t.0)).collect();
        expected.sort();
        assert_eq!(runs, expected, "{ns}");
        // The best trial's test accuracy after one epoch of the linear model, as its
        // evaluate step reported it.
        let objective = best.objective.unwrap();
        assert!(objective > 0.75 && objective < 1.0, "{ns}: {best:#?}");
        let run_id = store
            .list_trials(&study.uid().unwrap())
            .await
            .unwrap()
            .into_iter()
            .find(|r| r.trial.name == best.name)
            .and_then(|r| r.run_id)
            .unwrap();
        let evaluate = store.get_step(&run_id, "evaluate").await.unwrap().unwrap();
        assert_eq!(
            evaluate.outputs.params["accuracy"]
                .trim()
                .parse::<f64>()
                .ok(),
            Some(objective),
            "{ns}: {evaluate:#?}"
        );
        done.push((trials, best.name));
    }
    let (calm_trials, calm_best) = &done[0];
    let (chaos_trials, chaos_best) = &done[1];
    let names_and_params = |t: &[(String, String, TrialState)]| -> Vec<(String, String)> {
        t.iter().map(|(n, p, _)| (n.clone(), p.clone())).collect()
    };
    assert_eq!(
        names_and_params(calm_trials),
        names_and_params(chaos_trials),
        "the interrupted study ran other trials than the undisturbed one"
    );
    assert_eq!(calm_best, chaos_best);
    let bad = wait_study(
        &h,
        "calm",
        "bad",
        "failed",
        Duration::from_secs(30),
        is_over,
    )
    .await;
    let status = bad.status.clone().unwrap();
    assert_eq!(phase(&status), "Failed", "{status:#?}");
    let message = status.message.unwrap_or_default();
    assert!(
        message.contains("spec.trial.objectiveFrom") && message.contains("evaluate"),
        "{message}"
    );
    assert!(
        child_runs(&h, "calm", "bad").await.is_empty(),
        "an invalid study runs nothing"
    );
    assert!(
        store
            .list_trials(&bad.uid().unwrap())
            .await
            .unwrap()
            .is_empty()
    );
    eprintln!(
        "a_study_finishes_and_a_killed_operator_resumes_it_exactly: {kills} kills, the last \
         with {} of 12 trials finished; {:?}",
        killed_at.iter().filter(|t| t.2.is_finished()).count(),
        started.elapsed()
    );
}

/// The resident set of a process, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The finished trials of the many-trials study whose runs stay in the cluster.
const KEEP_RUNS: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_study_of_many_trials_keeps_its_object_small() {
    let Some(h) = Harness::start("many_trials").await else {
        return;
    };
    let started = Instant::now();
    h.apply_crds();
    let store = toucan_store::metadata::open(&h.db_url).await.unwrap();
    let operator = h.operator("many", &["--leader-elect=false"]);
    operator.ready().await;
    // `make bench-study` runs it with 10,000 trials (BENCH_TRIALS); `make test` with 120.
    let trials_wanted = std::env::var("TOUCAN_STUDY_TRIALS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(120);
    let parallel = (trials_wanted / 6).clamp(20, 100);
    let spec = study(
        "many",
        serde_json::json!({
            "objective": {"metric": "value", "goal": "maximize"},
            "parameters": [
                {"name": "a", "type": "int", "min": 0, "max": 1000000},
                {"name": "tag", "type": "categorical",
                 "values": ["x".repeat(200), "y".repeat(200)]},
            ],
            "algorithm": {"name": "random", "seed": 3},
            "budget": {"maxTrials": trials_wanted, "parallelTrials": parallel},
            "trial": {
                "image": "busybox",
                "command": ["sh", "-c", "echo \"$1\" > \"$0\"", "{{outputs.params.value}}",
                            "{{trial.params.a}}"],
                "outputs": {"params": [{"name": "value"}]},
                "keepRuns": KEEP_RUNS,
            },
        }),
    );
    let api: Api<TuningStudy> = Api::namespaced(h.client(), "default");
    api.create(&PostParams::default(), &spec).await.unwrap();
    let mut largest = 0;
    // The study's runs and pods in the cluster at most.
    let mut most_runs = 0;
    let mut most_pods = 0;
    let pods: Api<Pod> = Api::namespaced(h.client(), "default");
    let mut peak_rss = 0;
    // The operator's resident set each time another tenth of the trials has succeeded.
    let mut profile: Vec<(usize, u64, usize)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60 + trials_wanted as u64 * 5 / 2);
    let study = loop {
        let study = api.get("many").await.unwrap();
        let size = serde_json::to_vec(&study).unwrap().len();
        largest = largest.max(size);
        let rss = operator.pid().and_then(rss_kib);
        if let Some(rss) = rss {
            peak_rss = peak_rss.max(rss);
        }
        most_runs = most_runs.max(child_runs(&h, "default", "many").await.len());
        most_pods = most_pods.max(pods.list(&ListParams::default()).await.unwrap().items.len());
        let done = study
            .status
            .as_ref()
            .and_then(|s| s.trials.as_ref())
            .map_or(0, |c| c.succeeded as usize);
        if done * 10 / trials_wanted > profile.len() {
            profile.push((done, rss.unwrap_or(0), size));
            eprintln!(
                "many trials: {done} succeeded after {:.0?}, operator RSS {} KiB, object {size} bytes",
                started.elapsed(),
                rss.unwrap_or(0)
            );
        }
        if study.status.as_ref().is_some_and(is_over) {
            break study;
        }
        assert!(
            Instant::now() < deadline,
            "the study did not end: {:#?}",
            study.status
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let status = study.status.clone().unwrap();
    assert_eq!(phase(&status), "Succeeded", "{status:#?}");
    let counts = status.trials.clone().unwrap();
    assert_eq!(counts.succeeded as usize, trials_wanted, "{status:#?}");
    assert!(status.recent.len() <= 5);
    assert!(
        largest < 100 * 1024,
        "the study's object reached {largest} bytes"
    );
    let trials = store.list_trials(&study.uid().unwrap()).await.unwrap();
    assert_eq!(trials.len(), trials_wanted);
    let indices: Vec<u32> = trials.iter().map(|t| t.trial.index).collect();
    assert_eq!(indices, (0..trials_wanted as u32).collect::<Vec<_>>());
    // Every trial's objective is its own parameter, read back from its run.
    for t in &trials {
        assert_eq!(
            t.trial.objective.map(|o| o as i64),
            t.trial.params["a"].to_string().parse::<i64>().ok(),
            "{t:#?}"
        );
        assert!(t.run_id.is_some(), "{t:#?}");
    }
    let highest = trials
        .iter()
        .filter_map(|t| t.trial.objective)
        .fold(f64::MIN, f64::max);
    assert_eq!(status.best.unwrap().objective, Some(highest));
    // Finished trials beyond the newest KEEP_RUNS leave no run and no pod behind: the
    // cluster (and the operator's caches of runs and pods) hold a bounded number of them.
    // A deleted run's pods go with it, not when the garbage collector gets to them (seconds
    // later, a few a second), which would let them pile up here.
    assert!(
        most_runs <= KEEP_RUNS + 2 * parallel && most_pods <= KEEP_RUNS + 2 * parallel,
        "{most_runs} runs and {most_pods} pods at once with {parallel} trials in parallel"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let runs = child_runs(&h, "default", "many").await.len();
        let pods = pods.list(&ListParams::default()).await.unwrap().items.len();
        if runs == KEEP_RUNS && pods <= KEEP_RUNS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{runs} runs and {pods} pods left, {KEEP_RUNS} kept"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "a_study_of_many_trials_keeps_its_object_small: {trials_wanted} trials in {:?}, largest object \
         {largest} bytes, operator peak RSS {peak_rss} KiB",
        started.elapsed()
    );
}

/// A trial that pushes its score for epochs 1 to 3 through the control-plane API (as the
/// worker's metric push does, with the pod's token), then writes it as its output param; the
/// trial of score 1 stalls for a minute after epoch 2.
const PUSHING: &str = r#"q="$1"; out="$0"
token=$(cat /var/run/secrets/kubernetes.io/serviceaccount/token)
url="$TOUCAN_API/api/v1/runs/$TOUCAN_RUN_ID/steps/$TOUCAN_STEP/metrics"
epochs=""
for e in 1 2 3; do
  epochs="$epochs${epochs:+,}{\"epoch\": $e, \"score\": $q}"
  curl -sf -X PUT -H "Authorization: Bearer $token" -H "Content-Type: application/json" \
    --data "{\"epochs\": [$epochs]}" "$url" || exit 7
  if [ "$q" = 1 ] && [ "$e" = 2 ]; then sleep 60; fi
  sleep 0.3
done
echo "$q" > "$out""#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn median_stopping_stops_a_clearly_worse_trial_at_its_grace_step() {
    let Some(h) = Harness::start("median").await else {
        return;
    };
    let started = Instant::now();
    h.apply_crds();
    let store = toucan_store::metadata::open(&h.db_url).await.unwrap();
    let operator = h.operator("median", &["--leader-elect=false"]);
    operator.ready().await;
    let spec = study(
        "median",
        serde_json::json!({
            "objective": {"metric": "score", "goal": "maximize"},
            "parameters": [{"name": "q", "type": "discrete", "values": [10, 9, 12, 1]}],
            "algorithm": {"name": "grid"},
            "earlyStopping": {"median": {"minTrials": 2, "graceSteps": 2}},
            "budget": {"maxTrials": 4, "parallelTrials": 2},
            "trial": {
                "image": "busybox",
                "command": ["sh", "-c", PUSHING, "{{outputs.params.score}}", "{{trial.params.q}}"],
                "outputs": {"params": [{"name": "score"}]},
            },
        }),
    );
    let api: Api<TuningStudy> = Api::namespaced(h.client(), "default");
    api.create(&PostParams::default(), &spec).await.unwrap();
    let study = wait_study(
        &h,
        "default",
        "median",
        "ended",
        Duration::from_secs(50),
        is_over,
    )
    .await;
    let status = study.status.clone().unwrap();
    assert_eq!(phase(&status), "Succeeded", "{status:#?}");
    let counts = status.trials.clone().unwrap();
    assert_eq!((counts.succeeded, counts.stopped), (3, 1), "{status:#?}");
    assert_eq!(status.best.as_ref().unwrap().objective, Some(12.0));
    let trials = store.list_trials(&study.uid().unwrap()).await.unwrap();
    let worse = trials
        .iter()
        .find(|t| t.trial.params["q"].to_string() == "1")
        .unwrap();
    assert_eq!(worse.trial.state, TrialState::Stopped, "{worse:#?}");
    let steps: Vec<u64> = worse.trial.series.iter().map(|p| p.step).collect();
    assert_eq!(steps, [1, 2], "stopped at its grace step: {worse:#?}");
    // The completed trials' series are in the ledger too: the median came from them.
    for t in trials
        .iter()
        .filter(|t| t.trial.state == TrialState::Succeeded)
    {
        assert_eq!(t.trial.series.len(), 3, "{t:#?}");
    }
    // Its run was deleted, so cancelled, long before its minute of stalling was over.
    let run_id = worse.run_id.clone().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let run = store.get_run(&run_id).await.unwrap().unwrap();
        if run.phase == toucan_core::records::Phase::Cancelled {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stopped trial's run: {run:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let child = child_name("median", &worse.trial.name);
    let runs: Api<PipelineRun> = Api::namespaced(h.client(), "default");
    let deadline = Instant::now() + Duration::from_secs(30);
    while runs.get_opt(&child).await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "{child} was not deleted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let events = h.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=median",
        "-o",
        "jsonpath={.items[*].reason}",
    ]);
    assert!(events.contains("TrialStopped"), "{events}");
    eprintln!(
        "median_stopping_stops_a_clearly_worse_trial_at_its_grace_step: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_trials_deadlines_and_warm_starts() {
    let Some(h) = Harness::start("study_refs").await else {
        return;
    };
    let started = Instant::now();
    h.apply_crds();
    let operator = h.operator("refs", &["--leader-elect=false"]);
    operator.ready().await;
    let api: Api<TuningStudy> = Api::namespaced(h.client(), "default");

    // A study of a Pipeline that does not exist yet waits for it, then runs a trial of it per
    // value, with the value as the run's param.
    let squares = study(
        "squares",
        serde_json::json!({
            "objective": {"metric": "value", "goal": "minimize"},
            "parameters": [{"name": "x", "type": "discrete", "values": [3, -1, 2]}],
            "algorithm": {"name": "grid"},
            "budget": {"maxTrials": 3, "parallelTrials": 3},
            "trial": {
                "pipelineRef": {"name": "square"},
                "params": [{"name": "x", "value": "{{trial.params.x}}"}],
            },
        }),
    );
    api.create(&PostParams::default(), &squares).await.unwrap();
    let waiting = wait_study(
        &h,
        "default",
        "squares",
        "waiting",
        Duration::from_secs(30),
        |s| phase(s) == "Pending",
    )
    .await;
    let message = waiting.status.unwrap().message.unwrap_or_default();
    assert!(message.contains("Pipeline \"square\""), "{message}");
    let pipeline = r#"
apiVersion: toucan.dev/v1alpha1
kind: Pipeline
metadata: {name: square}
spec:
  params: [{name: x, type: int}]
  steps:
    - name: square
      image: busybox
      command: [sh, -c, 'echo $(( $1 * $1 )) > "$0"', "{{outputs.params.value}}", "{{params.x}}"]
      outputs: {params: [{name: value}]}
"#;
    let file = h.dir.path().join("square.yaml");
    std::fs::write(&file, pipeline).unwrap();
    h.kubectl_ok(&["apply", "-f", file.to_str().unwrap()]);
    let done = wait_study(
        &h,
        "default",
        "squares",
        "ended",
        Duration::from_secs(90),
        is_over,
    )
    .await;
    let status = done.status.unwrap();
    assert_eq!(
        phase(&status),
        "Succeeded",
        "{status:#?}\n{}",
        h.kubectl_ok(&["get", "events"])
    );
    let best = status.best.unwrap();
    assert_eq!(
        (best.params["x"].as_str(), best.objective),
        ("-1", Some(1.0))
    );
    let runs = child_runs(&h, "default", "squares").await;
    assert_eq!(runs.len(), 3);
    for run in &runs {
        assert_eq!(run.spec.params.len(), 1, "{:#?}", run.spec);
        assert_eq!(
            run.status.as_ref().unwrap().phase.as_deref(),
            Some("Succeeded")
        );
    }

    // A study past its deadline starts nothing more and stops what runs.
    let late = study(
        "late",
        serde_json::json!({
            "objective": {"metric": "value", "goal": "minimize"},
            "parameters": [{"name": "x", "type": "double", "min": 0.0, "max": 1.0}],
            "algorithm": {"name": "random", "seed": 1},
            "budget": {"maxTrials": 100, "parallelTrials": 1, "deadline": "5s"},
            "trial": {
                "image": "busybox",
                "command": ["sh", "-c", "sleep 60; echo \"$1\" > \"$0\"",
                            "{{outputs.params.value}}", "{{trial.params.x}}"],
                "outputs": {"params": [{"name": "value"}]},
            },
        }),
    );
    api.create(&PostParams::default(), &late).await.unwrap();
    let created = Instant::now();
    let late = wait_study(
        &h,
        "default",
        "late",
        "ended",
        Duration::from_secs(40),
        is_over,
    )
    .await;
    let elapsed = created.elapsed();
    assert!(elapsed >= Duration::from_secs(4), "ended after {elapsed:?}");
    let status = late.status.unwrap();
    let counts = status.trials.clone().unwrap();
    // The first trial outlives the deadline, so it is the one stopped.
    assert_eq!(
        (
            counts.pending,
            counts.running,
            counts.succeeded,
            counts.stopped
        ),
        (0, 0, 0, 1),
        "{status:#?}"
    );
    let ended = status
        .conditions
        .iter()
        .find(|c| c.status == "True" && matches!(c.type_.as_str(), "Succeeded" | "Failed"))
        .unwrap();
    assert_eq!(ended.reason, "Deadline", "{status:#?}");
    assert_eq!(phase(&status), "Failed", "{status:#?}");

    // Warm starts: a missing study, and one whose space differs, are named.
    let with_warm_start = |name: &str, from: &str, kind: &str| {
        study(
            name,
            serde_json::json!({
                "objective": {"metric": "value", "goal": "minimize"},
                "parameters": [{"name": "x", "type": kind, "min": 0.0, "max": 1.0}],
                "algorithm": {"name": "tpe", "seed": 1},
                "budget": {"maxTrials": 2},
                "warmStart": [{"study": from}],
                "trial": {
                    "image": "busybox",
                    "command": ["sh", "-c", "echo \"$1\" > \"$0\"",
                                "{{outputs.params.value}}", "{{trial.params.x}}"],
                    "outputs": {"params": [{"name": "value"}]},
                },
            }),
        )
    };
    let mut cold = with_warm_start("cold", "nowhere", "double");
    api.create(&PostParams::default(), &cold).await.unwrap();
    let mut other = with_warm_start("other", "late", "int");
    other.spec.parameters[0] =
        serde_json::from_value(serde_json::json!({"name": "x", "type": "int", "min": 0, "max": 5}))
            .unwrap();
    api.create(&PostParams::default(), &other).await.unwrap();
    let warm = with_warm_start("warm", "late", "double");
    api.create(&PostParams::default(), &warm).await.unwrap();
    for (name, expected) in [
        (
            "cold",
            "spec.warmStart[0].study: no TuningStudy \"nowhere\"",
        ),
        (
            "other",
            "warm-start study \"late\" is incompatible: parameter \"x\"",
        ),
    ] {
        let s = wait_study(
            &h,
            "default",
            name,
            "failed",
            Duration::from_secs(30),
            is_over,
        )
        .await;
        let status = s.status.unwrap();
        assert_eq!(phase(&status), "Failed", "{status:#?}");
        let message = status.message.unwrap_or_default();
        assert!(message.contains(expected), "{name}: {message}");
        assert!(child_runs(&h, "default", name).await.is_empty());
    }
    let warm = wait_study(
        &h,
        "default",
        "warm",
        "ended",
        Duration::from_secs(60),
        is_over,
    )
    .await;
    assert_eq!(phase(warm.status.as_ref().unwrap()), "Succeeded");
    // The missing study made, and the spec touched, the cold one runs.
    cold.metadata = api.get("cold").await.unwrap().metadata;
    cold.spec.warm_start[0].study = "warm".into();
    api.replace("cold", &PostParams::default(), &cold)
        .await
        .unwrap();
    let cold = wait_study(&h, "default", "cold", "ran", Duration::from_secs(60), |s| {
        phase(s) == "Succeeded"
    })
    .await;
    assert_eq!(cold.status.unwrap().trials.unwrap().succeeded, 2);
    eprintln!(
        "pipeline_trials_deadlines_and_warm_starts: {:?}",
        started.elapsed()
    );
}

/// A trial that checkpoints as `toucan-worker train` does (`latest` naming a `ckpt-N/`
/// directory in `$TOUCAN_CHECKPOINT_DIR`), training from the epoch its restored checkpoint
/// reached to its budget; it outputs that epoch as `started` and scores `x^2 + 1/budget`.
const CHECKPOINTING: &str = r#"d="$TOUCAN_CHECKPOINT_DIR"; mkdir -p "$d"; start=0
if [ -f "$d/latest" ]; then start=$(cat "$d/$(cat "$d/latest")/epoch"); fi
echo "$start" > "$3"
c=$(printf 'ckpt-%010d' "$2"); mkdir -p "$d/$c.tmp"; echo "$2" > "$d/$c.tmp/epoch"
mv "$d/$c.tmp" "$d/$c"; echo "$c" > "$d/latest.tmp"; mv "$d/latest.tmp" "$d/latest"
awk -v x="$1" -v b="$2" 'BEGIN { printf "%.12f\n", x * x + 1 / b }' > "$0""#;

/// ASHA in a cluster: a promoted trial's larger budget is a run of its own, annotated with
/// the run before it, whose step pods restore that run's newest checkpoint: each budget
/// trains on from where the smaller one ended. The study keeps no finished run
/// (`keepRuns: 0`), so every promotion starts after its earlier run was deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_asha_promotion_trains_on_from_the_trials_checkpoint() {
    let Some(h) = Harness::start("asha").await else {
        return;
    };
    h.apply_crds();
    let store = toucan_store::metadata::open(&h.db_url).await.unwrap();
    let operator = h.operator("asha", &["--leader-elect=false"]);
    operator.ready().await;
    let spec = study(
        "asha",
        serde_json::json!({
            "objective": {"metric": "value", "goal": "minimize"},
            "parameters": [{"name": "x", "type": "double", "min": -2.0, "max": 2.0}],
            "algorithm": {"name": "asha", "seed": 5,
                          "resource": {"name": "epochs", "min": 1, "max": 9}},
            "budget": {"maxTrials": 6, "parallelTrials": 2},
            "trial": {
                "image": "busybox",
                "command": ["sh", "-c", CHECKPOINTING, "{{outputs.params.value}}",
                            "{{trial.params.x}}", "{{trial.params.epochs}}",
                            "{{outputs.params.started}}"],
                "outputs": {"params": [{"name": "value"}, {"name": "started"}]},
                "keepRuns": 0,
            },
        }),
    );
    let api: Api<TuningStudy> = Api::namespaced(h.client(), "default");
    api.create(&PostParams::default(), &spec).await.unwrap();
    let study = wait_study(
        &h,
        "default",
        "asha",
        "ended",
        Duration::from_secs(120),
        is_over,
    )
    .await;
    let status = study.status.clone().unwrap();
    assert_eq!(phase(&status), "Succeeded", "{status:#?}");
    let trials = store.list_trials(&study.uid().unwrap()).await.unwrap();
    let promoted: Vec<_> = trials
        .iter()
        .filter(|t| t.trial.budget.is_some_and(|b| b > 1))
        .collect();
    assert!(!promoted.is_empty(), "no trial was promoted: {trials:#?}");
    for t in promoted {
        let budget = t.trial.budget.unwrap();
        // The larger budget's step started from the epoch the smaller one reached.
        let run_id = t.run_id.clone().unwrap();
        let step = store.get_step(&run_id, "trial").await.unwrap().unwrap();
        let reached = t
            .trial
            .rungs
            .iter()
            .map(|r| r.budget)
            .filter(|&b| b < budget)
            .max()
            .unwrap();
        assert_eq!(
            step.outputs.params["started"].trim(),
            reached.to_string(),
            "trial {} at budget {budget}: {step:#?}",
            t.trial.name
        );
    }
    // Every finished trial's runs went, with their pods.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = child_runs(&h, "default", "asha").await;
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "runs kept: {:?}",
            left.iter().map(|r| r.name_any()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
