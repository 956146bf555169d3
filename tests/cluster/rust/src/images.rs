//! toucan's container images in the OCI layout `scripts/images` writes (`build/images/oci`,
//! which the test cluster's container nodes read their images from): whether the images a
//! test runs are there.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::skip::{self, Availability};

/// Set to `1` (as `make test` does), a test that needs the images fails without them instead
/// of skipping.
pub const REQUIRE_ENV: &str = "TOUCAN_REQUIRE_IMAGES";

/// The layout the test cluster reads by default.
pub fn layout() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../build/images/oci")
}

/// The workspace version, which tags the images (`toucan/step-base:VERSION`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `toucan/NAME:TAG` with the workspace version: `reference("worker", "-cpu")`.
pub fn reference(name: &str, tag_suffix: &str) -> String {
    format!("toucan/{name}:{VERSION}{tag_suffix}")
}

/// Ok(true) when every reference in `wanted` is in the layout; Ok(false), after saying which
/// test skips and why, when one is missing and [`REQUIRE_ENV`] is not `1`; an error when it is.
pub fn available(wanted: &[String]) -> Result<bool> {
    let present = references(&layout())?;
    let missing: Vec<&String> = wanted.iter().filter(|r| !present.contains(r)).collect();
    match skip::availability(missing.is_empty(), skip::required(REQUIRE_ENV).as_deref()) {
        Availability::Use => Ok(true),
        Availability::Skip => {
            skip::say(&format!(
                "skipping {}: the images {missing:?} are not in {}; build them with \
                 `scripts/images` (make images) and run this test again. {REQUIRE_ENV}=1 makes \
                 this skip a failure.",
                skip::this_test(),
                layout().display()
            ));
            Ok(false)
        }
        Availability::Fail => bail!(
            "{REQUIRE_ENV}=1 but the images {missing:?} are not in {}: run scripts/images",
            layout().display()
        ),
    }
}

/// The references an OCI layout holds (none when it does not exist).
fn references(layout: &Path) -> Result<Vec<String>> {
    let index = layout.join("index.json");
    let text = match std::fs::read_to_string(&index) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", index.display())),
    };
    let index: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", index.display()))?;
    Ok(index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .map(str::to_owned)
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn references_are_read_from_the_index() {
        let dir = tempfile::tempdir().unwrap();
        assert!(references(dir.path()).unwrap().is_empty());
        std::fs::write(
            dir.path().join("index.json"),
            r#"{"schemaVersion":2,"manifests":[
                {"digest":"sha256:aa","annotations":{"org.opencontainers.image.ref.name":"toucan/step-base:0.1.0"}},
                {"digest":"sha256:bb"}]}"#,
        )
        .unwrap();
        assert_eq!(
            references(dir.path()).unwrap(),
            vec!["toucan/step-base:0.1.0".to_string()]
        );
    }
}
