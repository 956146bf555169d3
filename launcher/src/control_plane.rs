//! The worker's client of the control-plane API: where it is, the bearer token, and a `PUT`
//! or `GET` of JSON with a few retries. Used by the launcher (reports, checkpoint pointers)
//! and by training (metrics).

use std::time::Duration;

/// The service-account token Kubernetes mounts into pods.
pub const POD_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// Tries per request; a report is worth a second and third attempt.
const TRIES: u32 = 3;

/// `$TOUCAN_API` without a trailing slash, when set.
pub fn base_url() -> Option<String> {
    std::env::var("TOUCAN_API")
        .ok()
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('/').to_string())
}

/// `$TOUCAN_API_TOKEN`, else the pod's service-account token.
pub fn token() -> Option<String> {
    std::env::var("TOUCAN_API_TOKEN")
        .ok()
        .or_else(|| std::fs::read_to_string(POD_TOKEN).ok())
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

pub use toucan_core::url::path_segment;

/// An HTTP agent with a bounded time per request that treats 4xx/5xx as errors.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(true)
        .build()
        .new_agent()
}

/// Why a request to the control-plane API did not succeed.
#[derive(Debug)]
pub enum RequestError {
    /// The API answered with this 4xx status: trying again would not help.
    Refused { url: String, status: u16 },
    /// The API could not be reached, or answered 5xx, every try.
    Failed(String),
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestError::Refused { url, status } => write!(f, "{url}: HTTP {status}"),
            RequestError::Failed(message) => f.write_str(message),
        }
    }
}

/// `PUT`s `body` as JSON, retrying failures that may pass (connection errors and 5xx).
pub fn put_json<T: serde::Serialize>(
    agent: &ureq::Agent,
    url: &str,
    token: Option<&str>,
    body: &T,
) -> Result<(), RequestError> {
    with_retries(url, || {
        let mut request = agent.put(url);
        if let Some(token) = token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        request.send_json(body).map(drop)
    })
}

/// `GET`s JSON, retrying as [`put_json`] does; `None` when the API answers 404.
pub fn get_json<T: serde::de::DeserializeOwned>(
    agent: &ureq::Agent,
    url: &str,
    token: Option<&str>,
) -> Result<Option<T>, RequestError> {
    let found = with_retries(url, || {
        let mut request = agent.get(url);
        if let Some(token) = token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        request.call()?.body_mut().read_json::<T>()
    });
    match found {
        Ok(value) => Ok(Some(value)),
        Err(RequestError::Refused { status: 404, .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

fn with_retries<T>(
    url: &str,
    mut send: impl FnMut() -> Result<T, ureq::Error>,
) -> Result<T, RequestError> {
    let mut last = String::new();
    for attempt in 0..TRIES {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(200 << attempt));
        }
        match send() {
            Ok(value) => return Ok(value),
            Err(ureq::Error::StatusCode(status)) if (400..500).contains(&status) => {
                return Err(RequestError::Refused {
                    url: url.to_string(),
                    status,
                });
            }
            Err(e) => last = format!("{url}: {e}"),
        }
    }
    Err(RequestError::Failed(last))
}
