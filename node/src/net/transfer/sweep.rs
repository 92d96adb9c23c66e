//! The node's `upload_sweep` job: every [`SWEEP_EVERY`], the uploads another gateway left
//! idle for longer than [`super::UPLOAD_IDLE`] are dropped with their shards (their bytes go
//! back to the peer's quota and the store).

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
    /// Uploads dropped since start.
    dropped: u64,
}

impl<B: Backend> UploadSweeper<B> {
    pub fn new(server: Arc<ShardServer<B>>) -> Self {
        Self { server, dropped: 0 }
    }
}

impl<B: Backend> Worker for UploadSweeper<B> {
    type Error = std::convert::Infallible;

    fn name(&self) -> &'static str {
        "upload_sweep"
    }

    async fn step(&mut self) -> Result<Step, Self::Error> {
        self.dropped += self.server.expire() as u64;
        Ok(Step::Idle(SWEEP_EVERY))
    }

    fn progress(&self) -> String {
        format!("{} idle uploads dropped since start", self.dropped)
    }
}
