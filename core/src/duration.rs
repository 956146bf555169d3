//! Durations as Kubernetes users write them: Go's `time.ParseDuration` syntax.
//!
//! A duration is a sequence of decimal numbers, each with an optional fraction and a unit:
//! `30s`, `1h30m`, `500ms`, `2h45m30s`, `1.5h`. The units are `ns`, `us` (or `µs`), `ms`, `s`,
//! `m` and `h`; a lone `0` is zero. Nothing else is accepted: no spaces, no words
//! (`5 minutes`), no days or months (`30M` is an error, not thirty months), no sign.
//!
//! [`Duration`] keeps the text as written, so a manifest round-trips unchanged, next to the
//! parsed value; it cannot be built from text that does not parse, so a bad duration is
//! refused where the manifest is read and never reaches the engine. Its JSON schema carries
//! the same syntax as a `pattern`, so the API server refuses it too.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::echo::quote;

/// The syntax as a regular expression, for the CRD schema.
pub const PATTERN: &str = r"^(0|(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+)$";

/// Go's limit: the longest duration an `int64` of nanoseconds holds (about 292 years).
const MAX_NANOS: u128 = i64::MAX as u128;

/// A duration written in Go syntax, with the text it was written as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Duration {
    text: String,
    value: std::time::Duration,
}

/// Why text is not a duration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing to parse.
    #[error("empty duration (write e.g. 30s, 5m or 1h30m)")]
    Empty,
    /// Not Go duration syntax.
    #[error(
        "invalid duration {text}: {problem} (write e.g. 30s, 5m, 1h30m or 500ms; units are ns, us, ms, s, m and h)"
    )]
    Syntax { text: String, problem: String },
    /// A leading `-`.
    #[error("invalid duration {text}: a duration cannot be negative")]
    Negative { text: String },
    /// Longer than Go allows.
    #[error("invalid duration {text}: longer than 2562047h (about 292 years)")]
    TooLong { text: String },
}

// === impl Duration ===

impl Duration {
    /// Parses Go duration syntax.
    pub fn parse(text: &str) -> Result<Duration, DurationError> {
        Ok(Duration {
            text: text.to_string(),
            value: parse(text)?,
        })
    }

    /// The duration as text, as it was written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The value.
    pub fn get(&self) -> std::time::Duration {
        self.value
    }

    /// The value in whole milliseconds (fractions of a millisecond are dropped).
    pub fn as_millis(&self) -> u64 {
        u64::try_from(self.value.as_millis()).unwrap_or(u64::MAX)
    }
}

/// A number of milliseconds in Go syntax, largest units first: `24h`, `40h10m`, `1m30s`,
/// `250ms`, `0`.
pub fn millis_text(ms: u64) -> String {
    let mut out = String::new();
    let mut rest = ms;
    for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    if out.is_empty() {
        out.push('0');
    }
    out
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for Duration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Duration::parse(s)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<'de, str>::deserialize(deserializer)?;
        Duration::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": PATTERN,
        })
    }
}

// === parsing ===

/// Nanoseconds per unit, longest unit names first so `ms` is not read as `m`.
const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

fn parse(text: &str) -> Result<std::time::Duration, DurationError> {
    let syntax = |problem: &str| DurationError::Syntax {
        text: quote(text),
        problem: problem.to_string(),
    };
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    if text.starts_with('-') {
        return Err(DurationError::Negative { text: quote(text) });
    }
    if text == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let mut rest = text;
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let whole_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (whole, after) = rest.split_at(whole_len);
        let (fraction, after) = match after.strip_prefix('.') {
            Some(after) => {
                let len = after.bytes().take_while(u8::is_ascii_digit).count();
                after.split_at(len)
            }
            None => ("", after),
        };
        if whole.is_empty() && fraction.is_empty() {
            return Err(syntax("expected a number"));
        }
        let unit_len = after
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(after.len(), |(i, _)| i);
        let (unit, after) = after.split_at(unit_len);
        let Some(&(_, per_unit)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(syntax(&if unit.is_empty() {
                "a number needs a unit".to_string()
            } else {
                format!("unknown unit {}", quote(unit))
            }));
        };
        let too_long = || DurationError::TooLong { text: quote(text) };
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| too_long())?
        };
        nanos = whole
            .checked_mul(per_unit)
            .and_then(|n| n.checked_add(nanos))
            .and_then(|n| n.checked_add(fraction_nanos(fraction, per_unit)))
            .filter(|n| *n <= MAX_NANOS)
            .ok_or_else(too_long)?;
        rest = after;
    }
    let secs = u64::try_from(nanos / 1_000_000_000)
        .map_err(|_| DurationError::TooLong { text: quote(text) })?;
    // The remainder is below 10^9, so it fits.
    let subsec = (nanos % 1_000_000_000) as u32;
    Ok(std::time::Duration::new(secs, subsec))
}

/// `0.DIGITS` of a unit, in nanoseconds, rounded down like Go. Digits past the nineteenth
/// cannot change the result for any unit (an hour is under 10^13 ns), so they are ignored.
fn fraction_nanos(digits: &str, per_unit: u128) -> u128 {
    let digits = &digits[..digits.len().min(19)];
    let mut numerator: u128 = 0;
    let mut denominator: u128 = 1;
    for b in digits.bytes() {
        numerator = numerator * 10 + u128::from(b - b'0');
        denominator *= 10;
    }
    numerator * per_unit / denominator
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration as Std;

    fn parsed(text: &str) -> Result<Std, DurationError> {
        Duration::parse(text).map(|d| d.get())
    }

    #[test]
    fn go_syntax() {
        let cases = [
            ("0", Std::ZERO),
            ("0s", Std::ZERO),
            ("30s", Std::from_secs(30)),
            ("30m", Std::from_secs(1800)),
            ("1h30m", Std::from_secs(5400)),
            ("2h45m30s", Std::from_secs(9930)),
            ("1.5h", Std::from_secs(5400)),
            ("500ms", Std::from_millis(500)),
            (".5s", Std::from_millis(500)),
            ("1.s", Std::from_secs(1)),
            ("10us", Std::from_micros(10)),
            ("10µs", Std::from_micros(10)),
            ("10μs", Std::from_micros(10)),
            ("7ns", Std::from_nanos(7)),
            ("1m1m", Std::from_secs(120)),
            ("1.000000001s", Std::from_nanos(1_000_000_001)),
            (
                "0.3333333333333333333333h",
                Std::from_nanos(1_199_999_999_999),
            ),
            ("2562047h", Std::from_secs(2_562_047 * 3600)),
        ];
        for (text, want) in cases {
            assert_eq!(parsed(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            "",
            " ",
            "5",
            "5 minutes",
            "5m ",
            " 5m",
            "30M",
            "1d",
            "1w",
            "1y",
            "-5s",
            "+5s",
            "s",
            ".s",
            "5.5.5s",
            "1h 30m",
            "1e3s",
            "5sec",
            "∞",
            "2562048h",
        ] {
            assert!(parsed(bad).is_err(), "{bad:?} parsed as {:?}", parsed(bad));
        }
        assert_eq!(
            Duration::parse("30M").unwrap_err().to_string(),
            "invalid duration \"30M\": unknown unit \"M\" (write e.g. 30s, 5m, 1h30m or 500ms; \
             units are ns, us, ms, s, m and h)"
        );
        assert_eq!(
            Duration::parse("5 minutes").unwrap_err().to_string(),
            "invalid duration \"5 minutes\": unknown unit \" minutes\" (write e.g. 30s, 5m, \
             1h30m or 500ms; units are ns, us, ms, s, m and h)"
        );
    }

    #[test]
    fn round_trips_as_written() {
        let d: Duration = serde_json::from_str("\"1h30m\"").unwrap();
        assert_eq!(d.as_millis(), 5_400_000);
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"1h30m\"");
        let err = serde_json::from_str::<Duration>("\"5 minutes\"").unwrap_err();
        assert!(err.to_string().contains("invalid duration"), "{err}");
    }

    #[test]
    fn milliseconds_read_back_as_go_durations() {
        for (ms, text) in [
            (0, "0"),
            (250, "250ms"),
            (90_000, "1m30s"),
            (86_400_000, "24h"),
            (144_600_000, "40h10m"),
        ] {
            assert_eq!(millis_text(ms), text);
            assert_eq!(Duration::parse(text).unwrap().as_millis(), ms);
        }
    }

    #[test]
    fn a_long_value_is_not_echoed_whole() {
        let text = format!("1{}", "x".repeat(1 << 20));
        let message = Duration::parse(&text).unwrap_err().to_string();
        assert!(message.len() < 400, "{message}");
        assert!(message.contains("(1048577 bytes)"), "{message}");
    }

    proptest! {
        /// Any sum of numbers with units parses to the sum of its parts.
        #[test]
        fn sums_of_parts(parts in prop::collection::vec((0u64..10_000, 0usize..6), 1..6)) {
            let names = ["ns", "us", "ms", "s", "m", "h"];
            let per = [1u128, 1_000, 1_000_000, 1_000_000_000, 60_000_000_000, 3_600_000_000_000];
            let text: String = parts.iter().map(|(n, u)| format!("{n}{}", names[*u])).collect();
            let want: u128 = parts.iter().map(|(n, u)| u128::from(*n) * per[*u]).sum();
            prop_assert_eq!(parsed(&text).unwrap().as_nanos(), want);
        }

        /// Arbitrary text never panics: it parses or is refused.
        #[test]
        fn never_panics(text in ".{0,40}") {
            let _ = Duration::parse(&text);
        }
    }
}
