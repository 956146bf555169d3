//! The local runtime on a PostgreSQL metadata store (`TOUCAN_DATABASE_URL=postgres://...`),
//! against the real server `make test` starts (`TOUCAN_TEST_POSTGRES_URL`).

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::process::Command;

use common::{Sandbox, cached, step};

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

fn admin_url() -> Option<String> {
    match std::env::var("TOUCAN_TEST_POSTGRES_URL") {
        Ok(url) => Some(url),
        Err(_) if std::env::var("TOUCAN_REQUIRE_POSTGRES").as_deref() == Ok("1") => {
            panic!("TOUCAN_REQUIRE_POSTGRES=1 but TOUCAN_TEST_POSTGRES_URL is unset")
        }
        Err(_) => None,
    }
}

fn psql(url: &str, sql: &str) {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qc", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn runs_cache_and_inspection_on_postgres() {
    let Some(admin) = admin_url() else {
        eprintln!("skipping: TOUCAN_TEST_POSTGRES_URL is unset (make test sets it)");
        return;
    };
    let db = format!("toucan_cli_{}", std::process::id());
    psql(&admin, &format!("DROP DATABASE IF EXISTS {db}"));
    psql(&admin, &format!("CREATE DATABASE {db}"));
    let (base, _) = admin.rsplit_once('/').unwrap();
    let url = format!("{base}/{db}");

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
    psql(&admin, &format!("DROP DATABASE {db} WITH (FORCE)"));
}
