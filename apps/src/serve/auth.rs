//! Who may use the server: a bearer token (`--api-key`) on every `/v1` route, and a refusal to
//! listen beyond the loopback interface without one (unless `--insecure`).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Result;
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::openai::ApiError;

/// Middleware: when the server has a key, the request must carry `Authorization: Bearer <key>`.
pub async fn require_api_key(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if let Some(key) = &state.api_key {
        let given = request.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::trim);
        let token = given.and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
        match (given, token) {
            (None, _) => {
                return ApiError::unauthorized(
                    "You didn't provide an API key: send it as a bearer token (Authorization: Bearer YOUR_KEY)",
                )
                .into_response();
            }
            (Some(_), None) => {
                return ApiError::unauthorized("The Authorization header must be of the form 'Bearer YOUR_KEY'").into_response();
            }
            (Some(_), Some(token)) if !same_secret(token.trim().as_bytes(), key.as_bytes()) => {
                return ApiError::unauthorized("Incorrect API key provided").into_response();
            }
            _ => {}
        }
    }
    next.run(request).await
}

/// Compares without stopping at the first difference (no timing hint about the key's prefix).
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Refuses addresses other machines can reach when there is no key, unless `insecure`.
pub fn check_exposure(host: &str, addrs: &[SocketAddr], api_key: Option<&str>, insecure: bool) -> Result<()> {
    let exposed: Vec<String> = addrs.iter().filter(|a| !a.ip().is_loopback()).map(|a| a.ip().to_string()).collect();
    if exposed.is_empty() || api_key.is_some() || insecure {
        if !exposed.is_empty() && api_key.is_none() {
            eprintln!("warning: serving on {host} without an API key (--insecure): anyone who can reach it can use the model");
        }
        return Ok(());
    }
    anyhow::bail!(
        "refusing to serve on {host} ({}) without an API key: other machines could reach it. \
         Set --api-key KEY (or LLMFS_API_KEY), listen on 127.0.0.1, or pass --insecure to serve it open",
        exposed.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_is_open_without_a_key() {
        let local: SocketAddr = "127.0.0.1:8000".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8000".parse().unwrap();
        assert!(check_exposure("127.0.0.1", &[local], None, false).is_ok());
        let error = check_exposure("0.0.0.0", &[any], None, false).unwrap_err().to_string();
        assert!(error.contains("--api-key"), "{error}");
        assert!(check_exposure("0.0.0.0", &[any], Some("k"), false).is_ok());
        assert!(check_exposure("0.0.0.0", &[any], None, true).is_ok());
        assert!(same_secret(b"abc", b"abc") && !same_secret(b"abc", b"abd") && !same_secret(b"ab", b"abc"));
    }
}
