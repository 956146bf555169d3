//! TF Serving's REST API: `GET /v1/models/NAME[/versions/V]` (the model's status) and
//! `POST /v1/models/NAME[/versions/V]:predict`.
//!
//! A predict body is `{"instances": [...]}` (row format, answered with
//! `{"predictions": [{"class", "label", "probabilities"}, ...]}`) or `{"inputs": ...}`
//! (columnar, answered as TF Serving does with
//! `{"outputs": {"class": [...], "label": [...], "probabilities": [[...], ...]}}`). An instance
//! is `{"b64": "<PNG or JPEG, base64>"}` or nested arrays of pixel values (see
//! [`super::input`]), either one alone or under the input's name (`{"image": ...}`).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::batcher::Prediction;
use super::context::{Context, V1};
use super::error::RequestError;
use super::input::{self, RawInstance};
use super::rest::{self, Received, RequestId};

/// The deepest nesting of pixel arrays: `[H, W, C]`.
const MAX_PIXEL_DIMS: usize = 3;

/// What a `/v1/models/...` path asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target<'a> {
    Status {
        name: &'a str,
        version: Option<&'a str>,
    },
    Predict {
        name: &'a str,
        version: Option<&'a str>,
    },
}

/// Parses the part of the path after `/v1/models/`.
fn target(path: &str) -> Option<Target<'_>> {
    let (path, verb) = match path.rsplit_once(':') {
        Some((p, verb)) => (p, Some(verb)),
        None => (path, None),
    };
    let (name, version) = match path.split_once('/') {
        None => (path, None),
        Some((name, rest)) => (name, Some(rest.strip_prefix("versions/")?)),
    };
    if name.is_empty() || version.is_some_and(|v| v.is_empty() || v.contains('/')) {
        return None;
    }
    match verb {
        None => Some(Target::Status { name, version }),
        Some("predict") => Some(Target::Predict { name, version }),
        Some(_) => None,
    }
}

fn unknown_path(path: &str) -> RequestError {
    RequestError::not_found(format!(
        "no such path: /v1/models/{path} (try /v1/models/NAME or /v1/models/NAME:predict)"
    ))
}

pub async fn get_model(State(ctx): State<Arc<Context>>, Path(path): Path<String>) -> Response {
    let result = match target(&path) {
        Some(Target::Status { name, version }) => ctx
            .model
            .check(name, version)
            .map(|()| Json(status(&ctx.model.name, &ctx.model.version)).into_response()),
        Some(Target::Predict { .. }) => Err(RequestError::not_found(format!(
            "/v1/models/{path} takes POST"
        ))),
        None => Err(unknown_path(&path)),
    };
    rest::answer(result)
}

/// The model's status as TF Serving shapes it, with KServe's v1 fields (`name`, `ready`)
/// beside it, so that clients of either read it. The server answers only once its model is
/// loaded, so it is always ready.
fn status(name: &str, version: &str) -> Value {
    json!({
        "name": name,
        "ready": true,
        "model_version_status": [{
            "version": version,
            "state": "AVAILABLE",
            "status": { "error_code": "OK", "error_message": "" }
        }]
    })
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
        Some(Target::Predict { name, version }) => (name, version),
        Some(Target::Status { .. }) => {
            return rest::answer(Err(RequestError::not_found(format!(
                "POST /v1/models/{path}: predict is /v1/models/NAME:predict"
            ))));
        }
        None => return rest::answer(Err(unknown_path(&path))),
    };
    if let Err(e) = ctx.model.check(name, version) {
        return rest::answer(Err(e));
    }
    let call = rest::call(&ctx, V1, &id, received, &headers);
    let result = async {
        let body = rest::body(read, ctx.max_body_bytes)?;
        // A large body takes a while to parse: off the async workers.
        let (raw, format) = tokio::task::spawn_blocking(move || parse_predict(&body))
            .await
            .map_err(|_| RequestError::internal("parsing the body failed"))??;
        let predictions = ctx.predict(&call, raw).await?;
        Ok(respond(format, &predictions))
    }
    .await;
    rest::answer(result)
}

/// How the request was written, which is how it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Row,
    Columnar,
}

/// A row of a row-format answer.
#[derive(Debug, Serialize)]
struct Row<'a> {
    class: &'a str,
    label: i64,
    probabilities: &'a [f32],
}

/// A row-format answer.
#[derive(Debug, Serialize)]
struct Predictions<'a> {
    predictions: Vec<Row<'a>>,
}

/// A columnar answer, as TF Serving writes one.
#[derive(Debug, Serialize)]
struct Outputs<'a> {
    outputs: Columns<'a>,
}

/// The columns of a columnar answer.
#[derive(Debug, Serialize)]
struct Columns<'a> {
    class: Vec<&'a str>,
    label: Vec<i64>,
    probabilities: Vec<&'a [f32]>,
}

/// The answer, written with f32 values as f32 (`0.25`, not `0.25000000372`).
fn respond(format: Format, predictions: &[Prediction]) -> Response {
    match format {
        Format::Row => {
            let rows: Vec<Row> = predictions
                .iter()
                .map(|p| Row {
                    class: &p.class,
                    label: p.label,
                    probabilities: &p.probabilities,
                })
                .collect();
            Json(Predictions { predictions: rows }).into_response()
        }
        Format::Columnar => {
            let columns = Columns {
                class: predictions.iter().map(|p| p.class.as_str()).collect(),
                label: predictions.iter().map(|p| p.label).collect(),
                probabilities: predictions
                    .iter()
                    .map(|p| p.probabilities.as_slice())
                    .collect(),
            };
            Json(Outputs { outputs: columns }).into_response()
        }
    }
}

fn parse_predict(body: &[u8]) -> Result<(Vec<RawInstance>, Format), RequestError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| RequestError::bad_request(format!("the body is not valid JSON: {e}")))?;
    let Value::Object(mut request) = value else {
        return Err(RequestError::bad_request(
            "the body must be a JSON object with \"instances\" or \"inputs\"",
        ));
    };
    match (request.remove("instances"), request.remove("inputs")) {
        (Some(_), Some(_)) => Err(RequestError::bad_request(
            "give \"instances\" or \"inputs\", not both",
        )),
        (Some(Value::Array(items)), None) => Ok((each(&items, true)?, Format::Row)),
        (Some(_), None) => Err(RequestError::bad_request(
            "\"instances\" must be a list of instances",
        )),
        (None, Some(inputs)) => Ok((columnar(&inputs)?, Format::Columnar)),
        (None, None) => Err(RequestError::bad_request(
            "the body has neither \"instances\" nor \"inputs\"",
        )),
    }
}

fn each(items: &[Value], named: bool) -> Result<Vec<RawInstance>, RequestError> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| instance(item, named).map_err(|e| e.context(format_args!("instance {i}"))))
        .collect()
}

/// `"inputs"`: a list of instances, one instance, or either under the input's name.
fn columnar(inputs: &Value) -> Result<Vec<RawInstance>, RequestError> {
    match inputs {
        Value::Array(items) => each(items, false),
        Value::Object(o) if o.contains_key("b64") => Ok(vec![instance(inputs, false)?]),
        Value::Object(o) => match single(o)? {
            Value::Array(items) => each(items, false),
            other => Ok(vec![instance(other, false)?]),
        },
        _ => Err(RequestError::bad_request(
            "\"inputs\" must be a list of instances or an object naming the input",
        )),
    }
}

/// The value of an object's only key (the model has one input).
fn single(object: &Map<String, Value>) -> Result<&Value, RequestError> {
    let mut values = object.values();
    match (values.next(), values.next()) {
        (Some(v), None) => Ok(v),
        _ => Err(RequestError::bad_request(format!(
            "the model has one input; got {} named inputs",
            object.len()
        ))),
    }
}

/// One instance: `{"b64": ...}`, pixel arrays, or (when `named`) either under a name.
fn instance(value: &Value, named: bool) -> Result<RawInstance, RequestError> {
    match value {
        Value::Object(o) => match o.get("b64") {
            Some(Value::String(text)) if o.len() == 1 => {
                Ok(RawInstance::Encoded(input::base64_bytes(text)?))
            }
            Some(_) => Err(RequestError::bad_request(
                "\"b64\" must be the only key, with a base64 string",
            )),
            None if named => instance(single(o)?, false),
            None => Err(RequestError::bad_request(
                "expected {\"b64\": ...} or an array of pixel values",
            )),
        },
        Value::Array(_) => {
            let (values, dims) = pixels(value)?;
            Ok(RawInstance::Pixels { values, dims })
        }
        _ => Err(RequestError::bad_request(
            "expected {\"b64\": ...} or an array of pixel values",
        )),
    }
}

/// Nested arrays of numbers, flattened row-major, with their shape. Every array at one depth
/// must have the same length.
pub fn pixels(value: &Value) -> Result<(Vec<f32>, Vec<usize>), RequestError> {
    let mut dims = Vec::new();
    let mut probe = value;
    while let Value::Array(items) = probe {
        dims.push(items.len());
        if dims.len() > MAX_PIXEL_DIMS {
            return Err(RequestError::bad_request(format!(
                "pixel arrays nested deeper than [H, W, C] ({} levels)",
                MAX_PIXEL_DIMS
            )));
        }
        match items.first() {
            Some(first) => probe = first,
            None => break,
        }
    }
    let mut values = Vec::new();
    collect(value, &dims, &mut values)?;
    Ok((values, dims))
}

fn collect(value: &Value, dims: &[usize], out: &mut Vec<f32>) -> Result<(), RequestError> {
    match (value, dims.split_first()) {
        (Value::Array(items), Some((&len, inner))) if items.len() == len => {
            for item in items {
                collect(item, inner, out)?;
            }
            Ok(())
        }
        (Value::Array(_), _) => Err(RequestError::bad_request(
            "pixel arrays are ragged: every row must have the same length",
        )),
        (Value::Number(n), None) => {
            let v = n.as_f64().ok_or_else(|| {
                RequestError::bad_request(format!("pixel value {n} is not a number"))
            })?;
            out.push(v as f32);
            Ok(())
        }
        (other, _) => Err(RequestError::bad_request(format!(
            "expected a pixel value, found {}",
            kind(other)
        ))),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number where an array belongs",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            target("digits"),
            Some(Target::Status {
                name: "digits",
                version: None
            })
        );
        assert_eq!(
            target("digits/versions/2:predict"),
            Some(Target::Predict {
                name: "digits",
                version: Some("2")
            })
        );
        assert_eq!(target("digits:classify"), None);
        assert_eq!(target("digits/labels/x"), None);
        assert_eq!(target("digits/versions/"), None);
        assert_eq!(target(":predict"), None);
    }

    #[test]
    fn row_and_columnar_bodies() {
        let (raw, format) =
            parse_predict(br#"{"instances": [{"b64": "AAEC"}, [[1, 2]]]}"#).unwrap();
        assert_eq!(format, Format::Row);
        assert_eq!(raw[0], RawInstance::Encoded(vec![0, 1, 2]));
        assert_eq!(
            raw[1],
            RawInstance::Pixels {
                values: vec![1.0, 2.0],
                dims: vec![1, 2]
            }
        );
        let (raw, format) = parse_predict(br#"{"inputs": {"image": [[1], [2]]}}"#).unwrap();
        assert_eq!(format, Format::Columnar);
        assert_eq!(raw.len(), 2);
        let (raw, _) = parse_predict(br#"{"instances": [{"image": {"b64": "AA=="}}]}"#).unwrap();
        assert_eq!(raw[0], RawInstance::Encoded(vec![0]));
    }

    #[test]
    fn bad_bodies_say_what_is_wrong() {
        for (body, needle) in [
            (&b"{"[..], "not valid JSON"),
            (b"[]", "JSON object"),
            (br#"{"instances": 3}"#, "list"),
            (br#"{"instances": [[1, 2], "x"]}"#, "instance 1"),
            (br#"{"instances": [[[1, 2], [3]]]}"#, "ragged"),
            (br#"{"instances": [[[[[1]]]]]}"#, "deeper"),
            (br#"{"instances": [["a"]]}"#, "a string"),
            (br#"{"instances": [{"b64": 5}]}"#, "base64 string"),
            (br#"{"instances": [{"b64": "@@"}]}"#, "base64"),
            (br#"{"inputs": {"a": [], "b": []}}"#, "one input"),
            (br#"{"instances": [], "inputs": []}"#, "not both"),
            (br#"{}"#, "neither"),
        ] {
            let e = parse_predict(body).unwrap_err();
            assert_eq!(e.http_status(), 400);
            assert!(e.message.contains(needle), "{needle}: {e}");
        }
    }
}
