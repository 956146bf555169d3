//! The Open Inference Protocol (KServe v2) over REST: `/v2` (server metadata),
//! `/v2/health/live`, `/v2/health/ready`, and under `/v2/models/NAME[/versions/V]` the
//! model's metadata (`GET`), `/ready` and `POST .../infer`.
//!
//! An infer body is `{"id"?, "parameters"?, "inputs": [one tensor], "outputs"?: [...]}`; the
//! tensor's forms are in [`super::tensors`]. In JSON a `BYTES` element is the image file in
//! base64 (a string, or `{"b64": "..."}`). The binary data extension is supported both ways:
//! with an `Inference-Header-Content-Length: L` header, the first `L` bytes of the body are
//! the JSON and an input with `"parameters": {"binary_data_size": K}` takes its next `K`
//! bytes from the rest; an output asked for with `"parameters": {"binary_data": true}` (or
//! every output, with the request parameter `"binary_data_output": true`) comes back the same
//! way, after the JSON, with `binary_data_size` in its parameters.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::batcher::Prediction;
use super::context::{Context, V2};
use super::error::RequestError;
use super::input::{self, RawInstance};
use super::model::ServedModel;
use super::rest::{self, Received, RequestId};
use super::tensors::{self, Output, OutputData, TensorData};

/// The binary data extension's header: the length of the JSON part of the body.
pub const HEADER_LENGTH: &str = "inference-header-content-length";
/// The extensions `/v2` lists.
pub const EXTENSIONS: [&str; 1] = ["binary_tensor_data"];

/// What a `/v2/models/...` path asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Metadata,
    Ready,
    Infer,
}

/// Parses the part of the path after `/v2/models/`: the model, its version if named, and
/// the action.
fn target(path: &str) -> Option<(&str, Option<&str>, Action)> {
    let segments: Vec<&str> = path.split('/').collect();
    let (name, version, rest) = match segments.as_slice() {
        [name, "versions", version, rest @ ..] => (*name, Some(*version), rest),
        [name, rest @ ..] => (*name, None, rest),
        [] => return None,
    };
    let action = match rest {
        [] => Action::Metadata,
        ["ready"] => Action::Ready,
        ["infer"] => Action::Infer,
        _ => return None,
    };
    if name.is_empty() || version == Some("") {
        return None;
    }
    Some((name, version, action))
}

fn unknown_path(path: &str) -> RequestError {
    RequestError::not_found(format!(
        "no such path: /v2/models/{path} (try /v2/models/NAME, /v2/models/NAME/ready or \
         /v2/models/NAME/infer)"
    ))
}

pub async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": "toucan-worker",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": EXTENSIONS,
    }))
}

pub async fn live() -> Json<Value> {
    Json(json!({ "live": true }))
}

/// The server only listens once its model is loaded, so it is ready whenever it answers.
pub async fn ready() -> Json<Value> {
    Json(json!({ "ready": true }))
}

pub async fn get_model(State(ctx): State<Arc<Context>>, Path(path): Path<String>) -> Response {
    let result = match target(&path) {
        Some((name, version, Action::Metadata)) => ctx
            .model
            .check(name, version)
            .map(|()| Json(ctx.model.metadata()).into_response()),
        Some((name, version, Action::Ready)) => ctx
            .model
            .check(name, version)
            .map(|()| Json(json!({ "name": name, "ready": true })).into_response()),
        Some((_, _, Action::Infer)) => Err(RequestError::not_found(format!(
            "/v2/models/{path} takes POST"
        ))),
        None => Err(unknown_path(&path)),
    };
    rest::answer(result)
}

pub async fn post_model(
    State(ctx): State<Arc<Context>>,
    Extension(id): Extension<RequestId>,
    Extension(received): Extension<Received>,
    Path(path): Path<String>,
    headers: HeaderMap,
    read: Result<Bytes, BytesRejection>,
) -> Response {
    let (name, version) = match target(&path) {
        Some((name, version, Action::Infer)) => (name, version),
        Some(_) => {
            return rest::answer(Err(RequestError::not_found(format!(
                "POST /v2/models/{path}: inference is /v2/models/NAME/infer"
            ))));
        }
        None => return rest::answer(Err(unknown_path(&path))),
    };
    if let Err(e) = ctx.model.check(name, version) {
        return rest::answer(Err(e));
    }
    let call = rest::call(&ctx, V2, &id, received, &headers);
    let result = async {
        let body = rest::body(read, ctx.max_body_bytes)?;
        let json_length = header_length(&headers)?;
        let parsing = Arc::clone(&ctx);
        // A large body takes a while to parse: off the async workers.
        let request =
            tokio::task::spawn_blocking(move || parse_infer(&body, json_length, &parsing.model))
                .await
                .map_err(|_| RequestError::internal("parsing the body failed"))??;
        let predictions = ctx.predict(&call, request.instances).await?;
        Ok(respond(&ctx, request.id, &request.outputs, &predictions))
    }
    .await;
    rest::answer(result)
}

fn header_length(headers: &HeaderMap) -> Result<Option<usize>, RequestError> {
    headers
        .get(HEADER_LENGTH)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| {
                    RequestError::bad_request(format!("{HEADER_LENGTH} must be a byte count"))
                })
        })
        .transpose()
}

#[derive(Debug, Deserialize)]
struct InferBody {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
    inputs: Vec<InputTensor>,
    #[serde(default)]
    outputs: Vec<RequestedOutput>,
}

#[derive(Debug, Deserialize)]
struct InputTensor {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct RequestedOutput {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

/// An infer request, parsed.
#[derive(Debug)]
struct InferRequest {
    id: Option<String>,
    instances: Vec<RawInstance>,
    /// Each output asked for, and whether it goes back as binary data.
    outputs: Vec<(Output, bool)>,
}

fn parse_infer(
    body: &[u8],
    json_length: Option<usize>,
    model: &ServedModel,
) -> Result<InferRequest, RequestError> {
    let (json_part, mut binary) = match json_length {
        Some(l) if l > body.len() => {
            return Err(RequestError::bad_request(format!(
                "{HEADER_LENGTH} is {l}, but the body has {} bytes",
                body.len()
            )));
        }
        Some(l) => body.split_at(l),
        None => (body, &[][..]),
    };
    let request: InferBody = serde_json::from_slice(json_part)
        .map_err(|e| RequestError::bad_request(format!("the inference request: {e}")))?;
    let [input] = request.inputs.as_slice() else {
        return Err(RequestError::bad_request(format!(
            "the model takes one input tensor; the request has {}",
            request.inputs.len()
        )));
    };
    let data = match binary_size(&input.parameters, "binary_data_size")? {
        Some(size) => {
            if size > binary.len() {
                return Err(RequestError::bad_request(format!(
                    "input {:?}: binary_data_size {size}, but {} binary bytes remain",
                    input.name,
                    binary.len()
                )));
            }
            let (mine, rest) = binary.split_at(size);
            binary = rest;
            TensorData::Raw(mine.to_vec())
        }
        None => {
            let data = input.data.as_ref().ok_or_else(|| {
                RequestError::bad_request(format!("input {:?} has no data", input.name))
            })?;
            json_data(&input.datatype, data)?
        }
    };
    if !binary.is_empty() {
        return Err(RequestError::bad_request(format!(
            "{} bytes of binary data that no input claims",
            binary.len()
        )));
    }
    let instances = tensors::instances(&input.datatype, &input.shape, data, model)
        .map_err(|e| e.context(format_args!("input {:?}", input.name)))?;
    let all_binary = flag(&request.parameters, "binary_data_output")?.unwrap_or(false);
    let picked = Output::requested(request.outputs.iter().map(|o| o.name.as_str()))?;
    let outputs = if request.outputs.is_empty() {
        picked.into_iter().map(|o| (o, all_binary)).collect()
    } else {
        let mut outputs = Vec::new();
        for (output, asked) in picked.into_iter().zip(&request.outputs) {
            let binary = flag(&asked.parameters, "binary_data")?.unwrap_or(all_binary);
            outputs.push((output, binary));
        }
        outputs
    };
    Ok(InferRequest {
        id: request.id,
        instances,
        outputs,
    })
}

fn binary_size(parameters: &Map<String, Value>, key: &str) -> Result<Option<usize>, RequestError> {
    parameters
        .get(key)
        .map(|v| {
            v.as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| RequestError::bad_request(format!("{key} must be a byte count")))
        })
        .transpose()
}

fn flag(parameters: &Map<String, Value>, key: &str) -> Result<Option<bool>, RequestError> {
    parameters
        .get(key)
        .map(|v| {
            v.as_bool()
                .ok_or_else(|| RequestError::bad_request(format!("{key} must be true or false")))
        })
        .transpose()
}

/// A tensor's JSON `data`, nested or flat: numbers, or for `BYTES` base64 strings.
fn json_data(datatype: &str, data: &Value) -> Result<TensorData, RequestError> {
    let mut leaves = Vec::new();
    flatten(data, &mut leaves);
    if datatype == "BYTES" {
        let elements = leaves
            .into_iter()
            .map(|leaf| match leaf {
                Value::String(s) => input::base64_bytes(s),
                Value::Object(o) => match o.get("b64") {
                    Some(Value::String(s)) => input::base64_bytes(s),
                    _ => Err(RequestError::bad_request(
                        "a BYTES element is a base64 string or {\"b64\": \"...\"}",
                    )),
                },
                _ => Err(RequestError::bad_request(
                    "a BYTES element is a base64 string or {\"b64\": \"...\"}",
                )),
            })
            .collect::<Result<_, _>>()?;
        Ok(TensorData::Elements(elements))
    } else {
        let numbers = leaves
            .into_iter()
            .map(|leaf| {
                leaf.as_f64().ok_or_else(|| {
                    RequestError::bad_request(format!(
                        "{datatype} data must be numbers; found {leaf}"
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(TensorData::Numbers(numbers))
    }
}

fn flatten<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Array(items) => {
            for item in items {
                flatten(item, out);
            }
        }
        leaf => out.push(leaf),
    }
}

/// The JSON part of an infer response.
#[derive(Debug, Serialize)]
struct InferResponse<'a> {
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    outputs: Vec<OutputTensor<'a>>,
}

#[derive(Debug, Serialize)]
struct OutputTensor<'a> {
    name: &'static str,
    datatype: &'static str,
    shape: Vec<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<OutputData<'a>>,
}

fn respond(
    ctx: &Context,
    id: Option<String>,
    outputs: &[(Output, bool)],
    predictions: &[Prediction],
) -> Response {
    let classes = ctx.model.classes.len();
    let mut binary = Vec::new();
    let tensors = outputs
        .iter()
        .map(|&(output, as_binary)| {
            let mut tensor = OutputTensor {
                name: output.name(),
                datatype: output.datatype(),
                shape: output.shape(predictions, classes),
                parameters: None,
                data: None,
            };
            if as_binary {
                let bytes = output.raw(predictions);
                tensor.parameters = Some(json!({ "binary_data_size": bytes.len() }));
                binary.extend_from_slice(&bytes);
            } else {
                tensor.data = Some(output.data(predictions));
            }
            tensor
        })
        .collect();
    let head = InferResponse {
        model_name: &ctx.model.name,
        model_version: &ctx.model.version,
        id,
        outputs: tensors,
    };
    if !outputs.iter().any(|&(_, as_binary)| as_binary) {
        return Json(head).into_response();
    }
    let mut body = match serde_json::to_vec(&head) {
        Ok(body) => body,
        Err(e) => {
            return RequestError::internal(format!("writing the response: {e}")).into_response();
        }
    };
    let json_length = body.len();
    body.extend_from_slice(&binary);
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(HEADER_LENGTH, HeaderValue::from(json_length));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(target("m"), Some(("m", None, Action::Metadata)));
        assert_eq!(target("m/ready"), Some(("m", None, Action::Ready)));
        assert_eq!(
            target("m/versions/2/infer"),
            Some(("m", Some("2"), Action::Infer))
        );
        assert_eq!(
            target("m/versions/2"),
            Some(("m", Some("2"), Action::Metadata))
        );
        assert_eq!(target("m/versions//infer"), None);
        assert_eq!(target("m/explain"), None);
        assert_eq!(target(""), None);
    }

    #[test]
    fn json_data_of_each_datatype() {
        assert_eq!(
            json_data("FP32", &json!([[1, 2], [3.5, 4]])).unwrap(),
            TensorData::Numbers(vec![1.0, 2.0, 3.5, 4.0])
        );
        assert_eq!(
            json_data("BYTES", &json!(["AAE=", {"b64": "Ag"}])).unwrap(),
            TensorData::Elements(vec![vec![0, 1], vec![2]])
        );
        assert!(json_data("FP32", &json!(["x"])).is_err());
        assert!(json_data("BYTES", &json!([1])).is_err());
    }
}
