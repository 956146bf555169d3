//! `toucan predict URL IMAGE...`: a small client for trying an endpoint. It sends the images
//! (PNG or JPEG, base64-encoded) in one TF Serving `:predict` request to the model at URL
//! (`http://HOST:PORT/v1/models/NAME`, as `toucan serve` prints it) and prints each image's
//! class and confidence, and the version that answered.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::Outcome;
use crate::output::{self, Format};

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// The model: `http://HOST:PORT/v1/models/NAME` (optionally `/versions/V`).
    url: String,
    /// Image files (PNG or JPEG).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    output: Format,
}

#[derive(Debug, Deserialize)]
struct Response {
    predictions: Vec<Prediction>,
}

#[derive(Debug, Deserialize, Serialize)]
struct Prediction {
    class: String,
    label: i64,
    probabilities: Vec<f64>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    image: String,
    class: String,
    label: i64,
    confidence: f64,
    version: Option<String>,
    request_id: Option<String>,
}

pub async fn predict(args: PredictArgs) -> anyhow::Result<Outcome> {
    let mut instances = Vec::new();
    for image in &args.images {
        let bytes = match std::fs::read(image) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: {}: {e}", image.display());
                return Ok(Outcome::InvalidInput);
            }
        };
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        instances.push(serde_json::json!({ "b64": b64 }));
    }
    let url = format!("{}:predict", args.url.trim_end_matches('/'));
    let body = serde_json::json!({ "instances": instances });
    let (status, version, request_id, text) =
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(60)))
                .http_status_as_error(false)
                .build()
                .into();
            let mut response = agent
                .post(&url)
                .send_json(&body)
                .with_context(|| format!("POST {url}"))?;
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let (version, request_id) = (header("x-toucan-version"), header("x-request-id"));
            let status = response.status().as_u16();
            let text = response.body_mut().read_to_string()?;
            Ok((status, version, request_id, text))
        })
        .await??;
    if status != 200 {
        eprintln!("error: the endpoint answered {status}: {text}");
        return Ok(Outcome::RunFailed);
    }
    let response: Response =
        serde_json::from_str(&text).with_context(|| format!("reading the answer {text:?}"))?;
    let rows: Vec<Row> = args
        .images
        .iter()
        .zip(response.predictions)
        .map(|(image, p)| Row {
            image: image.display().to_string(),
            confidence: p
                .probabilities
                .get(p.label as usize)
                .copied()
                .unwrap_or(f64::NAN),
            class: p.class,
            label: p.label,
            version: version.clone(),
            request_id: request_id.clone(),
        })
        .collect();
    match args.output {
        Format::Table => println!(
            "{}",
            output::table(
                &["IMAGE", "CLASS", "CONFIDENCE", "VERSION"],
                rows.iter()
                    .map(|r| {
                        vec![
                            r.image.clone(),
                            r.class.clone(),
                            format!("{:.3}", r.confidence),
                            r.version.clone().unwrap_or_else(|| "-".into()),
                        ]
                    })
                    .collect(),
            )
        ),
        format => output::print_structured(format, &rows)?,
    }
    Ok(Outcome::Success)
}
