//! A configuration served over HTTP (by the operator's or the local runtime's API), fetched
//! every [`URL_POLL_INTERVAL`]; a changed, valid document is published.
//!
//! Until the first fetch succeeds the router has no configuration and answers 503; a failed
//! fetch later keeps the configuration in force. Only `http://` URLs: the router's client
//! has no TLS (the API is reached inside the cluster or on loopback). In a cluster the API
//! authenticates its callers: with a token file (the pod's projected service-account token)
//! every fetch carries it as a bearer token, read again each time, since the kubelet rotates it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::http::uri::{Scheme, Uri};
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use tokio::sync::watch;

use super::{ConfigUpdates, ProblemLog, publish_if_changed};
use crate::config::RouterConfig;
use crate::error::RouterError;
use crate::upstream::{HttpClient, client};

/// How often the URL is fetched.
pub const URL_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// A fetch that takes longer than this has failed.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// A configuration is a few kilobytes; a larger answer is not one.
const CONFIG_BODY_LIMIT: usize = 4 * 1024 * 1024;

/// Every valid configuration served at `url`, from the first successful fetch on.
pub fn watch_url(url: &str) -> Result<ConfigUpdates, RouterError> {
    watch_url_every(url, None, URL_POLL_INTERVAL)
}

/// [`watch_url`], fetching every `interval`, with the bearer token in `token_file` if any.
pub fn watch_url_every(
    url: &str,
    token_file: Option<PathBuf>,
    interval: Duration,
) -> Result<ConfigUpdates, RouterError> {
    let uri: Uri = url.parse().map_err(|e| RouterError::InvalidConfig {
        origin: "--config-url".into(),
        detail: format!("{url:?} is not a URL: {e}"),
    })?;
    if uri.scheme() != Some(&Scheme::HTTP) || uri.authority().is_none() {
        return Err(RouterError::InvalidConfig {
            origin: "--config-url".into(),
            detail: format!("{url:?}: only http://HOST[:PORT]/PATH URLs are supported"),
        });
    }
    let (updates, receiver) = watch::channel(None);
    tokio::spawn(poll(uri, token_file, interval, updates));
    Ok(receiver)
}

async fn poll(
    uri: Uri,
    token_file: Option<PathBuf>,
    interval: Duration,
    updates: watch::Sender<Option<RouterConfig>>,
) {
    let client = client();
    let mut problems = ProblemLog::default();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = updates.closed() => return,
        }
        match fetch(&client, &uri, token_file.as_deref()).await {
            Ok(config) => {
                problems.solved();
                publish_if_changed(&updates, config);
            }
            Err(e) => problems.problem(e.to_string()),
        }
    }
}

async fn fetch(
    client: &HttpClient,
    uri: &Uri,
    token_file: Option<&Path>,
) -> Result<RouterConfig, RouterError> {
    let failed = |detail: String| RouterError::FetchConfig {
        url: uri.to_string(),
        detail,
    };
    let mut request = Request::new(Full::new(Bytes::new()));
    *request.method_mut() = Method::GET;
    *request.uri_mut() = uri.clone();
    request.headers_mut().insert(
        header::ACCEPT,
        HeaderValue::from_static("application/json, application/yaml"),
    );
    if let Some(path) = token_file {
        let token = tokio::fs::read_to_string(path)
            .await
            .map_err(|e| failed(format!("reading the token {}: {e}", path.display())))?;
        let value = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
            .map_err(|_| failed(format!("{} does not hold a token", path.display())))?;
        request.headers_mut().insert(header::AUTHORIZATION, value);
    }
    let response = tokio::time::timeout(FETCH_TIMEOUT, client.request(request))
        .await
        .map_err(|_| failed(format!("no answer within {FETCH_TIMEOUT:?}")))?
        .map_err(|e| failed(e.to_string()))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), CONFIG_BODY_LIMIT)
        .collect()
        .await
        .map_err(|e| failed(format!("reading the answer: {e}")))?
        .to_bytes();
    if status != StatusCode::OK {
        let text = String::from_utf8_lossy(&body);
        return Err(failed(format!(
            "answered {status}: {}",
            text.chars().take(200).collect::<String>()
        )));
    }
    let text = std::str::from_utf8(&body).map_err(|e| failed(format!("not UTF-8: {e}")))?;
    RouterConfig::from_text(text, &uri.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_plain_http_urls_are_accepted() {
        for url in ["https://api:8443/x", "not a url", "/relative"] {
            let err = watch_url(url).unwrap_err();
            assert!(err.is_invalid_input(), "{url}: {err}");
        }
        assert!(watch_url("http://127.0.0.1:1/api/v1/endpoints/e/router").is_ok());
    }
}
