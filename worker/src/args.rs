//! Value parsers for `toucan-worker`'s flags, so that a bad value is refused while the
//! arguments are parsed: clap's error names the flag (`invalid value '0' for '--epochs
//! <EPOCHS>': must be at least 1`) and the process exits with [`crate::EXIT_INVALID`] before
//! any work starts.
//!
//! [`AtLeast`] and [`Range`] are also the rules that the training config's validation applies
//! to the same values read from a file (`ml::config::rules`), so a flag and a config field
//! accept exactly the same numbers.

use std::fmt::Display;
use std::path::PathBuf;
use std::str::FromStr;

/// An integer that must be at least the given value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtLeast<T>(pub T);

impl<T> AtLeast<T>
where
    T: FromStr + PartialOrd + Display + Copy + Send + Sync + 'static,
    T::Err: Display,
{
    pub fn check(self, value: T) -> Result<(), String> {
        if value >= self.0 {
            Ok(())
        } else {
            Err(format!("must be at least {}", self.0))
        }
    }

    /// The flag's value parser: an integer, then [`AtLeast::check`].
    pub fn parser(self) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static {
        move |s: &str| {
            let value = s.trim().parse::<T>().map_err(|e| {
                match s.trim().parse::<i128>() {
                    // A negative number where `T` is unsigned is below the minimum too.
                    Ok(n) if n < 0 => format!("must be at least {}", self.0),
                    _ => format!("expected an integer: {e}"),
                }
            })?;
            self.check(value).map(|()| value)
        }
    }
}

/// A finite number in an interval; each end is open or closed, and an infinite upper end
/// means no upper bound.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    pub min: f64,
    pub min_open: bool,
    pub max: f64,
    pub max_open: bool,
}

impl Range {
    /// (0, ∞)
    pub const POSITIVE: Range = Range {
        min: 0.0,
        min_open: true,
        max: f64::INFINITY,
        max_open: true,
    };
    /// [0, ∞)
    pub const NON_NEGATIVE: Range = Range {
        min: 0.0,
        min_open: false,
        max: f64::INFINITY,
        max_open: true,
    };
    /// [0, 1): a probability that must leave something (dropout), a decay factor (momentum,
    /// Adam's betas).
    pub const FRACTION: Range = Range {
        min: 0.0,
        min_open: false,
        max: 1.0,
        max_open: true,
    };

    /// [0, max]
    pub const fn up_to(max: f64) -> Range {
        Range {
            min: 0.0,
            min_open: false,
            max,
            max_open: false,
        }
    }

    pub fn contains(self, value: f64) -> bool {
        let above = if self.min_open {
            value > self.min
        } else {
            value >= self.min
        };
        let below = if self.max_open {
            value < self.max
        } else {
            value <= self.max
        };
        value.is_finite() && above && below
    }

    pub fn check(self, value: f64) -> Result<(), String> {
        if self.contains(value) {
            Ok(())
        } else {
            Err(self.requirement())
        }
    }

    /// What a value must be, as the error says it.
    pub fn requirement(self) -> String {
        match (self.max.is_infinite(), self.min_open, self.min == 0.0) {
            (true, true, true) => "must be a positive number".into(),
            (true, false, true) => "must be zero or more".into(),
            (true, true, false) => format!("must be more than {}", self.min),
            (true, false, false) => format!("must be at least {}", self.min),
            (false, false, _) if !self.max_open => {
                format!("must be between {} and {}", self.min, self.max)
            }
            _ => format!(
                "must be in {}{}, {}{}",
                if self.min_open { '(' } else { '[' },
                self.min,
                self.max,
                if self.max_open { ')' } else { ']' },
            ),
        }
    }

    /// The flag's value parser: a number, then [`Range::check`].
    pub fn parser(self) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync + 'static {
        move |s: &str| {
            let value = s
                .trim()
                .parse::<f64>()
                .map_err(|e| format!("expected a number: {e}"))?;
            self.check(value).map(|()| value)
        }
    }
}

fn metadata(path: &std::path::Path) -> Result<std::fs::Metadata, String> {
    std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "does not exist".to_string(),
        _ => format!("cannot be read: {e}"),
    })
}

/// A path that must exist (a file or a directory).
pub fn existing_path(s: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(s);
    metadata(&path)?;
    Ok(path)
}

/// A path that must be an existing file.
pub fn existing_file(s: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(s);
    let meta = metadata(&path)?;
    if meta.is_dir() {
        return Err("is a directory; expected a file".into());
    }
    Ok(path)
}

/// An existing file, or nothing: an empty value stands for no file, so a pipeline can pass a
/// parameter that is empty unless it is set.
pub fn existing_file_or_empty(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Ok(PathBuf::new());
    }
    existing_file(s)
}

/// A path that must be an existing directory.
pub fn existing_dir(s: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(s);
    let meta = metadata(&path)?;
    if !meta.is_dir() {
        return Err("is not a directory".into());
    }
    Ok(path)
}

/// `--split`: one of the dataset's splits.
pub fn split() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(crate::dataset::SPLITS)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn integers_below_the_minimum_are_refused() {
        let parse = AtLeast(1u32).parser();
        assert_eq!(parse("3"), Ok(3));
        assert_eq!(parse("0"), Err("must be at least 1".into()));
        assert_eq!(parse("-1"), Err("must be at least 1".into()));
        assert!(
            parse("99999999999")
                .unwrap_err()
                .starts_with("expected an integer")
        );
        assert!(parse("two").unwrap_err().starts_with("expected an integer"));
    }

    #[test]
    fn numbers_outside_the_interval_are_refused() {
        let positive = Range::POSITIVE.parser();
        assert_eq!(positive("0.1"), Ok(0.1));
        for bad in ["0", "-1", "nan", "inf"] {
            assert_eq!(
                positive(bad),
                Err("must be a positive number".into()),
                "{bad}"
            );
        }
        assert_eq!(Range::FRACTION.check(0.0), Ok(()));
        assert_eq!(Range::FRACTION.check(1.0), Err("must be in [0, 1)".into()));
        assert_eq!(
            Range::up_to(0.5).check(0.6),
            Err("must be between 0 and 0.5".into())
        );
        assert_eq!(Range::up_to(0.5).check(0.5), Ok(()));
        assert_eq!(
            Range::NON_NEGATIVE.check(-0.1),
            Err("must be zero or more".into())
        );
    }

    #[test]
    fn paths_must_exist_and_be_of_the_right_kind() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let (dir_s, file_s) = (dir.path().to_str().unwrap(), file.to_str().unwrap());
        let missing = dir.path().join("missing");
        let missing_s = missing.to_str().unwrap();
        assert!(existing_path(dir_s).is_ok() && existing_path(file_s).is_ok());
        assert_eq!(existing_path(missing_s), Err("does not exist".into()));
        assert!(existing_file(file_s).is_ok());
        assert!(existing_file(dir_s).is_err());
        assert!(existing_dir(dir_s).is_ok());
        assert!(existing_dir(file_s).is_err());
        assert!(existing_dir(missing_s).is_err());
    }
}
