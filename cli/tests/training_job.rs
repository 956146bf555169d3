//! TrainingJobs and distributed pipeline steps on this machine: the gang's env contract, its
//! failure policy (a permanent exit code fails at once, a killed replica restarts the gang),
//! and real data-parallel training that survives a replica killed mid-epoch by resuming the
//! whole gang from the newest checkpoint.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Sandbox, step, worker_bin};

/// Every replica writes its env contract; worker-1 of the first gang ends with `CODE`, and the
/// leader of the first gang waits to be stopped, so the gang's fate is worker-1's.
fn shell_job(code: u32) -> String {
    format!(
        r#"
apiVersion: toucan.dev/v1alpha1
kind: TrainingJob
metadata: {{name: shell-gang}}
spec:
  image: busybox
  command: [sh, -c]
  args:
    - |
      echo "replica $TOUCAN_REPLICA incarnation $TOUCAN_INCARNATION"
      printf '%s %s %s %s\n' "$RANK" "$WORLD_SIZE" "$MASTER_ADDR" "$TF_CONFIG" > "$TOUCAN_CHECKPOINT_DIR/$TOUCAN_REPLICA-$TOUCAN_INCARNATION"
      if [ "$TOUCAN_REPLICA" = worker-1 ] && [ "$TOUCAN_INCARNATION" = 0 ]; then exit {code}; fi
      # The first gang's leader outlives worker-1 however late that starts: the gang ends it.
      if [ "$RANK" = 0 ] && [ "$TOUCAN_INCARNATION" = 0 ]; then sleep 60; fi
      if [ "$RANK" = 0 ]; then echo "$TOUCAN_INCARNATION" > {{{{outputs.params.incarnation}}}}; fi
  outputs: {{params: [{{name: incarnation, type: int}}]}}
  roles:
    chief: {{replicas: 1}}
    worker: {{replicas: 2}}
  failurePolicy:
    rules: [{{exitCodes: [9, "200-210"], action: Restart}}]
  cache: {{enabled: false}}
"#
    )
}

#[test]
fn a_gang_restarts_on_a_retryable_code_and_fails_at_once_on_a_permanent_one() {
    let sb = Sandbox::new();
    let job = sb.write("job.yaml", &shell_job(9));
    let (code, doc, stderr) = sb.run_json(&job, &[]);
    assert_eq!(code, 0, "{stderr}");
    let train = step(&doc, "train");
    assert_eq!(train["phase"], "Succeeded", "{stderr}");
    // The leader's outputs are the job's: it ran in the second gang.
    assert_eq!(train["outputs"]["params"]["incarnation"], "1");
    assert!(
        stderr.contains("worker-1 ended with code 9")
            && stderr.contains("restarting the gang from its newest checkpoint"),
        "{stderr}"
    );
    // The env contract, as worker-1 saw it in the first gang.
    let checkpoints = sb
        .home()
        .join("runs")
        .join(doc["run"].as_str().unwrap())
        .join("train/checkpoints");
    let seen = std::fs::read_to_string(checkpoints.join("worker-1-0")).unwrap();
    let mut fields = seen.trim().splitn(4, ' ');
    assert_eq!(
        fields.next(),
        Some("2"),
        "worker-1's rank is 2 after the chief"
    );
    assert_eq!(fields.next(), Some("3"));
    assert_eq!(fields.next(), Some("127.0.0.1"));
    let tf: serde_json::Value = serde_json::from_str(fields.next().unwrap()).unwrap();
    assert_eq!(
        tf["task"],
        serde_json::json!({"type": "worker", "index": 1})
    );
    assert_eq!(tf["cluster"]["worker"].as_array().unwrap().len(), 2);
    assert_eq!(tf["cluster"]["chief"].as_array().unwrap().len(), 1);

    // Each replica's log: the leader of the last incarnation by default.
    let run_id = doc["run"].as_str().unwrap();
    let logs = |extra: &[&str]| {
        let mut args = vec!["logs", run_id, "train"];
        args.extend_from_slice(extra);
        let out = sb.run(&args);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, text, err) = logs(&[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(text.contains("replica chief-0 incarnation 1"), "{text}");
    let (_, text, _) = logs(&["--replica", "worker-1", "--incarnation", "0"]);
    assert!(text.contains("replica worker-1 incarnation 0"), "{text}");
    let (code, _, err) = logs(&["--replica", "worker-7"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains(
            "no replica \"worker-7\" in incarnation 1 (replicas: chief-0, worker-0, worker-1)"
        ),
        "{err}"
    );

    // The gang's record: one restart, and which end decided it.
    let out = sb.run(&["describe", "job", "shell-gang", "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jobs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let job = &jobs[0];
    assert_eq!(job["run"], run_id);
    assert_eq!(job["phase"], "Succeeded");
    assert_eq!(job["roles"], "chief=1,worker=2");
    assert_eq!(
        (job["restarts"].as_u64(), job["incarnation"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(job["lastFailure"]["exitCode"], 9);
    let decided: Vec<&serde_json::Value> = job["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["decisive"] == true)
        .collect();
    assert_eq!(decided.len(), 1, "{job:#}");
    assert_eq!(decided[0]["replica"], "worker-1");
    let out = sb.run(&["get", "jobs"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(|l| l.contains(run_id)
            && l.contains("Succeeded")
            && l.contains("chief=1,worker=2")),
        "{text}"
    );

    // 3 is a program's error: no restart.
    let job = sb.write("permanent.yaml", &shell_job(3));
    let (code, doc, stderr) = sb.run_json(&job, &[]);
    assert_ne!(code, 0);
    let train = step(&doc, "train");
    assert_eq!(train["phase"], "Failed");
    let message = train["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("worker-1 exited with code 3, which the failure policy says is permanent"),
        "{message}\n{stderr}"
    );
    assert!(!stderr.contains("restarting the gang"), "{stderr}");
}

/// A bars dataset in MNIST's IDX files: three classes by which third of the image is bright.
fn bars_source(sb: &Sandbox, n: u32) {
    let (h, w) = (12u32, 12u32);
    let mut images = vec![0, 0, 0x08, 3];
    for d in [n, h, w] {
        images.extend_from_slice(&d.to_be_bytes());
    }
    let mut labels = vec![0, 0, 0x08, 1];
    labels.extend_from_slice(&n.to_be_bytes());
    for i in 0..n {
        let label = i % 3;
        labels.push(label as u8);
        for y in 0..h {
            for x in 0..w {
                let noise = ((i * 31 + y * 7 + x * 13) % 60) as u8;
                images.push(if y / 4 == label { 150 + noise } else { noise });
            }
        }
    }
    std::fs::create_dir_all(sb.path("source")).unwrap();
    std::fs::write(sb.path("source/train-images-idx3-ubyte"), images).unwrap();
    std::fs::write(sb.path("source/train-labels-idx1-ubyte"), labels).unwrap();
}

/// Ingest, then train with two data-parallel replicas; with `KILL`, worker-1 of the first
/// gang is killed (SIGKILL) once the first checkpoint exists, in the middle of an epoch.
fn ddp_pipeline(kill: bool) -> String {
    let killer = if kill {
        r#"if [ "$TOUCAN_REPLICA" = worker-1 ] && [ "$TOUCAN_INCARNATION" = 0 ]; then (while [ ! -f "$TOUCAN_CHECKPOINT_DIR/latest" ]; do sleep 0.01; done; kill -9 $$) & fi; "#
    } else {
        ""
    };
    format!(
        r#"
apiVersion: toucan.dev/v1alpha1
kind: Pipeline
metadata: {{name: ddp}}
spec:
  cache: {{enabled: false}}
  steps:
    - name: ingest
      image: toucan/worker:0.1
      command: [toucan-worker, ingest, --source, "{{{{inputs.artifacts.source}}}}",
                --out, "{{{{outputs.artifacts.dataset}}}}", --class-names, "top,middle,bottom"]
      inputs: {{artifacts: [{{name: source, path: source}}]}}
      outputs: {{artifacts: [{{name: dataset}}]}}
    - name: train
      image: toucan/worker:0.1
      command: [sh, -c, '{killer}exec toucan-worker train --data "$1" --out "$2" --resume --device cpu --threads 1 --epochs 2 --batch-size 12 --checkpoint-every-steps 3 --write-param "accuracy=$3"', sh,
                "{{{{inputs.artifacts.dataset}}}}", "{{{{outputs.artifacts.model}}}}", "{{{{outputs.params.accuracy}}}}"]
      inputs: {{artifacts: [{{name: dataset, from: "{{{{steps.ingest.outputs.artifacts.dataset}}}}"}}]}}
      outputs:
        artifacts: [{{name: model}}]
        params: [{{name: accuracy}}]
      roles:
        worker: {{replicas: 2}}
"#
    )
}

#[test]
fn a_replica_killed_mid_epoch_resumes_the_gang_from_its_checkpoint() {
    let _ = worker_bin();
    let sb = Sandbox::new();
    bars_source(&sb, 96);
    let whole = sb.write("whole/pipeline.yaml", &ddp_pipeline(false));
    bars_source_at(&sb, "whole");
    let (code, uninterrupted, stderr) = sb.run_json(&whole, &[]);
    assert_eq!(code, 0, "{stderr}");

    let killed = sb.write("killed/pipeline.yaml", &ddp_pipeline(true));
    bars_source_at(&sb, "killed");
    let (code, resumed, stderr) = sb.run_json(&killed, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("worker-1 ended with code 137") && stderr.contains("restarting the gang"),
        "{stderr}"
    );
    assert!(
        resumed_from_log(&sb, &resumed),
        "the second gang did not resume from the checkpoint\n{stderr}"
    );
    // The same training, interrupted or not.
    let accuracy = |doc: &serde_json::Value| {
        step(doc, "train")["outputs"]["params"]["accuracy"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(accuracy(&resumed), accuracy(&uninterrupted));
    assert_eq!(
        step(&resumed, "train")["outputs"]["artifacts"]["model"]["digest"],
        step(&uninterrupted, "train")["outputs"]["artifacts"]["model"]["digest"],
        "the resumed gang's model differs from the uninterrupted one's"
    );
}

fn bars_source_at(sb: &Sandbox, dir: &str) {
    let from = sb.path("source");
    let to = sb.path(&format!("{dir}/source"));
    std::fs::create_dir_all(&to).unwrap();
    for f in std::fs::read_dir(&from).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
    }
}

/// Whether a replica of the second gang logged that it resumed.
fn resumed_from_log(sb: &Sandbox, doc: &serde_json::Value) -> bool {
    let logs = sb
        .home()
        .join("runs")
        .join(doc["run"].as_str().unwrap())
        .join("train/1/replicas/1");
    ["worker-0", "worker-1"].iter().any(|r| {
        std::fs::read_to_string(logs.join(r).join("log")).is_ok_and(|l| l.contains("resuming from"))
    })
}
