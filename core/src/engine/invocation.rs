//! Building an [`Invocation`]: a node with every value resolved, ready for the shell.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::gang::{GangPlan, Role};
use super::plan::{RunPlan, timeout_ms};
use super::state::RunState;
use super::values::render_value;
use crate::api::{Resources, Step};
use crate::cache::{CACHE_KEY_VERSION, CacheKeyComponents, DeclaredOutputs, EffectiveCachePolicy};
use crate::records::{ArtifactRef, Phase};
use crate::template::{Reference, Template};

/// Where an input artifact comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum InputSource {
    /// One artifact.
    Artifact(ArtifactRef),
    /// The outputs of a fan-out's children, in order; materialized as `<input>/<index>`.
    FanIn(Vec<ArtifactRef>),
    /// No artifact: the parameter that names it is empty. Nothing is materialized and
    /// `{{inputs.artifacts.NAME}}` is the empty string.
    Absent,
}

impl InputSource {
    /// The text this input contributes to the cache key: content digests only.
    pub fn key_text(&self) -> String {
        match self {
            InputSource::Artifact(a) => a.digest.clone(),
            InputSource::FanIn(items) => {
                let digests: Vec<&str> = items.iter().map(|a| a.digest.as_str()).collect();
                format!("fanin:[{}]", digests.join(","))
            }
            InputSource::Absent => "none".to_string(),
        }
    }
}

/// A node ready to run: values substituted, path placeholders left for the launcher.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Invocation {
    pub node: String,
    pub step: String,
    /// The attempt this start is (1-based).
    pub attempt: u32,
    pub image: String,
    /// Command and args with values substituted; `{{inputs.artifacts.*}}` and `{{outputs.*}}`
    /// remain for the launcher.
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Every value the command, args, env and input params refer to, by reference
    /// (`params.epochs`, `item`, `inputs.params.lr`), with its type kept: an `int` param is a
    /// JSON number here although the command line holds its text. The launcher hands them to
    /// the command as a JSON file (`TOUCAN_VALUES`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, Value>,
    pub inputs: BTreeMap<String, InputSource>,
    pub outputs: DeclaredOutputs,
    pub timeout_ms: Option<u64>,
    pub cache: EffectiveCachePolicy,
    /// Whether a success may be written to the cache.
    pub cache_writable: bool,
    pub key: CacheKeyComponents,
    /// A distributed step's gang: its replicas run together, and the leader's outputs are
    /// the step's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gang: Option<GangInvocation>,
}

/// What a shell needs to run a gang beyond a single attempt's fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GangInvocation {
    pub plan: GangPlan,
    /// Each role's own env, added to the step's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub role_env: BTreeMap<Role, BTreeMap<String, String>>,
    /// Each role's resources, where it sets its own.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub role_resources: BTreeMap<Role, Resources>,
}

/// Resolves value references (never paths) for one node.
pub(super) struct Resolver<'a> {
    pub plan: &'a RunPlan,
    pub state: &'a RunState,
    pub step: &'a Step,
    pub item: Option<(usize, &'a Value)>,
}

impl Resolver<'_> {
    pub fn value(&self, r: &Reference) -> Option<String> {
        self.typed(r).map(|v| render_value(&v))
    }

    /// The value of `r` with its type: a param or item as declared, an index as a number,
    /// a step's output param as text, and an input param as the value of the one reference
    /// it consists of, or else as the text it renders to.
    pub fn typed(&self, r: &Reference) -> Option<Value> {
        self.typed_at_depth(r, 0)
    }

    fn typed_at_depth(&self, r: &Reference, depth: u8) -> Option<Value> {
        match r {
            Reference::Param(n) => self.plan.params.get(n).cloned(),
            Reference::StepParam { step, name } => {
                let node = self.state.nodes.get(step)?;
                (node.phase == Phase::Succeeded)
                    .then(|| node.outputs.params.get(name).cloned().map(Value::String))?
            }
            Reference::Item => self.item.map(|(_, v)| v.clone()),
            Reference::Index => self.item.map(|(i, _)| Value::from(i)),
            Reference::InputParam(n) if depth == 0 => {
                let input = self
                    .step
                    .inputs
                    .as_ref()?
                    .params
                    .iter()
                    .find(|p| &p.name == n)?;
                let template = Template::parse(&input.value).ok()?;
                if let Some(inner) = template.as_single_reference() {
                    return self.typed_at_depth(inner, depth + 1);
                }
                let mut missing = false;
                let out = template.render(|inner| {
                    let v = self.typed_at_depth(inner, depth + 1);
                    missing |= v.is_none();
                    v.as_ref().map(render_value)
                });
                (!missing).then_some(Value::String(out))
            }
            _ => None,
        }
    }

    /// Renders a template; every value reference must resolve. Each value used is recorded
    /// in `values`: rendered (for the cache key) and typed (for the command).
    pub fn render(&self, text: &str, values: &mut Values) -> Result<String, String> {
        let template = Template::parse(text).map_err(|e| format!("{text:?}: {e}"))?;
        let mut error = None;
        let out = template.render(|r| {
            if r.is_path() || matches!(r, Reference::StepArtifact { .. }) {
                return None;
            }
            match self.typed(r) {
                Some(v) => {
                    let rendered = render_value(&v);
                    values.insert(r.key(), rendered.clone(), v);
                    Some(rendered)
                }
                None => {
                    error.get_or_insert_with(|| format!("{r} has no value"));
                    None
                }
            }
        });
        match error {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

/// The values a node's templates used, by reference.
#[derive(Default)]
pub(super) struct Values {
    /// As rendered: part of the cache key.
    pub rendered: BTreeMap<String, String>,
    /// With their types: handed to the command.
    pub typed: BTreeMap<String, Value>,
}

impl Values {
    fn insert(&mut self, key: String, rendered: String, typed: Value) {
        self.rendered.insert(key.clone(), rendered);
        self.typed.insert(key, typed);
    }
}

/// Builds the invocation of `node` (a step, or a fan-out child with its item).
pub(super) fn build(
    plan: &RunPlan,
    state: &RunState,
    node: &str,
    step: &Step,
    item: Option<(usize, &Value)>,
    attempt: u32,
) -> Result<Invocation, String> {
    let resolver = Resolver {
        plan,
        state,
        step,
        item,
    };
    let mut values = Values::default();
    let mut argv = Vec::with_capacity(step.command.len() + step.args.len());
    for s in step.command.iter().chain(&step.args) {
        argv.push(resolver.render(s, &mut values)?);
    }
    let mut env = BTreeMap::new();
    for e in &step.env {
        env.insert(e.name.clone(), resolver.render(&e.value, &mut values)?);
    }
    if let Some(inputs) = &step.inputs {
        for p in &inputs.params {
            let rendered = resolver.render(&p.value, &mut values)?;
            let reference = Reference::InputParam(p.name.clone());
            let typed = resolver
                .typed(&reference)
                .unwrap_or_else(|| Value::String(rendered.clone()));
            values.insert(reference.key(), rendered, typed);
        }
    }
    let mut inputs = BTreeMap::new();
    for a in step.inputs.iter().flat_map(|i| &i.artifacts) {
        let source = match (plan.artifact_param(a), &a.from) {
            (Some((_, "")), _) => InputSource::Absent,
            (None, Some(from)) => upstream_artifact(state, from)?,
            // A `path:` input, or the artifact a parameter names: stored before the run.
            _ => plan
                .local_inputs
                .get(&step.name)
                .and_then(|m| m.get(&a.name))
                .map(|local| InputSource::Artifact(local.clone()))
                .ok_or_else(|| format!("input {:?} was not imported", a.name))?,
        };
        inputs.insert(a.name.clone(), source);
    }
    let outputs = DeclaredOutputs {
        params: step
            .outputs
            .iter()
            .flat_map(|o| &o.params)
            .map(|p| p.name.clone())
            .collect(),
        artifacts: step
            .outputs
            .iter()
            .flat_map(|o| &o.artifacts)
            .map(|a| a.name.clone())
            .collect(),
    };
    let key = CacheKeyComponents {
        version: CACHE_KEY_VERSION,
        image: step.image.clone(),
        command: step.command.clone(),
        args: step.args.clone(),
        env: step
            .env
            .iter()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect(),
        values: values.rendered,
        inputs: inputs
            .iter()
            .map(|(k, v)| (k.clone(), v.key_text()))
            .collect(),
        salt: plan.cache_salt(step),
        roles: String::new(),
    };
    let mut key = key;
    let gang = match step.gang() {
        None => None,
        Some(fields) => {
            let gang_plan = GangPlan::new(fields).map_err(|problems| {
                let (path, message) = problems.into_iter().next().unwrap_or_default();
                format!("{path}: {message}")
            })?;
            let mut role_env = BTreeMap::new();
            let mut role_resources = BTreeMap::new();
            let mut layout = gang_plan.layout();
            for (name, spec) in &step.roles {
                let role: Role = name.parse()?;
                if !spec.env.is_empty() {
                    let env: BTreeMap<String, String> = spec
                        .env
                        .iter()
                        .map(|e| (e.name.clone(), e.value.clone()))
                        .collect();
                    for (k, v) in &env {
                        layout.push_str(&format!(";{role}:{k}={v}"));
                    }
                    role_env.insert(role, env);
                }
                if let Some(r) = &spec.resources {
                    role_resources.insert(role, r.clone());
                }
            }
            key.roles = layout;
            Some(GangInvocation {
                plan: gang_plan,
                role_env,
                role_resources,
            })
        }
    };
    Ok(Invocation {
        node: node.to_string(),
        step: step.name.clone(),
        attempt,
        image: step.image.clone(),
        argv,
        env,
        values: values.typed,
        inputs,
        outputs,
        timeout_ms: timeout_ms(step),
        cache: plan.cache_policy(step),
        cache_writable: plan.cache_writable(step),
        key,
        gang,
    })
}

fn upstream_artifact(state: &RunState, from: &str) -> Result<InputSource, String> {
    let template = Template::parse(from).map_err(|e| format!("{from:?}: {e}"))?;
    let Some(Reference::StepArtifact { step, name }) = template.as_single_reference() else {
        return Err(format!("{from:?} is not a step output artifact reference"));
    };
    let node = state
        .nodes
        .get(step)
        .ok_or_else(|| format!("unknown step {step:?}"))?;
    if node.items.is_some() {
        let children = state.children(step);
        let mut refs = Vec::with_capacity(children.len());
        for (child, n) in children {
            if n.phase != Phase::Succeeded {
                continue;
            }
            let a = n
                .outputs
                .artifacts
                .get(name)
                .ok_or_else(|| format!("{child} produced no artifact {name:?}"))?;
            refs.push(a.clone());
        }
        return Ok(InputSource::FanIn(refs));
    }
    node.outputs
        .artifacts
        .get(name)
        .cloned()
        .map(InputSource::Artifact)
        .ok_or_else(|| format!("step {step:?} produced no artifact {name:?}"))
}
