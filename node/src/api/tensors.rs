//! Tensors on demand: a safetensors file's header read once (and cached), then one tensor
//! served by name, fetching only the shard pieces it covers.
//!
//! - `GET .../files/{path}/tensors[?names=a,b]`: the tensors (dtype, shape, byte span).
//! - `GET .../files/{path}/tensors/{name}`: one tensor's bytes (a `Range` counts within it).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use cairn_erasure::FileEntry;

use super::body::{file_body, file_bytes, file_head, requested_range};
use super::*;
use crate::safetensors::{self, Header, PREFIX_LEN, Tensor};

/// Bytes of header JSON the cache holds at most (oldest dropped first).
const CACHE_BYTES: u64 = 64 << 20;
/// Path segment that introduces a file's tensors.
const TENSORS: &str = "/tensors";
/// Most tensor names one listing may filter by.
const MAX_NAMES: usize = 4096;

/// Headers parsed at once (each may take about 16x its JSON in memory for a moment).
static PARSING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// Parsed headers of recently read safetensors files, by (root, path). Bounded by the
/// JSON bytes they came from.
#[derive(Default)]
pub struct HeaderCache {
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    map: HashMap<(Cid, String), Arc<Header>>,
    order: VecDeque<(Cid, String)>,
    bytes: u64,
}

impl HeaderCache {
    fn get(&self, root: &Cid, path: &str) -> Option<Arc<Header>> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.map.get(&(*root, path.to_owned())).cloned()
    }

    fn insert(&self, root: Cid, path: String, header: Arc<Header>) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let key = (root, path);
        if inner.map.contains_key(&key) {
            return;
        }
        inner.bytes += header.header_len;
        inner.map.insert(key.clone(), header);
        inner.order.push_back(key);
        while inner.bytes > CACHE_BYTES {
            let Some(old) = inner.order.pop_front() else {
                break;
            };
            if let Some(h) = inner.map.remove(&old) {
                inner.bytes -= h.header_len;
            }
        }
    }
}

/// `<file>/tensors` or `<file>/tensors/<name>` of a manifest: the file, and the tensor name
/// (`None`: the listing). The file must exist; a name may contain `/`.
pub(super) fn split_path<'m>(
    m: &'m Manifest,
    path: &str,
) -> Option<(&'m FileEntry, Option<String>)> {
    if let Some(f) = path.strip_suffix(TENSORS).and_then(|file| m.file(file)) {
        return Some((f, None));
    }
    let marker = format!("{TENSORS}/");
    path.match_indices(&marker).find_map(|(i, _)| {
        let name = &path[i + marker.len()..];
        (!name.is_empty())
            .then(|| m.file(&path[..i]))
            .flatten()
            .map(|f| (f, Some(name.to_owned())))
    })
}

#[derive(Serialize)]
struct TensorEntry<'a> {
    name: &'a str,
    #[serde(flatten)]
    tensor: &'a Tensor,
    size: u64,
}

#[derive(Serialize)]
struct Listing<'a> {
    file: &'a str,
    /// Bytes of header JSON; tensor data starts at `8 + header_len`.
    header_len: u64,
    metadata: &'a std::collections::BTreeMap<String, String>,
    /// In file order.
    tensors: Vec<TensorEntry<'a>>,
}

#[derive(Deserialize)]
struct ListQuery {
    /// Comma-separated tensor names to list (default: all).
    names: Option<String>,
}

/// The listing or one tensor.
pub(super) async fn answer<B: Backend>(
    s: &AppState<B>,
    (root, m, complete): (Cid, &Manifest, bool),
    file: FileEntry,
    tensor: Option<String>,
    method: &Method,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
) -> Result<Response, ApiError> {
    let header = header_of(s, root, m, complete, &file).await?;
    let Some(name) = tensor else {
        let Query(q) = Query::<ListQuery>::try_from_uri(uri)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_params", e.to_string()))?;
        let wanted: Option<std::collections::HashSet<&str>> =
            q.names.as_deref().map(|n| n.split(',').collect());
        if wanted.as_ref().is_some_and(|w| w.len() > MAX_NAMES) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_params",
                format!("at most {MAX_NAMES} names may be listed at once"),
            ));
        }
        let mut tensors: Vec<TensorEntry> = Vec::new();
        for (name, t) in &header.tensors {
            if wanted.as_ref().is_none_or(|w| w.contains(name.as_str())) {
                tensors.push(TensorEntry {
                    name,
                    tensor: t,
                    size: t.end - t.start,
                });
            }
        }
        if let Some(w) = &wanted
            && let Some(missing) = w.iter().find(|n| !header.tensors.contains_key(**n))
        {
            return Err(no_tensor(&file, missing));
        }
        tensors.sort_by_key(|t| t.tensor.start);
        return Ok(Json(Listing {
            file: &file.path,
            header_len: header.header_len,
            metadata: &header.metadata,
            tensors,
        })
        .into_response());
    };
    let t = header
        .tensors
        .get(&name)
        .ok_or_else(|| no_tensor(&file, &name))?;
    let len = t.end - t.start;
    let range = requested_range(headers, len)?;
    let etag = format!("\"{}:{}\"", file.hash().to_hex(), t.start);
    let builder = file_head(len, range, &etag)
        .header("x-tensor-dtype", &t.dtype)
        .header(
            "x-tensor-shape",
            t.shape
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(","),
        );
    if *method == Method::HEAD {
        return builder
            .body(Body::empty())
            .map_err(|e| ApiError::internal(e.to_string()));
    }
    let (a, b) = range.unwrap_or((0, len));
    let body = file_body(s, m, complete, file, t.start + a, t.start + b).await?;
    builder
        .body(body)
        .map_err(|e| ApiError::internal(e.to_string()))
}

fn no_tensor(file: &FileEntry, name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "tensor_not_found",
        format!("{} has no tensor {name:?}", file.path),
    )
}

/// The file's safetensors header: from the cache, else read (prefix, then the JSON) and
/// parsed.
async fn header_of<B: Backend>(
    s: &AppState<B>,
    root: Cid,
    m: &Manifest,
    complete: bool,
    file: &FileEntry,
) -> Result<Arc<Header>, ApiError> {
    if let Some(h) = s.tensors.get(&root, &file.path) {
        return Ok(h);
    }
    let invalid = |e: safetensors::HeaderError| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_safetensors",
            format!("{} is not a safetensors file: {e}", file.path),
        )
    };
    let prefix_end = PREFIX_LEN.min(file.size);
    let prefix = file_bytes(s, m, complete, file.clone(), 0, prefix_end).await?;
    let len = safetensors::header_len(&prefix, file.size).map_err(invalid)?;
    let _parsing = PARSING
        .acquire()
        .await
        .map_err(|_| ApiError::internal("node is shutting down"))?;
    let json = file_bytes(s, m, complete, file.clone(), PREFIX_LEN, PREFIX_LEN + len).await?;
    let size = file.size;
    let parsed = blocking(move || Ok(safetensors::parse(&json, size))).await?;
    let header = Arc::new(parsed.map_err(invalid)?);
    s.tensors
        .insert(root, file.path.clone(), Arc::clone(&header));
    Ok(header)
}
