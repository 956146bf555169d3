//! Trial names: a hash of the trial's parameters and index, the same on every run and
//! platform, so a shell that repeats a start after a crash finds the child it already made.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::value::ParamValue;

/// The version of the hashed layout; bump it only with a migration of stored names.
const NAME_VERSION: &[u8] = b"toucan.trial.v1";
/// Hex characters of the hash in a name.
const HASH_CHARS: usize = 10;
/// Kubernetes object names are at most this long.
const MAX_OBJECT_NAME: usize = 63;

/// The trial's name within its study: `INDEX-HASH`, e.g. `7-3f9a0c12be`.
pub fn trial_name(index: u32, params: &BTreeMap<String, ParamValue>) -> String {
    let mut bytes = Vec::with_capacity(64);
    bytes.extend_from_slice(NAME_VERSION);
    bytes.extend_from_slice(&u64::from(index).to_be_bytes());
    for (name, value) in params {
        bytes.extend_from_slice(&(name.len() as u64).to_be_bytes());
        bytes.extend_from_slice(name.as_bytes());
        value.canonical_bytes(&mut bytes);
    }
    let digest = hex::encode(Sha256::digest(&bytes));
    format!("{index}-{}", &digest[..HASH_CHARS])
}

/// The name of the trial's child object (pipeline run, TrainingJob): `STUDY-TRIAL`, the
/// study's name shortened so the whole fits a Kubernetes object name.
pub fn child_name(study: &str, trial: &str) -> String {
    let room = MAX_OBJECT_NAME.saturating_sub(trial.len() + 1);
    let mut prefix: String = study.chars().take(room).collect();
    while prefix.ends_with('-') || prefix.ends_with('.') {
        prefix.pop();
    }
    format!("{prefix}-{trial}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(lr: f64, opt: &str) -> BTreeMap<String, ParamValue> {
        BTreeMap::from([
            ("lr".to_string(), ParamValue::Float(lr)),
            ("optimizer".to_string(), ParamValue::Text(opt.into())),
        ])
    }

    #[test]
    fn is_a_pure_function_of_parameters_and_index() {
        // A fixed value: a change of the hashed layout changes every stored name.
        assert_eq!(trial_name(3, &params(0.01, "sgd")), "3-2e7124af22");
        assert_eq!(
            trial_name(3, &params(0.01, "sgd")),
            trial_name(3, &params(0.01, "sgd"))
        );
        assert_ne!(
            trial_name(3, &params(0.01, "sgd")),
            trial_name(4, &params(0.01, "sgd"))
        );
        assert_ne!(
            trial_name(3, &params(0.01, "sgd")),
            trial_name(3, &params(0.02, "sgd"))
        );
        assert_ne!(
            trial_name(3, &params(0.01, "sgd")),
            trial_name(3, &params(0.01, "sg"))
        );
    }

    #[test]
    fn child_names_fit_an_object_name() {
        let long = "a".repeat(80);
        let name = child_name(&long, "123-0123456789");
        assert_eq!(name.len(), MAX_OBJECT_NAME);
        assert!(name.ends_with("-123-0123456789"));
        assert_eq!(child_name("fmnist", "0-abc"), "fmnist-0-abc");
    }
}
