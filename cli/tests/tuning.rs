//! TuningStudy on the local runtime: `toucan run study.yaml`, Ctrl-C and `--resume`, `get
//! trials`, `describe study`, and the examples under `examples/tuning/` (the Fashion-MNIST one
//! at a small size, on the real data and libtorch, as in `example.rs`).

// Helpers outside `#[test]` functions, which clippy's test exemptions miss.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::Sandbox;
use serde_json::Value;

fn example(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/tuning")
        .join(name)
        .canonicalize()
        .unwrap()
}

/// `(name, params)` of every trial of a study document, in index order.
fn trials(doc: &Value) -> Vec<(String, Value)> {
    doc["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap().to_string(), t["params"].clone()))
        .collect()
}

fn stdout_json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn the_grid_example_runs_every_combination_and_finds_the_grids_best_point() {
    let sb = Sandbox::new();
    let (code, doc, stderr) = sb.run_json(&example("grid.yaml"), &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(doc["phase"], "Succeeded");
    let all = doc["trials"].as_array().unwrap();
    assert_eq!(all.len(), 49, "7 x 7 combinations");
    assert!(all.iter().all(|t| t["state"] == "Succeeded"));
    // Grid order: the first parameter slowest, each value of the range once.
    assert_eq!(all[0]["params"], serde_json::json!({"x1": -5.0, "x2": 0.0}));
    assert_eq!(all[1]["params"], serde_json::json!({"x1": -5.0, "x2": 2.5}));
    assert_eq!(
        all[48]["params"],
        serde_json::json!({"x1": 10.0, "x2": 15.0})
    );
    // Branin at (10, 2.5), computed by the trial's own program from $TOUCAN_TRIAL_PARAMS.
    let best = &doc["best"];
    assert_eq!(best["params"], serde_json::json!({"x1": 10.0, "x2": 2.5}));
    let value = best["objective"].as_f64().unwrap();
    assert!((value - 2.196_106).abs() < 1e-5, "{value}");
    assert_eq!(doc["counts"]["succeeded"], 49);

    // Every trial is a run too, and the commands read the study back by name.
    let runs = sb.run(&["get", "runs", "-o", "json", "--limit", "100"]);
    assert_eq!(stdout_json(&runs).as_array().unwrap().len(), 49);
    let listed = sb.run(&["get", "trials", "branin-grid", "-o", "json"]);
    assert!(listed.status.success());
    assert_eq!(stdout_json(&listed).as_array().unwrap().len(), 49);
    let table = sb.run(&["describe", "study", "branin-grid"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success(), "{text}");
    assert!(text.contains("best: 43-"), "{text}");
    assert!(text.contains("parameter importance"), "{text}");
    assert!(text.contains("by trial"), "{text}");
    let described = stdout_json(&sb.run(&["describe", "study", "branin-grid", "-o", "json"]));
    let importances = described["importances"].as_array().unwrap();
    assert_eq!(importances.len(), 2);
    // Branin over this grid varies more with x2 than with x1.
    assert_eq!(importances[0][0], "x2");
    let missing = sb.run(&["describe", "study", "nope"]);
    assert_eq!(missing.status.code(), Some(2));
}

/// A TPE study of an inline trial, 2 at a time; its program appends each call to `calls`.
fn tpe_study(sb: &Sandbox) -> std::path::PathBuf {
    let calls = sb.path("calls");
    sb.write(
        "study.yaml",
        &format!(
            r#"
apiVersion: toucan.dev/v1alpha1
kind: TuningStudy
metadata: {{name: bowl}}
spec:
  objective: {{metric: value, goal: minimize}}
  parameters:
    - {{name: x, type: double, min: -3.0, max: 3.0}}
    - {{name: k, type: int, min: 1, max: 4}}
    - {{name: shape, type: categorical, values: [round, flat]}}
  algorithm: {{name: tpe, seed: 11, startupTrials: 3}}
  budget: {{maxTrials: 8, parallelTrials: 2}}
  trial:
    image: python:3.11-slim
    command:
      - python3
      - -c
      - |
        import json, os, sys, time
        p = json.load(open(os.environ["TOUCAN_TRIAL_PARAMS"]))
        assert float(sys.argv[2]) == p["x"], (sys.argv, p)
        time.sleep(0.3)
        bump = 0.5 if p["shape"] == "flat" else 0.0
        open(sys.argv[1], "w").write(str((p["x"] - 1) ** 2 + p["k"] + bump))
        open("{calls}", "a").write(sys.argv[2] + "\n")
      - "{{{{outputs.params.value}}}}"
      - "{{{{trial.params.x}}}}"
    outputs:
      params: [{{name: value, type: float}}]
"#,
            calls = calls.display()
        ),
    )
}

#[test]
fn an_interrupted_study_resumes_and_runs_the_same_trials_as_an_undisturbed_one() {
    let calm = Sandbox::new();
    let (code, undisturbed, stderr) = calm.run_json(&tpe_study(&calm), &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(undisturbed["trials"].as_array().unwrap().len(), 8);

    let sb = Sandbox::new();
    let study = tpe_study(&sb);
    let child = sb
        .command(&["run", study.to_str().unwrap(), "-o", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once three trials have finished, with others running.
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(sb.path("calls")).map_or(0, |t| t.lines().count()) < 3 {
        assert!(Instant::now() < deadline, "three trials never finished");
        std::thread::sleep(Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let interrupted = stdout_json(&out);
    assert_eq!(interrupted["phase"], "Cancelled", "{stderr}");
    let done = interrupted["trials"].as_array().unwrap().len();
    assert!(done < 8, "interrupted after {done} trials");
    let id = interrupted["id"].as_str().unwrap().to_string();
    assert!(
        interrupted["message"]
            .as_str()
            .unwrap()
            .contains(&format!("--resume {id}")),
        "{interrupted:#}"
    );

    let out = sb.run(&["run", "--resume", &id, "-o", "json"]);
    let resumed = stdout_json(&out);
    assert_eq!(out.status.code(), Some(0), "{resumed:#}");
    assert_eq!(resumed["id"], id.as_str());
    assert_eq!(resumed["phase"], "Succeeded");
    assert_eq!(trials(&resumed), trials(&undisturbed));
    for field in ["name", "params", "objective"] {
        assert_eq!(resumed["best"][field], undisturbed["best"][field]);
    }
    let again = sb.run(&["run", "--resume", &id]);
    assert_eq!(
        again.status.code(),
        Some(2),
        "a finished study is not resumed"
    );
}

#[test]
fn a_warm_start_from_a_study_missing_from_the_store_is_refused_before_anything_runs() {
    let sb = Sandbox::new();
    let study = std::fs::read_to_string(tpe_study(&sb))
        .unwrap()
        .replace("  budget:", "  warmStart: [{study: earlier}]\n  budget:");
    let file = sb.write("warm.yaml", &study);
    let out = sb.run(&["run", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("warm.yaml[0] spec.warmStart[0].study: no study \"earlier\""),
        "{stderr}"
    );
    assert!(!sb.path("calls").exists(), "no trial ran");

    // Once a study of that name ran, its trials seed this one.
    let earlier = std::fs::read_to_string(tpe_study(&sb))
        .unwrap()
        .replace("name: bowl", "name: earlier");
    let earlier = sb.write("earlier.yaml", &earlier);
    let (code, _, stderr) = sb.run_json(&earlier, &[]);
    assert_eq!(code, 0, "{stderr}");
    let (code, warm, stderr) = sb.run_json(&file, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(warm["trials"].as_array().unwrap().len(), 8);
}

#[test]
fn the_fashion_mnist_tpe_example_shares_ingest_across_trials() {
    let sb = Sandbox::new();
    // The example at a small size: two trials of one epoch.
    let text = std::fs::read_to_string(example("fashion-mnist.yaml"))
        .unwrap()
        .replace("maxTrials: 12", "maxTrials: 2")
        .replace(
            "{name: epochs, type: int, default: 3, min: 1}",
            "{name: epochs, type: int, default: 1, min: 1}",
        );
    assert!(text.contains("maxTrials: 2") && text.contains("default: 1, min: 1}"));
    let file = sb.write("fashion-mnist.yaml", &text);
    let (code, doc, stderr) = sb.run_json(&file, &[]);
    assert_eq!(code, 0, "{stderr}");
    let all = doc["trials"].as_array().unwrap();
    assert_eq!(all.len(), 2);
    for t in all {
        assert_eq!(t["state"], "Succeeded", "{doc:#}");
        let accuracy = t["objective"].as_f64().unwrap();
        assert!(accuracy > 0.7, "val_accuracy {accuracy} after one epoch");
    }
    // The first trial to get there ingested; the other took its dataset from the cache.
    let cached: Vec<bool> = all
        .iter()
        .map(|t| {
            let run = t["run"].as_str().unwrap();
            let out = sb.run(&["describe", "run", run, "-o", "json"]);
            common::cached(&stdout_json(&out), "ingest")
        })
        .collect();
    assert_eq!(cached.iter().filter(|c| **c).count(), 1, "{cached:?}");
}

/// ASHA: a promoted trial runs again with a larger budget and continues from the checkpoint
/// its smaller budget left, through the trial's own checkpoint folder: every trial trains
/// each epoch once, from 0 to its final budget, whatever its promotions.
#[test]
fn an_asha_promotion_continues_from_the_trials_checkpoint() {
    let sb = Sandbox::new();
    let log = sb.path("trained");
    let file = sb.write(
        "asha.yaml",
        &format!(
            r#"
apiVersion: toucan.dev/v1alpha1
kind: TuningStudy
metadata: {{name: asha}}
spec:
  objective: {{metric: value, goal: minimize}}
  parameters:
    - {{name: x, type: double, min: -2.0, max: 2.0}}
  algorithm: {{name: asha, seed: 5, resource: {{name: epochs, min: 1, max: 9}}}}
  budget: {{maxTrials: 9, parallelTrials: 2}}
  trial:
    image: python:3.11-slim
    command:
      - python3
      - -c
      - |
        import os, sys
        x, budget = float(sys.argv[2]), int(sys.argv[3])
        ckpt = os.environ["TOUCAN_CHECKPOINT_DIR"]
        os.makedirs(ckpt, exist_ok=True)
        mark = os.path.join(ckpt, "epoch")
        start = int(open(mark).read()) if os.path.exists(mark) else 0
        open(mark, "w").write(str(budget))
        open("{log}", "a").write(f"{{x}} {{start}} {{budget}}\n")
        open(sys.argv[1], "w").write(str(x * x + 1.0 / budget))
      - "{{{{outputs.params.value}}}}"
      - "{{{{trial.params.x}}}}"
      - "{{{{trial.params.epochs}}}}"
    outputs:
      params: [{{name: value, type: float}}]
"#,
            log = log.display()
        ),
    );
    let (code, doc, stderr) = sb.run_json(&file, &[]);
    assert_eq!(code, 0, "{stderr}");
    let budgets: Vec<u64> = doc["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["budget"].as_u64().unwrap())
        .collect();
    assert!(
        budgets.iter().any(|&b| b > 1),
        "some trial was promoted: {budgets:?}"
    );
    let mut segments: std::collections::BTreeMap<String, Vec<(u64, u64)>> = Default::default();
    for line in std::fs::read_to_string(&log).unwrap().lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        segments
            .entry(parts[0].to_string())
            .or_default()
            .push((parts[1].parse().unwrap(), parts[2].parse().unwrap()));
    }
    for t in doc["trials"].as_array().unwrap() {
        let x = t["params"]["x"].as_f64().unwrap();
        let runs = &segments[&x.to_string()];
        // Each budget's run starts where the previous one ended.
        let mut at = 0;
        for &(start, end) in runs {
            assert_eq!(start, at, "trial {t} ran {runs:?}");
            at = end;
        }
        assert_eq!(at, t["budget"].as_u64().unwrap(), "{runs:?}");
    }
}

/// The budget's deadline ends the study: the running trial is stopped, nothing new starts,
/// and the best trial so far is the study's. The deadline leaves room for a trial of one
/// second to finish on a loaded machine (a step's launch has taken two seconds there).
#[test]
fn the_deadline_stops_the_study_with_the_best_trial_so_far() {
    let sb = Sandbox::new();
    let file = sb.write(
        "deadline.yaml",
        r#"
apiVersion: toucan.dev/v1alpha1
kind: TuningStudy
metadata: {name: slow}
spec:
  objective: {metric: value, goal: minimize}
  parameters: [{name: x, type: double, min: 0.0, max: 1.0}]
  algorithm: {name: random, seed: 1}
  budget: {maxTrials: 50, deadline: 6s}
  trial:
    image: busybox
    command: [sh, -c, 'sleep 1; echo "$0" > "$1"', "{{trial.params.x}}", "{{outputs.params.value}}"]
    outputs: {params: [{name: value, type: float}]}
"#,
    );
    let started = Instant::now();
    let (code, doc, stderr) = sb.run_json(&file, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(20), "{stderr}");
    let all = doc["trials"].as_array().unwrap();
    assert!((2..10).contains(&all.len()), "{} trials", all.len());
    assert_eq!(all.last().unwrap()["state"], "Stopped", "{doc:#}");
    assert!(
        doc["message"].as_str().unwrap().contains("deadline"),
        "{doc:#}"
    );
    assert!(doc["best"]["objective"].is_number());
}
