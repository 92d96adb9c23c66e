//! The scrubber: every shard this node holds is re-read and verified against its CID on a
//! schedule, at a bounded rate; a shard found corrupt or missing is rebuilt from its stripe
//! (any `k` intact shards its holders serve), verified, and written back.

use std::time::{Duration, Instant};

use cairn_erasure::{Cid, Coder, encode_stripe};
use cairn_storage::{Backend, PutError, ReadError, ScrubState, ShardPlace, ShardStatus, Store};
use thiserror::Error;
use tracing::{info, warn};

use crate::cluster::Cluster;
use crate::metrics::{ResultLabels, ScrubMetrics};
use crate::pipeline::GetError;
use crate::worker::{Step, Worker};

/// Shards listed from the store per step (the progress is saved after each).
const BATCH: usize = 16;
/// The shortest time between two passes (a zero interval would spin on an empty store).
const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// A store never scrubbed starts its first pass this long after the node starts (or after
/// the interval, when that is shorter): a new node settles first.
const FIRST_PASS_AFTER: Duration = Duration::from_secs(600);
/// A scrub step failed (the job backs off and tries again).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ScrubError {
    #[error("listing shards: {0}")]
    List(#[source] ReadError),
    #[error("checking shard {cid}: {source}")]
    Check {
        cid: Cid,
        #[source]
        source: cairn_storage::BackendError,
    },
    #[error("saving or loading the scrub progress: {0}")]
    State(#[source] cairn_storage::BackendError),
    #[error("scrub worker thread failed: {0}")]
    Thread(String),
}

/// Rebuilding one shard failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RepairError {
    #[error("no checkpoint pinned here lists the shard")]
    Unreferenced,
    #[error("finding the shard's stripe: {0}")]
    Place(#[source] ReadError),
    #[error("invalid manifest of {root}: {reason}")]
    Manifest { root: Cid, reason: String },
    #[error(transparent)]
    Rebuild(#[from] GetError),
    #[error("the rebuilt stripe gives shard {shard} a different cid")]
    Mismatch { shard: usize },
    #[error("writing the rebuilt shard: {0}")]
    Write(#[source] PutError),
    #[error("repair thread failed: {0}")]
    Thread(String),
}

/// The scrubber job.
pub struct Scrubber<B: Backend> {
    pub store: Store<B>,
    pub cluster: Cluster<B>,
    /// Bytes per second verified at most.
    pub rate: u64,
    /// Time between the starts of two passes.
    pub interval: Duration,
    pub metrics: ScrubMetrics,
    /// Where the scrub is (loaded from the store at the first step, saved after each).
    state: Option<ScrubState>,
    pass: u64,
    checked: u64,
}

impl<B: Backend> Scrubber<B> {
    pub fn new(
        store: Store<B>,
        cluster: Cluster<B>,
        mib_per_s: u64,
        interval: Duration,
        metrics: ScrubMetrics,
    ) -> Self {
        Self {
            store,
            cluster,
            rate: mib_per_s.saturating_mul(1 << 20).max(1),
            interval: interval.max(MIN_INTERVAL),
            metrics,
            state: None,
            pass: 0,
            checked: 0,
        }
    }

    async fn save(&mut self, state: ScrubState) -> Result<(), ScrubError> {
        let store = self.store.clone();
        let saved = state.clone();
        tokio::task::spawn_blocking(move || store.set_scrub_state(&saved))
            .await
            .map_err(|e| ScrubError::Thread(e.to_string()))?
            .map_err(ScrubError::State)?;
        self.state = Some(state);
        Ok(())
    }

    /// Rebuild a bad shard from its stripe and write it back, verified.
    async fn repair(&self, cid: Cid) -> Result<(), RepairError> {
        let store = self.store.clone();
        let place: ShardPlace = tokio::task::spawn_blocking(move || store.shard_place(&cid))
            .await
            .map_err(|e| RepairError::Thread(e.to_string()))?
            .map_err(RepairError::Place)?
            .ok_or(RepairError::Unreferenced)?;
        let m = &place.manifest;
        let layout = m.layout().map_err(|e| RepairError::Manifest {
            root: place.root,
            reason: e.to_string(),
        })?;
        let file = m.files[place.file].clone();
        let data = self
            .cluster
            .stripe_data(layout, m.salt.clone(), file, place.stripe as u64)
            .await?;
        let store = self.store.clone();
        let shard = place.shard;
        tokio::task::spawn_blocking(move || {
            let enc = encode_stripe(&Coder::new(&layout), &layout, data, Vec::new());
            if enc.cids().get(shard) != Some(&cid) {
                return Err(RepairError::Mismatch { shard });
            }
            store
                .repair_shard(&cid, enc.shard(shard))
                .map_err(RepairError::Write)
        })
        .await
        .map_err(|e| RepairError::Thread(e.to_string()))?
    }
}

impl<B: Backend> Worker for Scrubber<B> {
    type Error = ScrubError;

    fn name(&self) -> &'static str {
        "scrub"
    }

    async fn step(&mut self) -> Result<Step, ScrubError> {
        let now = crate::pipeline::now_unix();
        let interval = self.interval.as_secs();
        let mut state = match self.state.clone() {
            Some(s) => s,
            None => {
                let store = self.store.clone();
                let saved = tokio::task::spawn_blocking(move || store.scrub_state())
                    .await
                    .map_err(|e| ScrubError::Thread(e.to_string()))?
                    .map_err(ScrubError::State)?;
                // Never scrubbed: as if a pass had finished so that the first is due soon.
                saved.unwrap_or(ScrubState {
                    pass_started: (now + FIRST_PASS_AFTER.as_secs().min(interval))
                        .saturating_sub(interval),
                    done: true,
                    cursor: None,
                })
            }
        };
        if state.done {
            let due = state.pass_started.saturating_add(interval);
            if now < due {
                self.state = Some(state);
                return Ok(Step::Idle(Duration::from_secs(due - now)));
            }
            state = ScrubState {
                pass_started: now,
                done: false,
                cursor: None,
            };
            self.checked = 0;
        }
        let store = self.store.clone();
        let after = state.cursor;
        let batch = tokio::task::spawn_blocking(move || store.shards_after(after.as_ref(), BATCH))
            .await
            .map_err(|e| ScrubError::Thread(e.to_string()))?
            .map_err(ScrubError::List)?;
        if batch.is_empty() {
            self.pass += 1;
            self.metrics.passes.inc();
            info!(
                shards = self.checked,
                secs = now.saturating_sub(state.pass_started),
                "scrub pass done"
            );
            state.done = true;
            state.cursor = None;
            self.checked = 0;
            self.metrics.pass_shards.set(0);
            self.save(state).await?;
            return Ok(Step::Busy); // the next step waits until the next pass is due
        }
        for (cid, len) in batch {
            let t = Instant::now();
            let store = self.store.clone();
            let status = tokio::task::spawn_blocking(move || store.check_shard(&cid))
                .await
                .map_err(|e| ScrubError::Thread(e.to_string()))?
                .map_err(|source| ScrubError::Check { cid, source })?;
            self.metrics.bytes.inc_by(len);
            let result = match &status {
                ShardStatus::Ok => "ok",
                ShardStatus::Corrupt(_) => "corrupt",
                ShardStatus::Missing => "missing",
            };
            self.metrics
                .shards
                .get_or_create(&ResultLabels { result })
                .inc();
            if status != ShardStatus::Ok {
                warn!(%cid, ?status, "scrub found a bad shard; rebuilding it");
                match self.repair(cid).await {
                    Ok(()) => {
                        self.metrics.repaired.inc();
                        info!(%cid, "scrub rebuilt the shard");
                    }
                    // Freed since it was listed, or referenced by no checkpoint: nothing
                    // to rebuild it for.
                    Err(RepairError::Unreferenced) => {
                        info!(%cid, "scrub skipped a bad shard no checkpoint here lists");
                    }
                    Err(e) => {
                        self.metrics.repair_failed.inc();
                        warn!(%cid, error = %e, "scrub could not rebuild the shard");
                    }
                }
            }
            state.cursor = Some(cid);
            self.checked += 1;
            self.metrics
                .pass_shards
                .set(i64::try_from(self.checked).unwrap_or(i64::MAX));
            // Pace: `len` bytes may take no less than len / rate seconds.
            let due = Duration::from_secs_f64(len as f64 / self.rate as f64);
            if let Some(wait) = due.checked_sub(t.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        self.save(state).await?;
        Ok(Step::Busy)
    }

    fn progress(&self) -> String {
        format!("pass {}: {} shards checked", self.pass + 1, self.checked)
    }
}
