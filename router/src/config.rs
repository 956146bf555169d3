//! The router's configuration: which versions of one Endpoint exist, how traffic is split
//! between them, where their replicas listen, what is mirrored, how requests are retried.
//!
//! A [`RouterConfig`] arrives as text (JSON or YAML) from one of [`crate::sources`], is parsed
//! with field paths in its errors and validated here, whole, before the router ever sees it:
//! an invalid document is rejected and the previous one stays in force. A valid one becomes
//! a [`crate::table::RoutingTable`].

use std::collections::BTreeSet;
use std::time::Duration;

use axum::http::HeaderName;
use axum::http::uri::{Authority, Scheme, Uri};
use serde::{Deserialize, Serialize};

use crate::error::RouterError;

/// Tries per request beyond the first, when the document does not say.
pub const DEFAULT_RETRIES: u32 = 2;
/// More retries than this multiply the load of a struggling version; refused at validation.
pub const MAX_RETRIES: u32 = 10;
/// How long one try may wait for a replica's response headers, when the document does not say.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The whole configuration of one router: the versions of one Endpoint.
///
/// ```json
/// {"endpoint": "fashion",
///  "versions": [
///    {"name": "v1", "weight": 90, "replicas": ["http://10.0.0.5:8080", "http://10.0.0.6:8080"]},
///    {"name": "v2", "weight": 10, "replicas": ["http://10.0.0.7:8080"]}],
///  "shadow": {"version": "v3", "percent": 5},
///  "stickyHeader": "x-user-id",
///  "retries": 2,
///  "timeout": "30s"}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouterConfig {
    /// The Endpoint's name (also how EndpointSlices are selected).
    pub endpoint: String,
    /// In the order their shares of `[0, 1)` are laid out: changing the order moves sticky keys.
    pub versions: Vec<VersionConfig>,
    /// A version that receives a copy of some requests, whose answers are discarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowConfig>,
    /// A request header whose value, when present, decides the version instead of the
    /// request id, so one user keeps reaching one version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky_header: Option<String>,
    /// Tries beyond the first, each on another ready replica of the same version.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// How long one try may wait for the response headers (`"30s"`, `"500ms"`).
    #[serde(default = "default_timeout", with = "duration_text")]
    pub timeout: Duration,
}

/// One version of the model and the replicas serving it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VersionConfig {
    pub name: String,
    /// Its share of the traffic, relative to the other versions' (0: none, e.g. shadow only).
    pub weight: u32,
    /// Base URLs (`http://HOST:PORT`) of the replicas the source considers ready. Filled from
    /// EndpointSlices when the router watches them.
    #[serde(default)]
    pub replicas: Vec<String>,
}

/// Which version receives copies, and of what share of the requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShadowConfig {
    pub version: String,
    /// In `[0, 100]`.
    pub percent: f64,
}

fn default_retries() -> u32 {
    DEFAULT_RETRIES
}

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}

/// Durations as people write them (`"30s"`, `"1m 30s"`, `"250ms"`).
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&humantime::format_duration(*value).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text)
            .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a duration: {e}")))
    }
}

// === impl RouterConfig ===

impl RouterConfig {
    /// Parses and validates a document; `origin` (a path or URL) names it in errors. JSON when
    /// it starts with `{`, YAML otherwise.
    pub fn from_text(text: &str, origin: &str) -> Result<RouterConfig, RouterError> {
        let invalid = |detail: String| RouterError::InvalidConfig {
            origin: origin.to_string(),
            detail,
        };
        let config: RouterConfig = if text.trim_start().starts_with('{') {
            let mut de = serde_json::Deserializer::from_str(text);
            serde_path_to_error::deserialize(&mut de).map_err(|e| invalid(e.to_string()))?
        } else {
            let de = serde_yaml_ng::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de).map_err(|e| invalid(e.to_string()))?
        };
        config.validate().map_err(invalid)?;
        Ok(config)
    }

    /// Every rule a document must follow, each failure naming the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.endpoint.trim().is_empty() {
            return Err("endpoint: must not be empty".into());
        }
        if self.versions.is_empty() {
            return Err("versions: at least one version is needed".into());
        }
        let mut names = BTreeSet::new();
        for (i, version) in self.versions.iter().enumerate() {
            if version.name.trim().is_empty() {
                return Err(format!("versions[{i}].name: must not be empty"));
            }
            if !names.insert(version.name.as_str()) {
                return Err(format!(
                    "versions[{i}].name: {:?} appears twice",
                    version.name
                ));
            }
            for (j, url) in version.replicas.iter().enumerate() {
                replica_authority(url).map_err(|e| format!("versions[{i}].replicas[{j}]: {e}"))?;
            }
        }
        if let Some(shadow) = &self.shadow {
            if !names.contains(shadow.version.as_str()) {
                return Err(format!(
                    "shadow.version: {:?} is not one of the versions",
                    shadow.version
                ));
            }
            if !(0.0..=100.0).contains(&shadow.percent) {
                return Err(format!(
                    "shadow.percent: {} is not in [0, 100]",
                    shadow.percent
                ));
            }
        }
        if let Some(header) = &self.sticky_header {
            HeaderName::try_from(header.as_str())
                .map_err(|_| format!("stickyHeader: {header:?} is not a header name"))?;
        }
        if self.retries > MAX_RETRIES {
            return Err(format!(
                "retries: {} is more than {MAX_RETRIES}",
                self.retries
            ));
        }
        if self.timeout.is_zero() {
            return Err("timeout: must be more than zero".into());
        }
        Ok(())
    }
}

/// The `host:port` of a replica's base URL: plain `http`, no path, no query.
pub fn replica_authority(url: &str) -> Result<Authority, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if uri.scheme() != Some(&Scheme::HTTP) {
        return Err(format!("{url:?}: only http:// replicas are supported"));
    }
    let path_is_root = matches!(uri.path(), "" | "/");
    if !path_is_root || uri.query().is_some() {
        return Err(format!("{url:?}: a replica is a base URL, without a path"));
    }
    uri.authority()
        .cloned()
        .ok_or_else(|| format!("{url:?} has no host"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{"endpoint": "fashion",
        "versions": [
          {"name": "v1", "weight": 90, "replicas": ["http://127.0.0.1:8080", "http://127.0.0.1:8081/"]},
          {"name": "v2", "weight": 10, "replicas": ["http://127.0.0.1:8082"]}],
        "shadow": {"version": "v2", "percent": 5},
        "stickyHeader": "x-user-id",
        "timeout": "1500ms"}"#;

    #[test]
    fn json_and_yaml_give_the_same_config_with_defaults() {
        let json = RouterConfig::from_text(EXAMPLE, "example.json").unwrap();
        assert_eq!(json.retries, DEFAULT_RETRIES);
        assert_eq!(json.timeout, Duration::from_millis(1500));
        let yaml = serde_yaml_ng::to_string(&json).unwrap();
        assert_eq!(
            RouterConfig::from_text(&yaml, "example.yaml").unwrap(),
            json
        );
        let minimal = RouterConfig::from_text(
            "endpoint: e\nversions: [{name: v1, weight: 1}]\n",
            "minimal.yaml",
        )
        .unwrap();
        assert_eq!(minimal.timeout, DEFAULT_TIMEOUT);
        assert!(minimal.versions[0].replicas.is_empty());
    }

    #[test]
    fn invalid_documents_name_the_field() {
        let cases = [
            (r#"{"endpoint":"e","versions":[]}"#, "versions"),
            (
                r#"{"endpoint":"e","versions":[{"name":"a","weight":1},{"name":"a","weight":1}]}"#,
                "versions[1].name",
            ),
            (
                r#"{"endpoint":"e","versions":[{"name":"a","weight":1,"replicas":["https://x:1"]}]}"#,
                "versions[0].replicas[0]",
            ),
            (
                r#"{"endpoint":"e","versions":[{"name":"a","weight":1,"replicas":["http://x:1/p"]}]}"#,
                "without a path",
            ),
            (
                r#"{"endpoint":"e","versions":[{"name":"a","weight":1}],"shadow":{"version":"b","percent":1}}"#,
                "shadow.version",
            ),
            (
                r#"{"endpoint":"e","versions":[{"name":"a","weight":1}],"shadow":{"version":"a","percent":101}}"#,
                "shadow.percent",
            ),
            (
                r#"{"endpoint":"e","versions":[{"name":"a","weight":1}],"timeout":"soon"}"#,
                "timeout",
            ),
            (
                r#"{"endpoint":"e","versions":[{"name":"a","weight":1}],"timeout":"0s"}"#,
                "timeout",
            ),
            (
                r#"{"endpoint":"e","versions":[{"name":"a","weight":1}],"retries":11}"#,
                "retries",
            ),
            (
                r#"{"endpoint":"e","versions":[{"name":"a","weight":1}],"stickyHeader":"a b"}"#,
                "stickyHeader",
            ),
            (
                r#"{"endpoint":"e","versions":[{"name":"a","weight":1,"replica":[]}]}"#,
                "versions[0]",
            ),
        ];
        for (text, field) in cases {
            let err = RouterConfig::from_text(text, "t.json").unwrap_err();
            assert_eq!(err.reason(), "InvalidConfig");
            assert!(err.to_string().contains(field), "{field}: {err}");
        }
    }
}
