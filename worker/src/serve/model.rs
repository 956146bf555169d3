//! What every protocol says about the one model a server serves: its name and version (and
//! whether a request's path or message names them), its classes and input shape, and its
//! metadata in the Open Inference Protocol's terms, which REST and gRPC both return.

use serde::Serialize;

use super::error::RequestError;
use crate::dataset::ImageShape;

/// The platform the Open Inference Protocol's metadata names.
pub const PLATFORM: &str = "toucan_libtorch";
/// The name of the model's one input in the Open Inference Protocol.
pub const INPUT_NAME: &str = "image";

/// The served model, as the protocols describe it.
#[derive(Debug, Clone)]
pub struct ServedModel {
    pub name: String,
    pub version: String,
    pub classes: Vec<String>,
    pub image: ImageShape,
}

/// One tensor of the model's metadata.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TensorMetadata {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
}

/// `GET /v2/models/NAME` and gRPC `ModelMetadata`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelMetadata {
    pub name: String,
    pub versions: Vec<String>,
    pub platform: String,
    pub inputs: Vec<TensorMetadata>,
    pub outputs: Vec<TensorMetadata>,
}

impl ServedModel {
    /// `Ok` when `name` (and `version`, if the request gives one) are this model's; a 404
    /// that names what is served otherwise.
    pub fn check(&self, name: &str, version: Option<&str>) -> Result<(), RequestError> {
        if name != self.name {
            return Err(RequestError::not_found(format!(
                "model {name:?} is not served here (this server serves {:?})",
                self.name
            )));
        }
        match version {
            Some(v) if !v.is_empty() && v != self.version => Err(RequestError::not_found(format!(
                "model {name:?} has no version {v:?} (served: {:?})",
                self.version
            ))),
            _ => Ok(()),
        }
    }

    /// The input's shape with the batch dimension first: `[-1, H, W, C]`.
    pub fn input_shape(&self) -> Vec<i64> {
        vec![
            -1,
            i64::from(self.image.height),
            i64::from(self.image.width),
            i64::from(self.image.channels),
        ]
    }

    pub fn metadata(&self) -> ModelMetadata {
        let tensor = |name: &str, datatype: &str, shape: Vec<i64>| TensorMetadata {
            name: name.into(),
            datatype: datatype.into(),
            shape,
        };
        ModelMetadata {
            name: self.name.clone(),
            versions: vec![self.version.clone()],
            platform: PLATFORM.into(),
            inputs: vec![tensor(INPUT_NAME, "FP32", self.input_shape())],
            outputs: vec![
                tensor("probabilities", "FP32", vec![-1, self.classes.len() as i64]),
                tensor("label", "INT64", vec![-1]),
                tensor("class", "BYTES", vec![-1]),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> ServedModel {
        ServedModel {
            name: "digits".into(),
            version: "3".into(),
            classes: vec!["a".into(), "b".into()],
            image: ImageShape {
                height: 8,
                width: 6,
                channels: 1,
            },
        }
    }

    #[test]
    fn only_the_served_name_and_version_are_found() {
        let m = model();
        assert!(m.check("digits", None).is_ok());
        assert!(m.check("digits", Some("3")).is_ok());
        assert!(m.check("digits", Some("")).is_ok());
        let e = m.check("other", None).unwrap_err();
        assert_eq!(e.http_status(), 404);
        assert!(e.message.contains("digits"), "{e}");
        assert_eq!(m.check("digits", Some("4")).unwrap_err().http_status(), 404);
    }

    #[test]
    fn metadata_names_the_shapes() {
        let meta = model().metadata();
        assert_eq!(meta.inputs[0].shape, vec![-1, 8, 6, 1]);
        assert_eq!(meta.outputs[0].shape, vec![-1, 2]);
    }
}
