//! The README's "On Kubernetes" section, step by step, on a test cluster whose only node runs
//! every pod in its image (container mode): the images `scripts/images` built, the chart
//! installed with them (the operator in `toucan/operator`), then `toucan submit` of the
//! fashion-mnist example from this machine, whose `path:` inputs (the dataset and the training
//! config) go to the operator's S3 store from here, and whose steps all run in
//! `toucan/worker:VERSION-cpu`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{bin_dir, container_statuses, repo};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use toucan_test_harness::cluster::TestCluster;
use toucan_test_harness::postgres::{self, Database};
use toucan_test_harness::{images, s3};

const NS: &str = "default";
const RELEASE_NS: &str = "toucan-system";

/// One untainted container node: every pod, the operator's too, runs in its image.
const NODES: &str = r#"
nodes:
  - name: container-0
    mode: container
    capacity: {cpu: "8", memory: 32Gi, pods: "110"}
"#;

fn run(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} {args:?}:\n{}{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthrough_in_container_mode() {
    let wanted = [
        images::reference("operator", ""),
        images::reference("step-base", ""),
        images::reference("worker", "-cpu"),
    ];
    if !images::available(&wanted).unwrap() {
        return;
    }
    let Some(location) = s3::location().unwrap() else {
        return;
    };
    let Some(admin) = postgres::admin_url().unwrap() else {
        return;
    };
    let helm = repo().join("tests/helm/bin/helm");
    assert!(
        helm.exists(),
        "{} is missing: run tests/helm/build",
        helm.display()
    );
    let dir = tempfile::Builder::new()
        .prefix("toucan-kubernetes-")
        .tempdir()
        .unwrap();
    let nodes = dir.path().join("nodes.yaml");
    std::fs::write(&nodes, NODES).unwrap();
    let Some(cluster) =
        TestCluster::start_with_env(&[("TOUCAN_CLUSTER_NODES", nodes.to_str().unwrap())])
            .await
            .unwrap()
    else {
        return;
    };
    let kubeconfig = cluster.kubeconfig();
    let kube_env = [("KUBECONFIG", kubeconfig.to_str().unwrap())];
    let kubectl = |args: &[&str]| run(&cluster.kubectl(), args, &kube_env);
    let db_url = Database::create(&admin, "op_kubernetes").unwrap().url;
    let artifacts = format!(
        "{}/kubernetes-{}",
        location.trim_end_matches('/'),
        dir.path().file_name().unwrap().to_string_lossy()
    );

    // The S3 credentials, in the release namespace (the operator) and the run's (its steps).
    let mut credentials: Vec<(String, String)> = Vec::new();
    for key in s3::CREDENTIAL_ENVS {
        if let Ok(value) = std::env::var(key) {
            credentials.push((key.to_string(), value));
        }
    }
    kubectl(&["create", "namespace", RELEASE_NS]);
    for ns in [RELEASE_NS, NS] {
        let mut args = vec![
            "create".to_string(),
            "secret".into(),
            "generic".into(),
            "toucan-s3".into(),
            "-n".into(),
            ns.into(),
        ];
        args.extend(
            credentials
                .iter()
                .map(|(k, v)| format!("--from-literal={k}={v}")),
        );
        kubectl(&args.iter().map(String::as_str).collect::<Vec<_>>());
    }

    // helm install, with the chart's own images. Pods share this machine's network, so the
    // operator gets free ports, and step pods reach its API on loopback.
    let [api_port, metrics_port] = toucan_test_harness::net::free_ports().unwrap();
    let api_url = format!("http://127.0.0.1:{api_port}");
    run(
        &helm,
        &[
            "install",
            "toucan",
            repo().join("charts/toucan").to_str().unwrap(),
            "-n",
            RELEASE_NS,
            "--set",
            &format!("database.url={db_url}"),
            "--set",
            &format!("artifacts.location={artifacts}"),
            "--set",
            "artifacts.existingSecret=toucan-s3",
            "--set",
            "replicaCount=1",
            "--set",
            &format!("api.port={api_port}"),
            "--set",
            &format!("metrics.port={metrics_port}"),
            "--set",
            &format!("api.url={api_url}"),
            "--wait",
            "--timeout",
            "3m",
        ],
        &kube_env,
    );
    let pods: Api<Pod> = Api::namespaced(cluster.client(), RELEASE_NS);
    let operator = pods.list(&ListParams::default()).await.unwrap().items;
    let operator = operator
        .iter()
        .find(|p| {
            p.metadata
                .name
                .as_deref()
                .unwrap_or("")
                .starts_with("toucan")
        })
        .unwrap();
    let statuses = container_statuses(operator);
    assert!(
        statuses[0].image_id.contains("toucan/operator")
            && statuses[0].image_id.contains("@sha256:"),
        "the operator runs in its image: {statuses:?}"
    );

    // toucan submit, from this machine: the dataset and the config go to S3 from here.
    let mut env: Vec<(&str, &str)> = kube_env.to_vec();
    env.extend(credentials.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let toucan = bin_dir().join("toucan");
    let out = Command::new(&toucan)
        .args([
            "submit",
            repo()
                .join("examples/fashion-mnist/pipeline.yaml")
                .to_str()
                .unwrap(),
            "--artifacts",
            &artifacts,
            "-p",
            "model=linear",
            "-p",
            "epochs=1",
            "-p",
            "min_accuracy=0.5",
            "-n",
            NS,
            "--wait",
        ])
        .envs(env.iter().copied())
        .env("TOUCAN_HOME", dir.path().join("home"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let name = stdout
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("pipelinerun/"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_default()
        .to_string();
    if !out.status.success() {
        let logs = kubectl(&[
            "logs",
            "-n",
            RELEASE_NS,
            "deployment/toucan",
            "--tail",
            "60",
        ]);
        panic!(
            "submit failed:\n{stdout}{}\noperator:\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&logs.stdout)
        );
    }
    assert!(stdout.contains("Succeeded"), "{stdout}");

    // Every step ran in the worker image, on the container node; no stage pod was needed.
    let steps: Api<Pod> = Api::namespaced(cluster.client(), NS);
    let step_pods = steps
        .list(&ListParams::default().labels(&format!("toucan.dev/run={name}")))
        .await
        .unwrap()
        .items;
    let mut nodes: Vec<String> = step_pods
        .iter()
        .map(|p| p.metadata.annotations.as_ref().unwrap()["toucan.dev/node"].clone())
        .collect();
    nodes.sort();
    assert_eq!(
        nodes,
        ["evaluate", "export", "ingest", "summary", "train"],
        "one pod per step, no stage pod"
    );
    for pod in &step_pods {
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("container-0"));
        let step = spec.containers.iter().find(|c| c.name == "step").unwrap();
        assert_eq!(
            step.image.as_deref(),
            Some(images::reference("worker", "-cpu").as_str())
        );
    }

    // The step detail, through the operator's API.
    let out = Command::new(&toucan)
        .args([
            "describe",
            "run",
            &name,
            "--cluster",
            "-n",
            NS,
            "--api",
            &api_url,
            "-o",
            "json",
        ])
        .envs(env.iter().copied())
        .env("TOUCAN_HOME", dir.path().join("home"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let described: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let evaluate = described["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "evaluate")
        .unwrap();
    let accuracy: f64 = evaluate["outputs"]["params"]["accuracy"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(accuracy > 0.5, "{described:#}");
}
