//! Time as the engines and records see it: milliseconds since the Unix epoch.

use crate::records::Millis;

/// The current time. Engines never call this: shells pass the time in.
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or_default()
}
