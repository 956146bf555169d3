#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `get runs`, `describe run` and `logs` with `--cluster`, against the real test cluster (whose
//! process-mode nodes run step pods as processes here) with `toucan-operator` running the
//! PipelineRun and serving its API on loopback, on a PostgreSQL database of the test's own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use toucan_core::api::PipelineRun;
use toucan_test_harness::cluster::{TestCluster, pod_token};
use toucan_test_harness::net::{free_ports, http, http_get};
use toucan_test_harness::postgres::{self, Database};

const NS: &str = "default";
const RUN: &str = "hello";

/// Two steps in a row; `greet` says hello-from-step.
const PIPELINE_RUN: &str = r#"
apiVersion: toucan.dev/v1alpha1
kind: PipelineRun
metadata: {name: hello, namespace: default}
spec:
  pipelineSpec:
    steps:
      - name: greet
        image: busybox
        command: [sh, -c, "echo hello-from-step"]
      - name: second
        image: busybox
        command: [sh, -c, "echo second"]
        dependsOn: [greet]
"#;

/// The workspace's binaries: `toucan`, and `toucan-operator` and `toucan-worker` next to it.
fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_toucan"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The PATH of step processes: the libtorch worker if any, the workspace's binaries, ours.
fn step_path() -> String {
    let mut parts = Vec::new();
    if let Ok(p) = std::env::var("TOUCAN_TEST_STEP_PATH") {
        parts.push(p);
    }
    parts.push(bin_dir().display().to_string());
    parts.push(std::env::var("PATH").unwrap_or_default());
    parts.join(":")
}

/// The operator as a child process, killed when dropped.
struct Operator {
    child: Child,
    api_port: u16,
    metrics_port: u16,
    log: PathBuf,
}

impl Operator {
    fn start(cluster: &TestCluster, db_url: &str, dir: &Path) -> Operator {
        let binary = bin_dir().join("toucan-operator");
        assert!(
            binary.exists(),
            "{} is missing: run `cargo build -p toucan-operator -p toucan-worker --bins` first",
            binary.display()
        );
        let [api_port, metrics_port] = free_ports().unwrap();
        let log = dir.join("operator.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(binary)
            .args(["--database-url", db_url, "--artifacts"])
            .arg(dir.join("artifacts"))
            .args([
                "--api-listen",
                &format!("127.0.0.1:{api_port}"),
                "--metrics-listen",
                &format!("127.0.0.1:{metrics_port}"),
                "--api-url",
                &format!("http://127.0.0.1:{api_port}"),
                "--launcher-image",
                "toucan/worker:test",
                "--leader-elect=false",
            ])
            .env("KUBECONFIG", cluster.kubeconfig())
            .env("RUST_LOG", "info,toucan_operator=debug,kube_runtime=debug")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Operator {
            child,
            api_port,
            metrics_port,
            log,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn ready(&self) {
        // Generous: on a loaded machine the watches take a while to sync.
        let deadline = Instant::now() + Duration::from_secs(120);
        while http_get(self.metrics_port, "/readyz").0 != 200 {
            assert!(
                Instant::now() < deadline,
                "operator never ready:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn api(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the CRDs are Established. Right after `apply`, a CRD may have no conditions
/// yet, which `kubectl wait` reports as an error rather than waiting: it is asked again.
fn wait_established(cluster: &TestCluster, crds: &[&str]) {
    let mut args = vec!["wait", "--for=condition=Established", "--timeout=30s"];
    args.extend_from_slice(crds);
    for _ in 0..20 {
        let ok = Command::new(cluster.kubectl())
            .args(&args)
            .env("KUBECONFIG", cluster.kubeconfig())
            .output()
            .unwrap()
            .status
            .success();
        if ok {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    kubectl(cluster, &args, None);
}

fn kubectl(cluster: &TestCluster, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut child = Command::new(cluster.kubectl())
        .args(args)
        .env("KUBECONFIG", cluster.kubeconfig())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `toucan ARGS` against the cluster, with a local home that has no store.
fn toucan(cluster: &TestCluster, home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_toucan"))
        .args(args)
        .env("KUBECONFIG", cluster.kubeconfig())
        .env("TOUCAN_HOME", home)
        .env_remove("TOUCAN_API")
        .env_remove("TOUCAN_DATABASE_URL")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts the exit code, showing both streams when it differs.
fn expect(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}:\nstdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

async fn wait_finished(cluster: &TestCluster, operator: &Operator) -> PipelineRun {
    let api: Api<PipelineRun> = Api::namespaced(cluster.client(), NS);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(run) = api.get_opt(RUN).await.unwrap() {
            let phase = run.status.as_ref().and_then(|s| s.phase.clone());
            if matches!(phase.as_deref(), Some("Succeeded" | "Failed" | "Cancelled")) {
                return run;
            }
        }
        assert!(
            Instant::now() < deadline,
            "PipelineRun {RUN} did not finish:\n{}",
            operator.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Pushes a metric series for the `greet` step as its pod would: with a token bound to it.
async fn push_metrics(cluster: &TestCluster, operator: &Operator, run_id: &str) {
    let pods: Api<Pod> = Api::namespaced(cluster.client(), NS);
    let pod = pods
        .list(&ListParams::default().labels(&format!("toucan.dev/run={RUN}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|p| p.metadata.annotations.as_ref().unwrap()["toucan.dev/node"] == "greet")
        .unwrap();
    let account = pod.spec.as_ref().unwrap().service_account_name.clone();
    let token = pod_token(cluster.client(), account.as_deref().unwrap(), &pod)
        .await
        .unwrap();
    let series = r#"{"attempt":1,"epochs":[{"epoch":1,"loss":0.5},{"epoch":2,"loss":0.25}]}"#;
    let path = format!("/api/v1/runs/{run_id}/steps/greet/metrics");
    assert_eq!(
        http("PUT", operator.api_port, &path, Some(&token), Some(series)).0,
        204
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspects_a_pipeline_run_in_the_cluster() {
    let Some(admin) = postgres::admin_url().unwrap() else {
        return;
    };
    let path = step_path();
    let Some(cluster) = TestCluster::start_with_env(&[("PATH", path.as_str())])
        .await
        .unwrap()
    else {
        return;
    };
    let db_url = Database::create(&admin, "cli_cluster").unwrap().url;
    let dir = tempfile::Builder::new()
        .prefix("toucan-cli-cluster-")
        .tempdir()
        .unwrap();
    let home = dir.path().join("home");
    let crds = repo().join("charts/toucan/crds");
    kubectl(&cluster, &["apply", "-f", crds.to_str().unwrap()], None);
    wait_established(
        &cluster,
        &["crd/pipelines.toucan.dev", "crd/pipelineruns.toucan.dev"],
    );
    let operator = Operator::start(&cluster, &db_url, dir.path());
    operator.ready().await;
    kubectl(&cluster, &["apply", "-f", "-"], Some(PIPELINE_RUN));
    let done = wait_finished(&cluster, &operator).await;
    let status = done.status.unwrap();
    assert_eq!(
        status.phase.as_deref(),
        Some("Succeeded"),
        "{status:#?}\n{}",
        operator.log_text()
    );
    let run_id = status.run_id.unwrap();
    let api = operator.api();
    let toucan = |args: &[&str]| toucan(&cluster, &home, args);

    // get runs: the table and the PipelineRun summaries.
    let out = toucan(&["get", "runs", "--cluster", "--api", &api]);
    expect(&out, 0, "get runs");
    let table = text(&out.stdout);
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with(RUN))
        .unwrap_or_else(|| panic!("no {RUN} in\n{table}"))
        .split_whitespace()
        .collect();
    assert_eq!(
        row[..6],
        [RUN, "(inline)", "Succeeded", "2", "0", "2"],
        "{table}"
    );
    let out = toucan(&["get", "runs", "--cluster", "-A", "-o", "json"]);
    expect(&out, 0, "get runs -A -o json");
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs[0]["name"], RUN, "{runs:#}");
    assert_eq!(runs[0]["namespace"], NS);
    assert_eq!(runs[0]["phase"], "Succeeded");
    assert_eq!(runs[0]["runId"], run_id.as_str());
    assert_eq!(runs[0]["steps"]["total"], 2);

    // describe run: the steps from the operator's API, in pipeline order.
    let out = toucan(&[
        "describe",
        "run",
        RUN,
        "--cluster",
        "--api",
        &api,
        "-o",
        "json",
    ]);
    expect(&out, 0, "describe run -o json");
    let described: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(described["run"], run_id.as_str(), "{described:#}");
    assert_eq!(described["pipelineRun"], format!("{NS}/{RUN}"));
    assert_eq!(described["phase"], "Succeeded");
    let steps = described["steps"].as_array().unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["greet", "second"], "{described:#}");
    for step in steps {
        assert_eq!(step["phase"], "Succeeded", "{step:#}");
        let key = step["cacheKey"].as_str().unwrap_or_default();
        assert!(key.len() >= 16, "no cache key: {step:#}");
    }
    assert_ne!(steps[0]["cacheKey"], steps[1]["cacheKey"]);
    assert_eq!(steps[1]["dependsOn"][0], "greet");
    let out = toucan(&["describe", "run", RUN, "--cluster", "--api", &api]);
    expect(&out, 0, "describe run");
    let table = text(&out.stdout);
    assert!(
        table.contains(&format!("PipelineRun {NS}/{RUN}"))
            && table.contains("second [Succeeded] <- greet"),
        "{table}"
    );

    // describe run without the API: the status summary, a warning, exit 0. The default goes
    // through the API server's service proxy, and this cluster has no such Service.
    for extra in [&["--api", "http://127.0.0.1:1"][..], &[][..]] {
        let mut args = vec!["describe", "run", RUN, "--cluster"];
        args.extend_from_slice(extra);
        let out = toucan(&args);
        expect(&out, 0, "describe run without the API");
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(stderr.contains("toucan API"), "{stderr}");
        assert!(
            stdout.contains("Succeeded") && stdout.contains("2 total"),
            "{stdout}"
        );
    }

    // logs: the step container's log from its pod.
    let out = toucan(&["logs", RUN, "greet", "--cluster"]);
    expect(&out, 0, "logs");
    assert!(
        text(&out.stdout).contains("hello-from-step"),
        "{}",
        text(&out.stdout)
    );
    let out = toucan(&[
        "logs",
        RUN,
        "second",
        "--cluster",
        "--attempt",
        "1",
        "-o",
        "json",
    ]);
    expect(&out, 0, "logs -o json");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["attempt"], 1);
    assert!(doc["log"].as_str().unwrap().contains("second"), "{doc:#}");

    // logs --metrics: none pushed yet, then the series the step's pod pushed.
    let metrics = |format: &str| {
        toucan(&[
            "logs",
            RUN,
            "greet",
            "--cluster",
            "--api",
            &api,
            "--metrics",
            "-o",
            format,
        ])
    };
    let out = metrics("json");
    expect(&out, 0, "logs --metrics before any push");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(),
        serde_json::json!([])
    );
    push_metrics(&cluster, &operator, &run_id).await;
    let out = metrics("json");
    expect(&out, 0, "logs --metrics");
    let epochs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(epochs[1]["loss"], 0.25, "{epochs:#}");
    let out = metrics("table");
    assert_eq!(
        text(&out.stdout),
        "{\"epoch\":1,\"loss\":0.5}\n{\"epoch\":2,\"loss\":0.25}\n"
    );

    // Unknown runs and steps are invalid input, as locally.
    for (args, message) in [
        (
            &["describe", "run", "nope", "--cluster"][..],
            "no PipelineRun \"nope\" in namespace \"default\"",
        ),
        (
            &["logs", "nope", "greet", "--cluster"][..],
            "no PipelineRun \"nope\"",
        ),
        (
            &["logs", RUN, "nope", "--cluster"][..],
            "no attempt of step \"nope\"",
        ),
        (
            &["logs", RUN, "greet", "--cluster", "--attempt", "7"][..],
            "no attempt 7 of step \"greet\" in run \"hello\" (attempts: 1)",
        ),
    ] {
        let out = toucan(args);
        expect(&out, 2, &format!("{args:?}"));
        assert!(text(&out.stderr).contains(message), "{}", text(&out.stderr));
    }

    // The user with no rights is told so; an unreachable cluster is exit 1 too.
    let out = toucan(&["get", "runs", "--cluster", "--context", "user"]);
    expect(&out, 1, "get runs as user");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("permission denied") && stderr.contains("pipelineruns"),
        "{stderr}"
    );
    let broken = dir.path().join("broken-kubeconfig");
    let config = std::fs::read_to_string(cluster.kubeconfig()).unwrap();
    let server = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .unwrap()
        .to_string();
    std::fs::write(&broken, config.replace(&server, "https://127.0.0.1:1")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_toucan"))
        .args(["get", "runs", "--cluster"])
        .env("KUBECONFIG", &broken)
        .env("TOUCAN_HOME", &home)
        .output()
        .unwrap();
    expect(&out, 1, "get runs on an unreachable cluster");
    assert!(
        text(&out.stderr).contains("cannot reach the Kubernetes API server"),
        "{}",
        text(&out.stderr)
    );

    // submit: the `path:` input goes to the operator's artifact store from here; the run
    // needs no stage pod, and its step reads the file.
    let project = dir.path().join("project");
    std::fs::create_dir_all(project.join("data")).unwrap();
    std::fs::write(project.join("data/words.txt"), "words-from-this-machine").unwrap();
    std::fs::write(project.join("pipeline.yaml"), SUBMITTED).unwrap();
    let artifacts = dir.path().join("artifacts");
    let out = toucan(&[
        "submit",
        project.join("pipeline.yaml").to_str().unwrap(),
        "--artifacts",
        artifacts.to_str().unwrap(),
        "-p",
        "suffix=!",
        "-n",
        NS,
        "--wait",
    ]);
    expect(&out, 0, "submit --wait");
    let stdout = text(&out.stdout);
    let name = stdout
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("pipelinerun/"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no run name in {stdout}"))
        .to_string();
    assert!(name.starts_with("words-"), "{stdout}");
    assert!(stdout.contains("Succeeded"), "{stdout}");
    let out = toucan(&[
        "describe",
        "run",
        &name,
        "--cluster",
        "--api",
        &api,
        "-o",
        "json",
    ]);
    expect(&out, 0, "describe the submitted run");
    let described: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        described["steps"][0]["outputs"]["params"]["text"], "words-from-this-machine!",
        "{described:#}"
    );
    let pods: Api<Pod> = Api::namespaced(cluster.client(), NS);
    let nodes: Vec<String> = pods
        .list(&ListParams::default().labels(&format!("toucan.dev/run={name}")))
        .await
        .unwrap()
        .items
        .iter()
        .map(|p| p.metadata.annotations.as_ref().unwrap()["toucan.dev/node"].clone())
        .collect();
    assert_eq!(nodes, ["read"], "no stage pod");

    // A manifest with an error is refused before anything is stored or created.
    std::fs::write(
        project.join("pipeline.yaml"),
        SUBMITTED.replace("path: data/words.txt", "path: data/missing.txt"),
    )
    .unwrap();
    let out = toucan(&[
        "submit",
        project.join("pipeline.yaml").to_str().unwrap(),
        "--artifacts",
        artifacts.to_str().unwrap(),
    ]);
    expect(&out, 2, "submit with a missing input");
    assert!(
        text(&out.stderr).contains("data/missing.txt"),
        "{}",
        text(&out.stderr)
    );
}

/// A Pipeline whose step reads a `path:` input: a file of the submitter's machine.
const SUBMITTED: &str = r#"
apiVersion: toucan.dev/v1alpha1
kind: Pipeline
metadata: {name: words}
spec:
  params:
    - {name: suffix, type: string}
  steps:
    - name: read
      image: busybox
      command: [sh, -c, 'printf "%s%s" "$(cat {{inputs.artifacts.words}})" "{{params.suffix}}" > {{outputs.params.text}}']
      inputs:
        artifacts:
          - {name: words, path: data/words.txt}
      outputs:
        params: [{name: text}]
"#;

/// A TPE study of an inline trial, 2 at a time: its trials depend on nothing but the seed.
const STUDY: &str = r#"
apiVersion: toucan.dev/v1alpha1
kind: TuningStudy
metadata: {name: bowl, namespace: default}
spec:
  objective: {metric: value, goal: minimize}
  parameters:
    - {name: x, type: double, min: -3.0, max: 3.0}
    - {name: k, type: int, min: 1, max: 4}
  algorithm: {name: tpe, seed: 21, startupTrials: 3}
  budget: {maxTrials: 7, parallelTrials: 2}
  trial:
    image: busybox
    command:
      - python3
      - -c
      - |
        import json, os, sys
        p = json.load(open(os.environ["TOUCAN_TRIAL_PARAMS"]))
        open(sys.argv[1], "w").write(str((p["x"] - 1) ** 2 + p["k"]))
      - "{{outputs.params.value}}"
    outputs:
      params: [{name: value, type: float}]
"#;

/// The same study locally and in the cluster: the same trials in the same order, the same
/// best; `get trials` and `describe study --cluster` read the cluster's from the operator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_study_runs_the_same_trials_in_the_cluster_as_locally() {
    let Some(admin) = postgres::admin_url().unwrap() else {
        return;
    };
    let path = step_path();
    let Some(cluster) = TestCluster::start_with_env(&[("PATH", path.as_str())])
        .await
        .unwrap()
    else {
        return;
    };
    let db_url = Database::create(&admin, "cli_cluster_study").unwrap().url;
    let dir = tempfile::Builder::new()
        .prefix("toucan-cli-study-")
        .tempdir()
        .unwrap();

    // Locally first.
    let file = dir.path().join("study.yaml");
    std::fs::write(&file, STUDY).unwrap();
    let local = Command::new(env!("CARGO_BIN_EXE_toucan"))
        .args(["run", file.to_str().unwrap(), "-o", "json"])
        .env("TOUCAN_HOME", dir.path().join("local"))
        .env("PATH", &path)
        .env_remove("TOUCAN_DATABASE_URL")
        .env_remove("TOUCAN_ARTIFACTS")
        .output()
        .unwrap();
    expect(&local, 0, "toucan run study.yaml");
    let local: serde_json::Value = serde_json::from_slice(&local.stdout).unwrap();

    let crds = repo().join("charts/toucan/crds");
    kubectl(&cluster, &["apply", "-f", crds.to_str().unwrap()], None);
    wait_established(
        &cluster,
        &[
            "crd/tuningstudies.toucan.dev",
            "crd/pipelineruns.toucan.dev",
        ],
    );
    let operator = Operator::start(&cluster, &db_url, dir.path());
    operator.ready().await;
    kubectl(&cluster, &["apply", "-f", "-"], Some(STUDY));
    let studies: Api<toucan_core::api::TuningStudy> = Api::namespaced(cluster.client(), NS);
    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        let study = studies.get("bowl").await.unwrap();
        let status = study.status.unwrap_or_default();
        if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the study did not finish: {status:#?}\n{}",
            operator.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(status.phase.as_deref(), Some("Succeeded"), "{status:#?}");

    let home = dir.path().join("home");
    let api = operator.api();
    let out = toucan(
        &cluster,
        &home,
        &[
            "describe",
            "study",
            "bowl",
            "--cluster",
            "--api",
            &api,
            "-o",
            "json",
        ],
    );
    expect(&out, 0, "describe study --cluster");
    let remote: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let trials = |doc: &serde_json::Value| -> Vec<(String, serde_json::Value)> {
        doc["trials"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["name"].as_str().unwrap().to_string(), t["params"].clone()))
            .collect()
    };
    assert_eq!(trials(&remote).len(), 7, "{remote:#}");
    assert_eq!(trials(&remote), trials(&local));
    assert_eq!(remote["best"]["name"], local["best"]["name"]);
    assert_eq!(remote["best"]["objective"], local["best"]["objective"]);
    assert_eq!(
        status.best.as_ref().map(|b| b.name.as_str()),
        local["best"]["name"].as_str()
    );
    let out = toucan(
        &cluster,
        &home,
        &["get", "trials", "bowl", "--cluster", "--api", &api],
    );
    expect(&out, 0, "get trials --cluster");
    let table = text(&out.stdout);
    assert_eq!(table.lines().count(), 8, "{table}");
    let out = toucan(
        &cluster,
        &home,
        &["describe", "study", "nope", "--cluster", "--api", &api],
    );
    expect(&out, 2, "describe study of a missing study");
}
