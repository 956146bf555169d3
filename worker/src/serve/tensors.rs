//! The Open Inference Protocol's tensors, shared by its REST and gRPC forms: an input tensor
//! (`datatype`, `shape`, data as numbers, raw little-endian bytes or byte strings) becomes the
//! request's [`RawInstance`]s, and predictions become the output tensors a request asked for.
//!
//! The model's one input takes, with the batch dimension first:
//!
//! - `FP32` or `UINT8` pixel values (the `[0, 255]` convention of [`super::input`]) of shape
//!   `[N, H, W, C]`, `[N, H, W]` for a one-channel model, or `[N, H * W * C]`;
//! - `BYTES`, shape `[N]` or `[N, 1]`: each element a PNG or JPEG file.
//!
//! Its outputs are `probabilities` (`FP32 [N, classes]`), `label` (`INT64 [N]`) and `class`
//! (`BYTES [N]`, the class names).

use super::batcher::Prediction;
use super::error::RequestError;
use super::input::{self, RawInstance};
use super::model::ServedModel;

/// An input tensor's elements, as the request carried them.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// Numbers (JSON `data`, gRPC `fp32_contents` or `uint_contents`).
    Numbers(Vec<f64>),
    /// The raw, row-major, little-endian bytes of the whole tensor (gRPC
    /// `raw_input_contents`, REST binary data); `BYTES` elements each with a 4-byte
    /// little-endian length in front.
    Raw(Vec<u8>),
    /// `BYTES` elements (JSON strings, gRPC `bytes_contents`).
    Elements(Vec<Vec<u8>>),
}

/// The instances in one input tensor.
pub fn instances(
    datatype: &str,
    shape: &[i64],
    data: TensorData,
    model: &ServedModel,
) -> Result<Vec<RawInstance>, RequestError> {
    let dims: Vec<usize> = shape
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<_, _>>()
        .map_err(|_| RequestError::bad_request(format!("shape {shape:?} has a negative size")))?;
    let Some((&n, per_instance)) = dims.split_first() else {
        return Err(RequestError::bad_request(
            "the input's shape is empty; its first dimension is the batch",
        ));
    };
    let expected = || {
        format!(
            "the model takes FP32 or UINT8 pixels of shape {:?} or BYTES of shape [-1]",
            model.input_shape()
        )
    };
    match datatype {
        "BYTES" => {
            if per_instance.iter().any(|&d| d != 1) {
                return Err(RequestError::bad_request(format!(
                    "BYTES input of shape {shape:?}: {}",
                    expected()
                )));
            }
            let elements = match data {
                TensorData::Elements(e) => e,
                TensorData::Raw(raw) => length_prefixed(&raw)?,
                TensorData::Numbers(_) => {
                    return Err(RequestError::bad_request(
                        "BYTES input with numbers; send each image as a base64 string",
                    ));
                }
            };
            if elements.len() != n {
                return Err(RequestError::bad_request(format!(
                    "shape {shape:?} says {n} images, the data has {}",
                    elements.len()
                )));
            }
            Ok(elements.into_iter().map(RawInstance::Encoded).collect())
        }
        "FP32" | "UINT8" => {
            if !input::dims_fit(per_instance, model.image) {
                return Err(RequestError::bad_request(format!(
                    "{datatype} input of shape {shape:?}: {} ({:?} and {:?} also do)",
                    expected(),
                    &model.input_shape()[..3],
                    [-1, model.image.pixels() as i64],
                )));
            }
            let values: Vec<f32> = match data {
                TensorData::Numbers(v) => {
                    let not_a_byte = |x: &&f64| x.fract() != 0.0 || !(0.0..=255.0).contains(*x);
                    if datatype == "UINT8"
                        && let Some(bad) = v.iter().find(not_a_byte)
                    {
                        return Err(RequestError::bad_request(format!(
                            "UINT8 value {bad} is not an integer in [0, 255]"
                        )));
                    }
                    v.into_iter().map(|x| x as f32).collect()
                }
                TensorData::Raw(raw) if datatype == "FP32" => {
                    if raw.len() % 4 != 0 {
                        return Err(RequestError::bad_request(format!(
                            "{} raw bytes are not a whole number of FP32 values",
                            raw.len()
                        )));
                    }
                    raw.chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect()
                }
                TensorData::Raw(raw) => raw.into_iter().map(f32::from).collect(),
                TensorData::Elements(_) => {
                    return Err(RequestError::bad_request(format!(
                        "{datatype} input with byte strings; send numbers"
                    )));
                }
            };
            let total = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            if total != Some(values.len()) {
                return Err(RequestError::bad_request(format!(
                    "shape {shape:?} needs {} values, the data has {}",
                    total.map_or_else(|| "too many".to_string(), |t| t.to_string()),
                    values.len()
                )));
            }
            if n == 0 {
                return Ok(Vec::new());
            }
            let each = values.len() / n;
            Ok(values
                .chunks(each.max(1))
                .map(|chunk| RawInstance::Pixels {
                    values: chunk.to_vec(),
                    dims: per_instance.to_vec(),
                })
                .collect())
        }
        other => Err(RequestError::bad_request(format!(
            "datatype {other:?} is not supported: {}",
            expected()
        ))),
    }
}

/// `BYTES` elements in the binary form: each a 4-byte little-endian length, then the bytes.
pub fn length_prefixed(mut raw: &[u8]) -> Result<Vec<Vec<u8>>, RequestError> {
    let mut out = Vec::new();
    while !raw.is_empty() {
        let Some((len, rest)) = raw.split_first_chunk::<4>() else {
            return Err(RequestError::bad_request(
                "BYTES raw data ends inside an element's 4-byte length",
            ));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return Err(RequestError::bad_request(format!(
                "BYTES raw data: an element of {len} bytes, but {} remain",
                rest.len()
            )));
        }
        let (element, rest) = rest.split_at(len);
        out.push(element.to_vec());
        raw = rest;
    }
    Ok(out)
}

/// An output's elements in JSON: f32 values written as f32 (`0.25`, not `0.25000000372`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum OutputData<'a> {
    Fp32(Vec<f32>),
    Int64(Vec<i64>),
    Bytes(Vec<&'a str>),
}

/// The model's outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Probabilities,
    Label,
    Class,
}

impl Output {
    pub const ALL: [Output; 3] = [Output::Probabilities, Output::Label, Output::Class];

    pub fn name(self) -> &'static str {
        match self {
            Output::Probabilities => "probabilities",
            Output::Label => "label",
            Output::Class => "class",
        }
    }

    pub fn datatype(self) -> &'static str {
        match self {
            Output::Probabilities => "FP32",
            Output::Label => "INT64",
            Output::Class => "BYTES",
        }
    }

    /// The outputs named, or all of them when none is.
    pub fn requested<'a>(
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<Output>, RequestError> {
        let picked: Vec<Output> = names
            .into_iter()
            .map(|name| {
                Output::ALL
                    .into_iter()
                    .find(|o| o.name() == name)
                    .ok_or_else(|| {
                        RequestError::bad_request(format!(
                            "no output named {name:?}; the outputs are probabilities, label \
                             and class"
                        ))
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(if picked.is_empty() {
            Output::ALL.to_vec()
        } else {
            picked
        })
    }

    pub fn shape(self, predictions: &[Prediction], classes: usize) -> Vec<i64> {
        match self {
            Output::Probabilities => vec![predictions.len() as i64, classes as i64],
            Output::Label | Output::Class => vec![predictions.len() as i64],
        }
    }

    /// The output's elements for JSON `data` (flat, row-major).
    pub fn data(self, predictions: &[Prediction]) -> OutputData<'_> {
        match self {
            Output::Probabilities => OutputData::Fp32(
                predictions
                    .iter()
                    .flat_map(|p| p.probabilities.iter().copied())
                    .collect(),
            ),
            Output::Label => OutputData::Int64(predictions.iter().map(|p| p.label).collect()),
            Output::Class => {
                OutputData::Bytes(predictions.iter().map(|p| p.class.as_str()).collect())
            }
        }
    }

    /// The output as raw bytes (little-endian numbers, length-prefixed strings).
    pub fn raw(self, predictions: &[Prediction]) -> Vec<u8> {
        match self {
            Output::Probabilities => predictions
                .iter()
                .flat_map(|p| p.probabilities.iter().flat_map(|v| v.to_le_bytes()))
                .collect(),
            Output::Label => predictions
                .iter()
                .flat_map(|p| p.label.to_le_bytes())
                .collect(),
            Output::Class => {
                let mut out = Vec::new();
                for p in predictions {
                    out.extend_from_slice(&(p.class.len() as u32).to_le_bytes());
                    out.extend_from_slice(p.class.as_bytes());
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::ImageShape;

    fn model() -> ServedModel {
        ServedModel {
            name: "m".into(),
            version: "1".into(),
            classes: vec!["a".into(), "b".into()],
            image: ImageShape {
                height: 2,
                width: 2,
                channels: 1,
            },
        }
    }

    #[test]
    fn numbers_split_into_instances_by_the_batch_dimension() {
        let raw = instances(
            "FP32",
            &[2, 2, 2, 1],
            TensorData::Numbers((0..8).map(f64::from).collect()),
            &model(),
        )
        .unwrap();
        assert_eq!(
            raw[1],
            RawInstance::Pixels {
                values: vec![4.0, 5.0, 6.0, 7.0],
                dims: vec![2, 2, 1]
            }
        );
        let e = instances(
            "FP32",
            &[3, 2, 2, 1],
            TensorData::Numbers(vec![0.0; 8]),
            &model(),
        )
        .unwrap_err();
        assert!(e.message.contains("12 values"), "{e}");
        assert!(instances("INT32", &[1], TensorData::Numbers(vec![0.0]), &model()).is_err());
        assert!(
            instances(
                "UINT8",
                &[1, 4],
                TensorData::Numbers(vec![0.5; 4]),
                &model()
            )
            .is_err()
        );
        assert!(
            instances(
                "FP32",
                &[-1, 4],
                TensorData::Numbers(vec![0.5; 4]),
                &model()
            )
            .is_err()
        );
        assert!(
            instances(
                "FP32",
                &[i64::MAX, i64::MAX],
                TensorData::Numbers(vec![0.5; 4]),
                &model()
            )
            .is_err()
        );
    }

    #[test]
    fn raw_fp32_and_length_prefixed_bytes_decode() {
        let raw: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let got = instances("FP32", &[1, 4], TensorData::Raw(raw), &model()).unwrap();
        assert_eq!(
            got[0],
            RawInstance::Pixels {
                values: vec![1.0, 2.0, 3.0, 4.0],
                dims: vec![4]
            }
        );
        let mut bytes = 3u32.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"abc");
        bytes.extend_from_slice(&0u32.to_le_bytes());
        assert_eq!(
            length_prefixed(&bytes).unwrap(),
            vec![b"abc".to_vec(), vec![]]
        );
        assert!(length_prefixed(&[1, 0]).is_err());
        assert!(length_prefixed(&[9, 0, 0, 0, 1]).is_err());
    }

    #[test]
    fn outputs_are_picked_by_name() {
        assert_eq!(Output::requested([]).unwrap(), Output::ALL.to_vec());
        assert_eq!(Output::requested(["label"]).unwrap(), vec![Output::Label]);
        assert!(Output::requested(["logits"]).is_err());
        let p = vec![Prediction {
            label: 1,
            class: "b".into(),
            probabilities: vec![0.25, 0.75],
            input: None,
            embedding: None,
        }];
        assert_eq!(Output::Probabilities.shape(&p, 2), vec![1, 2]);
        assert_eq!(Output::Class.raw(&p), vec![1, 0, 0, 0, b'b']);
        assert_eq!(
            serde_json::to_string(&Output::Probabilities.data(&p)).unwrap(),
            "[0.25,0.75]"
        );
        assert_eq!(Output::Label.data(&p), OutputData::Int64(vec![1]));
    }
}
