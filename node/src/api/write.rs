//! Writes: uploads, manifest imports and keeps (unpins are in `delete`).

use super::*;
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
    /// Whose record of `parent` this one derives from (an account, 0x...; default: this
    /// node's, which publishes its puts).
    parent_publisher: Option<String>,
    /// Also point this name (`org/model`) of the node's name table at the new root.
    tag: Option<String>,
    /// Make the put resumable under this key (64 hex digits, chosen by the client from what
    /// it uploads): if it is cut off, a later put with the same key goes on from the last
    /// placed stripe.
    resume: Option<String>,
    /// The body starts at this byte of the upload (a resumed put; see `GET /v1/uploads/{key}`).
    offset: Option<u64>,
}

/// Answer to a successful upload.
#[derive(Debug, Serialize, Deserialize)]
pub struct PutAnswer {
    pub root: String,
    pub files: usize,
    pub size: u64,
    pub stripes: u64,
    pub shards: u64,
    /// The name now pointing at `root` (when the upload asked for one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Provenance record and deals, when the node is on a chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<crate::chain::publish::ChainReport>,
}

pub(super) async fn put_checkpoint<B: Backend>(
    _: auth::Writer,
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
    let parent_publisher = match &q.parent_publisher {
        Some(a) => Some(a.parse::<alloy::primitives::Address>().map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_params",
                format!("parent_publisher {a:?} is not an account (0x and 40 hex digits): {e}"),
            )
        })?),
        None => None,
    };
    if parent_publisher.is_some() && parent.is_none() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_params",
            "parent_publisher names whose record of the parent to follow: it needs parent",
        ));
    }
    // A bad name is refused before any byte is read, not after the upload.
    if let Some(t) = &q.tag {
        cairn_storage::check_name(t)?;
    }
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
    let params = crate::cluster::resume::PutParams {
        k: u8::try_from(layout.k()).expect("k <= 64"),
        m: u8::try_from(layout.m()).expect("m <= 64"),
        stripe_size: layout.stripe_size(),
        path: path.clone(),
        name: name.clone(),
    };
    let (resumable, running) =
        match uploads::begin(&s, q.resume.as_deref(), q.offset.unwrap_or(0), params).await? {
            Some((r, guard)) => (Some(r), Some(guard)),
            None => (None, None),
        };
    // The put runs as its own task: a client that goes away drops this request, while the
    // put goes on to record the stripe it was placing, or to commit, publish and name what
    // it stored (a later run of the same put then finds it done).
    let checked = CheckedPut {
        layout,
        parent,
        parent_publisher,
        path,
        name,
        resumable,
        running,
    };
    let task = tokio::spawn(run_put(s, q, body, checked));
    task.await
        .map_err(|e| ApiError::internal(format!("the put task failed: {e}")))?
        .map(Json)
}

/// A put's request, checked.
struct CheckedPut {
    layout: Layout,
    parent: Option<Cid>,
    parent_publisher: Option<alloy::primitives::Address>,
    /// The single file's name (`None`: a tar archive).
    path: Option<String>,
    /// Recorded with the pin.
    name: String,
    resumable: Option<crate::cluster::Resumable>,
    /// This put's hold on its upload key.
    running: Option<tokio::sync::OwnedMutexGuard<()>>,
}

/// The put itself, once its request is checked.
async fn run_put<B: Backend>(
    s: AppState<B>,
    q: PutQuery,
    body: Body,
    checked: CheckedPut,
) -> Result<PutAnswer, ApiError> {
    let CheckedPut {
        layout,
        parent,
        parent_publisher,
        path,
        name,
        resumable,
        running,
    } = checked;
    // A second run of this put waits until this one has placed, committed and published.
    let _running = running;
    let permit = Arc::clone(&s.put_permits)
        .acquire_owned()
        .await
        .map_err(|_| ApiError::internal("node is shutting down"))?;
    let start = (body.into_data_stream(), Pace::default());
    let received = s.metrics.http.put_body_bytes.clone();
    let stream = futures_util::stream::unfold(Some(start), move |state| {
        let received = received.clone();
        async move {
            let (mut body, mut pace) = state?;
            let waiting = Instant::now();
            let next = tokio::time::timeout(CLIENT_IDLE_TIMEOUT, body.next()).await;
            let waited = waiting.elapsed();
            match next {
                Ok(Some(Ok(chunk))) => match pace.add(waited, {
                    received.inc_by(chunk.len() as u64);
                    chunk.len() as u64
                }) {
                    Ok(()) => Some((Ok(chunk), Some((body, pace)))),
                    Err(slow) => Some((
                        Err(std::io::Error::new(std::io::ErrorKind::TimedOut, slow)),
                        None,
                    )),
                },
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
                crate::cluster::PutWith {
                    planner: plan.then_some(&mut planner),
                    resumable,
                },
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
            let net = s.cluster.as_ref().map(|c| (&c.net, &c.membership));
            let name = q
                .name
                .clone()
                .or_else(|| q.path.clone())
                .unwrap_or_default();
            let me = crate::chain::ProofChain::me(&p.chain);
            let parent = parent.as_ref().map(|c| (parent_publisher.unwrap_or(me), c));
            Some(
                p.publish(
                    net,
                    &root,
                    parent,
                    &name,
                    q.tag.as_deref(),
                    commitments,
                    own,
                )
                .await,
            )
        }
        None => None,
    };
    if let Some(t) = q.tag.clone() {
        let store = s.store.clone();
        let now = crate::pipeline::now_unix();
        blocking(move || Ok(store.set_name(&t, &root, now)?)).await?;
        tracing::info!(name = %q.tag.as_deref().unwrap_or(""), %root, "name set");
    }
    let size = manifest.total_size();
    s.metrics.http.put_bytes.inc_by(size);
    let stripes: u64 = manifest.files.iter().map(|f| f.stripes.len() as u64).sum();
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(%root, size, stripes, secs, "checkpoint stored");
    Ok(PutAnswer {
        root: root.to_string(),
        files: manifest.files.len(),
        size,
        stripes,
        shards: stripes * layout.total() as u64,
        tag: q.tag,
        chain,
    })
}

pub(super) async fn import_manifest<B: Backend>(
    _: auth::Writer,
    State(s): State<AppState<B>>,
    body: Bytes,
) -> Result<Json<PutAnswer>, ApiError> {
    let manifest = Manifest::decode(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_manifest", e.to_string()))?;
    let store = s.store.clone();
    blocking(move || {
        let deleted = |root: String| {
            ApiError::new(
                StatusCode::GONE,
                "deleted",
                format!("{root} was deleted here by its publisher: it is not pinned again"),
            )
        };
        if let Ok((_, root)) = manifest.encode_with_cid()
            && store
                .tombstone(&root)
                .map_err(|e| ApiError::internal(e.to_string()))?
                .is_some()
        {
            return Err(deleted(root.to_string()));
        }
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
            .map_err(|e: CommitError| match e {
                CommitError::Deleted(root) => deleted(root),
                e => ApiError::internal(e.to_string()),
            })?;
        let stripes: u64 = manifest.files.iter().map(|f| f.stripes.len() as u64).sum();
        Ok(Json(PutAnswer {
            root: root.to_string(),
            files: manifest.files.len(),
            size: manifest.total_size(),
            stripes,
            shards: manifest.shard_cids().count() as u64,
            tag: None,
            chain: None,
        }))
    })
    .await
}

/// Keep a share this node holds whether or not a deal pays for it (the operator's pin).
pub(super) async fn keep<B: Backend>(
    _: auth::Writer,
    State(s): State<AppState<B>>,
    Path(cid): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let root = root_of(&cid)?;
    let store = s.store.clone();
    let before = blocking(move || Ok(store.keep(&root)?)).await?;
    Ok(Json(
        json!({"root": root.to_string(), "kept": true, "was_kept": before}),
    ))
}

/// Least body bytes an upload must deliver per [`CLIENT_IDLE_TIMEOUT`] of the node waiting
/// for them: a client that trickles a byte a minute cannot hold an upload slot for ever.
pub const MIN_UPLOAD_BYTES_PER_WINDOW: u64 = 1 << 20;

/// An upload's pace, counted over the time the node spent waiting for the client only (not
/// while the node itself was busy storing or pushing and did not read).
#[derive(Debug, Default)]
struct Pace {
    waited: Duration,
    bytes: u64,
}

impl Pace {
    fn add(&mut self, waited: Duration, bytes: u64) -> Result<(), String> {
        self.waited += waited;
        self.bytes += bytes;
        if self.waited < CLIENT_IDLE_TIMEOUT {
            return Ok(());
        }
        if self.bytes < MIN_UPLOAD_BYTES_PER_WINDOW {
            return Err(format!(
                "upload too slow: {} bytes in {} s of waiting, at least {} needed",
                self.bytes,
                self.waited.as_secs(),
                MIN_UPLOAD_BYTES_PER_WINDOW
            ));
        }
        *self = Pace::default();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trickling_upload_is_cut_and_a_steady_one_is_not() {
        let mut trickle = Pace::default();
        let minute = Duration::from_secs(59);
        assert!(trickle.add(minute, 1).is_ok());
        assert!(trickle.add(minute, 1).is_err(), "two bytes in two minutes");
        let mut steady = Pace::default();
        for _ in 0..1000 {
            steady
                .add(Duration::from_secs(1), 64 << 10)
                .expect("64 KiB/s is enough");
        }
        // Time the node spends not reading does not count: only waits are added.
        let mut busy_node = Pace::default();
        for _ in 0..100 {
            busy_node
                .add(Duration::from_millis(10), 1 << 20)
                .expect("fast client");
        }
    }
}
