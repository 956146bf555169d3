//! A parameter's value in one trial, as trials receive it and the ledger records it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The value of one parameter in one trial.
///
/// `int` parameters and whole numbers of a `discrete` list are [`ParamValue::Int`], so that
/// `batch_size: 32` reaches a trial as `32`, not `32.0`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    /// A whole number.
    Int(i64),
    /// A real number.
    Float(f64),
    /// A categorical choice.
    Text(String),
}

/// Whole numbers up to this magnitude are exact in an `f64`.
const MAX_EXACT_INTEGER: f64 = 9_007_199_254_740_992.0;

impl ParamValue {
    /// A number from a `discrete` list or a grid: whole numbers become [`ParamValue::Int`].
    pub fn number(value: f64) -> Self {
        if value.fract() == 0.0 && value.abs() <= MAX_EXACT_INTEGER {
            ParamValue::Int(value as i64)
        } else {
            ParamValue::Float(value)
        }
    }

    /// The value as a number, if it is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            ParamValue::Int(i) => Some(*i as f64),
            ParamValue::Float(x) => Some(*x),
            ParamValue::Text(_) => None,
        }
    }

    /// Bytes that identify the value on every platform: a tag, then the value (integers and
    /// floats as big-endian bits, text length-prefixed).
    pub(crate) fn canonical_bytes(&self, out: &mut Vec<u8>) {
        match self {
            ParamValue::Int(i) => {
                out.push(b'i');
                out.extend_from_slice(&i.to_be_bytes());
            }
            ParamValue::Float(x) => {
                out.push(b'f');
                out.extend_from_slice(&x.to_bits().to_be_bytes());
            }
            ParamValue::Text(s) => {
                out.push(b's');
                out.extend_from_slice(&(s.len() as u64).to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
    }
}

/// How placeholders render the value: `32`, `0.001`, `adam`.
impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Int(i) => write!(f, "{i}"),
            ParamValue::Float(x) => write!(f, "{x}"),
            ParamValue::Text(s) => f.write_str(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_render_without_a_fraction() {
        assert_eq!(ParamValue::number(32.0).to_string(), "32");
        assert_eq!(ParamValue::number(0.001).to_string(), "0.001");
        assert_eq!(ParamValue::Text("adam".into()).to_string(), "adam");
    }

    #[test]
    fn survives_a_json_round_trip() {
        for v in [
            ParamValue::Int(-3),
            ParamValue::Float(1.0),
            ParamValue::Float(1e-4),
            ParamValue::Text("sgd".into()),
        ] {
            let json = serde_json::to_string(&v).unwrap();
            assert_eq!(
                serde_json::from_str::<ParamValue>(&json).unwrap(),
                v,
                "{json}"
            );
        }
    }
}
