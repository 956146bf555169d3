//! Time in toucan: one type, [`Millis`], and the conversions to and from text.
//!
//! Every instant the engines decide on and the stores record is a [`Millis`], milliseconds
//! since the Unix epoch: plain integers compare, subtract and serialize the same way in SQLite,
//! PostgreSQL, JSON and the engines' property tests. Text appears only at the edges: RFC 3339
//! in Kubernetes objects (`creationTimestamp`, a run's `status.startedAt`, the
//! `toucan.dev/scheduled-at` annotation) and in what the CLI prints. This module is the only
//! place that converts between the two, and [`now_ms`] the only clock.
//!
//! # Why jiff here, and chrono only in `schedule`
//!
//! The conversions use jiff because k8s-openapi already brings it: a Kubernetes `Time` *is* a
//! `jiff::Timestamp`, so the operator's status times and the CLI's parsed timestamps need no
//! second library. chrono stays for one reason: croner, the cron parser behind a Pipeline's
//! `schedule`, takes and returns `chrono::DateTime`, and there is no comparably maintained cron
//! crate over jiff. So chrono appears in [`crate::schedule`] alone, converted from and back to
//! [`Millis`] around each croner call, and nowhere in an API.

use k8s_openapi::jiff::{Timestamp, Unit};

/// Milliseconds since the Unix epoch; every timestamp in the stores and engines uses it.
pub type Millis = i64;

/// A text that is not an RFC 3339 timestamp, or an instant outside what it can express.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("{text:?} is not an RFC 3339 timestamp such as 2025-03-01T10:00:00Z: {reason}")]
    Unreadable { text: String, reason: String },
    #[error("{ms} ms since the epoch is outside the years 1 to 9999")]
    OutOfRange { ms: Millis },
}

/// The current time.
pub fn now_ms() -> Millis {
    Timestamp::now().as_millisecond()
}

/// The instant `ms` as a jiff `Timestamp` (what a Kubernetes `Time` wraps).
pub fn timestamp(ms: Millis) -> Result<Timestamp, TimeError> {
    Timestamp::from_millisecond(ms).map_err(|_| TimeError::OutOfRange { ms })
}

/// An RFC 3339 timestamp (any offset; fractions of a millisecond are dropped).
pub fn parse_rfc3339(text: &str) -> Result<Millis, TimeError> {
    text.parse::<Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|e| TimeError::Unreadable {
            text: text.to_string(),
            reason: e.to_string(),
        })
}

/// `ms` as RFC 3339 in UTC, with as many fractional digits as it needs (none on a whole
/// second): `2025-03-01T10:00:00.25Z`.
pub fn rfc3339(ms: Millis) -> Result<String, TimeError> {
    timestamp(ms).map(|t| t.to_string())
}

/// `ms` as RFC 3339 in UTC to the second, truncated, for people: `2025-03-01T10:00:00Z`.
pub fn rfc3339_seconds(ms: Millis) -> Result<String, TimeError> {
    let t = timestamp(ms)?;
    let whole = t
        .round(
            k8s_openapi::jiff::TimestampRound::new()
                .smallest(Unit::Second)
                .mode(k8s_openapi::jiff::RoundMode::Floor),
        )
        .map_err(|_| TimeError::OutOfRange { ms })?;
    Ok(whole.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn text_and_millis_round_trip() {
        for (text, ms) in [
            ("1970-01-01T00:00:00Z", 0),
            ("2025-03-01T10:00:00Z", 1_740_823_200_000),
            ("2025-03-01T10:00:00.25Z", 1_740_823_200_250),
            ("1969-12-31T23:59:59.999Z", -1),
        ] {
            assert_eq!(parse_rfc3339(text).unwrap(), ms, "{text}");
            assert_eq!(rfc3339(ms).unwrap(), text, "{ms}");
        }
    }

    #[test]
    fn other_offsets_are_read_as_the_same_instant() {
        assert_eq!(
            parse_rfc3339("2025-03-01T11:00:00+01:00").unwrap(),
            parse_rfc3339("2025-03-01T10:00:00Z").unwrap()
        );
    }

    #[test]
    fn seconds_are_truncated_for_display() {
        assert_eq!(
            rfc3339_seconds(1_740_823_200_999).unwrap(),
            "2025-03-01T10:00:00Z"
        );
        assert_eq!(rfc3339_seconds(-1).unwrap(), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn bad_text_and_out_of_range_instants_are_errors() {
        let err = parse_rfc3339("yesterday").unwrap_err();
        assert!(err.to_string().contains("\"yesterday\""), "{err}");
        assert_eq!(
            rfc3339(Millis::MAX).unwrap_err(),
            TimeError::OutOfRange { ms: Millis::MAX }
        );
    }

    #[test]
    fn the_clock_is_after_this_code_was_written() {
        assert!(now_ms() > parse_rfc3339("2025-01-01T00:00:00Z").unwrap());
    }
}
