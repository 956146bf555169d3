//! Label values (the label column of a CSV, or class folder names) → class numbers and names.
//!
//! The rules, in order:
//!
//! 1. With `--class-names`, the names give the classes and their order. A value that is one of
//!    the names is that class; where `numbers` is allowed (CSV columns, not folder names), a
//!    value that is an integer below the number of names is that class number. Anything else
//!    is an error.
//! 2. Without it, where `numbers` is allowed and every value is an integer, the values are the
//!    class numbers: classes `0..=max`, named by their number (as for IDX sources).
//! 3. Otherwise every value is a class name and the classes are the distinct names sorted by
//!    their bytes (so `"10"` comes before `"2"`).
//!
//! Labels are stored as u16, and at most [`MAX_CLASSES`] classes are allowed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use toucan_core::suggest::did_you_mean;

/// The most classes a dataset may have.
pub const MAX_CLASSES: usize = u16::MAX as usize;

/// Every value's class number, and the class names by number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classes {
    pub labels: Vec<u16>,
    pub names: Vec<String>,
}

/// Why the values cannot be turned into classes; `index` is the offending value when there is
/// one, so that the caller can name its line or folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelError {
    pub index: Option<usize>,
    pub message: String,
}

impl LabelError {
    fn at(index: usize, message: String) -> LabelError {
        LabelError {
            index: Some(index),
            message,
        }
    }

    fn whole(message: String) -> LabelError {
        LabelError {
            index: None,
            message,
        }
    }
}

/// Assigns a class to every value (see the module docs for the rules).
pub fn assign<S: AsRef<str>>(
    values: &[S],
    given: Option<&[String]>,
    numbers: bool,
) -> Result<Classes, LabelError> {
    if let Some(i) = values.iter().position(|v| v.as_ref().is_empty()) {
        return Err(LabelError::at(i, "the label is empty".into()));
    }
    if let Some(names) = given {
        check_class_names(names).map_err(LabelError::whole)?;
        return by_given_names(values, names, numbers);
    }
    if numbers {
        let parsed: Option<Vec<u64>> = values.iter().map(|v| parse_number(v.as_ref())).collect();
        if let Some(parsed) = parsed.filter(|p| !p.is_empty()) {
            return by_number(&parsed);
        }
    }
    by_sorted_names(values)
}

/// `--class-names` must be unique and at most [`MAX_CLASSES`].
pub fn check_class_names(names: &[String]) -> Result<(), String> {
    if names.len() > MAX_CLASSES {
        return Err(format!(
            "--class-names gives {} names; at most {MAX_CLASSES} classes are supported",
            names.len()
        ));
    }
    let mut seen = BTreeSet::new();
    for name in names {
        if name.is_empty() {
            return Err("--class-names has an empty name".into());
        }
        if !seen.insert(name.as_str()) {
            return Err(format!("--class-names lists {name:?} twice"));
        }
    }
    Ok(())
}

fn parse_number(value: &str) -> Option<u64> {
    if value.bytes().all(|b| b.is_ascii_digit()) {
        value.parse().ok()
    } else {
        None
    }
}

fn by_given_names<S: AsRef<str>>(
    values: &[S],
    names: &[String],
    numbers: bool,
) -> Result<Classes, LabelError> {
    let by_name: HashMap<&str, u16> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i as u16))
        .collect();
    let mut labels = Vec::with_capacity(values.len());
    for (i, value) in values.iter().enumerate() {
        let value = value.as_ref();
        let label = match (
            by_name.get(value),
            numbers.then(|| parse_number(value)).flatten(),
        ) {
            (Some(&label), _) => label,
            (None, Some(n)) if n < names.len() as u64 => n as u16,
            (None, Some(n)) => {
                return Err(LabelError::at(
                    i,
                    format!(
                        "label {n} is out of range: --class-names gives {} names (labels 0..={})",
                        names.len(),
                        names.len().saturating_sub(1)
                    ),
                ));
            }
            (None, None) => {
                let hint = did_you_mean(value, names.iter().map(String::as_str));
                return Err(LabelError::at(
                    i,
                    format!("{value:?} is not one of --class-names{hint}"),
                ));
            }
        };
        labels.push(label);
    }
    Ok(Classes {
        labels,
        names: names.to_vec(),
    })
}

fn by_number(values: &[u64]) -> Result<Classes, LabelError> {
    let (at, &max) = values
        .iter()
        .enumerate()
        .max_by_key(|(_, v)| **v)
        .ok_or_else(|| LabelError::whole("no labels".into()))?;
    if max >= MAX_CLASSES as u64 {
        return Err(LabelError::at(
            at,
            format!(
                "label {max} is too large: at most {MAX_CLASSES} classes are supported (labels 0..={})",
                MAX_CLASSES - 1
            ),
        ));
    }
    Ok(Classes {
        labels: values.iter().map(|&v| v as u16).collect(),
        names: (0..=max).map(|c| c.to_string()).collect(),
    })
}

fn by_sorted_names<S: AsRef<str>>(values: &[S]) -> Result<Classes, LabelError> {
    let distinct: BTreeSet<&str> = values.iter().map(AsRef::as_ref).collect();
    if distinct.len() > MAX_CLASSES {
        return Err(LabelError::whole(format!(
            "{} distinct labels; at most {MAX_CLASSES} classes are supported",
            distinct.len()
        )));
    }
    let numbered: BTreeMap<&str, u16> = distinct
        .iter()
        .enumerate()
        .map(|(i, &n)| (n, i as u16))
        .collect();
    Ok(Classes {
        labels: values.iter().map(|v| numbered[v.as_ref()]).collect(),
        names: distinct.into_iter().map(str::to_string).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// Values, `--class-names`, whether numbers are allowed, and what to expect.
    struct Case<'a, T> {
        values: &'a [&'a str],
        given: Option<&'a [String]>,
        numbers: bool,
        want: T,
    }

    fn case<'a, T>(
        values: &'a [&'a str],
        given: Option<&'a [String]>,
        numbers: bool,
        want: T,
    ) -> Case<'a, T> {
        Case {
            values,
            given,
            numbers,
            want,
        }
    }

    #[test]
    fn assigns_by_the_rules() {
        let abc = names(&["b", "a", "c"]);
        let cases = [
            // Names, sorted.
            case(
                &["dog", "cat", "dog"],
                None,
                true,
                (vec![1, 0, 1], vec!["cat", "dog"]),
            ),
            // Byte order, not numeric order, once one value is not a number.
            case(
                &["10", "2", "x"],
                None,
                true,
                (vec![0, 1, 2], vec!["10", "2", "x"]),
            ),
            // All numbers: the numbers, classes up to the largest.
            case(
                &["2", "0", "2"],
                None,
                true,
                (vec![2, 0, 2], vec!["0", "1", "2"]),
            ),
            // Folder names are never numbers.
            case(&["2", "10"], None, false, (vec![1, 0], vec!["10", "2"])),
            // --class-names: names, and numbers into them.
            case(
                &["a", "c", "0"],
                Some(&abc),
                true,
                (vec![1, 2, 0], vec!["b", "a", "c"]),
            ),
        ];
        for Case {
            values,
            given,
            numbers,
            want: (labels, classes),
        } in cases
        {
            let got = assign(values, given, numbers).unwrap();
            assert_eq!(got.labels, labels, "{values:?}");
            assert_eq!(got.names, names(&classes), "{values:?}");
        }
    }

    #[test]
    fn says_which_value_is_wrong() {
        let abc = names(&["a", "b", "c"]);
        let cases = [
            case(&["a", ""], None, true, (Some(1), "empty")),
            case(
                &["a", "bb"],
                Some(&abc),
                true,
                (Some(1), "not one of --class-names"),
            ),
            case(&["a", "3"], Some(&abc), true, (Some(1), "out of range")),
            case(
                &["a", "1"],
                Some(&abc),
                false,
                (Some(1), "not one of --class-names"),
            ),
            case(&["1", "65535", "2"], None, true, (Some(1), "too large")),
        ];
        for Case {
            values,
            given,
            numbers,
            want: (index, says),
        } in cases
        {
            let err = assign(values, given, numbers).unwrap_err();
            assert_eq!(err.index, index, "{values:?}");
            assert!(err.message.contains(says), "{err:?} should say {says:?}");
        }
        let err = assign(&["a"], Some(&names(&["a", "a"])), true).unwrap_err();
        assert!(err.message.contains("twice"), "{err:?}");
    }

    #[test]
    fn suggests_the_closest_class_name() {
        let err = assign(&["dgo"], Some(&names(&["cat", "dog"])), false).unwrap_err();
        assert!(err.message.contains("did you mean \"dog\""), "{err:?}");
    }

    #[test]
    fn allows_at_most_65535_classes() {
        let values: Vec<String> = (0..=MAX_CLASSES).map(|i| format!("c{i}")).collect();
        let err = assign(&values, None, true).unwrap_err();
        assert!(err.message.contains("65536 distinct labels"), "{err:?}");
        assert!(assign(&values[..MAX_CLASSES], None, true).is_ok());
        assert!(assign(&["65534"], None, true).is_ok());
    }
}
