//! Which names are well-formed: steps, parameters, inputs and outputs, environment
//! variables and object names.

use crate::echo::quote;

/// The longest step name: it becomes part of pod and child object names.
pub(super) const MAX_STEP_NAME: usize = 63;
/// The longest `metadata.name` Kubernetes accepts for these resources.
pub(super) const MAX_OBJECT_NAME: usize = 253;

/// A step name: lowercase letters, digits, `-` and `_`, starting with a letter or digit, at
/// most 63 characters.
pub(super) fn check_step_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_STEP_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid step name {}: use at most {MAX_STEP_NAME} lowercase letters, digits, \
             \"-\" and \"_\", starting with a letter or digit",
            quote(name)
        ))
    }
}

/// A parameter, input or output name, as it appears in `{{params.NAME}}`: letters, digits,
/// `-` and `_`, starting with a letter or `_`.
pub(super) fn check_identifier(what: &str, name: &str) -> Result<(), String> {
    let ok = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid {what} name {}: use letters, digits, \"-\" and \"_\", starting with a \
             letter or \"_\"",
            quote(name)
        ))
    }
}

/// An environment variable name: letters, digits, `_`, `-` and `.`, not starting with a digit
/// (what Kubernetes accepts).
pub(super) fn check_env_name(name: &str) -> Result<(), String> {
    let ok = name.starts_with(|c: char| !c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid environment variable name {}: use letters, digits, \"_\", \"-\" and \
             \".\", not starting with a digit",
            quote(name)
        ))
    }
}

/// The longest DNS-1123 label (an Endpoint's version name).
pub(super) const MAX_LABEL: usize = 63;

/// A DNS-1123 label (an Endpoint's version name, which names its Deployment and Service):
/// lowercase letters, digits and `-`, starting and ending with a letter or digit, at most 63
/// characters.
pub(super) fn check_label(what: &str, name: &str) -> Result<(), String> {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let ok = !name.is_empty()
        && name.len() <= MAX_LABEL
        && name.starts_with(alnum)
        && name.ends_with(alnum)
        && name.chars().all(|c| alnum(c) || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid {what} name {}: use at most {MAX_LABEL} lowercase letters, digits and \
             \"-\", starting and ending with a letter or digit",
            quote(name)
        ))
    }
}

/// A `metadata.name` (an RFC 1123 subdomain): lowercase letters, digits, `-` and `.`,
/// starting and ending with a letter or digit, at most 253 characters.
pub(super) fn check_object_name(name: &str) -> Result<(), String> {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let ok = !name.is_empty()
        && name.len() <= MAX_OBJECT_NAME
        && name.starts_with(alnum)
        && name.ends_with(alnum)
        && name.chars().all(|c| alnum(c) || c == '-' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid name {}: use at most {MAX_OBJECT_NAME} lowercase letters, digits, \"-\" \
             and \".\", starting and ending with a letter or digit",
            quote(name)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_names() {
        for ok in ["train", "a", "step-2", "fan_out", "0day"] {
            assert!(check_step_name(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(64);
        for bad in ["", "Train", "-x", "_x", "a.b", "a b", "ä", long.as_str()] {
            assert!(check_step_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn identifiers() {
        for ok in ["epochs", "learning_rate", "_x", "min-acc", "A1"] {
            assert!(check_identifier("parameter", ok).is_ok(), "{ok}");
        }
        for bad in ["", "1x", "a.b", "a b", "{x}", "-x"] {
            assert!(check_identifier("parameter", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn env_names() {
        for ok in ["PATH", "_X", "my.var", "A-B"] {
            assert!(check_env_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1X", "A B", "A=B"] {
            assert!(check_env_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn labels() {
        for ok in ["v1", "a", "canary-2", "0"] {
            assert!(check_label("version", ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(64);
        for bad in ["", "V1", "v.1", "v_1", "-v", "v-", long.as_str()] {
            assert!(check_label("version", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn object_names() {
        for ok in ["fashion-mnist", "a", "v1.2", "0"] {
            assert!(check_object_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Fashion", "a_b", "-a", "a-", "a b"] {
            assert!(check_object_name(bad).is_err(), "{bad}");
        }
    }
}
