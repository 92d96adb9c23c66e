//! Resumable puts at the HTTP edge: one run at a time per upload key, the check that a run
//! starts where the last one stopped, and `GET /v1/uploads/{key}` telling a client where.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::OwnedMutexGuard;

use super::*;
use crate::cluster::Resumable;
use crate::cluster::resume::{self, PutParams, Resumed, UploadKey};

/// One lock per upload key in use: a second run of a put waits for the first to end (and
/// to record its last stripe) before it learns where to go on.
#[derive(Default)]
pub struct UploadLocks {
    map: Mutex<HashMap<UploadKey, Arc<tokio::sync::Mutex<()>>>>,
}

impl UploadLocks {
    async fn acquire(&self, key: UploadKey) -> OwnedMutexGuard<()> {
        let m = {
            let mut map = self
                .map
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Locks nobody holds or waits for are dropped: the map stays as small as the
            // puts under way.
            map.retain(|_, l| Arc::strong_count(l) > 1);
            Arc::clone(map.entry(key).or_default())
        };
        m.lock_owned().await
    }
}

/// Where an interrupted upload goes on.
#[derive(Debug, Serialize, Deserialize)]
pub struct UploadStatus {
    pub key: String,
    /// The body byte the next run starts from.
    pub offset: u64,
    /// Stripes placed so far.
    pub stripes: u64,
    /// File bytes placed so far.
    pub bytes: u64,
    /// The upload's stripe size.
    pub stripe_size: u64,
    /// The put committed already: what it stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done: Option<resume::Done>,
}

fn parse(key: &str) -> Result<UploadKey, ApiError> {
    resume::parse_key(key).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_params",
            "an upload key is 64 hex digits",
        )
    })
}

async fn load<B: Backend>(store: &Store<B>, key: UploadKey) -> Result<Option<Resumed>, ApiError> {
    let store = store.clone();
    blocking(move || resume::load(&store, &key).map_err(|e| ApiError::internal(e.to_string())))
        .await
}

fn status(key: &UploadKey, r: &Resumed) -> UploadStatus {
    UploadStatus {
        key: resume::key_hex(key),
        offset: r.resume.body_offset,
        stripes: r.stripes,
        bytes: r.bytes,
        stripe_size: r.params.as_ref().map_or(0, |p| p.stripe_size),
        done: r.done.clone(),
    }
}

/// `GET /v1/uploads/{key}`: where an interrupted put goes on (waits for a run of it that is
/// still under way to end first).
pub(super) async fn show<B: Backend>(
    _: auth::Writer,
    State(s): State<AppState<B>>,
    Path(key): Path<String>,
) -> Result<Json<UploadStatus>, ApiError> {
    let key = parse(&key)?;
    let _running = s.uploads.acquire(key).await;
    match load(&s.store, key).await? {
        Some(r) => Ok(Json(status(&key, &r))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_upload",
            "no interrupted upload under this key here (it finished, failed for good, or \
             expired)",
        )),
    }
}

/// A put asked to be resumable: hold its key for the run, and check that the body starts
/// where the interrupted run stopped. `None`: this put is not resumable here.
pub(super) async fn begin<B: Backend>(
    s: &AppState<B>,
    key: Option<&str>,
    offset: u64,
    params: PutParams,
) -> Result<Option<(Resumable, OwnedMutexGuard<()>)>, ApiError> {
    let Some(key) = key else {
        return refuse_offset(offset, "the put names no upload key to resume");
    };
    let key = parse(key)?;
    let clustered = match &s.cluster {
        Some(c) => c.is_clustered().await,
        None => false,
    };
    if !clustered || !cairn_erasure::FileHash::supports(params.stripe_size) {
        return refuse_offset(
            offset,
            "this node cannot resume puts of this stripe size, or outside a cluster",
        );
    }
    let guard = s.uploads.acquire(key).await;
    // A put that committed already is put again from the start when asked to.
    let from = load(&s.store, key).await?.filter(|r| r.done.is_none());
    match &from {
        Some(r) if r.params.as_ref() != Some(&params) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "resume_mismatch",
                "an interrupted upload under this key was of other parameters (k, m, stripe \
                 size, name or file); start it under a new key",
            ));
        }
        Some(r) if r.resume.body_offset != offset => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "resume_offset",
                format!(
                    "the interrupted upload goes on at body byte {}, not {offset} (ask GET \
                     /v1/uploads/{})",
                    r.resume.body_offset,
                    resume::key_hex(&key)
                ),
            ));
        }
        None if offset != 0 => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "resume_offset",
                format!(
                    "nothing to resume under this key: send the whole body (offset 0, not {offset})"
                ),
            ));
        }
        _ => {}
    }
    if from.is_some() {
        s.metrics.http.puts_resumed.inc();
    }
    Ok(Some((Resumable { key, params, from }, guard)))
}

fn refuse_offset<T>(offset: u64, why: &str) -> Result<Option<T>, ApiError> {
    if offset == 0 {
        Ok(None)
    } else {
        Err(ApiError::new(
            StatusCode::CONFLICT,
            "resume_offset",
            format!("cannot start at body byte {offset}: {why}"),
        ))
    }
}
