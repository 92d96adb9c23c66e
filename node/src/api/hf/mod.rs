//! A HuggingFace Hub compatible endpoint under `/hf`: with `HF_ENDPOINT=http://node/hf`,
//! `huggingface_hub`, `hf download` and `from_pretrained` download checkpoints from Cairn.
//!
//! Repositories are names of the node's name table (`cairn put --name org/model`), or, on a
//! node with a chain, `org/model` names recorded on chain by whoever put them (the newest
//! [`MAX_REVISIONS_SHOWN`](super::provenance::MAX_REVISIONS_SHOWN) revisions); a
//! revision is `main` (the newest root of the name), a 40-hex commit id derived from a root
//! ([`paths::commit_id`]), or a root CID of the name's history. Files are read through the
//! same verified path as the v1 routes. No Xet header or field is ever sent, so clients stay
//! on plain HTTP. Errors carry `X-Error-Code` (`RepoNotFound`, `RevisionNotFound`,
//! `EntryNotFound`), which is what the client reads.

pub mod paths;

use axum::http::Uri;
use cairn_storage::NameEntry;

use super::body::{file_body, file_head, requested_range};
use super::*;
use paths::{Call, PathError, Reading, commit_id, file_oid, hub_time, is_commit_id};

/// Where the endpoint is mounted.
pub const PREFIX: &str = "/hf";
/// Longest error message sent in a header.
const MAX_HEADER_MESSAGE: usize = 200;

/// An answer the Hub's client understands.
#[derive(Debug)]
pub(super) struct HfError {
    status: StatusCode,
    /// `X-Error-Code`; absent for errors the Hub has no code for.
    code: Option<&'static str>,
    message: String,
    /// `X-Repo-Commit`: a missing file at a known commit is cached as missing.
    commit: Option<String>,
    content_range: Option<String>,
}

impl HfError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: Some(code),
            message: message.into(),
            commit: None,
            content_range: None,
        }
    }

    fn repo(repo: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "RepoNotFound",
            format!("repository {repo:?} is not a name on this node"),
        )
    }

    /// A path that is none of the Hub's calls (no error code: the client reports it as is).
    fn no_route(uri: &Uri) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: None,
            message: format!("this node does not serve {}", uri.path()),
            commit: None,
            content_range: None,
        }
    }

    fn entry(commit: &str, message: String) -> Self {
        let mut e = Self::new(StatusCode::NOT_FOUND, "EntryNotFound", message);
        e.commit = Some(commit.to_owned());
        e
    }
}

impl From<ApiError> for HfError {
    fn from(e: ApiError) -> Self {
        Self {
            status: e.status,
            code: None,
            message: e.message,
            commit: None,
            content_range: e.content_range,
        }
    }
}

impl From<PathError> for HfError {
    fn from(e: PathError) -> Self {
        let why = match e {
            PathError::Encoding => "the path is not percent-encoded utf-8",
            PathError::DotSegment => "'.' and '..' are not allowed in a file path",
        };
        Self {
            status: StatusCode::BAD_REQUEST,
            code: None,
            message: why.into(),
            commit: None,
            content_range: None,
        }
    }
}

impl IntoResponse for HfError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(message = %self.message, "hf request failed");
        }
        let mut resp = (self.status, Json(json!({"error": self.message}))).into_response();
        let h = resp.headers_mut();
        let header_safe: String = self
            .message
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '?'
                }
            })
            .take(MAX_HEADER_MESSAGE)
            .collect();
        let pairs = [
            ("x-error-code", self.code.map(str::to_owned)),
            ("x-error-message", Some(header_safe)),
            ("x-repo-commit", self.commit),
            ("content-range", self.content_range),
        ];
        for (name, value) in pairs {
            if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
                h.insert(name, v);
            }
        }
        resp
    }
}

/// A repository at a revision.
struct Resolved {
    repo: String,
    root: Cid,
    commit: String,
    /// When the name was set to this root.
    set: u64,
}

/// The first reading whose repository is a name here, at its revision.
async fn resolve<B: Backend>(
    s: &AppState<B>,
    readings: Vec<Reading>,
) -> Result<(Resolved, Call), HfError> {
    let first = readings.first().map(|r| r.repo.clone()).unwrap_or_default();
    for r in readings {
        if cairn_storage::check_name(&r.repo).is_err() {
            continue;
        }
        let store = s.store.clone();
        let repo = r.repo.clone();
        let mut history = blocking(move || Ok(store.name_history(&repo)?)).await?;
        // Not named here: the name on chain, if the node is on one.
        let mut on_chain = None;
        if history.is_empty() {
            match chain_history(s, &r.repo).await? {
                Some((publisher, h)) => {
                    history = h;
                    on_chain = Some(publisher);
                }
                None => continue,
            }
        }
        let rev = match &r.call {
            Call::Info { rev } => rev.clone(),
            Call::Tree { rev, .. } | Call::Resolve { rev, .. } => Some(rev.clone()),
        };
        let entry = at_revision(&history, rev.as_deref()).ok_or_else(|| {
            HfError::new(
                StatusCode::NOT_FOUND,
                "RevisionNotFound",
                format!(
                    "{:?} has no revision {:?} (use main, a commit id or a root cid)",
                    r.repo,
                    rev.unwrap_or_default()
                ),
            )
        })?;
        let set = match (on_chain, &s.publisher) {
            (Some(publisher), Some(p)) => chain_time(&p.chain, publisher, &entry.root).await?,
            _ => entry.set,
        };
        return Ok((
            Resolved {
                repo: r.repo,
                root: entry.root,
                commit: commit_id(&entry.root),
                set,
            },
            r.call,
        ));
    }
    Err(HfError::repo(&first))
}

fn chain_failed(e: crate::chain::ChainError) -> HfError {
    super::info::chain_failed(e).into()
}

/// A name's newest revisions on chain, oldest first, and their publisher (None: not a
/// name on chain, or the node has no chain). Their times are filled in when one is chosen.
async fn chain_history<B: Backend>(
    s: &AppState<B>,
    repo: &str,
) -> Result<Option<(alloy::primitives::Address, Vec<NameEntry>)>, HfError> {
    let Some(p) = &s.publisher else {
        return Ok(None);
    };
    if crate::chain::provenance::name_keys(repo).is_err() {
        return Ok(None);
    }
    let h = p
        .chain
        .name_history(repo, super::provenance::MAX_REVISIONS_SHOWN)
        .await
        .map_err(chain_failed)?;
    let Some(publisher) = h.publisher.filter(|_| !h.roots.is_empty()) else {
        return Ok(None);
    };
    let entries = h
        .roots
        .iter()
        .map(|w| NameEntry {
            root: crate::chain::word_root(w),
            set: 0,
        })
        .collect();
    Ok(Some((publisher, entries)))
}

/// When `publisher` recorded `root` (the revision's time), in Unix seconds.
async fn chain_time(
    chain: &crate::chain::Chain,
    publisher: alloy::primitives::Address,
    root: &Cid,
) -> Result<u64, HfError> {
    let record = chain
        .record(publisher, crate::chain::root_word(root))
        .await
        .map_err(chain_failed)?;
    match record {
        Some(r) => chain.block_time(r.block).await.map_err(chain_failed),
        None => Ok(0),
    }
}

/// The revision `rev` of a name's history (oldest first): the newest for `main`.
fn at_revision<'h>(history: &'h [NameEntry], rev: Option<&str>) -> Option<&'h NameEntry> {
    match rev {
        None | Some("main" | "refs/heads/main") => history.last(),
        Some(r) if is_commit_id(r) => history.iter().rev().find(|e| commit_id(&e.root) == r),
        Some(r) => {
            let root = cairn_erasure::parse_cid(r).ok()?;
            history.iter().rev().find(|e| e.root == root)
        }
    }
}

/// The manifest at a resolved revision.
async fn manifest_at<B: Backend>(
    s: &AppState<B>,
    r: &Resolved,
) -> Result<(Manifest, bool), HfError> {
    find_manifest(s, r.root).await.map_err(|e| {
        let mut e = HfError::from(e);
        // The name is here but its checkpoint is not reachable now: not a client mistake.
        if e.status == StatusCode::NOT_FOUND {
            e.status = StatusCode::SERVICE_UNAVAILABLE;
            e.message = format!("{} ({}): {}", r.repo, r.root, e.message);
        }
        e
    })
}

#[derive(Deserialize)]
struct TreeQuery {
    recursive: Option<String>,
}

/// `GET /hf/api/models/{repo}[/revision/{rev} | /tree/{rev}[/{path}]]`.
pub(super) async fn api<B: Backend>(
    State(s): State<AppState<B>>,
    uri: Uri,
) -> Result<Response, HfError> {
    let raw = uri
        .path()
        .strip_prefix(PREFIX)
        .and_then(|p| p.strip_prefix("/api/models/"))
        .unwrap_or_default();
    let readings = paths::parse_api(raw)?;
    if readings.is_empty() {
        return Err(HfError::no_route(&uri));
    }
    let (r, call) = resolve(&s, readings).await?;
    let (m, _) = manifest_at(&s, &r).await?;
    match call {
        Call::Info { .. } => Ok(Json(info(&r, &m)).into_response()),
        Call::Tree { path, .. } => {
            let Query(q) = Query::<TreeQuery>::try_from_uri(&uri).map_err(|e| {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_params", e.to_string())
            })?;
            let recursive = matches!(q.recursive.as_deref(), Some("true" | "True" | "1"));
            let entries = paths::tree(&m, &r.commit, &path, recursive).ok_or_else(|| {
                HfError::entry(&r.commit, format!("{} has no folder {path:?}", r.repo))
            })?;
            let mut resp = Json(entries).into_response();
            if let Ok(v) = HeaderValue::from_str(&r.commit) {
                resp.headers_mut().insert("x-repo-commit", v);
            }
            Ok(resp)
        }
        Call::Resolve { .. } => Err(ApiError::internal("resolve reached the api route").into()),
    }
}

/// Repository info as the Hub answers it (the fields every client version reads).
fn info(r: &Resolved, m: &Manifest) -> serde_json::Value {
    let when = hub_time(r.set);
    let siblings: Vec<serde_json::Value> = m
        .files
        .iter()
        .map(|f| json!({"rfilename": f.path, "size": f.size, "blobId": file_oid(f)}))
        .collect();
    json!({
        "_id": r.commit,
        "id": r.repo,
        "modelId": r.repo,
        "author": r.repo.split_once('/').map(|(org, _)| org),
        "sha": r.commit,
        "lastModified": when,
        "createdAt": when,
        "private": false,
        "disabled": false,
        "gated": false,
        "downloads": 0,
        "likes": 0,
        "tags": ["cairn"],
        "cairn_root": r.root.to_string(),
        "usedStorage": m.total_size(),
        "siblings": siblings,
    })
}

/// `GET` and `HEAD /hf/{repo}/resolve/{rev}/{path}`.
pub(super) async fn resolve_file<B: Backend>(
    State(s): State<AppState<B>>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, HfError> {
    let raw = uri.path().strip_prefix(PREFIX).unwrap_or_default();
    let readings = paths::parse_resolve(raw)?;
    if readings.is_empty() {
        return Err(HfError::no_route(&uri));
    }
    let (r, call) = resolve(&s, readings).await?;
    let Call::Resolve { path, .. } = call else {
        return Err(ApiError::internal("api call reached the resolve route").into());
    };
    let (m, complete) = manifest_at(&s, &r).await?;
    let file = m
        .file(&path)
        .cloned()
        .ok_or_else(|| HfError::entry(&r.commit, format!("{} has no file {path:?}", r.repo)))?;
    // A zero-byte file is answered whole (200, no Content-Range) whatever the Range asks.
    let range = if file.size == 0 {
        None
    } else {
        requested_range(&headers, file.size).map_err(|e| {
            let mut e = HfError::from(e);
            e.commit = Some(r.commit.clone());
            e
        })?
    };
    let builder = file_head(file.size, range, &format!("\"{}\"", file_oid(&file)))
        .header("x-repo-commit", &r.commit);
    if method == Method::HEAD {
        return builder
            .body(Body::empty())
            .map_err(|e| ApiError::internal(e.to_string()).into());
    }
    let (start, end) = range.unwrap_or((0, file.size));
    let body = file_body(&s, &m, complete, file, start, end).await?;
    builder
        .body(body)
        .map_err(|e| ApiError::internal(e.to_string()).into())
}
