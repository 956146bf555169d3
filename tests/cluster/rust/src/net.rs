//! Loopback ports and plain HTTP requests, for tests that start servers as child processes.

use std::io::{Read, Write};

use anyhow::{Context, Result};

/// A TCP port free on 127.0.0.1 now (the OS picks it), for a server the test starts next.
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr().context("the bound address")?.port())
}

/// `N` distinct TCP ports free on 127.0.0.1 now: all are held at once while they are drawn, so
/// two servers started next never get the same one.
pub fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0"))
        .collect::<Result<Vec<_>>>()?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr().context("the bound address")?.port();
    }
    Ok(ports)
}

/// A plain HTTP/1.0 GET on loopback: status and body (0 when nothing answers).
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    http("GET", port, path, None, None)
}

/// A plain HTTP/1.0 request on loopback with a JSON body and a bearer token: status and body
/// (0 when nothing answers, so that a test can wait for a server to come up).
pub fn http(
    method: &str,
    port: u16,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let body = body.unwrap_or("");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut response = String::new();
    // A response cut short still has its status line; the test judges the rest.
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_drawn_together_differ() {
        let [a, b, c] = free_ports::<3>().unwrap_or_default();
        assert!(a != 0 && a != b && b != c && a != c, "{a} {b} {c}");
    }

    #[test]
    fn nothing_listening_answers_zero() {
        let port = free_port().unwrap_or(1);
        assert_eq!(http_get(port, "/"), (0, String::new()));
    }
}
