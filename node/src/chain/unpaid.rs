//! Nothing stored for free: with a chain, a share another gateway pushed here and committed is
//! kept for `storage.unpaid_grace_secs`, then freed unless a deal this node accepted (or was
//! offered and may still accept) covers it, or the operator kept it through the node's own
//! API. The decision ([`unpaid`]) is pure, with time passed in; the task around it reads the
//! store and the chain.

use std::collections::HashSet;
use std::time::Duration;

use alloy::primitives::B256;
use cairn_erasure::Cid;
use cairn_storage::{Backend, CheckpointInfo, Store};
use tracing::{info, warn};

use super::{DEAL_ACTIVE, DEAL_PROPOSED, ProofChain, root_word};
use crate::metrics::ProofMetrics;
use crate::pipeline::now_unix;

/// How often the shares held here are checked.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The shares to free now: received (not kept), older than `grace`, and covered by no deal
/// in `covered` (root words of deals offered to or accepted by this node that have not
/// ended).
pub fn unpaid(list: &[CheckpointInfo], covered: &HashSet<B256>, now: u64, grace: u64) -> Vec<Cid> {
    list.iter()
        .filter(|c| !c.kept && !c.complete)
        .filter(|c| c.created.saturating_add(grace) <= now)
        .filter(|c| !covered.contains(&root_word(&c.root)))
        .map(|c| c.root)
        .collect()
}

/// Root words of the deals offered to or running for `chain`'s account at `epoch`.
async fn covered<C: ProofChain>(chain: &C, epoch: u64) -> Result<HashSet<B256>, super::ChainError> {
    let mut out = HashSet::new();
    for id in chain.deals_of(chain.me()).await? {
        let d = chain.deal(id).await?;
        let offered = d.state == DEAL_PROPOSED;
        let running = d.state == DEAL_ACTIVE && d.start + d.epochs > epoch;
        if offered || running {
            out.insert(d.checkpoint);
        }
    }
    Ok(out)
}

/// The task that frees unpaid shares.
pub struct UnpaidSweeper<C, B: Backend> {
    pub chain: C,
    pub store: Store<B>,
    pub grace: Duration,
    pub metrics: ProofMetrics,
    /// Shares freed since start.
    pub freed: u64,
}

impl<C: ProofChain, B: Backend> UnpaidSweeper<C, B> {
    async fn sweep(&self) -> Result<usize, String> {
        let store = self.store.clone();
        let list = tokio::task::spawn_blocking(move || store.list())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let params = self.chain.params().await.map_err(|e| e.to_string())?;
        let block = self.chain.block_number().await.map_err(|e| e.to_string())?;
        let covered = covered(&self.chain, params.epoch_of(block))
            .await
            .map_err(|e| e.to_string())?;
        let free = unpaid(&list, &covered, now_unix(), self.grace.as_secs());
        let n = free.len();
        for root in free {
            let store = self.store.clone();
            let freed = tokio::task::spawn_blocking(move || store.unpin(&root))
                .await
                .map_err(|e| e.to_string())?;
            match freed {
                Ok(shards) => {
                    self.metrics.unpaid_freed.inc();
                    info!(%root, shards, "freed a share no deal pays for");
                }
                Err(e) => warn!(%root, error = %e, "cannot free an unpaid share"),
            }
        }
        Ok(n)
    }
}

/// A background job: one sweep a step, every [`SWEEP_EVERY`] (over the real chain client,
/// whose calls can be sent between threads).
impl<B: Backend> crate::worker::Worker for UnpaidSweeper<super::Chain, B> {
    type Error = String;

    fn name(&self) -> &'static str {
        "unpaid_sweep"
    }

    async fn step(&mut self) -> Result<crate::worker::Step, String> {
        let freed = self.sweep().await?;
        self.freed += freed as u64;
        Ok(crate::worker::Step::Idle(SWEEP_EVERY))
    }

    fn progress(&self) -> String {
        format!("{} unpaid shares freed since start", self.freed)
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn info(seed: u8, created: u64, complete: bool, kept: bool) -> CheckpointInfo {
        CheckpointInfo {
            root: cairn_erasure::manifest_cid(&[seed]),
            name: String::new(),
            created,
            files: 1,
            size: 1,
            complete,
            kept,
        }
    }

    #[test]
    fn only_old_uncovered_received_shares_are_freed() {
        let grace = 100;
        let list = vec![
            info(1, 0, false, false),   // old, received, no deal: freed
            info(2, 0, false, true),    // kept by the operator
            info(3, 0, true, true),     // a complete checkpoint
            info(4, 950, false, false), // within its grace time
            info(5, 0, false, false),   // a deal covers it
        ];
        let covered: HashSet<B256> = [root_word(&list[4].root)].into();
        assert_eq!(unpaid(&list, &covered, 1000, grace), vec![list[0].root]);
        // Later, the young one is due too; nothing covered means both go.
        assert_eq!(
            unpaid(&list, &HashSet::new(), 1050, grace),
            vec![list[0].root, list[3].root, list[4].root]
        );
    }
}
