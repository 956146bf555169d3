//! The worker's client of the control-plane API: where it is, the bearer token, and a `PUT`
//! of JSON with a few retries. Used by the launcher (reports) and by training (metrics).

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

/// `PUT`s `body` as JSON, retrying failures that may pass (connection errors and 5xx).
pub fn put_json<T: serde::Serialize>(
    agent: &ureq::Agent,
    url: &str,
    token: Option<&str>,
    body: &T,
) -> Result<(), String> {
    let mut last = String::new();
    for attempt in 0..TRIES {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(200 << attempt));
        }
        let mut request = agent.put(url);
        if let Some(token) = token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        match request.send_json(body) {
            Ok(_) => return Ok(()),
            Err(ureq::Error::StatusCode(code)) if (400..500).contains(&code) => {
                return Err(format!("{url}: HTTP {code}"));
            }
            Err(e) => last = format!("{url}: {e}"),
        }
    }
    Err(last)
}
