//! `toucan get runs`, `describe run`, `logs`, `cache explain|diff|gc`, `crds`.

mod common;

use common::{Sandbox, step};

const PIPELINE: &str = r#"
apiVersion: toucan.dev/v1alpha1
kind: Pipeline
metadata: {name: inspect-me}
spec:
  params:
    - {name: n, type: int, default: 1}
  steps:
    - name: make
      image: busybox
      command: [sh, -c, 'echo "making {{params.n}}"; echo {{params.n}} > "$0"; echo "{\"epoch\": {{params.n}}}" >> "$TOUCAN_METRICS_FILE"', "{{outputs.params.value}}"]
      outputs: {params: [{name: value}]}
    - name: use
      image: busybox
      command: [sh, -c, 'echo "got $0"', "{{steps.make.outputs.params.value}}"]
"#;

#[test]
fn inspection_commands() {
    let sb = Sandbox::new();
    let file = sb.write("p.yaml", PIPELINE);
    let (_, one, _) = sb.run_json(&file, &[]);
    let (_, two, _) = sb.run_json(&file, &["-p", "n=2"]);
    let run1 = one["run"].as_str().unwrap();
    let run2 = two["run"].as_str().unwrap();

    let out = sb.run(&["get", "runs", "-o", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs[0]["run"], run2, "newest first");
    assert_eq!(runs[1]["run"], run1);
    let table = String::from_utf8(sb.run(&["get", "runs"]).stdout).unwrap();
    assert!(
        table.contains("inspect-me") && table.contains("Succeeded"),
        "{table}"
    );

    let out = sb.run(&["describe", "run", run2, "-o", "yaml"]);
    let described: serde_json::Value = serde_yaml_ng::from_slice(&out.stdout).unwrap();
    assert_eq!(step(&described, "use")["dependsOn"][0], "make");
    assert_eq!(step(&described, "make")["outputs"]["params"]["value"], "2");
    let text = String::from_utf8(sb.run(&["describe", "run", run2]).stdout).unwrap();
    assert!(text.contains("use [Succeeded] <- make"), "{text}");

    let log = String::from_utf8(sb.run(&["logs", run1, "make"]).stdout).unwrap();
    assert_eq!(log.trim(), "making 1");
    let log = sb.run(&["logs", run2, "use", "-o", "json"]);
    let log: serde_json::Value = serde_json::from_slice(&log.stdout).unwrap();
    assert_eq!(log["log"].as_str().unwrap().trim(), "got 2");
    assert_eq!(sb.run(&["logs", run1, "nope"]).status.code(), Some(2));
    // What the command appended to $TOUCAN_METRICS_FILE stays with the attempt.
    let metrics = sb.run(&["logs", run2, "make", "--metrics", "-o", "json"]);
    let metrics: serde_json::Value = serde_json::from_slice(&metrics.stdout).unwrap();
    assert_eq!(metrics, serde_json::json!([{"epoch": 2}]));
    let none = sb.run(&["logs", run2, "use", "--metrics"]);
    assert_eq!(none.status.code(), Some(0));
    assert!(none.stdout.is_empty());

    let out = sb.run(&["cache", "explain", run2, "make", "-o", "json"]);
    let explained: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(explained["key"], step(&two, "make")["cacheKey"]);
    assert_eq!(explained["components"]["values"]["params.n"], "2");
    assert_eq!(explained["components"]["image"], "busybox");

    let out = sb.run(&["cache", "diff", run1, "use", run2, "use", "-o", "json"]);
    let diff: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let components: Vec<&str> = diff
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["component"].as_str().unwrap())
        .collect();
    assert_eq!(components, ["values.steps.make.outputs.params.value"]);
    let same = String::from_utf8(
        sb.run(&["cache", "diff", run1, "make", run1, "make"])
            .stdout,
    )
    .unwrap();
    assert!(same.contains("no component differs"), "{same}");
}

#[test]
fn gc_removes_expired_entries_and_unreferenced_blobs_only() {
    let sb = Sandbox::new();
    let file = sb.write(
        "p.yaml",
        r#"
apiVersion: toucan.dev/v1alpha1
kind: Pipeline
metadata: {name: blobs}
spec:
  steps:
    - name: write
      image: busybox
      command: [sh, -c, 'echo content > "$0"', "{{outputs.artifacts.file}}"]
      outputs: {artifacts: [{name: file}]}
"#,
    );
    let (code, doc, _) = sb.run_json(&file, &[]);
    assert_eq!(code, 0);
    let digest = step(&doc, "write")["outputs"]["artifacts"]["file"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let hex = digest.trim_start_matches("sha256:").to_string();
    let blobs = sb.home().join("artifacts/blobs/sha256");
    // A stray blob nothing refers to, old enough to be collected.
    let stray_dir = blobs.join("00");
    std::fs::create_dir_all(&stray_dir).unwrap();
    let stray = stray_dir.join("00".repeat(32));
    std::fs::write(&stray, "stray").unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&stray)
        .unwrap()
        .set_modified(old)
        .unwrap();

    let out = sb.run(&["cache", "gc", "--older-than", "0s"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8(out.stdout).unwrap();
    assert!(said.contains("removed 1 cache entry and 1 blob"), "{said}");
    assert!(!stray.exists());
    assert!(
        blobs.join(&hex[..2]).join(&hex).exists(),
        "the run still references its output"
    );
    // The entry is gone, so the step runs again.
    let (_, again, _) = sb.run_json(&file, &[]);
    assert_eq!(step(&again, "write")["cached"], false);
}

#[test]
fn crds_command_matches_the_chart() {
    let out = Sandbox::new().run(&["crds"]);
    assert_eq!(out.status.code(), Some(0));
    let chart = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../charts/toucan/crds/toucan.dev.yaml");
    let committed = std::fs::read_to_string(&chart).unwrap_or_default();
    assert!(
        committed == String::from_utf8(out.stdout).unwrap(),
        "{} is stale: regenerate it with `toucan crds > {}`",
        chart.display(),
        "charts/toucan/crds/toucan.dev.yaml"
    );
}
