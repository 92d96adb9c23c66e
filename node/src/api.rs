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
        }
    }
}

/// Routes of the v1 API.
pub fn router<B: Backend>(state: AppState<B>) -> Router {
    Router::new()
        .route("/v1/status", get(status::<B>))
        .route("/v1/checkpoints", post(put_checkpoint::<B>).get(list::<B>))
        .route(
            "/v1/checkpoints/{cid}",
            get(manifest::<B>).delete(unpin::<B>),
        )
        .route("/v1/checkpoints/{cid}/stat", get(stat::<B>))
        .route("/v1/checkpoints/{cid}/lineage", get(lineage::<B>))
        .route("/v1/shards/{cid}", get(shard_status::<B>))
        .route("/v1/checkpoints/{cid}/files/{*path}", get(get_file::<B>))
        .route(
            "/v1/manifests",
            post(import_manifest::<B>).layer(DefaultBodyLimit::max(MAX_MANIFEST_LEN)),
        )
        .route("/metrics", get(metrics::<B>))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            track::<B>,
        ))
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
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

/// One provenance record, as the lineage route answers it.
#[derive(Debug, Serialize, Deserialize)]
pub struct LineageEntry {
    pub root: String,
    pub publisher: String,
    pub parent: Option<String>,
    pub meta_hash: String,
    pub block: u64,
}

/// The checkpoint's provenance from chain: itself, its parent, ... back to its base.
async fn lineage<B: Backend>(
    State(s): State<AppState<B>>,
    Path(cid): Path<String>,
) -> Result<Json<Vec<LineageEntry>>, ApiError> {
    let root = root_of(&cid)?;
    let Some(p) = &s.publisher else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_chain",
            "this node is not connected to a chain (chain.rpc_url is empty)",
        ));
    };
    let records = p
        .lineage(&root)
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "chain_error", e.to_string()))?;
    if records.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{root} has no provenance record on chain"),
        ));
    }
    Ok(Json(
        records
            .into_iter()
            .map(|r| LineageEntry {
                root: crate::chain::word_root(&r.root).to_string(),
                publisher: r.publisher.to_string(),
                parent: r.parent.map(|p| crate::chain::word_root(&p).to_string()),
                meta_hash: r.meta_hash.to_string(),
                block: r.block,
            })
            .collect(),
    ))
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

#[derive(Serialize)]
struct StatusBody {
    version: &'static str,
    uptime_secs: u64,
    used_bytes: u64,
    capacity_bytes: u64,
    shards: u64,
    corrupt_reads: u64,
    checkpoints: usize,
    /// Uploads being processed now.
    active_puts: usize,
    /// This node's libp2p identity (absent without a network).
    peer_id: Option<String>,
    /// Peers in the routing table, and with an open connection.
    peers: usize,
    connected_peers: usize,
    p2p_listen: Vec<String>,
    /// Shard bytes received from and sent to peers since start.
    net_bytes_in: u64,
    net_bytes_out: u64,
    /// Peer answers that failed verification since start.
    bad_peer_answers: u64,
    /// Shard bytes received from each peer since start (peer id -> bytes).
    sources: std::collections::BTreeMap<String, u64>,
}

async fn status<B: Backend>(State(s): State<AppState<B>>) -> Result<Json<StatusBody>, ApiError> {
    let store = s.store.clone();
    let checkpoints = blocking(move || Ok(store.list()?.len())).await?;
    let st = s.store.stats();
    let mut body = StatusBody {
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: s.started.elapsed().as_secs(),
        used_bytes: st.used_bytes,
        capacity_bytes: st.capacity_bytes,
        shards: st.shards,
        corrupt_reads: st.corrupt_reads,
        checkpoints,
        active_puts: s.max_puts.saturating_sub(s.put_permits.available_permits()),
        peer_id: None,
        peers: 0,
        connected_peers: 0,
        p2p_listen: Vec::new(),
        net_bytes_in: 0,
        net_bytes_out: 0,
        bad_peer_answers: 0,
        sources: std::collections::BTreeMap::new(),
    };
    if let Some(c) = &s.cluster {
        body.peer_id = Some(c.net.peer_id().to_string());
        body.peers = c.net.peers().await.len();
        body.connected_peers = c.net.connected().await;
        body.p2p_listen = c
            .net
            .listen_addrs()
            .await
            .iter()
            .map(ToString::to_string)
            .collect();
        let t = c.transfers.stats();
        body.net_bytes_in = t.metrics.bytes_total("in");
        body.net_bytes_out = t.metrics.bytes_total("out");
        body.bad_peer_answers = t.metrics.bad_peer_answers.get();
        body.sources = t
            .sources()
            .into_iter()
            .map(|(p, n)| (p.to_string(), n))
            .collect();
    }
    Ok(Json(body))
}

/// Query of an upload.
#[derive(Debug, Deserialize)]
pub struct PutQuery {
    /// File name for a single-file upload (required unless the body is a tar archive).
    path: Option<String>,
    /// Human name recorded with the pin.
    name: Option<String>,
    k: Option<u8>,
    m: Option<u8>,
    stripe_size: Option<u64>,
    /// Root CID of the checkpoint this one derives from (recorded on chain).
    parent: Option<String>,
}

/// Answer to a successful upload.
#[derive(Debug, Serialize, Deserialize)]
pub struct PutAnswer {
    pub root: String,
    pub files: usize,
    pub size: u64,
    pub stripes: u64,
    pub shards: u64,
    /// Provenance record and deals, when the node is on a chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<crate::chain::publish::ChainReport>,
}

async fn put_checkpoint<B: Backend>(
    State(s): State<AppState<B>>,
    Query(q): Query<PutQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<PutAnswer>, ApiError> {
    let d = s.default_layout;
    let layout = Layout::new(
        q.k.unwrap_or(u8::try_from(d.k()).expect("k <= 64")),
        q.m.unwrap_or(u8::try_from(d.m()).expect("m <= 64")),
        q.stripe_size.unwrap_or(d.stripe_size()),
    )
    .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_params", e.to_string()))?;
    let stripe_memory = layout.max_shard_len() * layout.total() as u64;
    if stripe_memory > MAX_STRIPE_MEMORY {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_params",
            format!(
                "k={}, m={}, stripe_size={} needs {stripe_memory} bytes per stripe in memory; \
                 at most {MAX_STRIPE_MEMORY} are allowed",
                layout.k(),
                layout.m(),
                layout.stripe_size()
            ),
        ));
    }
    let parent = match &q.parent {
        Some(p) => Some(root_of(p)?),
        None => None,
    };
    let is_tar = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-tar"));
    let path = match (&q.path, is_tar) {
        (_, true) => None,
        (Some(p), false) => Some(p.clone()),
        (None, false) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_params",
                "a single-file upload needs ?path=<file name>; send a folder as application/x-tar",
            ));
        }
    };
    let name = q
        .name
        .clone()
        .or_else(|| q.path.clone())
        .unwrap_or_default();
    let permit = Arc::clone(&s.put_permits)
        .acquire_owned()
        .await
        .map_err(|_| ApiError::internal("node is shutting down"))?;
    let stream = futures_util::stream::unfold(Some(body.into_data_stream()), |state| async move {
        let mut body = state?;
        match tokio::time::timeout(CLIENT_IDLE_TIMEOUT, body.next()).await {
            Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(body))),
            Ok(Some(Err(e))) => Some((Err(std::io::Error::other(e)), None)),
            Ok(None) => None,
            Err(_) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no upload data for {} s", CLIENT_IDLE_TIMEOUT.as_secs()),
                )),
                None,
            )),
        }
    });
    let reader = SyncIoBridge::new(StreamReader::new(Box::pin(stream)));
    let store = s.store.clone();
    let started = Instant::now();
    let cluster = match &s.cluster {
        Some(c) if c.is_clustered().await => Some(c.clone()),
        _ => None,
    };
    let rt = tokio::runtime::Handle::current();
    let plan = s.publisher.is_some();
    let (root, manifest, commitments) = blocking(move || {
        let _permit = permit;
        let upload = match path {
            Some(path) => Upload::File { path, reader },
            None => Upload::Tar(reader),
        };
        let mut stored = 0u64;
        let mut next_log = 1u64 << 30;
        let progress = std::cell::RefCell::new((&mut stored, &mut next_log));
        let report = |n: u64| {
            let mut p = progress.borrow_mut();
            *p.0 += n;
            if *p.0 >= *p.1 {
                tracing::info!(stored_bytes = *p.0, "upload in progress");
                *p.1 += 1 << 30;
            }
        };
        let mut planner = crate::chain::deals::DealPlanner::default();
        Ok(match cluster {
            Some(c) => c.put(
                &rt,
                layout,
                upload,
                &name,
                &report,
                plan.then_some(&mut planner),
            )?,
            None => {
                let (root, manifest) = ingest(&store, layout, upload, &name, &report)?;
                (root, manifest, Default::default())
            }
        })
    })
    .await?;
    let chain = match &s.publisher {
        Some(p) => {
            // A single node holds every shard itself: its commitment comes from its store.
            let own = if commitments.is_empty() {
                let (store, m) = (s.store.clone(), manifest.clone());
                blocking(move || {
                    crate::chain::deals::held_data(&store, &root, &m)
                        .map(|h| h.commitment())
                        .map_err(|e| ApiError::internal(e.to_string()))
                })
                .await
                .map(Some)
                .map_err(|e| e.message)
            } else {
                Ok(None)
            };
            let net = s.cluster.as_ref().map(|c| &c.net);
            let name = q
                .name
                .clone()
                .or_else(|| q.path.clone())
                .unwrap_or_default();
            Some(
                p.publish(net, &root, parent.as_ref(), &name, commitments, own)
                    .await,
            )
        }
        None => None,
    };
    let size = manifest.total_size();
    s.metrics.http.put_bytes.inc_by(size);
    let stripes: u64 = manifest.files.iter().map(|f| f.stripes.len() as u64).sum();
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(%root, size, stripes, secs, "checkpoint stored");
    Ok(Json(PutAnswer {
        root: root.to_string(),
        files: manifest.files.len(),
        size,
        stripes,
        shards: stripes * layout.total() as u64,
        chain,
    }))
}

async fn import_manifest<B: Backend>(
    State(s): State<AppState<B>>,
    body: Bytes,
) -> Result<Json<PutAnswer>, ApiError> {
    let manifest = Manifest::decode(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_manifest", e.to_string()))?;
    let store = s.store.clone();
    blocking(move || {
        let mut session = store.begin_put();
        let mut missing = Vec::new();
        for cid in manifest.shard_cids() {
            if !session
                .claim(cid)
                .map_err(|e| ApiError::internal(e.to_string()))?
            {
                missing.push(cid.to_string());
            }
        }
        if !missing.is_empty() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "missing_shards",
                format!(
                    "{} shards of this manifest are not stored here, e.g. {}",
                    missing.len(),
                    missing[0]
                ),
            ));
        }
        let root = session
            .commit(&manifest, "imported", 0)
            .map_err(|e: CommitError| ApiError::internal(e.to_string()))?;
        let stripes: u64 = manifest.files.iter().map(|f| f.stripes.len() as u64).sum();
        Ok(Json(PutAnswer {
            root: root.to_string(),
            files: manifest.files.len(),
            size: manifest.total_size(),
            stripes,
            shards: manifest.shard_cids().count() as u64,
            chain: None,
        }))
    })
    .await
}

#[derive(Serialize)]
struct ListEntry {
    root: String,
    name: String,
    created: u64,
    files: usize,
    size: u64,
    /// False on a cluster member that holds only its share of the shards.
    complete: bool,
}

async fn list<B: Backend>(State(s): State<AppState<B>>) -> Result<Json<Vec<ListEntry>>, ApiError> {
    let store = s.store.clone();
    let list = blocking(move || Ok(store.list()?)).await?;
    Ok(Json(
        list.into_iter()
            .map(|c| ListEntry {
                root: c.root.to_string(),
                name: c.name,
                created: c.created,
                files: c.files,
                size: c.size,
                complete: c.complete,
            })
            .collect(),
    ))
}

/// The manifest as JSON (or as DAG-CBOR with `Accept: application/vnd.ipld.dag-cbor`).
async fn manifest<B: Backend>(
    State(s): State<AppState<B>>,
    Path(cid): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let root = root_of(&cid)?;
    let wants_cbor = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("dag-cbor"));
    let (m, _) = find_manifest(&s, root).await?;
    if wants_cbor {
        let bytes = m.encode().map_err(|e| ApiError::internal(e.to_string()))?;
        return Ok((
            [(header::CONTENT_TYPE, "application/vnd.ipld.dag-cbor")],
            bytes,
        )
            .into_response());
    }
    Ok(Json(manifest_json(&root, &m)).into_response())
}

/// Whether this node holds a shard, verified: `{"cid", "status": "ok"|"missing"|"corrupt"}`.
async fn shard_status<B: Backend>(
    State(s): State<AppState<B>>,
    Path(cid): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let cid = cairn_erasure::parse_shard_cid(&cid)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "malformed_cid", e.to_string()))?;
    let store = s.store.clone();
    let status = blocking(move || {
        store
            .check_shard(&cid)
            .map_err(|e| ApiError::internal(e.to_string()))
    })
    .await?;
    let (status, detail) = match status {
        ShardStatus::Ok => ("ok", None),
        ShardStatus::Missing => ("missing", None),
        ShardStatus::Corrupt(r) => ("corrupt", Some(r)),
    };
    Ok(Json(
        json!({"cid": cid.to_string(), "status": status, "detail": detail}),
    ))
}

/// JSON view of a manifest (CIDs as strings, hashes as hex).
pub fn manifest_json(root: &Cid, m: &Manifest) -> serde_json::Value {
    json!({
        "root": root.to_string(),
        "version": m.version,
        "codec": m.codec,
        "k": m.k,
        "m": m.m,
        "stripe_size": m.stripe_size,
        "group_size": m.group_size,
        "files": m.files.iter().map(|f| json!({
            "path": f.path,
            "size": f.size,
            "blake3": f.hash().to_hex().to_string(),
            "stripes": f.stripes.iter().map(|s| s.iter().map(|c| c.to_string()).collect::<Vec<_>>()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

async fn unpin<B: Backend>(
    State(s): State<AppState<B>>,
    Path(cid): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let root = root_of(&cid)?;
    let store = s.store.clone();
    let freed = blocking(move || {
        store.unpin(&root).map_err(|e| match e {
            UnpinError::NotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
            }
            e => ApiError::internal(e.to_string()),
        })
    })
    .await?;
    Ok(Json(
        json!({"root": root.to_string(), "freed_shards": freed}),
    ))
}

#[derive(Deserialize)]
struct StatQuery {
    /// Read and hash every shard instead of only checking presence.
    #[serde(default)]
    verify: bool,
}

/// A shard's state here: verified (`verify`) or only checked for presence.
fn local_shard_state<B: Backend>(
    store: &Store<B>,
    cid: &Cid,
    verify: bool,
) -> Result<ShardStatus, ApiError> {
    let internal = |e: cairn_storage::BackendError| ApiError::internal(e.to_string());
    if verify {
        store.check_shard(cid).map_err(internal)
    } else if store.shard_present(cid).map_err(internal)? {
        Ok(ShardStatus::Ok)
    } else {
        Ok(ShardStatus::Missing)
    }
}

async fn stat<B: Backend>(
    State(s): State<AppState<B>>,
    Path(cid): Path<String>,
    Query(q): Query<StatQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let root = root_of(&cid)?;
    let store = s.store.clone();
    blocking(move || {
        let (m, complete) = store.manifest_entry(&root)?;
        if !complete {
            // A cluster member holds only its share: report that share, not a health that
            // would count every other node's shards as missing.
            let mut held = 0u64;
            let mut corrupt = Vec::new();
            for cid in m.shard_cids() {
                let st = local_shard_state(&store, cid, q.verify)?;
                match st {
                    ShardStatus::Ok => held += 1,
                    ShardStatus::Corrupt(_) => corrupt.push(cid.to_string()),
                    ShardStatus::Missing => {}
                }
            }
            return Ok(Json(json!({
                "root": root.to_string(),
                "health": if corrupt.is_empty() { "share" } else { "share_damaged" },
                "complete": false,
                "verified": q.verify,
                "files": m.files.len(),
                "size": m.total_size(),
                "k": m.k, "m": m.m, "stripe_size": m.stripe_size,
                "held_shards": held,
                "corrupt_shards": corrupt,
            })));
        }
        let k = usize::from(m.k);
        let (mut ok_total, mut missing_total, mut corrupt_total) = (0u64, 0u64, 0u64);
        let mut worst = "healthy";
        let mut damaged = Vec::new();
        for f in &m.files {
            for (si, shards) in f.stripes.iter().enumerate() {
                let (mut missing, mut corrupt) = (Vec::new(), Vec::new());
                for (i, cid) in shards.iter().enumerate() {
                    let st = local_shard_state(&store, cid, q.verify)?;
                    match st {
                        ShardStatus::Ok => ok_total += 1,
                        ShardStatus::Missing => missing.push(i),
                        ShardStatus::Corrupt(_) => corrupt.push(i),
                    }
                }
                missing_total += missing.len() as u64;
                corrupt_total += corrupt.len() as u64;
                let bad = missing.len() + corrupt.len();
                if bad > 0 {
                    let state = if shards.len() - bad < k { "unrecoverable" } else { "degraded" };
                    if state == "unrecoverable" || worst == "healthy" {
                        worst = state;
                    }
                    damaged.push(json!({"path": f.path, "stripe": si, "state": state, "missing": missing, "corrupt": corrupt}));
                }
            }
        }
        let stripes: usize = m.files.iter().map(|f| f.stripes.len()).sum();
        Ok(Json(json!({
            "root": root.to_string(),
            "health": worst,
            "complete": true,
            "verified": q.verify,
            "files": m.files.len(),
            "size": m.total_size(),
            "k": m.k, "m": m.m, "stripe_size": m.stripe_size,
            "stripes": stripes,
            "shards": {"ok": ok_total, "missing": missing_total, "corrupt": corrupt_total},
            "damaged_stripes": damaged,
        })))
    })
    .await
}

/// Parse a `Range` header against a file of `size` bytes. `Ok(None)`: serve the whole file
/// (no header, or several ranges, which we answer with the whole file as RFC 9110 allows).
fn parse_range(value: &str, size: u64) -> Result<Option<(u64, u64)>, ()> {
    // Other units are ignored (RFC 9110 §14.2): the whole file is served.
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 || size == 0 {
            return Err(());
        }
        (size.saturating_sub(n), size)
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end = if b.is_empty() {
            size
        } else {
            b.parse::<u64>()
                .map_err(|_| ())?
                .saturating_add(1)
                .min(size)
        };
        if start >= size || start >= end {
            return Err(());
        }
        (start, end)
    };
    Ok(Some(range))
}

async fn get_file<B: Backend>(
    State(s): State<AppState<B>>,
    Path((cid, path)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let root = root_of(&cid)?;
    let (m, complete) = find_manifest(&s, root).await?;
    let layout = m.layout().map_err(|e| ApiError::internal(e.to_string()))?;
    let file = m.file(&path).cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "file_not_found",
            format!("{root} has no file {path:?}"),
        )
    })?;
    let size = file.size;
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => None,
        Some(v) => parse_range(v, size).map_err(|()| {
            let mut e = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                format!("range {v:?} does not fit a file of {size} bytes"),
            );
            e.content_range = Some(format!("bytes */{size}"));
            e
        })?,
    };
    let (start, end) = range.unwrap_or((0, size));
    let mut builder = Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, format!("\"{}\"", file.hash().to_hex()))
        .header(header::CONTENT_LENGTH, end - start);
    builder = match range {
        Some(_) => builder.status(StatusCode::PARTIAL_CONTENT).header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{size}", end.saturating_sub(1)),
        ),
        None => builder.status(StatusCode::OK),
    };
    if method == Method::HEAD {
        return builder
            .body(Body::empty())
            .map_err(|e| ApiError::internal(e.to_string()));
    }
    if let (false, Some(cluster)) = (complete, &s.cluster) {
        let mut rx = cluster.read(layout, file, start, end);
        // Fail before the first byte when the first piece cannot be had; later failures cut
        // the body short (a client resuming from there then gets the error as JSON).
        let first = match rx.recv().await {
            Some(Ok(b)) => Some(b),
            Some(Err(e)) => return Err(e.into()),
            None => None,
        };
        let stream = futures_util::stream::unfold((first, rx), |(first, mut rx)| async move {
            if let Some(b) = first {
                return Some((Ok(b), (None, rx)));
            }
            match rx.recv().await? {
                Ok(b) => Some((Ok(b), (None, rx))),
                Err(e) => {
                    tracing::error!(error = %e, "cluster read failed mid-stream; aborting response");
                    Some((Err(std::io::Error::other(e.to_string())), (None, rx)))
                }
            }
        });
        return builder
            .body(Body::from_stream(count_sent(stream, &s.metrics)))
            .map_err(|e| ApiError::internal(e.to_string()));
    }
    // Fail before the first byte when a stripe is known to be beyond repair.
    let store = s.store.clone();
    let pre = file.clone();
    blocking(move || Ok(FileReader::new(&store, layout).preflight(&pre, start, end)?)).await?;

    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let store = s.store.clone();
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let reader = FileReader::new(&store, layout);
        // Stops when the client goes away or stops reading for too long.
        let send = |item| {
            runtime.block_on(async {
                matches!(
                    tokio::time::timeout(CLIENT_IDLE_TIMEOUT, tx.send(item)).await,
                    Ok(Ok(()))
                )
            })
        };
        let result = reader.read(&file, start, end, &mut |bytes| send(Ok(Bytes::from(bytes))));
        if let Err(e) = result {
            tracing::error!(%root, path = %file.path, error = %e, "read failed mid-stream; aborting response");
            // The client sees the body end early; nothing unverified was sent.
            send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    builder
        .body(Body::from_stream(count_sent(stream, &s.metrics)))
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// Count the file bytes a response body sends.
fn count_sent<S>(stream: S, m: &Metrics) -> impl futures_util::Stream<Item = S::Item> + use<S>
where
    S: futures_util::Stream<Item = Result<Bytes, std::io::Error>>,
{
    let sent = m.http.get_bytes.clone();
    stream.inspect(move |r| {
        if let Ok(b) = r {
            sent.inc_by(b.len() as u64);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok(Some((0, 10))));
        assert_eq!(parse_range("bytes=90-", 100), Ok(Some((90, 100))));
        assert_eq!(parse_range("bytes=-10", 100), Ok(Some((90, 100))));
        assert_eq!(parse_range("bytes=-1000", 100), Ok(Some((0, 100))));
        assert_eq!(parse_range("bytes=5-1000", 100), Ok(Some((5, 100))));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(parse_range("bytes=100-", 100), Err(()));
        assert_eq!(parse_range("bytes=9-3", 100), Err(()));
        assert_eq!(parse_range("bytes=-0", 100), Err(()));
        assert_eq!(parse_range("items=0-1", 100), Ok(None));
        assert_eq!(parse_range("bytes=-5", 0), Err(()));
        assert_eq!(parse_range("bytes=0-0", 0), Err(()));
    }
}
