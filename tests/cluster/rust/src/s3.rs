//! The S3-compatible server `make test` starts (`tests/s3/up DIR` writes its variables to
//! `DIR/env`): the artifact location [`LOCATION_ENV`] (`s3://BUCKET[/PREFIX]`), with the
//! server and credentials in the standard `AWS_*` variables ([`CREDENTIAL_ENVS`]).

use anyhow::{Result, bail};

use crate::skip::{self, Availability};

/// The artifact location tests work under, each below a prefix of its own.
pub const LOCATION_ENV: &str = "TOUCAN_TEST_S3_ARTIFACTS";
/// Set to `1` (as `make test` does), a test that needs S3 fails without [`LOCATION_ENV`]
/// instead of skipping.
pub const REQUIRE_ENV: &str = "TOUCAN_REQUIRE_S3";
/// The variables that name the server and its credentials, for processes that need them.
pub const CREDENTIAL_ENVS: [&str; 5] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_ALLOW_HTTP",
];

/// The location, for a test that needs S3; `None`, after saying which test skips and why, when
/// [`LOCATION_ENV`] is unset or empty and [`REQUIRE_ENV`] is not `1`; an error when it is.
pub fn location() -> Result<Option<String>> {
    let base = configured_location();
    match skip::availability(base.is_some(), skip::required(REQUIRE_ENV).as_deref()) {
        Availability::Use => Ok(base),
        Availability::Skip => {
            skip::say(&skip_message(&skip::this_test()));
            Ok(None)
        }
        Availability::Fail => bail!(
            "{REQUIRE_ENV}=1 but {LOCATION_ENV} is unset; start a server with `tests/s3/up DIR` \
             and export the variables of DIR/env"
        ),
    }
}

/// The location when one is configured, for a test that uses S3 if it can and a directory
/// otherwise (no skip, never required).
pub fn configured_location() -> Option<String> {
    skip::setting(LOCATION_ENV)
}

fn skip_message(test: &str) -> String {
    format!(
        "skipping {test}: {LOCATION_ENV} is unset (`tests/s3/up DIR` starts an S3 server and \
         writes its variables to DIR/env; `make test` sets them). {REQUIRE_ENV}=1 makes this \
         skip a failure."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_skip_names_the_test_and_how_to_run_it() {
        let message = skip_message("test large_files");
        assert!(message.contains("skipping test large_files"), "{message}");
        assert!(message.contains("tests/s3/up"), "{message}");
        assert!(message.contains(REQUIRE_ENV), "{message}");
    }
}
