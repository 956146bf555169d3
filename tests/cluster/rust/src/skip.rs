//! Whether a test uses a service, skips without it or fails, and how a skip is said.

use std::io::Write;

/// What a test does about a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Availability {
    Use,
    Skip,
    Fail,
}

/// There: use it. Not there: skip, unless `required` (the `TOUCAN_REQUIRE_*` variable) is `1`.
pub(crate) fn availability(present: bool, required: Option<&str>) -> Availability {
    match (present, required) {
        (true, _) => Availability::Use,
        (false, Some("1")) => Availability::Fail,
        (false, _) => Availability::Skip,
    }
}

/// The `TOUCAN_REQUIRE_*` variable `name`, if set.
pub(crate) fn required(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// An environment variable that is set and not empty.
pub(crate) fn setting(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

/// `test NAME` of the running test (the harness names each test's thread after it).
pub(crate) fn this_test() -> String {
    std::thread::current()
        .name()
        .filter(|name| *name != "main")
        .map_or_else(|| "this test".to_owned(), |name| format!("test {name}"))
}

/// Writes a skip straight to stderr: the harness captures print!/eprint!, and a skip must be
/// seen in a passing run too. Nothing to do if stderr is gone.
pub(crate) fn say(message: &str) {
    let _ = writeln!(std::io::stderr(), "toucan-test-harness: {message}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_present_service_is_used_whether_required_or_not() {
        for required in [None, Some("1"), Some("0")] {
            assert_eq!(availability(true, required), Availability::Use);
        }
    }

    #[test]
    fn a_missing_service_is_skipped_unless_required() {
        assert_eq!(availability(false, None), Availability::Skip);
        assert_eq!(availability(false, Some("0")), Availability::Skip);
        assert_eq!(availability(false, Some("")), Availability::Skip);
        assert_eq!(availability(false, Some("1")), Availability::Fail);
    }
}
