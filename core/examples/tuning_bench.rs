//! toucan's side of the tuning benchmark (`bench/tuning/run`, `make bench-tuning`).
//!
//! Drives studies through the engine's public API exactly as a shell does (`decide`, then
//! `apply` and `record_success`, one trial at a time) on standard test functions, and times
//! a suggestion with 999 finished trials in the ledger. Prints one JSON object per line:
//!
//! - `{"kind":"run","sampler","function","seed","budget","best","regret","seconds"}`: the best
//!   observed value after `budget` trials and its regret (the noiseless function at the best
//!   observed trial minus the optimum); the budgets of one seed are prefixes of one study,
//!   which is what a shorter study would have run (suggestions never read `maxTrials`);
//! - `{"kind":"timing","sampler","trials","seconds"}`: the median wall time of `decide` for
//!   trial `trials` (Hartmann-6, the earlier trials random).
//!
//! Usage: `tuning_bench [--seeds N] [--budgets 50,200] [--samplers tpe,gp]
//! [--functions branin,hartmann6,noisy1d,mixed] [--timing-trials 1000] [--timing-reps 5]`

use std::collections::BTreeMap;
use std::time::Instant;

use toucan_core::tuning::{ParamValue, Study, StudySpec, TrialLedger};

type Params = BTreeMap<String, ParamValue>;

/// A test function: its space (YAML of `parameters`), its noiseless value, its optimum and
/// the standard deviation of the noise added to what trials report.
struct Function {
    name: &'static str,
    parameters: &'static str,
    value: fn(&Params) -> f64,
    optimum: f64,
    noise: f64,
}

fn num(p: &Params, name: &str) -> f64 {
    p.get(name).and_then(ParamValue::as_f64).unwrap_or(f64::NAN)
}

fn branin(p: &Params) -> f64 {
    let (x1, x2) = (num(p, "x1"), num(p, "x2"));
    let pi = std::f64::consts::PI;
    let b = 5.1 / (4.0 * pi * pi);
    let c = 5.0 / pi;
    let t = 1.0 / (8.0 * pi);
    (x2 - b * x1 * x1 + c * x1 - 6.0).powi(2) + 10.0 * (1.0 - t) * x1.cos() + 10.0
}

fn hartmann6(p: &Params) -> f64 {
    const ALPHA: [f64; 4] = [1.0, 1.2, 3.0, 3.2];
    const A: [[f64; 6]; 4] = [
        [10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
        [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
        [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
        [17.0, 8.0, 0.05, 10.0, 0.1, 14.0],
    ];
    const P: [[f64; 6]; 4] = [
        [0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
        [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
        [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
        [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381],
    ];
    let x: Vec<f64> = (1..=6).map(|i| num(p, &format!("x{i}"))).collect();
    -(0..4)
        .map(|i| {
            let s: f64 = (0..6).map(|j| A[i][j] * (x[j] - P[i][j]).powi(2)).sum();
            ALPHA[i] * (-s).exp()
        })
        .sum::<f64>()
}

/// Forrester et al.'s 1-D function (noise is added on top).
fn forrester(p: &Params) -> f64 {
    let x = num(p, "x");
    (6.0 * x - 2.0).powi(2) * (12.0 * x - 4.0).sin()
}

/// A mixed space: a categorical model choice, each model with its own conditional
/// parameters, plus a shared double and a shared discrete parameter. Minimum 0.
fn mixed(p: &Params) -> f64 {
    let x = num(p, "x");
    let y = num(p, "y");
    let shared = (x - 1.0).powi(2) / 10.0 + (y.log10() - 0.5f64.log10()).abs();
    let model = match p.get("model") {
        Some(ParamValue::Text(m)) => m.as_str(),
        _ => "",
    };
    shared
        + match model {
            "linear" => 1.0,
            "tree" => 0.5 + (num(p, "depth") - 6.0).powi(2) / 20.0,
            _ => {
                (num(p, "lr").log10() + 2.5).powi(2) / 2.0 + (num(p, "layers") - 3.0).powi(2) / 4.0
            }
        }
}

const FUNCTIONS: [Function; 4] = [
    Function {
        name: "branin",
        parameters: "[{name: x1, type: double, min: -5, max: 10}, {name: x2, type: double, min: 0, max: 15}]",
        value: branin,
        optimum: 0.397_887_357_729_738,
        noise: 0.0,
    },
    Function {
        name: "hartmann6",
        parameters: "[{name: x1, type: double, min: 0, max: 1}, {name: x2, type: double, min: 0, max: 1}, \
                      {name: x3, type: double, min: 0, max: 1}, {name: x4, type: double, min: 0, max: 1}, \
                      {name: x5, type: double, min: 0, max: 1}, {name: x6, type: double, min: 0, max: 1}]",
        value: hartmann6,
        optimum: -3.322_368_011_415_515,
        noise: 0.0,
    },
    Function {
        name: "noisy1d",
        parameters: "[{name: x, type: double, min: 0, max: 1}]",
        value: forrester,
        optimum: -6.020_740_055_766_075,
        noise: 0.5,
    },
    Function {
        name: "mixed",
        parameters: "[{name: model, type: categorical, values: [linear, tree, net]}, \
                      {name: x, type: double, min: -5, max: 5}, \
                      {name: y, type: discrete, values: [0.1, 0.2, 0.5, 1, 2]}, \
                      {name: depth, type: int, min: 1, max: 10, when: \"model == tree\"}, \
                      {name: lr, type: double, min: 1.0e-4, max: 1, scale: log, when: \"model == net\"}, \
                      {name: layers, type: int, min: 1, max: 4, when: \"model == net\"}]",
        value: mixed,
        optimum: 0.0,
        noise: 0.0,
    },
];

/// A standard normal draw that depends only on (seed, trial): splitmix64 and Box-Muller.
fn noise_draw(seed: u64, trial: u32) -> f64 {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(trial);
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    let (u1, u2) = (1.0 - next(), next());
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn spec(function: &Function, algorithm: &str, seed: u64, trials: u32) -> anyhow::Result<StudySpec> {
    let yaml = format!(
        "objective: {{metric: value, goal: minimize}}\nparameters: {}\nalgorithm: {{name: {algorithm}, seed: {seed}}}\nbudget: {{maxTrials: {trials}}}\n",
        function.parameters
    );
    Ok(serde_yaml_ng::from_str(&yaml)?)
}

fn run(function: &Function, sampler: &str, seed: u64, budgets: &[u32]) -> anyhow::Result<()> {
    let max = budgets.iter().copied().max().unwrap_or(0);
    let spec = spec(function, sampler, seed, max)?;
    let study = Study::new(&spec)?;
    let mut ledger = TrialLedger::new();
    let mut best: Option<(f64, f64)> = None;
    let started = Instant::now();
    for n in 1..=max {
        let decisions = study.decide(&ledger)?;
        let Some(start) = decisions.start.first() else {
            break;
        };
        let index = start.index;
        let truth = (function.value)(&start.params);
        let observed = truth + function.noise * noise_draw(seed, index);
        ledger.apply(&decisions)?;
        ledger.record_success(index, observed)?;
        if best.is_none_or(|(b, _)| observed < b) {
            best = Some((observed, truth));
        }
        if budgets.contains(&n) {
            let (value, truth) = best.unwrap_or((f64::NAN, f64::NAN));
            let line = serde_json::json!({
                "kind": "run", "sampler": sampler, "function": function.name, "seed": seed,
                "budget": n, "best": value, "regret": truth - function.optimum,
                "seconds": started.elapsed().as_secs_f64(),
            });
            println!("{line}");
        }
    }
    Ok(())
}

fn timing(sampler: &str, trials: u32, reps: usize) -> anyhow::Result<()> {
    let function = &FUNCTIONS[1];
    // The earlier trials: what a random study would have run.
    let random = Study::new(&spec(function, "random", 0, trials)?)?;
    let mut ledger = TrialLedger::new();
    for _ in 1..trials {
        let d = random.decide(&ledger)?;
        let Some(start) = d.start.first() else { break };
        let (index, value) = (start.index, (function.value)(&start.params));
        ledger.apply(&d)?;
        ledger.record_success(index, value)?;
    }
    let study = Study::new(&spec(function, sampler, 0, trials)?)?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        let d = study.decide(&ledger)?;
        times.push(t.elapsed().as_secs_f64());
        anyhow::ensure!(d.start.len() == 1, "no suggestion at trial {trials}");
    }
    times.sort_by(f64::total_cmp);
    let line = serde_json::json!({
        "kind": "timing", "sampler": sampler, "trials": trials, "seconds": times[times.len() / 2],
    });
    println!("{line}");
    Ok(())
}

fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn main() -> anyhow::Result<()> {
    let mut seeds = 10u64;
    let mut budgets = vec![50u32, 200];
    let mut samplers = list("tpe,gp");
    let mut functions = list("branin,hartmann6,noisy1d,mixed");
    let mut timing_trials = 1000u32;
    let mut timing_reps = 5usize;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--seeds" => seeds = value.parse()?,
            "--budgets" => {
                budgets = list(&value)
                    .iter()
                    .map(|b| b.parse())
                    .collect::<Result<_, _>>()?
            }
            "--samplers" => samplers = list(&value),
            "--functions" => functions = list(&value),
            "--timing-trials" => timing_trials = value.parse()?,
            "--timing-reps" => timing_reps = value.parse()?,
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    for name in &functions {
        let function = FUNCTIONS
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| anyhow::anyhow!("unknown function {name}"))?;
        for sampler in &samplers {
            for seed in 0..seeds {
                run(function, sampler, seed, &budgets)?;
            }
        }
    }
    if timing_trials > 0 {
        for sampler in &samplers {
            timing(sampler, timing_trials, timing_reps)?;
        }
    }
    Ok(())
}
