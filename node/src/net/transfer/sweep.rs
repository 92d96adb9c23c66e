//! The node's `upload_sweep` job: every [`SWEEP_EVERY`], the uploads another gateway left
//! idle for longer than `storage.upload_idle_secs` are dropped with their shards (their bytes
//! go back to the peer's quota and the store), and so are this node's own interrupted puts
//! that nobody resumed for as long.

use std::sync::Arc;
use std::time::Duration;

use cairn_storage::Backend;

use super::ShardServer;
use crate::worker::{Step, Worker};

/// How often idle uploads are looked for.
pub const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Expires idle uploads of a shard server.
pub struct UploadSweeper<B: Backend> {
    server: Arc<ShardServer<B>>,
    /// How long an interrupted put of this node is kept.
    idle: Duration,
    /// Uploads dropped since start.
    dropped: u64,
}

impl<B: Backend> UploadSweeper<B> {
    pub fn new(server: Arc<ShardServer<B>>, idle: Duration) -> Self {
        Self {
            server,
            idle,
            dropped: 0,
        }
    }
}

impl<B: Backend> Worker for UploadSweeper<B> {
    type Error = std::convert::Infallible;

    fn name(&self) -> &'static str {
        "upload_sweep"
    }

    async fn step(&mut self) -> Result<Step, Self::Error> {
        self.dropped += self.server.expire() as u64;
        let store = self.server.store().clone();
        let cutoff = crate::pipeline::now_unix().saturating_sub(self.idle.as_secs());
        let forgotten = tokio::task::spawn_blocking(move || {
            let mut n = 0u64;
            for key in crate::cluster::resume::expired(&store, cutoff) {
                match crate::cluster::resume::forget(&store, &key) {
                    Ok(freed) => {
                        n += 1;
                        tracing::info!(key = %crate::cluster::resume::key_hex(&key), freed, "interrupted put expired");
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot drop an expired interrupted put"),
                }
            }
            n
        })
        .await
        .unwrap_or(0);
        self.dropped += forgotten;
        Ok(Step::Idle(SWEEP_EVERY))
    }

    fn progress(&self) -> String {
        format!("{} idle uploads dropped since start", self.dropped)
    }
}
