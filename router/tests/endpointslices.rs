//! `toucan-router --endpointslices NS` against a real API server (the test cluster): the
//! replicas of each version are the ready endpoints of the Endpoint's EndpointSlices, and they
//! follow the slices as they change.
//!
//! The test cluster's API server refuses loopback addresses in EndpointSlices, so the slices
//! here name documentation addresses (192.0.2.0/24) that nothing answers on: what is checked
//! is which replicas the router lists (`/router/v1/stats`), not traffic to them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use toucan_test_harness::cluster::TestCluster;
use toucan_test_harness::net::http_get;

const NS: &str = "serving";

struct Router(Child);

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kubectl(cluster: &TestCluster, args: &[&str], stdin: Option<&Value>) -> String {
    let mut child = Command::new(cluster.kubectl())
        .args(args)
        .env("KUBECONFIG", cluster.kubeconfig())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(body) = stdin {
        input.write_all(body.to_string().as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A slice of `version` of the endpoint `fashion` with these endpoints (address, ready).
fn slice(name: &str, version: &str, endpoints: &[(&str, bool)]) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": {
                "toucan.dev/endpoint": "fashion",
                "toucan.dev/version": version,
                "kubernetes.io/service-name": format!("fashion-{version}"),
            },
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints
            .iter()
            .map(|(address, ready)| json!({"addresses": [address], "conditions": {"ready": ready}}))
            .collect::<Vec<_>>(),
    })
}

/// Each version's replicas as the router lists them; `None` until it has a configuration
/// (its watch has listed the slices once).
fn replicas(port: u16) -> Option<(u64, u64)> {
    let (status, body) = http_get(port, "/router/v1/stats");
    if status == 503 && body.contains("NoConfiguration") {
        return None;
    }
    assert_eq!(status, 200, "{body}");
    let stats: Value = serde_json::from_str(&body).unwrap();
    let n = |v: &str| stats["versions"][v]["replicas"].as_u64().unwrap_or(0);
    Some((n("v1"), n("v2")))
}

fn until(port: u16, want: (u64, u64), log: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = replicas(port);
        if got == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "replicas (v1, v2) {got:?}, expected {want:?}; the router's log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_come_from_the_endpoints_slices_and_follow_them() {
    let Some(cluster) = TestCluster::start().await.unwrap() else {
        return;
    };
    kubectl(&cluster, &["create", "namespace", NS], None);
    kubectl(
        &cluster,
        &["apply", "-f", "-"],
        Some(&slice(
            "fashion-v1-a",
            "v1",
            &[("192.0.2.10", true), ("192.0.2.11", false)],
        )),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("router.json");
    let log = dir.path().join("router.log");
    std::fs::write(
        &config,
        json!({
            "endpoint": "fashion",
            "versions": [{"name": "v1", "weight": 90}, {"name": "v2", "weight": 10}],
        })
        .to_string(),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_toucan-router"))
        .arg("--config")
        .arg(&config)
        .args(["--endpointslices", NS, "--listen", "127.0.0.1:0"])
        .env("KUBECONFIG", cluster.kubeconfig())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let router = Router(child);
    let ready: Value = serde_json::from_str(&line).unwrap();
    let port: u16 = ready["listening"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();

    // Only the ready endpoint of v1's slice; v2 has no slice.
    until(port, (1, 0), &log);
    // A second slice of v1 and one of v2 are picked up by the watch.
    kubectl(
        &cluster,
        &["apply", "-f", "-"],
        Some(&slice("fashion-v1-b", "v1", &[("192.0.2.12", true)])),
    );
    kubectl(
        &cluster,
        &["apply", "-f", "-"],
        Some(&slice("fashion-v2-a", "v2", &[("192.0.2.20", true)])),
    );
    until(port, (2, 1), &log);
    // An endpoint that turns unready leaves, a deleted slice takes its replicas with it.
    kubectl(
        &cluster,
        &["apply", "-f", "-"],
        Some(&slice(
            "fashion-v1-a",
            "v1",
            &[("192.0.2.10", false), ("192.0.2.11", false)],
        )),
    );
    kubectl(
        &cluster,
        &["delete", "endpointslice", "fashion-v2-a", "-n", NS],
        None,
    );
    until(port, (1, 0), &log);
    // A slice of another endpoint is none of this router's business.
    let mut other = slice("other-v1", "v1", &[("192.0.2.30", true)]);
    other["metadata"]["labels"]["toucan.dev/endpoint"] = json!("other");
    kubectl(&cluster, &["apply", "-f", "-"], Some(&other));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(replicas(port), Some((1, 0)));
    drop(router);
}
