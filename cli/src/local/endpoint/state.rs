//! What a local endpoint tells the other commands: `endpoints/NAME/endpoint.json` under the
//! home, rewritten (atomically) by `toucan serve` whenever its status changes. The process id
//! in it says whether it still serves: an endpoint whose process is gone is `Stopped`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use toucan_core::api::{EndpointSpec, EndpointStatus, ModelVersion};
use toucan_core::records::Millis;

const FILE: &str = "endpoint.json";

/// A local endpoint as `toucan serve` last wrote it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalEndpoint {
    pub name: String,
    /// The `toucan serve` process; 0 once it stopped.
    pub pid: u32,
    pub started_at: Millis,
    /// The control-plane API it serves on loopback (payload samples), while it serves.
    #[serde(default)]
    pub api: Option<String>,
    pub spec: EndpointSpec,
    pub status: EndpointStatus,
    /// Replicas of each version that exited and were started again.
    #[serde(default)]
    pub restarts: BTreeMap<String, u32>,
    /// The spec as its manifest gave it when serving started; `spec` differs once a retrained
    /// version was promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<EndpointSpec>,
}

impl LocalEndpoint {
    /// Whether its `toucan serve` process is still alive.
    pub fn serving(&self) -> bool {
        self.pid != 0
            && nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid as i32), None).is_ok()
    }
}

/// The directory of the endpoint `name` under the home's `root`.
pub fn dir(root: &Path, name: &str) -> PathBuf {
    root.join("endpoints").join(name)
}

pub fn write(dir: &Path, endpoint: &LocalEndpoint) -> anyhow::Result<()> {
    let text = serde_json::to_vec_pretty(endpoint)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, &text)?;
    tmp.persist(dir.join(FILE))
        .with_context(|| format!("writing {}", dir.join(FILE).display()))?;
    Ok(())
}

/// Records that the endpoint no longer serves.
pub fn mark_stopped(dir: &Path) -> anyhow::Result<()> {
    if let Some(mut endpoint) = read_file(&dir.join(FILE))? {
        endpoint.pid = 0;
        endpoint.api = None;
        endpoint.status.phase = Some("Stopped".into());
        write(dir, &endpoint)?;
    }
    Ok(())
}

fn read_file(path: &Path) -> anyhow::Result<Option<LocalEndpoint>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(
            serde_json::from_slice(&bytes)
                .with_context(|| format!("reading {}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The endpoint `name`, if it was ever served from this home.
pub fn read_one(root: &Path, name: &str) -> anyhow::Result<Option<LocalEndpoint>> {
    read_file(&dir(root, name).join(FILE))
}

/// The versions retraining left endpoint `name` serving when it last stopped, when it is
/// served again from the same `manifest` (an edited manifest is served as written) and no
/// retrained rollout was left halfway: as an operator keeps a promoted version in the
/// Endpoint's spec, a promoted model outlives `toucan serve`.
pub fn retrained_versions(
    root: &Path,
    name: &str,
    manifest: &EndpointSpec,
) -> anyhow::Result<Option<Vec<ModelVersion>>> {
    let Some(last) = read_one(root, name)? else {
        return Ok(None);
    };
    let carried = last.manifest.as_ref() == Some(manifest)
        && last.spec.versions != manifest.versions
        && last.spec.rollout == manifest.rollout;
    Ok(carried.then_some(last.spec.versions))
}

/// Every endpoint served from this home, by name.
pub fn read_all(root: &Path) -> anyhow::Result<Vec<LocalEndpoint>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(root.join("endpoints")) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).context("listing local endpoints"),
    };
    for entry in entries {
        if let Some(endpoint) = read_file(&entry?.path().join(FILE))? {
            out.push(endpoint);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
