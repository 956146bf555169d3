//! The local runtime on a PostgreSQL metadata store (`TOUCAN_DATABASE_URL=postgres://...`),
//! against the real server `make test` starts (`TOUCAN_TEST_POSTGRES_URL`).

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use common::{Sandbox, cached, step};
use toucan_test_harness::postgres::{self, Database};

const PIPELINE: &str = r#"
apiVersion: toucan.dev/v1alpha1
kind: Pipeline
metadata: {name: on-postgres}
spec:
  steps:
    - name: produce
      image: busybox
      command: [sh, -c, 'echo 42 > "$0"; echo data > "$1"', "{{outputs.params.answer}}", "{{outputs.artifacts.blob}}"]
      outputs: {params: [{name: answer}], artifacts: [{name: blob}]}
    - name: consume
      image: busybox
      command: [sh, -c, 'cat "$0"; echo "{{steps.produce.outputs.params.answer}}"', "{{inputs.artifacts.blob}}"]
      inputs: {artifacts: [{name: blob, from: "{{steps.produce.outputs.artifacts.blob}}"}]}
"#;

#[test]
fn runs_cache_and_inspection_on_postgres() {
    let Some(admin) = postgres::admin_url().unwrap() else {
        return;
    };
    let db = Database::create(&admin, "cli").unwrap();
    let url = db.url.clone();

    let sb = Sandbox::new();
    let file = sb.write("p.yaml", PIPELINE);
    let run = |extra: &[&str]| {
        let mut args = vec!["run", file.to_str().unwrap(), "-o", "json"];
        args.extend_from_slice(extra);
        let out = sb
            .command(&args)
            .env("TOUCAN_DATABASE_URL", &url)
            .output()
            .unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), doc)
    };
    let (code, first) = run(&[]);
    assert_eq!(code, Some(0), "{first:#}");
    assert!(!cached(&first, "produce"));
    let (code, second) = run(&[]);
    assert_eq!(code, Some(0));
    assert!(cached(&second, "produce") && cached(&second, "consume"));
    assert_eq!(
        step(&second, "produce")["outputs"]["params"]["answer"],
        "42"
    );

    let runs = sb
        .command(&["get", "runs", "-o", "json"])
        .env("TOUCAN_DATABASE_URL", &url)
        .output()
        .unwrap();
    let runs: serde_json::Value = serde_json::from_slice(&runs.stdout).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 2);
    let id = first["run"].as_str().unwrap();
    let log = sb
        .command(&["logs", id, "consume"])
        .env("TOUCAN_DATABASE_URL", &url)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&log.stdout), "data\n42\n");
    // Nothing went to a SQLite file.
    assert!(!sb.home().join("toucan.db").exists());
    db.drop_database().unwrap();
}
