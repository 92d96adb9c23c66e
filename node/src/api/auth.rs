//! Who may call what. Reads (manifests, files, stat, status, metrics) are public; writes
//! (put, delete, manifest import: they spend the node's money on deals or drop data under
//! deals) need the node's bearer token. On a loopback API, a request naming a Host that is not
//! the node's own is refused, so a web page cannot reach the API through DNS rebinding.

use std::net::SocketAddr;
use std::path::Path;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cairn_storage::Backend;

use super::{ApiError, AppState};

/// Name of the generated token's file in the data directory.
pub const TOKEN_FILE: &str = "api.token";
/// Random bytes in a generated token (hex-encoded in the file).
const TOKEN_BYTES: usize = 32;

/// The API's access rules.
#[derive(Debug, Clone)]
pub struct Access {
    token: String,
    /// Host names accepted; `None`: any (the API does not listen on loopback).
    hosts: Option<Vec<String>>,
}

/// Reading or creating the token file failed.
#[derive(Debug, thiserror::Error)]
#[error("api token at {path}: {reason}")]
pub struct TokenError {
    pub path: String,
    pub reason: String,
}

/// The token in `<data_dir>/api.token`, created (mode 0600) with fresh random bytes on first
/// start.
pub fn load_or_create_token(data_dir: &Path) -> Result<String, TokenError> {
    let path = data_dir.join(TOKEN_FILE);
    let err = |reason: String| TokenError {
        path: path.display().to_string(),
        reason,
    };
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_owned()),
        Ok(_) => return Err(err("the file is empty".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e.to_string())),
    }
    let mut raw = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut raw).map_err(|e| err(format!("no randomness: {e}")))?;
    let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    crate::private_file::write_private(&path, token.as_bytes()).map_err(|e| err(e.to_string()))?;
    tracing::info!(path = %path.display(), "created the API token");
    Ok(token)
}

impl Access {
    /// Rules for an API listening on `listen` with `token`; `extra_hosts` are accepted as
    /// well as the loopback names.
    pub fn new(token: String, listen: SocketAddr, extra_hosts: &[String]) -> Self {
        let hosts = listen.ip().is_loopback().then(|| {
            let mut h: Vec<String> = ["localhost", "127.0.0.1", "::1"]
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
            h.push(listen.ip().to_string());
            h.extend(extra_hosts.iter().map(|s| s.to_ascii_lowercase()));
            h
        });
        Self { token, hosts }
    }

    fn token_ok(&self, presented: &str) -> bool {
        // Constant time in the token's length: no early exit on the first differing byte.
        let (a, b) = (self.token.as_bytes(), presented.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    fn host_ok(&self, host: Option<&HeaderValue>) -> bool {
        let Some(allowed) = &self.hosts else {
            return true;
        };
        // HTTP/1.0 clients may send no Host; browsers always do.
        let Some(host) = host else { return true };
        let Ok(host) = host.to_str() else {
            return false;
        };
        allowed.iter().any(|a| *a == host_name(host))
    }
}

/// The name part of a Host header: `[::1]:7070` -> `::1`, `localhost:7070` -> `localhost`.
fn host_name(host: &str) -> String {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(n, _)| n)
    };
    name.to_ascii_lowercase()
}

/// Refuse requests that name a foreign Host (every route).
pub async fn check_host<B: Backend>(
    State(s): State<AppState<B>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if !s.access.host_ok(req.headers().get(header::HOST)) {
        s.metrics
            .http
            .refused
            .get_or_create(&crate::metrics::ReasonLabels {
                reason: "foreign_host",
            })
            .inc();
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("?")
            .to_owned();
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "foreign_host",
            format!("Host {host:?} is not this node's name; add it to node.allowed_hosts if it is"),
        )
        .into_response();
    }
    next.run(req).await
}

/// Extractor of write handlers: the request carries the node's token.
pub struct Writer;

impl<B: Backend> FromRequestParts<AppState<B>> for Writer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        s: &AppState<B>,
    ) -> Result<Self, Self::Rejection> {
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match presented {
            Some(t) if s.access.token_ok(t) => Ok(Writer),
            other => {
                s.metrics
                    .http
                    .refused
                    .get_or_create(&crate::metrics::ReasonLabels {
                        reason: "unauthorized",
                    })
                    .inc();
                let why = if other.is_some() {
                    "the API token is wrong"
                } else {
                    "this route changes the node's data and needs its API token"
                };
                let mut r = ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    format!(
                        "{why}: send `Authorization: Bearer <token>` (the token is in \
                         <data_dir>/{TOKEN_FILE}, or CAIRN_API_TOKEN)"
                    ),
                )
                .into_response();
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                Err(r)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_tokens() {
        let a = Access::new(
            "secret".into(),
            "127.0.0.1:7070".parse().expect("addr"),
            &["node.lan".into()],
        );
        let ok = |h: &'static str| a.host_ok(Some(&HeaderValue::from_static(h)));
        assert!(ok("127.0.0.1:7070"));
        assert!(ok("localhost:7070"));
        assert!(ok("LOCALHOST"));
        assert!(ok("[::1]:7070"));
        assert!(ok("node.lan:7070"));
        assert!(!ok("evil.example:7070"));
        assert!(!ok("127.0.0.1.evil.example"));
        assert!(a.host_ok(None));
        let public = Access::new("t".into(), "0.0.0.0:7070".parse().expect("addr"), &[]);
        assert!(public.host_ok(Some(&HeaderValue::from_static("anything"))));
        assert!(a.token_ok("secret"));
        assert!(!a.token_ok("secreT"));
        assert!(!a.token_ok("secret2"));
        assert!(!a.token_ok(""));
    }

    #[test]
    fn token_file_is_created_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tmp");
        let t = load_or_create_token(dir.path()).expect("create");
        assert_eq!(t.len(), 2 * TOKEN_BYTES);
        assert_eq!(load_or_create_token(dir.path()).expect("read"), t);
        let mode = std::fs::metadata(dir.path().join(TOKEN_FILE))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let other = tempfile::tempdir().expect("tmp");
        assert_ne!(load_or_create_token(other.path()).expect("create"), t);
    }
}
