//! A run's plan: the pipeline, resolved parameters, and the digests of local inputs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::{CachePolicy, InputArtifact, PipelineSpec, Step};
use crate::cache::EffectiveCachePolicy;
use crate::duration::Duration;
use crate::graph;
use crate::records::{ArtifactRef, Millis};
use crate::template::{Reference, Template};

/// Everything the engine needs that does not change during a run. Serializable, so a run can
/// be resumed from the store alone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunPlan {
    pub pipeline: String,
    pub spec: PipelineSpec,
    /// Resolved, typed parameter values.
    pub params: BTreeMap<String, Value>,
    /// Digests of `path:` inputs and of the artifacts parameters name, by step and input
    /// name, stored before the run started.
    #[serde(default)]
    pub local_inputs: StagedInputs,
    /// `--no-cache`: run everything, but still record cache entries.
    #[serde(default)]
    pub no_cache: bool,
    /// The step graph, derived once: the engine consults it on every decision.
    #[serde(skip)]
    derived: DerivedOnce,
}

/// The derived step graph, computed on first use. A cache of the spec, so it never makes two
/// plans differ.
#[derive(Clone, Debug, Default)]
struct DerivedOnce(OnceLock<Derived>);

impl PartialEq for DerivedOnce {
    fn eq(&self, _: &DerivedOnce) -> bool {
        true
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Derived {
    deps: Vec<BTreeSet<String>>,
    index: HashMap<String, usize>,
}

/// One step with what the engine derives from it.
#[derive(Clone, Debug, PartialEq)]
pub struct StepPlan<'a> {
    pub step: &'a Step,
    pub is_finally: bool,
    pub deps: &'a BTreeSet<String>,
}

/// Stored inputs' artifacts, by step and input name.
pub type StagedInputs = BTreeMap<String, BTreeMap<String, ArtifactRef>>;

/// An input the shell stores before the run starts (locally: imports into the artifact
/// directory; on a cluster: the stage pod; `toucan submit`: uploads).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unstaged {
    pub step: String,
    pub input: String,
    /// A file or directory (relative to the manifest for `path:`), or for a parameter's
    /// value also a `sha256:` digest of an artifact already in the store.
    pub path: String,
    /// The parameter that named it, for an input whose `from` is `{{params.NAME}}`.
    pub param: Option<String>,
}

/// A plan that cannot be used; validation normally prevents these.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("step {step:?}: {detail}")]
    Step { step: String, detail: String },
}

impl RunPlan {
    /// A plan for `spec` with resolved parameter values, caching on, no local inputs yet.
    pub fn new(pipeline: &str, spec: PipelineSpec, params: BTreeMap<String, Value>) -> RunPlan {
        RunPlan {
            pipeline: pipeline.to_string(),
            spec,
            params,
            local_inputs: BTreeMap::new(),
            no_cache: false,
            derived: DerivedOnce::default(),
        }
    }

    fn all_steps(&self) -> impl Iterator<Item = (&Step, bool)> {
        let main = self.spec.steps.iter().map(|s| (s, false));
        main.chain(self.spec.finally.iter().map(|s| (s, true)))
    }

    fn derived(&self) -> &Derived {
        self.derived.0.get_or_init(|| Derived {
            deps: self
                .all_steps()
                .map(|(s, _)| graph::dependencies(s))
                .collect(),
            index: self
                .all_steps()
                .enumerate()
                .map(|(i, (s, _))| (s.name.clone(), i))
                .collect(),
        })
    }

    /// Main steps, then `finally` steps, each with its dependencies.
    pub fn steps(&self) -> impl Iterator<Item = StepPlan<'_>> {
        let derived = self.derived();
        self.all_steps()
            .zip(&derived.deps)
            .map(|((step, is_finally), deps)| StepPlan {
                step,
                is_finally,
                deps,
            })
    }

    pub fn step(&self, name: &str) -> Option<StepPlan<'_>> {
        let derived = self.derived();
        let i = *derived.index.get(name)?;
        let (step, is_finally) = self.all_steps().nth(i)?;
        Some(StepPlan {
            step,
            is_finally,
            deps: &derived.deps[i],
        })
    }

    /// The inputs not yet in the artifact store: every `path:` input, and every input whose
    /// `from` names a parameter with a value (a path or a digest; empty stands for none).
    pub fn unstaged_inputs(&self) -> Vec<Unstaged> {
        let mut out = Vec::new();
        for sp in self.steps() {
            let staged = self.local_inputs.get(&sp.step.name);
            for a in sp.step.inputs.iter().flat_map(|i| &i.artifacts) {
                if staged.is_some_and(|m| m.contains_key(&a.name)) {
                    continue;
                }
                let (path, param) = match (&a.path, self.artifact_param(a)) {
                    (Some(path), _) => (path.clone(), None),
                    (None, Some((param, value))) if !value.is_empty() => {
                        (value.to_string(), Some(param.to_string()))
                    }
                    _ => continue,
                };
                out.push(Unstaged {
                    step: sp.step.name.clone(),
                    input: a.name.clone(),
                    path,
                    param,
                });
            }
        }
        out
    }

    /// For an input artifact whose `from` is `{{params.NAME}}`: the parameter's name and its
    /// value in this run (a digest of the artifact store, a path, or empty for none).
    pub fn artifact_param<'a>(&'a self, input: &'a InputArtifact) -> Option<(&'a str, &'a str)> {
        let template = Template::parse(input.from.as_deref()?).ok()?;
        let Some(Reference::Param(name)) = template.as_single_reference() else {
            return None;
        };
        let value = self.params.get(name).and_then(Value::as_str).unwrap_or("");
        let name = &self.spec.params.iter().find(|p| &p.name == name)?.name;
        Some((name.as_str(), value))
    }

    /// `inputs` (as another run of this pipeline recorded them) without the inputs that
    /// parameters name: those follow this run's own values.
    pub fn path_inputs_only(&self, inputs: StagedInputs) -> StagedInputs {
        self.retain_inputs(inputs, |a, _| a.path.is_some())
    }

    /// `inputs` as this run's submitter stored them (`toucan submit`, or the run it repeats),
    /// without an artifact a parameter names by another digest than this run's value: that
    /// one is staged again.
    pub fn submitted_inputs(&self, inputs: StagedInputs) -> StagedInputs {
        self.retain_inputs(inputs, |a, stored| {
            !self
                .artifact_param(a)
                .is_some_and(|(_, value)| value.starts_with("sha256:") && stored.digest != value)
        })
    }

    /// `inputs` with only the entries of this plan's inputs that `keep` keeps (entries of
    /// other inputs stay), and no step left empty.
    fn retain_inputs(
        &self,
        mut inputs: StagedInputs,
        keep: impl Fn(&InputArtifact, &ArtifactRef) -> bool,
    ) -> StagedInputs {
        for sp in self.steps() {
            let Some(by_input) = inputs.get_mut(&sp.step.name) else {
                continue;
            };
            for a in sp.step.inputs.iter().flat_map(|i| &i.artifacts) {
                if by_input.get(&a.name).is_some_and(|stored| !keep(a, stored)) {
                    by_input.remove(&a.name);
                }
            }
        }
        inputs.retain(|_, by_input| !by_input.is_empty());
        inputs
    }

    /// Names of the main (non-finally) steps.
    pub fn main_step_names(&self) -> impl Iterator<Item = &str> {
        self.spec.steps.iter().map(|s| s.name.as_str())
    }

    /// The cache policy for a step: the step's, else the pipeline's, else on without expiry;
    /// `--no-cache` turns lookups off.
    pub fn cache_policy(&self, step: &Step) -> EffectiveCachePolicy {
        let policy: Option<&CachePolicy> = step.cache.as_ref().or(self.spec.cache.as_ref());
        let enabled = policy.and_then(|p| p.enabled).unwrap_or(true) && !self.no_cache;
        let max_age_ms = policy
            .and_then(|p| p.max_age.as_ref())
            .map(|d| d.as_millis() as Millis);
        EffectiveCachePolicy {
            enabled,
            max_age_ms,
        }
    }

    /// Whether a successful result of this step may be written to the cache.
    pub fn cache_writable(&self, step: &Step) -> bool {
        let policy = step.cache.as_ref().or(self.spec.cache.as_ref());
        policy.and_then(|p| p.enabled).unwrap_or(true)
    }

    /// The step's salt, empty when none.
    pub fn cache_salt(&self, step: &Step) -> String {
        step.cache
            .as_ref()
            .or(self.spec.cache.as_ref())
            .and_then(|p| p.salt.clone())
            .unwrap_or_default()
    }
}

/// The per-attempt timeout of a step.
pub fn timeout_ms(step: &Step) -> Option<u64> {
    step.timeout.as_ref().map(Duration::as_millis)
}

/// Exit codes that make a failure permanent when a step declares none: a usage error.
pub const DEFAULT_PERMANENT_EXIT_CODES: &[i32] = &[2];

/// Whether an attempt of `step` that exited with `code` can never succeed on a retry.
pub fn is_permanent(step: &Step, code: i32) -> bool {
    match step
        .retry
        .as_ref()
        .and_then(|r| r.permanent_exit_codes.as_ref())
    {
        Some(codes) => codes.contains(&code),
        None => DEFAULT_PERMANENT_EXIT_CODES.contains(&code),
    }
}

/// The most attempts a step gets (the first plus its retries).
pub fn max_attempts(step: &Step) -> u32 {
    step.retry.as_ref().map_or(0, |r| r.limit).saturating_add(1)
}

/// The first retry's delay when a step's backoff does not say.
const DEFAULT_BACKOFF_INITIAL: std::time::Duration = std::time::Duration::from_secs(1);
/// The longest retry delay when a step's backoff does not say.
const DEFAULT_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(600);

/// The delay before retry number `retry` (1 for the first retry): `initial * factor^(retry-1)`
/// capped at `max`.
pub fn backoff_ms(step: &Step, retry: u32) -> Millis {
    let backoff = step.retry.as_ref().and_then(|r| r.backoff.as_ref());
    let initial = backoff
        .and_then(|b| b.initial.as_ref())
        .map_or(DEFAULT_BACKOFF_INITIAL, Duration::get);
    let factor = backoff.and_then(|b| b.factor).unwrap_or(2.0).max(1.0);
    let max = backoff
        .and_then(|b| b.max.as_ref())
        .map_or(DEFAULT_BACKOFF_MAX, Duration::get);
    let exponent = retry.saturating_sub(1).min(64) as i32;
    let ms = initial.as_millis() as f64 * factor.powi(exponent);
    ms.min(max.as_millis() as f64) as Millis
}
