//! Sending one try to one replica, over a pooled HTTP/1 client (hyper-util's), and saying
//! how it went: an answer (whose body still streams), no answer (refused, reset, closed before
//! the headers), or no answer in time.
//!
//! The proxy, the shadow and the health probe all go through here, so they share connections
//! and the rule of which headers are the hop's and not the request's (RFC 9110 §7.6.1).

use std::time::Duration;

use axum::http::header::{self, HeaderMap, HeaderName};
use axum::http::uri::{PathAndQuery, Scheme, Uri};
use axum::http::{Method, Request, Response};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::replicas::Replica;

/// A connection that does not open in this time is a refused replica.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle connections to a replica are closed after this.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The client every try goes through.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// How one try went.
#[derive(Debug)]
pub enum TryOutcome {
    /// The replica answered; the body may still be streaming.
    Answered(Response<Incoming>),
    /// No answer: the connection was refused (`refused`) or broke before the headers.
    Failed { detail: String, refused: bool },
    /// No response headers within the try's timeout.
    TimedOut,
}

/// A pooled HTTP/1 client for plain `http://` replicas.
pub fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_timer(TokioTimer::new())
        .build(connector)
}

/// A request as the router forwards it: buffered, so it can be sent again (a retry) or
/// twice (a mirrored copy). Clones share the body's bytes.
#[derive(Debug, Clone)]
pub struct Forward {
    pub method: Method,
    pub path_and_query: PathAndQuery,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Sends `request` to `replica`, waiting at most `timeout` for the response headers.
pub async fn send(
    client: &HttpClient,
    replica: &Replica,
    request: Forward,
    timeout: Duration,
) -> TryOutcome {
    let uri = Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(replica.authority().clone())
        .path_and_query(request.path_and_query)
        .build();
    let uri = match uri {
        Ok(uri) => uri,
        Err(e) => {
            return TryOutcome::Failed {
                detail: format!("building the URL for {}: {e}", replica.url()),
                refused: false,
            };
        }
    };
    let mut outgoing = Request::new(Full::new(request.body));
    *outgoing.method_mut() = request.method;
    *outgoing.uri_mut() = uri;
    *outgoing.headers_mut() = request.headers;
    match tokio::time::timeout(timeout, client.request(outgoing)).await {
        Ok(Ok(response)) => TryOutcome::Answered(response),
        Ok(Err(e)) => TryOutcome::Failed {
            detail: format!("{}: {}", replica.url(), error_chain(&e)),
            refused: e.is_connect(),
        },
        Err(_) => TryOutcome::TimedOut,
    }
}

/// The request headers to forward: all but the hop's own, `Host` (the client sets the
/// replica's) and `Expect` (the router has read the whole body already).
pub fn forwarded_headers(original: &HeaderMap) -> HeaderMap {
    let mut headers = original.clone();
    remove_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    headers.remove(header::EXPECT);
    headers
}

/// Removes the headers that belong to one connection, not to the message (RFC 9110 §7.6.1),
/// the ones `Connection` names included.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// An error and its sources on one line: hyper-util's own message alone is often just
/// "client error (Connect)".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn hop_by_hop_headers_and_host_are_not_forwarded() {
        let mut original = HeaderMap::new();
        for (name, value) in [
            ("host", "router:8080"),
            ("expect", "100-continue"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("content-type", "application/json"),
            ("x-request-id", "abc"),
        ] {
            original.append(name, HeaderValue::from_static(value));
        }
        let forwarded = forwarded_headers(&original);
        let mut names: Vec<&str> = forwarded.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, vec!["content-type", "x-request-id"]);
    }
}
