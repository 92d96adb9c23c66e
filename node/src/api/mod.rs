//! The node's HTTP API (axum). Handlers parse and answer; the data paths run on blocking
//! threads (`pipeline`), connected by bounded channels.
//!
//! Errors are JSON: `{"error": {"code": "<stable code>", "message": "<human text>"}}`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use cairn_erasure::manifest::MAX_MANIFEST_LEN;
use cairn_erasure::{Cid, Layout, Manifest, ManifestError, parse_cid};
use cairn_storage::{Backend, CommitError, PutError, ReadError, ShardStatus, Store, UnpinError};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::cluster::Cluster;
use crate::metrics::{Metrics, RouteLabels, RouteOnly};
use crate::pipeline::{FileReader, GetError, IngestError, Upload, ingest};

pub mod auth;
mod body;
mod delete;
mod health;
pub mod hf;
mod info;
pub mod names;
mod provenance;
mod read;
pub mod routes;
pub mod tensors;
mod uploads;
mod write;

pub use provenance::{LineageEntry, NameLog};
pub use uploads::{UploadLocks, UploadStatus};
pub use write::{PutAnswer, PutQuery};

/// Most memory one stripe of an upload may need (data and parity shards); bounds what a client
/// can make the node allocate by choosing `k`, `m` and `stripe_size`.
pub const MAX_STRIPE_MEMORY: u64 = 256 << 20;

/// How long an upload may send nothing, or a download read nothing, before it is dropped (its
/// upload slot or reader thread is then free for others).
pub const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Shared state of the HTTP handlers.
pub struct AppState<B: Backend> {
    pub store: Store<B>,
    /// Coding used for uploads that do not choose their own.
    pub default_layout: Layout,
    /// Limits concurrent uploads (each holds about 1.5 stripes of memory).
    pub put_permits: Arc<Semaphore>,
    /// Size of `put_permits`.
    pub max_puts: usize,
    pub started: Instant,
    /// The node's network; `None` runs the API over the local store alone.
    pub cluster: Option<Cluster<B>>,
    /// Provenance and deals for puts through this node; `None` without a chain.
    pub publisher: Option<crate::chain::publish::Publisher>,
    pub metrics: Metrics,
    /// Who may call what (token, Host names).
    pub access: Arc<auth::Access>,
    /// Safetensors headers read recently (tensor reads).
    pub tensors: Arc<tensors::HeaderCache>,
    /// The node's background jobs and their status.
    pub jobs: crate::worker::Jobs,
    /// Resumable puts under way, one per upload key.
    pub uploads: Arc<uploads::UploadLocks>,
}

impl<B: Backend> Clone for AppState<B> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            default_layout: self.default_layout,
            put_permits: Arc::clone(&self.put_permits),
            max_puts: self.max_puts,
            started: self.started,
            cluster: self.cluster.clone(),
            publisher: self.publisher.clone(),
            metrics: self.metrics.clone(),
            access: Arc::clone(&self.access),
            tensors: Arc::clone(&self.tensors),
            jobs: self.jobs.clone(),
            uploads: Arc::clone(&self.uploads),
        }
    }
}

/// The node's HTTP API: the v1 routes, the HF-compatible ones under `/hf`, and metrics
/// ([`routes::table`] lists them; `GET /v1/openapi.json` describes them).
pub fn router<B: Backend>(state: AppState<B>) -> Router {
    routes::table::<B>()
        .router
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            track::<B>,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::check_host::<B>,
        ))
        .fallback(no_route)
        .layer(axum::middleware::from_fn(log_request))
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// Every request, at debug level (`RUST_LOG=cairn_node::api=debug`): method, path, status.
async fn log_request(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let resp = next.run(req).await;
    tracing::debug!(%method, %path, status = resp.status().as_u16(), "http request");
    resp
}

/// A path no route serves.
async fn no_route(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        format!("no route serves {method} {}", uri.path()),
    )
}

/// Count and time every request by route (the matched pattern, not the raw path).
async fn track<B: Backend>(
    State(s): State<AppState<B>>,
    path: axum::extract::MatchedPath,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let route = path.as_str().to_owned();
    let method = req.method().as_str().to_owned();
    let started = Instant::now();
    let resp = next.run(req).await;
    let m = &s.metrics.http;
    m.duration
        .get_or_create(&RouteOnly {
            route: route.clone(),
            method: method.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    m.requests
        .get_or_create(&RouteLabels {
            route,
            method,
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}

/// Prometheus metrics (OpenMetrics text).
async fn metrics<B: Backend>(State(s): State<AppState<B>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// `Content-Range` of a 416 answer.
    content_range: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            content_range: None,
        }
    }

    fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, message = %self.message, "request failed");
        }
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(v) = self
            .content_range
            .and_then(|v| HeaderValue::from_str(&v).ok())
        {
            resp.headers_mut().insert(header::CONTENT_RANGE, v);
        }
        resp
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "not_found", e.to_string()),
            ReadError::Corrupt { .. } => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "corrupt", e.to_string())
            }
            _ => Self::internal(e.to_string()),
        }
    }
}

impl From<GetError> for ApiError {
    fn from(e: GetError) -> Self {
        match e {
            GetError::Store(e) => e.into(),
            GetError::Backend(e) => Self::internal(e.to_string()),
            e => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "unrecoverable",
                e.to_string(),
            ),
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        let msg = e.to_string();
        match e {
            IngestError::Body(_) => Self::new(StatusCode::BAD_REQUEST, "upload_incomplete", msg),
            IngestError::Archive(_)
            | IngestError::EntryType { .. }
            | IngestError::DuplicatePath(_) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_archive", msg)
            }
            IngestError::Empty => Self::new(StatusCode::BAD_REQUEST, "empty_upload", msg),
            IngestError::Manifest(ManifestError::Path { .. } | ManifestError::File { .. }) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_path", msg)
            }
            IngestError::Put(PutError::StoreFull { .. }) => {
                Self::new(StatusCode::INSUFFICIENT_STORAGE, "store_full", msg)
            }
            IngestError::TooFewNodes { .. } => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "too_few_nodes", msg)
            }
            IngestError::Placement(_) => {
                Self::new(StatusCode::BAD_GATEWAY, "placement_failed", msg)
            }
            IngestError::NotMember(_) => Self::new(StatusCode::FORBIDDEN, "not_member", msg),
            IngestError::Commit(CommitError::StoreFull { .. }) => {
                Self::new(StatusCode::INSUFFICIENT_STORAGE, "store_full", msg)
            }
            _ => Self::internal(msg),
        }
    }
}

/// A checkpoint's manifest, and whether every shard is held here. Falls back to the cluster
/// when this node has no record of it.
async fn find_manifest<B: Backend>(
    s: &AppState<B>,
    root: Cid,
) -> Result<(Manifest, bool), ApiError> {
    match &s.cluster {
        Some(c) => Ok(c.manifest(&root).await?),
        None => {
            let store = s.store.clone();
            blocking(move || Ok(store.manifest_entry(&root)?)).await
        }
    }
}

fn root_of(text: &str) -> Result<Cid, ApiError> {
    parse_cid(text)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "malformed_cid", e.to_string()))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("worker failed: {e}")))?
}
