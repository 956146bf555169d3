//! `toucan cache explain|diff|gc`.

use std::collections::BTreeSet;

use clap::Subcommand;
use serde::Serialize;
use toucan_core::cache::{CacheKeyComponents, ComponentDiff};
use toucan_core::store::MetadataStore;
use toucan_core::time::now_ms;

use crate::Outcome;
use crate::home::Home;
use crate::output::{Format, print_structured};

/// Blobs younger than this are never collected.
const GC_GRACE_MS: i64 = 60 * 60 * 1000;

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Print the components a step's cache key was computed from.
    Explain {
        run: String,
        step: String,
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Say which components differ between two steps' cache keys.
    Diff {
        run_a: String,
        step_a: String,
        run_b: String,
        step_b: String,
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Remove cache entries older than a duration, then every blob nothing references.
    Gc {
        /// Entries created longer ago than this are removed (`168h`, `30d`).
        #[arg(long, default_value = "720h")]
        older_than: String,
    },
}

#[derive(Debug, Serialize)]
struct Explained {
    run: String,
    step: String,
    key: String,
    components: CacheKeyComponents,
}

async fn components(
    store: &dyn MetadataStore,
    run: &str,
    step: &str,
) -> anyhow::Result<Result<(String, CacheKeyComponents), String>> {
    let Some(record) = store.get_step(run, step).await? else {
        return Ok(Err(format!("no step {step:?} in run {run:?}")));
    };
    let (Some(key), Some(c)) = (record.cache_key, record.cache_components) else {
        return Ok(Err(format!(
            "step {step:?} of run {run:?} never resolved its inputs, so it has no cache key"
        )));
    };
    Ok(Ok((key, serde_json::from_value(c)?)))
}

pub async fn cache(cmd: CacheCommand) -> anyhow::Result<Outcome> {
    let home = Home::locate();
    let store = home.open_existing_store().await?;
    match cmd {
        CacheCommand::Explain { run, step, output } => {
            let (key, c) = match components(store.as_ref(), &run, &step).await? {
                Ok(x) => x,
                Err(m) => {
                    eprintln!("error: {m}");
                    return Ok(Outcome::InvalidInput);
                }
            };
            match output {
                Format::Table => {
                    println!("key      {key} (version {})", c.version);
                    println!("image    {}", c.image);
                    println!("command  {:?}", c.command);
                    println!("args     {:?}", c.args);
                    for (k, v) in &c.env {
                        println!("env      {k}={v}");
                    }
                    for (k, v) in &c.values {
                        println!("value    {k} = {v}");
                    }
                    for (k, v) in &c.inputs {
                        println!("input    {k} = {v}");
                    }
                    println!("salt     {:?}", c.salt);
                }
                f => print_structured(
                    f,
                    &Explained {
                        run,
                        step,
                        key,
                        components: c,
                    },
                )?,
            }
        }
        CacheCommand::Diff {
            run_a,
            step_a,
            run_b,
            step_b,
            output,
        } => {
            let a = components(store.as_ref(), &run_a, &step_a).await?;
            let b = components(store.as_ref(), &run_b, &step_b).await?;
            let ((ka, ca), (kb, cb)) = match (a, b) {
                (Ok(a), Ok(b)) => (a, b),
                (Err(m), _) | (_, Err(m)) => {
                    eprintln!("error: {m}");
                    return Ok(Outcome::InvalidInput);
                }
            };
            let diffs: Vec<ComponentDiff> = ca.diff(&cb);
            match output {
                Format::Table => {
                    if diffs.is_empty() {
                        println!("same key {ka}: no component differs");
                    } else {
                        println!("keys differ: {ka} vs {kb}");
                        for d in &diffs {
                            println!(
                                "  {}: {} -> {}",
                                d.component,
                                d.a.as_deref().unwrap_or("(absent)"),
                                d.b.as_deref().unwrap_or("(absent)")
                            );
                        }
                    }
                }
                f => print_structured(f, &diffs)?,
            }
        }
        CacheCommand::Gc { older_than } => {
            let age = match humantime::parse_duration(&older_than) {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("error: --older-than {older_than:?}: {e}");
                    return Ok(Outcome::InvalidInput);
                }
            };
            let cutoff = now_ms() - age.as_millis() as i64;
            let entries = store.delete_cache_entries_before(cutoff).await?;
            let referenced: BTreeSet<String> =
                store.referenced_digests().await?.into_iter().collect();
            // Blobs of the last hour may belong to a run in progress.
            let report = home
                .open_artifacts()?
                .gc(&referenced, now_ms() - GC_GRACE_MS)
                .await?;
            println!(
                "removed {entries} cache entr{} and {} blob(s) ({} bytes); kept {} blob(s)",
                if entries == 1 { "y" } else { "ies" },
                report.blobs_removed,
                report.bytes_removed,
                report.blobs_kept
            );
        }
    }
    Ok(Outcome::Success)
}
