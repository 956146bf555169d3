//! `toucan run` end to end with real processes: caching by content, retries, failures and
//! `finally`, cancellation and resume, fan-out, single-flight, timeouts and output safety.

mod common;

use std::time::{Duration, Instant};

use common::{Sandbox, cached, step};

const CHAIN: &str = r#"
apiVersion: toucan.dev/v1alpha1
kind: Pipeline
metadata: {name: chain}
spec:
  params:
    - {name: greeting, type: string, default: hello}
  steps:
    - name: read
      image: busybox
      command: [sh, -c, 'cat "$0" > "$1"; wc -c < "$0" | tr -d " " > "$2"',
                "{{inputs.artifacts.data}}", "{{outputs.artifacts.copy}}", "{{outputs.params.size}}"]
      inputs: {artifacts: [{name: data, path: data.txt}]}
      outputs: {artifacts: [{name: copy}], params: [{name: size}]}
    - name: shout
      image: busybox
      command: [sh, -c, 'mkdir -p "$1"; tr a-z A-Z < "$0" > "$1/upper.txt"; echo "{{params.greeting}}" > "$1/greeting"',
                "{{inputs.artifacts.text}}", "{{outputs.artifacts.loud}}"]
      inputs: {artifacts: [{name: text, from: "{{steps.read.outputs.artifacts.copy}}"}]}
      outputs: {artifacts: [{name: loud}]}
    - name: count
      image: busybox
      command: [sh, -c, 'cat "$0"/upper.txt | wc -l | tr -d " " > "$1"', "{{inputs.artifacts.loud}}", "{{outputs.params.lines}}"]
      inputs: {artifacts: [{name: loud, from: "{{steps.shout.outputs.artifacts.loud}}"}]}
      outputs: {params: [{name: lines}]}
    - name: independent
      image: busybox
      command: [sh, -c, 'echo fixed > "$0"', "{{outputs.params.value}}"]
      outputs: {params: [{name: value}]}
"#;

#[test]
fn second_run_is_cached_and_cache_follows_content_not_paths() {
    let sb = Sandbox::new();
    let manifest = sb.write("a/pipeline.yaml", CHAIN);
    sb.write("a/data.txt", "one\ntwo\n");

    let (code, first, stderr) = sb.run_json(&manifest, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(first["phase"], "Succeeded");
    for s in ["read", "shout", "count", "independent"] {
        assert!(!cached(&first, s), "{s} should run the first time");
        assert_eq!(step(&first, s)["attempts"], 1);
        assert_eq!(step(&first, s)["cacheKey"].as_str().unwrap().len(), 64);
    }
    assert_eq!(step(&first, "read")["outputs"]["params"]["size"], "8");
    assert_eq!(step(&first, "count")["outputs"]["params"]["lines"], "2");

    let (code, second, _) = sb.run_json(&manifest, &[]);
    assert_eq!(code, 0);
    for s in ["read", "shout", "count", "independent"] {
        assert!(cached(&second, s), "{s} should be cached the second time");
        assert_eq!(step(&second, s)["attempts"], 0);
        assert_eq!(step(&second, s)["cacheKey"], step(&first, s)["cacheKey"]);
    }

    // New bytes at the same path: the consumer and everything downstream miss.
    sb.write("a/data.txt", "one\ntwo\nthree\n");
    let (code, third, _) = sb.run_json(&manifest, &[]);
    assert_eq!(code, 0);
    assert!(!cached(&third, "read"));
    assert!(!cached(&third, "shout"));
    assert!(!cached(&third, "count"));
    assert!(cached(&third, "independent"));
    assert_eq!(step(&third, "count")["outputs"]["params"]["lines"], "3");

    // The same bytes at a new path (another directory, another manifest file): all hit.
    let moved = sb.write("b/elsewhere/pipeline.yaml", CHAIN);
    sb.write("b/elsewhere/data.txt", "one\ntwo\nthree\n");
    let (code, fourth, _) = sb.run_json(&moved, &[]);
    assert_eq!(code, 0);
    for s in ["read", "shout", "count", "independent"] {
        assert!(
            cached(&fourth, s),
            "{s} should hit with the same content at a new path"
        );
    }

    // A different parameter value changes only the steps that use it.
    let (_, fifth, _) = sb.run_json(&moved, &["-p", "greeting=hi"]);
    assert!(cached(&fifth, "read"));
    assert!(!cached(&fifth, "shout"));
    assert!(
        !cached(&fifth, "count"),
        "shout's output changed, so count's input did"
    );

    // --no-cache runs everything.
    let (_, sixth, _) = sb.run_json(&moved, &["--no-cache"]);
    for s in ["read", "shout", "count", "independent"] {
        assert!(!cached(&sixth, s));
    }
}

#[test]
fn deleted_cached_output_is_recomputed() {
    let sb = Sandbox::new();
    let manifest = sb.write("pipeline.yaml", CHAIN);
    sb.write("data.txt", "abc\n");
    let (code, first, _) = sb.run_json(&manifest, &[]);
    assert_eq!(code, 0);
    let digest = step(&first, "shout")["outputs"]["artifacts"]["loud"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    // The directory's manifest blob goes missing.
    let hex = digest.trim_start_matches("sha256:");
    let blob = sb
        .home()
        .join("artifacts/blobs/sha256")
        .join(&hex[..2])
        .join(hex);
    assert!(blob.exists(), "{}", blob.display());
    std::fs::remove_file(&blob).unwrap();

    let (code, second, stderr) = sb.run_json(&manifest, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(cached(&second, "read"));
    assert!(
        !cached(&second, "shout"),
        "its cached output is gone, so it re-runs"
    );
    assert!(
        cached(&second, "count"),
        "shout made the same bytes again, so count hits"
    );
    assert!(blob.exists(), "the blob was written again");
}

#[test]
fn flaky_step_is_retried_with_backoff_and_succeeds() {
    let sb = Sandbox::new();
    let counter = sb.path("attempts");
    let manifest = sb.write(
        "pipeline.yaml",
        &format!(
            r#"
apiVersion: toucan.dev/v1alpha1
kind: Pipeline
metadata: {{name: flaky}}
spec:
  steps:
    - name: flaky
      image: busybox
      command: [sh, -c, 'n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; echo "attempt $n"; [ $n -ge 3 ]']
      retry: {{limit: 3, backoff: {{initial: 300ms, factor: 2}}}}
      cache: {{enabled: false}}
"#,
            c = counter.display()
        ),
    );
    let started = Instant::now();
    let (code, doc, stderr) = sb.run_json(&manifest, &[]);
    let elapsed = started.elapsed();
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(doc["phase"], "Succeeded");
    assert_eq!(step(&doc, "flaky")["attempts"], 3);
    assert!(stderr.contains("retrying in"), "{stderr}");
    // Backoff of 300ms then 600ms must have been waited.
    assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
    let run = doc["run"].as_str().unwrap();
    let log = sb.run(&["logs", run, "flaky", "--attempt", "2"]);
    let log = String::from_utf8_lossy(&log.stdout).to_string();
    assert_eq!(log.lines().next(), Some("attempt 2"), "{log}");
    assert!(
        log.contains("exited with code 1"),
        "the launcher says why: {log}"
    );
}

#[test]
fn failing_step_fails_the_run_but_finally_runs_and_log_tail_is_shown() {
    let sb = Sandbox::new();
    let marker = sb.path("finally-ran");
    let manifest = sb.write(
        "pipeline.yaml",
        &format!(
            r#"
apiVersion: toucan.dev/v1alpha1
kind: Pipeline
metadata: {{name: broken}}
spec:
  steps:
    - name: bad
      image: busybox
      command: [sh, -c, 'echo "something useful"; echo "the real error" >&2; exit 7']
      retry: {{limit: 1, backoff: {{initial: 10ms}}}}
    - name: after
      image: busybox
      command: [sh, -c, 'echo never']
      dependsOn: [bad]
  finally:
    - name: cleanup
      image: busybox
      command: [sh, -c, 'touch {m}']
      cache: {{enabled: false}}
"#,
            m = marker.display()
        ),
    );
    let (code, doc, stderr) = sb.run_json(&manifest, &[]);
    assert_eq!(code, 1);
    assert_eq!(doc["phase"], "Failed");
    assert_eq!(step(&doc, "bad")["phase"], "Failed");
    assert_eq!(step(&doc, "bad")["attempts"], 2);
    assert_eq!(step(&doc, "after")["phase"], "Skipped");
    assert_eq!(step(&doc, "cleanup")["phase"], "Succeeded");
    assert!(marker.exists(), "the finally step really ran");
    assert!(
        stderr.contains("the real error"),
        "log tail shown: {stderr}"
    );
    assert!(stderr.contains("exited with code 7"), "{stderr}");
}

#[test]
fn ctrl_c_cancels_and_resume_reuses_finished_steps() {
    let sb = Sandbox::new();
    let gate = sb.path("gate");
    let count_a = sb.path("a-runs");
    let manifest = sb.write(
        "pipeline.yaml",
        &format!(
            r#"
apiVersion: toucan.dev/v1alpha1
kind: Pipeline
metadata: {{name: slow}}
spec:
  steps:
    - name: a
      image: busybox
      command: [sh, -c, 'echo x >> {ca}; echo a > "$0"', "{{{{outputs.params.v}}}}"]
      outputs: {{params: [{{name: v}}]}}
      cache: {{enabled: false}}
    - name: b
      image: busybox
      command: [sh, -c, 'while [ ! -e {g} ]; do sleep 0.05; done; echo "$0-b" > "$1"', "{{{{steps.a.outputs.params.v}}}}", "{{{{outputs.params.v}}}}"]
      outputs: {{params: [{{name: v}}]}}
      cache: {{enabled: false}}
"#,
            ca = count_a.display(),
            g = gate.display()
        ),
    );
    let child = sb
        .command(&["run", manifest.to_str().unwrap(), "-o", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until b is running (a has finished), then interrupt.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let runs_dir = sb.home().join("runs");
        let b_started = std::fs::read_dir(&runs_dir)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
            .is_some_and(|run| run.path().join("b/1/launch.json").exists());
        if b_started {
            break;
        }
        assert!(Instant::now() < deadline, "b never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["phase"], "Cancelled");
    assert_eq!(step(&doc, "a")["phase"], "Succeeded");
    assert_eq!(step(&doc, "b")["phase"], "Cancelled");
    let run = doc["run"].as_str().unwrap().to_string();

    std::fs::write(&gate, "").unwrap();
    let out = sb.run(&["run", "--resume", &run, "-o", "json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resumed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(resumed["run"], run.as_str());
    assert_eq!(resumed["phase"], "Succeeded");
    assert_eq!(step(&resumed, "b")["outputs"]["params"]["v"], "a-b");
    assert_eq!(
        step(&resumed, "b")["attempts"],
        2,
        "the cancelled attempt counts"
    );
    assert_eq!(
        std::fs::read_to_string(&count_a).unwrap().lines().count(),
        1,
        "a was not run again"
    );
}

#[test]
fn fan_out_fan_in_and_identical_steps_run_once() {
    let sb = Sandbox::new();
    let counter = sb.path("runs-of-dup");
    let manifest = sb.write(
        "pipeline.yaml",
        &format!(
            r#"
apiVersion: toucan.dev/v1alpha1
kind: Pipeline
metadata: {{name: fan}}
spec:
  params:
    - {{name: words, type: list, default: [alpha, beta, gamma]}}
  steps:
    - name: square
      image: busybox
      forEach: "{{{{params.words}}}}"
      command: [sh, -c, 'printf "%s" "$0" | wc -c | tr -d " " > "$1"; echo "$0" > "$2"', "{{{{item}}}}", "{{{{outputs.params.len}}}}", "{{{{outputs.artifacts.word}}}}"]
      outputs: {{params: [{{name: len}}], artifacts: [{{name: word}}]}}
    - name: total
      image: busybox
      command: [sh, -c, 'cat "$1"/0 "$1"/1 "$1"/2 | tr -d "\n" > "$2"; echo "$0" > /dev/null', "{{{{steps.square.outputs.params.len}}}}", "{{{{inputs.artifacts.words}}}}", "{{{{outputs.params.joined}}}}"]
      inputs: {{artifacts: [{{name: words, from: "{{{{steps.square.outputs.artifacts.word}}}}"}}]}}
      outputs: {{params: [{{name: joined}}]}}
    - name: dup
      image: busybox
      forEach: '["same", "same", "same"]'
      command: [sh, -c, 'echo x >> {c}; sleep 0.3; echo done > "$0"', "{{{{outputs.params.r}}}}"]
      outputs: {{params: [{{name: r}}]}}
"#,
            c = counter.display()
        ),
    );
    let (code, doc, stderr) = sb.run_json(&manifest, &["--parallelism", "8"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(step(&doc, "square[0]")["outputs"]["params"]["len"], "5");
    assert_eq!(step(&doc, "square[1]")["outputs"]["params"]["len"], "4");
    let lens: Vec<String> = serde_json::from_str(
        step(&doc, "square")["outputs"]["params"]["len"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(lens, ["5", "4", "5"]);
    assert_eq!(
        step(&doc, "total")["outputs"]["params"]["joined"],
        "alphabetagamma"
    );
    // Three identical children in flight together: one ran, two were served its result.
    assert_eq!(
        std::fs::read_to_string(&counter).unwrap().lines().count(),
        1
    );
    let dup_cached = (0..3)
        .filter(|i| cached(&doc, &format!("dup[{i}]")))
        .count();
    assert_eq!(dup_cached, 2);
}

#[test]
fn timeout_kills_the_step() {
    let sb = Sandbox::new();
    let manifest = sb.write(
        "pipeline.yaml",
        r#"
apiVersion: toucan.dev/v1alpha1
kind: Pipeline
metadata: {name: slow}
spec:
  steps:
    - name: sleepy
      image: busybox
      command: [sleep, "30"]
      timeout: 500ms
"#,
    );
    let started = Instant::now();
    let (code, doc, _) = sb.run_json(&manifest, &[]);
    assert_eq!(code, 1);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(step(&doc, "sleepy")["phase"], "Failed");
    assert!(
        step(&doc, "sleepy")["message"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{doc:#}"
    );
}

#[test]
fn outputs_escaping_the_output_directory_are_rejected() {
    let sb = Sandbox::new();
    sb.write("secret", "do not read");
    let manifest = sb.write(
        "pipeline.yaml",
        &format!(
            r#"
apiVersion: toucan.dev/v1alpha1
kind: Pipeline
metadata: {{name: sneaky}}
spec:
  steps:
    - name: sneaky
      image: busybox
      command: [ln, -s, {}, "{{{{outputs.artifacts.loot}}}}"]
      outputs: {{artifacts: [{{name: loot}}]}}
"#,
            sb.path("secret").display()
        ),
    );
    let (code, doc, _) = sb.run_json(&manifest, &[]);
    assert_eq!(code, 1);
    let message = step(&doc, "sneaky")["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("escapes"), "{message}");
}

#[test]
fn pipeline_run_in_a_directory_supplies_params_and_cli_overrides_them() {
    let sb = Sandbox::new();
    sb.write(
        "dir/pipeline.yaml",
        r#"
apiVersion: toucan.dev/v1alpha1
kind: Pipeline
metadata: {name: greet}
spec:
  params:
    - {name: who, type: string}
    - {name: times, type: int, default: 1}
  steps:
    - name: hello
      image: busybox
      command: [sh, -c, 'echo "{{params.who}} x{{params.times}}" > "$0"', "{{outputs.params.said}}"]
      outputs: {params: [{name: said}]}
"#,
    );
    sb.write(
        "dir/run.yaml",
        r#"
apiVersion: toucan.dev/v1alpha1
kind: PipelineRun
metadata: {name: greet-world}
spec:
  pipelineRef: {name: greet}
  params:
    - {name: who, value: world}
    - {name: times, value: 3}
"#,
    );
    let dir = sb.path("dir");
    let (code, doc, stderr) = sb.run_json(&dir, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(step(&doc, "hello")["outputs"]["params"]["said"], "world x3");
    let (code, doc, _) = sb.run_json(&dir, &["-p", "times=4"]);
    assert_eq!(code, 0);
    assert_eq!(step(&doc, "hello")["outputs"]["params"]["said"], "world x4");
}
