//! Cache keys, version 1, and the cache-hit decision.
//!
//! A key is the SHA-256 of length-prefixed canonical fields: the key version, the image, the
//! command and args as written (placeholders unresolved, so per-run paths never enter it), the
//! declared env, the resolved values of every value the step references, the content digests
//! of its input artifacts, and the step's cache salt. Never a path or a URI.
//!
//! The components are kept beside the key so `toucan cache explain` can show them and
//! `toucan cache diff` can say which differ. [`decide`] is the hit-or-miss rule; the store
//! crate's `cache::lookup` reads the entry and checks its blobs, then applies it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::records::{CacheEntry, Millis, StepOutputs};

/// The version of the key layout below. Bump it whenever the layout changes.
pub const CACHE_KEY_VERSION: u32 = 1;

/// Everything a version-1 cache key is computed from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheKeyComponents {
    pub version: u32,
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    /// Declared env, values as written.
    pub env: BTreeMap<String, String>,
    /// Resolved values by the reference that produced them (`params.epochs`,
    /// `steps.train.outputs.params.accuracy`, `inputs.params.x`, `item`, `index`).
    pub values: BTreeMap<String, String>,
    /// Input artifact content digests by input name.
    pub inputs: BTreeMap<String, String>,
    pub salt: String,
    /// A distributed step's role layout (`chief=1,worker=2`) and its roles' env
    /// (`worker:NAME`); empty, and not hashed, for a step without roles, whose keys stay
    /// as they were.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub roles: String,
}

/// A hex SHA-256 cache key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CacheKey(pub String);

impl std::fmt::Display for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl CacheKeyComponents {
    /// The key of these components.
    pub fn key(&self) -> CacheKey {
        let mut h = KeyHasher::default();
        h.field("version", self.version.to_string().as_bytes());
        h.field("image", self.image.as_bytes());
        h.list("command", &self.command);
        h.list("args", &self.args);
        h.map("env", &self.env);
        h.map("values", &self.values);
        h.map("inputs", &self.inputs);
        h.field("salt", self.salt.as_bytes());
        if !self.roles.is_empty() {
            h.field("roles", self.roles.as_bytes());
        }
        CacheKey(hex::encode(h.0.finalize()))
    }

    /// The components that differ between two keys' components, in a stable order.
    pub fn diff(&self, other: &CacheKeyComponents) -> Vec<ComponentDiff> {
        let mut out = Vec::new();
        let mut scalar = |name: &str, a: String, b: String| {
            if a != b {
                out.push(ComponentDiff {
                    component: name.to_string(),
                    a: Some(a),
                    b: Some(b),
                });
            }
        };
        scalar(
            "version",
            self.version.to_string(),
            other.version.to_string(),
        );
        scalar("image", self.image.clone(), other.image.clone());
        scalar(
            "command",
            format!("{:?}", self.command),
            format!("{:?}", other.command),
        );
        scalar(
            "args",
            format!("{:?}", self.args),
            format!("{:?}", other.args),
        );
        scalar("salt", self.salt.clone(), other.salt.clone());
        scalar("roles", self.roles.clone(), other.roles.clone());
        map_diff("env", &self.env, &other.env, &mut out);
        map_diff("values", &self.values, &other.values, &mut out);
        map_diff("inputs", &self.inputs, &other.inputs, &mut out);
        out
    }
}

fn map_diff(
    name: &str,
    a: &BTreeMap<String, String>,
    b: &BTreeMap<String, String>,
    out: &mut Vec<ComponentDiff>,
) {
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for k in keys {
        let (va, vb) = (a.get(k), b.get(k));
        if va != vb {
            out.push(ComponentDiff {
                component: format!("{name}.{k}"),
                a: va.cloned(),
                b: vb.cloned(),
            });
        }
    }
}

/// One component that differs between two keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentDiff {
    pub component: String,
    pub a: Option<String>,
    pub b: Option<String>,
}

/// SHA-256 over tagged, length-prefixed fields, so no two different component sets can
/// produce the same byte stream.
#[derive(Default)]
struct KeyHasher(Sha256);

impl KeyHasher {
    fn bytes(&mut self, b: &[u8]) {
        self.0.update((b.len() as u64).to_be_bytes());
        self.0.update(b);
    }

    fn field(&mut self, tag: &str, value: &[u8]) {
        self.bytes(tag.as_bytes());
        self.bytes(value);
    }

    fn list(&mut self, tag: &str, items: &[String]) {
        self.bytes(tag.as_bytes());
        self.0.update((items.len() as u64).to_be_bytes());
        for item in items {
            self.bytes(item.as_bytes());
        }
    }

    fn map(&mut self, tag: &str, map: &BTreeMap<String, String>) {
        self.bytes(tag.as_bytes());
        self.0.update((map.len() as u64).to_be_bytes());
        for (k, v) in map {
            self.bytes(k.as_bytes());
            self.bytes(v.as_bytes());
        }
    }
}

/// The cache policy in force for one step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveCachePolicy {
    pub enabled: bool,
    pub max_age_ms: Option<Millis>,
}

/// Whether a step is served from the cache, and if not, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheDecision {
    Hit,
    Miss(MissReason),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MissReason {
    /// Caching is off for this step or this run.
    Disabled,
    NoEntry,
    /// The entry is older than `maxAge`.
    Expired {
        age_ms: Millis,
    },
    /// The entry lacks outputs the step now declares.
    OutputsNotDeclared(Vec<String>),
    /// Blobs the entry refers to are gone from the artifact store.
    MissingBlobs(Vec<String>),
}

impl std::fmt::Display for MissReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MissReason::Disabled => f.write_str("caching disabled"),
            MissReason::NoEntry => f.write_str("no cache entry"),
            MissReason::Expired { age_ms } => write!(f, "entry expired ({}s old)", age_ms / 1000),
            MissReason::OutputsNotDeclared(names) => {
                write!(f, "entry lacks outputs {}", names.join(", "))
            }
            MissReason::MissingBlobs(digests) => {
                write!(f, "{} cached output blob(s) missing", digests.len())
            }
        }
    }
}

/// The names of declared outputs: params and artifacts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclaredOutputs {
    pub params: Vec<String>,
    pub artifacts: Vec<String>,
}

impl DeclaredOutputs {
    /// Declared outputs the given outputs lack.
    pub fn missing_from(&self, outputs: &StepOutputs) -> Vec<String> {
        let params = self
            .params
            .iter()
            .filter(|p| !outputs.params.contains_key(*p));
        let artifacts = self
            .artifacts
            .iter()
            .filter(|a| !outputs.artifacts.contains_key(*a));
        params.chain(artifacts).cloned().collect()
    }
}

/// Decides a cache lookup. `missing_blobs` are the entry's digests the artifact store no
/// longer has (the caller checks them only when everything else says hit).
pub fn decide(
    policy: &EffectiveCachePolicy,
    entry: Option<&CacheEntry>,
    declared: &DeclaredOutputs,
    now: Millis,
    missing_blobs: &[String],
) -> CacheDecision {
    if !policy.enabled {
        return CacheDecision::Miss(MissReason::Disabled);
    }
    let Some(entry) = entry else {
        return CacheDecision::Miss(MissReason::NoEntry);
    };
    let age_ms = now.saturating_sub(entry.created_at);
    if policy.max_age_ms.is_some_and(|max| age_ms > max) {
        return CacheDecision::Miss(MissReason::Expired { age_ms });
    }
    let missing = declared.missing_from(&entry.outputs);
    if !missing.is_empty() {
        return CacheDecision::Miss(MissReason::OutputsNotDeclared(missing));
    }
    if !missing_blobs.is_empty() {
        return CacheDecision::Miss(MissReason::MissingBlobs(missing_blobs.to_vec()));
    }
    CacheDecision::Hit
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{ArtifactKind, ArtifactRef};

    fn components() -> CacheKeyComponents {
        CacheKeyComponents {
            version: CACHE_KEY_VERSION,
            image: "toucan/worker:0.1".into(),
            command: vec!["train".into(), "{{inputs.artifacts.data}}".into()],
            args: vec![],
            env: BTreeMap::from([("A".into(), "1".into())]),
            values: BTreeMap::from([("params.epochs".into(), "5".into())]),
            inputs: BTreeMap::from([("data".into(), "sha256:aa".into())]),
            salt: String::new(),
            roles: String::new(),
        }
    }

    #[test]
    fn key_is_stable_and_hex() {
        let k = components().key();
        assert_eq!(k, components().key());
        assert_eq!(k.0.len(), 64);
        assert!(k.0.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn every_component_changes_the_key() {
        let base = components().key();
        let mut variants = Vec::new();
        let mut c = components();
        c.image.push('x');
        variants.push(c);
        let mut c = components();
        c.command.push("x".into());
        variants.push(c);
        let mut c = components();
        c.args.push("x".into());
        variants.push(c);
        let mut c = components();
        c.env.insert("B".into(), "2".into());
        variants.push(c);
        let mut c = components();
        c.values.insert("params.epochs".into(), "6".into());
        variants.push(c);
        let mut c = components();
        c.inputs.insert("data".into(), "sha256:bb".into());
        variants.push(c);
        let mut c = components();
        c.salt = "s".into();
        variants.push(c);
        let mut c = components();
        c.version = 2;
        variants.push(c);
        for v in variants {
            assert_ne!(v.key(), base, "{v:?}");
        }
    }

    #[test]
    fn length_prefixing_separates_fields() {
        let mut a = components();
        a.command = vec!["ab".into(), "c".into()];
        let mut b = components();
        b.command = vec!["a".into(), "bc".into()];
        assert_ne!(a.key(), b.key());
        let mut c = components();
        c.command = vec!["abc".into()];
        assert_ne!(a.key(), c.key());
    }

    #[test]
    fn diff_names_the_changed_components() {
        let a = components();
        let mut b = components();
        b.inputs.insert("data".into(), "sha256:bb".into());
        b.image = "other".into();
        let names: Vec<String> = a.diff(&b).into_iter().map(|d| d.component).collect();
        assert_eq!(names, ["image", "inputs.data"]);
        assert!(a.diff(&a).is_empty());
    }

    fn entry(created_at: Millis) -> CacheEntry {
        CacheEntry {
            key: "k".into(),
            outputs: StepOutputs {
                params: BTreeMap::from([("acc".into(), "0.9".into())]),
                artifacts: BTreeMap::from([(
                    "model".into(),
                    ArtifactRef {
                        digest: "sha256:aa".into(),
                        size: 1,
                        kind: ArtifactKind::File,
                    },
                )]),
            },
            run_id: "r".into(),
            step: "s".into(),
            created_at,
        }
    }

    #[test]
    fn decisions() {
        let on = EffectiveCachePolicy {
            enabled: true,
            max_age_ms: Some(1000),
        };
        let declared = DeclaredOutputs {
            params: vec!["acc".into()],
            artifacts: vec!["model".into()],
        };
        let e = entry(10_000);
        assert_eq!(
            decide(&on, Some(&e), &declared, 10_500, &[]),
            CacheDecision::Hit
        );
        assert_eq!(
            decide(&on, Some(&e), &declared, 11_001, &[]),
            CacheDecision::Miss(MissReason::Expired { age_ms: 1001 })
        );
        assert_eq!(
            decide(&on, None, &declared, 0, &[]),
            CacheDecision::Miss(MissReason::NoEntry)
        );
        let off = EffectiveCachePolicy {
            enabled: false,
            max_age_ms: None,
        };
        assert_eq!(
            decide(&off, Some(&e), &declared, 0, &[]),
            CacheDecision::Miss(MissReason::Disabled)
        );
        let more = DeclaredOutputs {
            params: vec!["acc".into(), "loss".into()],
            artifacts: vec![],
        };
        assert_eq!(
            decide(&on, Some(&e), &more, 10_000, &[]),
            CacheDecision::Miss(MissReason::OutputsNotDeclared(vec!["loss".into()]))
        );
        assert_eq!(
            decide(&on, Some(&e), &declared, 10_000, &["sha256:aa".to_string()]),
            CacheDecision::Miss(MissReason::MissingBlobs(vec!["sha256:aa".into()]))
        );
    }
}
