//! `toucan label ENDPOINT FILE.csv`: label feedback for continuous evaluation.
//!
//! The CSV has a header naming a `request_id` (or `requestId`) column and a `label` column,
//! and optionally `labelled_at` (or `labelledAt`, RFC 3339); other columns are ignored. The
//! whole file is read and checked first: a fault names the file, the row (the header is row 1)
//! and the column, and nothing is sent.
//!
//! Where the labels go: with `--api URL`, to that control-plane API (in batches of 1000, with
//! `$TOUCAN_API_TOKEN` as the bearer token when set); without it, to the API of the local
//! endpoint `toucan serve` is running under that name, or, when none is, straight into the
//! local metadata store, checked against the model's classes as the API checks them. Through
//! an API each batch is checked by the server: a batch refused there stops the command, and
//! the batches before it stay stored (labels are idempotent, so the corrected file can be sent
//! again).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use clap::Args;
use toucan_core::monitoring::evaluation::{Label, LabelCounts, ModelClasses, first_unknown_class};
use toucan_core::time::{now_ms, parse_rfc3339};

use crate::Outcome;
use crate::home::Home;
use crate::local::endpoint;
use crate::output::{self, Format};

/// Labels per request: the API's limit.
const BATCH: usize = 1000;
/// How many stored samples are read to learn the model's classes (as the API does).
const CLASS_SCAN: u32 = 10_000;

#[derive(Debug, Args)]
pub struct LabelArgs {
    /// The endpoint's name.
    endpoint: String,
    /// A CSV file with `request_id,label` columns; with --send, a folder of class folders of
    /// images (as `toucan-worker export-images` writes).
    file: PathBuf,
    /// Send every image of the folder to this model (`http://HOST:PORT/v1/models/NAME`)
    /// first, each request with its own id, then label each request with its folder's class:
    /// a fresh labelled set scored through the endpoint, into the same evaluation as live
    /// traffic (what a scheduled evaluation pipeline runs).
    #[arg(long, value_name = "MODEL_URL")]
    send: Option<String>,
    /// The control-plane API (`http://HOST:PORT`); by default the local endpoint's, or the
    /// local store.
    #[arg(long)]
    api: Option<String>,
    /// The endpoint's namespace (in a cluster).
    #[arg(long)]
    namespace: Option<String>,
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    output: Format,
}

/// A label and the CSV row it came from.
struct Row {
    line: u64,
    label: Label,
}

pub async fn label(args: LabelArgs) -> anyhow::Result<Outcome> {
    let read = match &args.send {
        Some(url) => send_images(url.clone(), args.file.clone(), args.endpoint.clone()).await?,
        None => read_csv(&args.file, now_ms()),
    };
    let rows = match read {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(Outcome::InvalidInput);
        }
    };
    let home = Home::locate();
    let api = match &args.api {
        Some(api) => Some(api.clone()),
        None => endpoint::read_one(&home.root, &args.endpoint)?
            .filter(|e| e.serving())
            .and_then(|e| e.api),
    };
    let result = match api {
        Some(api) if args.send.is_some() => post_when_sampled(&api, &args, &rows).await?,
        Some(api) => post(&api, &args, &rows).await?,
        None => store_locally(&home, &args, &rows).await?,
    };
    let counts = match result {
        Ok(counts) => counts,
        Err(message) => {
            eprintln!("error: {message}");
            return Ok(Outcome::InvalidInput);
        }
    };
    match args.output {
        Format::Table => println!(
            "{}",
            output::table(
                &["ADDED", "UPDATED", "UNCHANGED", "UNKNOWN"],
                vec![vec![
                    counts.added.to_string(),
                    counts.updated.to_string(),
                    counts.unchanged.to_string(),
                    counts.unknown.to_string(),
                ]],
            )
        ),
        format => output::print_structured(format, &counts)?,
    }
    Ok(Outcome::Success)
}

/// The labels of `path`, or the first fault with its file, row and column.
fn read_csv(path: &Path, now: i64) -> Result<Vec<Row>, String> {
    let file = path.display();
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .from_path(path)
        .map_err(|e| format!("{file}: {e}"))?;
    let header = reader
        .headers()
        .map_err(|e| format!("{file}: row 1: {e}"))?
        .clone();
    let column = |names: &[&str]| header.iter().position(|h| names.contains(&h.trim()));
    let request_id = column(&["request_id", "requestId"]).ok_or_else(|| {
        format!("{file}: row 1: no request_id column (the header must name request_id and label)")
    })?;
    let label = column(&["label"]).ok_or_else(|| {
        format!("{file}: row 1: no label column (the header must name request_id and label)")
    })?;
    let labelled_at = column(&["labelled_at", "labelledAt"]);
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| match e.position() {
            Some(p) => format!("{file}: row {}: {e}", p.line()),
            None => format!("{file}: {e}"),
        })?;
        let line = record.position().map_or(0, |p| p.line());
        let field = |i: usize, name: &str| -> Result<String, String> {
            let value = record.get(i).unwrap_or("").trim();
            if value.is_empty() {
                return Err(format!("{file}: row {line}, column {name}: empty"));
            }
            Ok(value.to_string())
        };
        let at = match labelled_at {
            Some(i) if !record.get(i).unwrap_or("").trim().is_empty() => {
                parse_rfc3339(&field(i, &header[i])?)
                    .map_err(|e| format!("{file}: row {line}, column {}: {e}", &header[i]))?
            }
            _ => now,
        };
        rows.push(Row {
            line,
            label: Label {
                request_id: field(request_id, &header[request_id])?,
                label: field(label, "label")?,
                labelled_at: at,
            },
        });
    }
    Ok(rows)
}

/// How long labels of requests just sent wait for the servers to ship their samples.
const SAMPLES_WAIT: Duration = Duration::from_secs(15);

/// Sends every image under `dir/CLASS/` to `url`, one request each with a request id of its
/// own, and returns one label per request: its folder's class. Prints how many the model got
/// right.
async fn send_images(
    url: String,
    dir: PathBuf,
    endpoint: String,
) -> anyhow::Result<Result<Vec<Row>, String>> {
    tokio::task::spawn_blocking(move || -> anyhow::Result<Result<Vec<Row>, String>> {
        let mut images = Vec::new();
        let classes = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) => return Ok(Err(format!("{}: {e}", dir.display()))),
        };
        for class in classes {
            let class = class?;
            if !class.file_type()?.is_dir() {
                continue;
            }
            let name = class.file_name().to_string_lossy().to_string();
            for image in std::fs::read_dir(class.path())? {
                images.push((name.clone(), image?.path()));
            }
        }
        images.sort();
        if images.is_empty() {
            return Ok(Err(format!(
                "{}: no images in class folders (DIR/CLASS/IMAGE.png)",
                dir.display()
            )));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(60)))
            .http_status_as_error(false)
            .build()
            .into();
        let predict = format!("{}:predict", url.trim_end_matches('/'));
        let batch = now_ms();
        let mut rows = Vec::with_capacity(images.len());
        let mut right = 0;
        let mut seen = std::collections::BTreeSet::new();
        for (n, (class, path)) in images.iter().enumerate() {
            let bytes = std::fs::read(path).with_context(|| format!("{}", path.display()))?;
            let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
            let request_id = format!("{endpoint}-scored-{batch}-{n}");
            let mut response = agent
                .post(&predict)
                .header("x-request-id", &request_id)
                .send_json(serde_json::json!({ "instances": [{ "b64": b64 }] }))
                .with_context(|| format!("POST {predict}"))?;
            let status = response.status().as_u16();
            let text = response.body_mut().read_to_string()?;
            if status != 200 {
                return Ok(Err(format!(
                    "{}: the endpoint answered {status}: {text}",
                    path.display()
                )));
            }
            let answer: serde_json::Value = serde_json::from_str(&text)?;
            let predicted = answer["predictions"][0]["class"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if folder_of(&predicted) == *class {
                right += 1;
            }
            seen.insert(predicted);
            rows.push(Row {
                line: n as u64 + 1,
                label: Label {
                    request_id,
                    label: class.clone(),
                    labelled_at: now_ms(),
                },
            });
        }
        // export-images names a class's folder with `/` as `_`: the folder is the class the
        // model calls by that name.
        for row in &mut rows {
            if let Some(class) = seen.iter().find(|c| folder_of(c) == row.label.label) {
                row.label.label = class.clone();
            }
        }
        eprintln!(
            "sent {} images to {url}: {right} answered right ({:.1}%)",
            rows.len(),
            100.0 * f64::from(right) / rows.len() as f64
        );
        Ok(Ok(rows))
    })
    .await?
}

/// The folder `toucan-worker export-images` writes a class's images to.
fn folder_of(class: &str) -> String {
    class.replace('/', "_")
}

/// Posts labels of requests just sent, again while some are unknown (their samples not
/// shipped yet) for at most [`SAMPLES_WAIT`]: posting is idempotent.
async fn post_when_sampled(
    api: &str,
    args: &LabelArgs,
    rows: &[Row],
) -> anyhow::Result<Result<LabelCounts, String>> {
    let deadline = tokio::time::Instant::now() + SAMPLES_WAIT;
    let (mut added, mut updated) = (0, 0);
    loop {
        let counts = match post(api, args, rows).await? {
            Ok(counts) => counts,
            Err(e) => return Ok(Err(e)),
        };
        added += counts.added;
        updated += counts.updated;
        if counts.unknown == 0 || tokio::time::Instant::now() >= deadline {
            // Over every post: what was new, what was corrected, what is still unknown.
            let unknown = counts.unknown;
            let unchanged = (rows.len() as u64).saturating_sub(added + updated + unknown);
            return Ok(Ok(LabelCounts {
                added,
                updated,
                unchanged,
                unknown,
            }));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Posts the labels in batches; `Err` carries a refusal of the API, naming the row.
async fn post(
    api: &str,
    args: &LabelArgs,
    rows: &[Row],
) -> anyhow::Result<Result<LabelCounts, String>> {
    let mut url = format!(
        "{}/api/v1/endpoints/{}/labels",
        api.trim_end_matches('/'),
        args.endpoint
    );
    if let Some(ns) = &args.namespace {
        url.push_str(&format!("?namespace={ns}"));
    }
    let token = std::env::var("TOUCAN_API_TOKEN").ok();
    let mut total = LabelCounts::default();
    for batch in rows.chunks(BATCH) {
        let labels: Vec<serde_json::Value> = batch
            .iter()
            .map(|r| {
                serde_json::json!({
                    "requestId": r.label.request_id,
                    "label": r.label.label,
                    "labelledAt": toucan_core::time::rfc3339(r.label.labelled_at).ok(),
                })
            })
            .collect();
        let body = serde_json::json!({ "labels": labels });
        let (url, token) = (url.clone(), token.clone());
        let (status, text) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(60)))
                .http_status_as_error(false)
                .build()
                .into();
            let mut request = agent.post(&url);
            if let Some(token) = token {
                request = request.header("authorization", &format!("Bearer {token}"));
            }
            let mut response = request
                .send_json(&body)
                .with_context(|| format!("POST {url}"))?;
            let status = response.status().as_u16();
            Ok((status, response.body_mut().read_to_string()?))
        })
        .await??;
        if status != 200 {
            let error = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or(text);
            return Ok(Err(format!(
                "{}: the API refused the batch of rows {} to {} ({status}): {}",
                args.file.display(),
                batch.first().map_or(0, |r| r.line),
                batch.last().map_or(0, |r| r.line),
                name_row(&error, batch),
            )));
        }
        let counts: LabelCounts =
            serde_json::from_str(&text).with_context(|| format!("reading the answer {text:?}"))?;
        total.added += counts.added;
        total.updated += counts.updated;
        total.unchanged += counts.unchanged;
        total.unknown += counts.unknown;
    }
    Ok(Ok(total))
}

/// `labels[3].label: ...` from the API, as `row 5, labels[3].label: ...`.
fn name_row(error: &str, batch: &[Row]) -> String {
    let index = error
        .strip_prefix("labels[")
        .and_then(|rest| rest.split_once(']'))
        .and_then(|(i, _)| i.parse::<usize>().ok());
    match index.and_then(|i| batch.get(i)) {
        Some(row) => format!("row {}, {error}", row.line),
        None => error.to_string(),
    }
}

/// Writes the labels to the local store, after the API's class check.
async fn store_locally(
    home: &Home,
    args: &LabelArgs,
    rows: &[Row],
) -> anyhow::Result<Result<LabelCounts, String>> {
    let store = home.open_store().await?;
    let key = match &args.namespace {
        Some(ns) => format!("{ns}/{}", args.endpoint),
        None => args.endpoint.clone(),
    };
    let samples = store.list_samples(&key, 0, CLASS_SCAN).await?;
    let classes = ModelClasses::of(samples.iter().map(|r| &r.sample));
    let labels: Vec<Label> = rows.iter().map(|r| r.label.clone()).collect();
    if let Some((i, why)) = first_unknown_class(&labels, &classes) {
        return Ok(Err(format!(
            "{}: row {}, column label: {why}; nothing was stored",
            args.file.display(),
            rows[i].line
        )));
    }
    Ok(Ok(store.put_labels(&key, &labels, now_ms()).await?))
}
