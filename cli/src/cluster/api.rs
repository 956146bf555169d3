//! The operator's control-plane API, read with the kubeconfig's credentials.
//!
//! By default requests go through the Kubernetes API server's service proxy
//! (`/api/v1/namespaces/NS/services/toucan-operator:api/proxy/...`) with the kube client
//! itself, so the server, TLS and authentication are the kubeconfig's. With `--api URL` they go
//! to that URL, still with the kubeconfig's user (bearer token, exec plugin or client
//! certificate) but with the system's trust roots. The API answers JSON, and errors as
//! `{"error": "..."}`; the proxy's own errors are Kubernetes `Status` objects.

use kube::api::GetParams;
use kube::client::Body;
use kube::{Client, Config};
use serde::de::DeserializeOwned;
use toucan_api::{MetricSeries, RunDetail, StudyDetail};
use toucan_core::url::path_segment;

use super::ClusterError;

/// The operator's Service (as the Helm chart names it with the release `toucan-operator`).
const OPERATOR_SERVICE: &str = "toucan-operator";
/// The Service's port serving the API.
const API_PORT_NAME: &str = "api";
/// The longest error body quoted in a message.
const MAX_QUOTED: usize = 300;

/// A client of the operator's API.
#[derive(Clone)]
pub(crate) struct OperatorApi {
    client: Client,
    /// Prepended to every API path: the service proxy path, or empty.
    prefix: String,
    /// Where requests go, for messages.
    endpoint: String,
    via_proxy: bool,
}

/// Why the operator's API did not answer what was asked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("cannot reach the toucan API at {endpoint}")]
    Unreachable {
        endpoint: String,
        source: kube::Error,
    },
    #[error("the toucan API at {endpoint} answered {code}: {message}{hint}")]
    Refused {
        endpoint: String,
        code: u16,
        message: String,
        hint: &'static str,
    },
    #[error("the toucan API at {endpoint} sent an unreadable answer")]
    Unreadable {
        endpoint: String,
        source: serde_json::Error,
    },
}

impl std::fmt::Debug for OperatorApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorApi")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl ApiError {
    /// This error and its causes, on one line.
    pub fn explain(&self) -> String {
        super::causes(std::iter::successors(
            Some(self as &(dyn std::error::Error + 'static)),
            |e| e.source(),
        ))
    }

    /// The API's `404` for `what` (`no metrics for ...`), as opposed to any other failure.
    pub fn is_missing(&self, what: &str) -> bool {
        matches!(self, ApiError::Refused { code: 404, message, .. } if message.starts_with(what))
    }
}

impl OperatorApi {
    /// Through the API server's service proxy of `namespace`'s operator Service.
    pub fn proxy(client: Client, namespace: &str) -> OperatorApi {
        let prefix = proxy_prefix(namespace);
        OperatorApi {
            client,
            endpoint: format!("service {namespace}/{OPERATOR_SERVICE} (through the API server)"),
            prefix,
            via_proxy: true,
        }
    }

    /// At `url`, with the credentials of `config`'s user.
    pub fn direct(config: &Config, url: &str) -> Result<OperatorApi, ClusterError> {
        let invalid = |reason: String| ClusterError::InvalidApiUrl {
            url: url.to_string(),
            reason,
        };
        let mut config = config.clone();
        config.cluster_url = url
            .trim_end_matches('/')
            .parse()
            .map_err(|e| invalid(format!("{e}")))?;
        // The cluster's CA and server name are the API server's, not the operator's.
        config.root_cert = None;
        config.root_cert_file = None;
        config.tls_server_name = None;
        let client = Client::try_from(config).map_err(|e| invalid(e.to_string()))?;
        Ok(OperatorApi {
            client,
            prefix: String::new(),
            endpoint: url.to_string(),
            via_proxy: false,
        })
    }

    /// A run with its steps.
    pub async fn run(&self, run_id: &str) -> Result<RunDetail, ApiError> {
        self.get("/api/v1/runs", run_id).await
    }

    /// A tuning study with every trial.
    pub async fn study(&self, study_id: &str) -> Result<StudyDetail, ApiError> {
        self.get("/api/v1/studies", study_id).await
    }

    /// An Endpoint's router figures over the last minute, asked of its router by the operator.
    pub async fn endpoint_stats(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<toucan_router::admin::EndpointStats, ApiError> {
        let dir = format!(
            "/api/v1/namespaces/{}/endpoints/{}",
            path_segment(namespace),
            path_segment(name)
        );
        self.get(&dir, "stats").await
    }

    /// The metric series a step pushed.
    pub async fn metrics(&self, run_id: &str, node: &str) -> Result<MetricSeries, ApiError> {
        let dir = format!(
            "/api/v1/runs/{}/steps/{}",
            path_segment(run_id),
            path_segment(node)
        );
        self.get(&dir, "metrics").await
    }

    /// `GET {dir}/{leaf}`; `leaf` is percent-encoded here, `dir` must be already.
    async fn get<T: DeserializeOwned>(&self, dir: &str, leaf: &str) -> Result<T, ApiError> {
        let unreachable = |source| ApiError::Unreachable {
            endpoint: self.endpoint.clone(),
            source,
        };
        let request = kube::core::Request::new(format!("{}{dir}", self.prefix))
            .get(&path_segment(leaf), &GetParams::default())
            .map_err(|e| unreachable(kube::Error::BuildRequest(e)))?;
        self.send(request).await
    }

    /// The alerts of `namespace`'s endpoints (of `endpoint` alone when given), newest first.
    pub async fn alerts(
        &self,
        namespace: &str,
        endpoint: Option<&str>,
        limit: u32,
    ) -> Result<Vec<toucan_core::records::AlertRecord>, ApiError> {
        let mut query = format!("namespace={}&limit={limit}", path_segment(namespace));
        if let Some(name) = endpoint {
            query.push_str(&format!("&endpoint={}", path_segment(name)));
        }
        let request = http::Request::get(format!("{}/api/v1/alerts?{query}", self.prefix))
            .body(Vec::new())
            .map_err(|e| ApiError::Unreachable {
                endpoint: self.endpoint.clone(),
                source: kube::Error::HttpError(e),
            })?;
        self.send(request).await
    }

    /// Sends `request` and reads the JSON answer.
    async fn send<T: DeserializeOwned>(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> Result<T, ApiError> {
        let unreachable = |source| ApiError::Unreachable {
            endpoint: self.endpoint.clone(),
            source,
        };
        let response = self
            .client
            .send(request.map(Body::from))
            .await
            .map_err(unreachable)?;
        let code = response.status().as_u16();
        let body = response
            .into_body()
            .collect_bytes()
            .await
            .map_err(unreachable)?;
        if !(200..300).contains(&code) {
            return Err(ApiError::Refused {
                endpoint: self.endpoint.clone(),
                code,
                message: error_message(&body),
                hint: self.hint(code),
            });
        }
        serde_json::from_slice(&body).map_err(|source| ApiError::Unreadable {
            endpoint: self.endpoint.clone(),
            source,
        })
    }

    fn hint(&self, code: u16) -> &'static str {
        match (self.via_proxy, code) {
            // The API server authenticates the proxied request and drops its Authorization
            // header, so the operator never sees the caller's token.
            (true, 401) => {
                " (the API server's service proxy does not pass credentials on; give the \
                 operator's API with --api or TOUCAN_API)"
            }
            (true, 403) => {
                " (reading through the service proxy needs `get services/proxy` in the \
                 operator's namespace; or give the operator's API with --api or TOUCAN_API)"
            }
            (true, 404 | 503) => {
                " (is the operator installed there? see --operator-namespace, --api, TOUCAN_API)"
            }
            _ => "",
        }
    }
}

/// The service proxy path of the operator's API in `namespace`.
fn proxy_prefix(namespace: &str) -> String {
    format!(
        "/api/v1/namespaces/{}/services/{OPERATOR_SERVICE}:{API_PORT_NAME}/proxy",
        path_segment(namespace)
    )
}

/// The sentence of an error body: the API's `{"error": ...}`, a Kubernetes `Status`'s
/// `message`, else the text itself, shortened.
fn error_message(body: &[u8]) -> String {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| {
        json.as_ref()
            .and_then(|j| j.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let text = field("error")
        .or_else(|| field("message"))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    if text.chars().count() > MAX_QUOTED {
        format!("{}…", text.chars().take(MAX_QUOTED).collect::<String>())
    } else if text.is_empty() {
        "(no message)".to_string()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxy_prefix_names_the_service_port() {
        assert_eq!(
            proxy_prefix("toucan-system"),
            "/api/v1/namespaces/toucan-system/services/toucan-operator:api/proxy"
        );
    }

    #[test]
    fn error_messages_come_from_either_error_shape() {
        assert_eq!(error_message(br#"{"error":"no run abc"}"#), "no run abc");
        assert_eq!(
            error_message(
                br#"{"kind":"Status","code":503,"message":"no endpoints available for service \"toucan-operator:api\""}"#
            ),
            r#"no endpoints available for service "toucan-operator:api""#
        );
        assert_eq!(error_message(b"  Bad Gateway\n"), "Bad Gateway");
        assert_eq!(error_message(b""), "(no message)");
        let long = "x".repeat(1000);
        assert_eq!(
            error_message(long.as_bytes()).chars().count(),
            MAX_QUOTED + 1
        );
    }

    #[test]
    fn only_the_matching_404_is_missing() {
        let refused = |code, message: &str| ApiError::Refused {
            endpoint: "e".into(),
            code,
            message: message.into(),
            hint: "",
        };
        assert!(refused(404, "no metrics for \"train\"").is_missing("no metrics"));
        assert!(!refused(404, "no run abc").is_missing("no metrics"));
        assert!(!refused(503, "no metrics for \"train\"").is_missing("no metrics"));
    }
}
