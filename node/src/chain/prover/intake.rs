//! Taking up deals: a deal accepted earlier from its record (what was agreed), a proposal
//! from the shards held now, checked against its commitment and recorded before it is
//! accepted. Proofs come first: proposals wait while a proof is due or close, and a flood of
//! them for one checkpoint reads and hashes its shards once.

use std::collections::VecDeque;
use std::sync::Arc;

use cairn_erasure::Cid;
use cairn_storage::Backend;
use tracing::{debug, error, info, warn};

use super::super::deals::{DealDataError, HeldData, data_of, held_shards};
use super::super::{
    CairnStorage, ChainError, DEAL_ACTIVE, DEAL_CANCELLED, DEAL_PROPOSED, DealInfo, ProofChain,
    word_root,
};
use super::{HeldDeal, Prover};

/// Proposals taken up per round at most (each may cost an acceptance, a transaction waited
/// for): the rest wait for the next round, after its proof.
const MAX_PROPOSALS_PER_ROUND: usize = 16;
/// Blocks a change of the draw tree (an acceptance, a prune) may take to be mined: none is
/// started unless it lands, within this many blocks, before the next epoch's proof opens.
const DRAW_CHANGE_BLOCKS: u64 = 2;
/// Deal data kept between rounds, one per checkpoint: proposals for a checkpoint already
/// looked at cost index reads, not a pass over its shards.
const MAX_CACHED_TREES: usize = 16;

/// Run store work off the async threads.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ChainError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ChainError::Config(format!("{what} failed: {e}")))
}

impl<C: ProofChain, B: Backend> Prover<C, B> {
    /// Look at deals not seen yet (and those to look at again). Deals accepted earlier are
    /// taken up from their records; proposals wait while the draw may not change (see
    /// [`Self::draw_busy`]; at most
    /// [`MAX_PROPOSALS_PER_ROUND`] per round, the rest next round).
    pub(super) async fn scan_deals(&mut self) -> Result<(), ChainError> {
        let me = self.chain.me();
        let count = self.chain.deal_count().await?;
        let epoch = self.params.epoch_of(self.chain.block_number().await?);
        let mut todo: VecDeque<u64> = std::mem::take(&mut self.retry).into();
        todo.extend(self.scanned + 1..=count);
        self.scanned = self.scanned.max(count);
        let mut proposals = 0;
        let mut deferred = 0;
        while let Some(id) = todo.pop_front() {
            let done = match self.chain.deal(id).await {
                Ok(info) if info.node != me || info.state == DEAL_CANCELLED => Ok(()),
                // Too late to accept (anyone may cancel it now): not looked at again.
                Ok(info) if info.proposal_expired(epoch, self.params.proposal_epochs) => {
                    debug!(deal = id, "a proposal expired before it was taken up");
                    Ok(())
                }
                Ok(info) if info.state == DEAL_PROPOSED => {
                    let wait = if deferred > 0 || proposals == MAX_PROPOSALS_PER_ROUND {
                        Ok(true)
                    } else {
                        self.draw_busy().await
                    };
                    match wait {
                        Ok(true) => {
                            deferred += 1;
                            self.retry.push(id);
                            continue;
                        }
                        Ok(false) => {
                            proposals += 1;
                            self.take_up(info, epoch).await
                        }
                        Err(e) => Err(e),
                    }
                }
                Ok(info) => self.take_up(info, epoch).await,
                Err(e) => Err(e),
            };
            if let Err(e) = done {
                self.retry.push(id);
                self.retry.extend(todo);
                return Err(e);
            }
        }
        if deferred > 0 {
            debug!(
                deferred,
                accepted_now = proposals,
                "proposals left for a later round: proofs first"
            );
        }
        Ok(())
    }

    /// Whether a change of the draw tree (an acceptance, a prune) started now could delay a
    /// proof or be refused: the current epoch's proof is not done yet, or the change might
    /// not be mined before the next epoch's second block (the contract takes changes in an
    /// epoch's first block, then only once its proof is closed; see [`DRAW_CHANGE_BLOCKS`]).
    pub(super) async fn draw_busy(&self) -> Result<bool, ChainError> {
        let block = self.chain.block_number().await?;
        let epoch = self.params.epoch_of(block);
        if self.done_epoch.is_none_or(|d| d < epoch) {
            return Ok(true);
        }
        Ok(block + DRAW_CHANGE_BLOCKS > self.params.epoch_start(epoch + 1))
    }

    /// Take up a deal of this node: an accepted one from its record (or, for deals accepted
    /// before records were kept, from the shards held, recorded then); a proposed one is
    /// accepted when its commitment matches the shards held, recorded before it is accepted.
    async fn take_up(&mut self, info: DealInfo, epoch: u64) -> Result<(), ChainError> {
        let id = info.id;
        let root = word_root(&info.checkpoint);
        if info.is_over(epoch) {
            // Ended: never challenged again.
            self.forget_record(id).await;
            self.held.insert(id, HeldDeal { info, data: None });
            return Ok(());
        }
        // Whether the data comes from the deal's record (which then needs no writing).
        let mut recorded = false;
        let data = if info.state == DEAL_ACTIVE {
            match self.recorded(id, root).await? {
                Some(Ok(d)) => {
                    recorded = true;
                    Ok(d)
                }
                Some(Err(e)) => {
                    // The commitment check below decides on what is held now.
                    warn!(deal = id, %root, error = %e, "an accepted deal's record cannot be used; reading its shards");
                    self.held_now(root).await?
                }
                None => self.held_now(root).await?,
            }
        } else {
            self.held_now(root).await?
        };
        let data = match data {
            Ok(d) => d,
            Err(e) if info.state == DEAL_ACTIVE => {
                self.lost(info, &e.to_string());
                return Ok(());
            }
            Err(e) => {
                warn!(deal = id, %root, error = %e, "cannot read the data of a deal offered to this node; not taking it");
                return Ok(());
            }
        };
        let c = data.commitment();
        if c.root != info.commitment || c.leaf_count != info.leaf_count {
            if info.state == DEAL_ACTIVE {
                self.lost(info, "the shards held no longer match its commitment");
            } else {
                warn!(deal = id, %root, "a deal's commitment does not match the shards held here; not accepting it");
            }
            return Ok(());
        }
        // What is agreed is kept before it is agreed to: a restart between the two finds
        // the record (and, for a deal never accepted, the record is dropped below or when
        // the deal is next looked at).
        if !recorded && let Err(e) = self.keep_record(id, &data).await {
            warn!(deal = id, error = %e, "cannot record a deal's data; trying again");
            self.retry.push(id);
            return Ok(());
        }
        let mut info = info;
        if info.state == DEAL_PROPOSED {
            if let Err(e) = self.chain.accept_deal(id).await {
                // A timeout or a lost answer may still have been mined: look again.
                let now = self.chain.deal(id).await?;
                // Not mined, or refused while this node's stake is below the minimum (a top-up
                // brings it back before the proposal expires): try again.
                if now.state == DEAL_PROPOSED
                    && (e.reason().is_none() || e.refused_with::<CairnStorage::StakeTooLow>())
                {
                    warn!(deal = id, error = %e, "cannot accept a deal yet; trying again");
                    self.retry.push(id);
                    return Ok(());
                }
                if now.state != DEAL_ACTIVE {
                    warn!(deal = id, error = %e, "the contract refused this node's acceptance of a deal");
                    self.forget_record(id).await;
                    return Ok(());
                }
            }
            info = self.chain.deal(id).await?;
            info!(deal = id, %root, start = info.start, epochs = info.epochs, leaves = info.leaf_count, "deal accepted");
        }
        self.held.insert(
            id,
            HeldDeal {
                info,
                data: Some(data),
            },
        );
        Ok(())
    }

    /// An accepted deal's record: None if there is none; Some(Err) if it is damaged or a
    /// shard it lists is gone.
    async fn recorded(
        &self,
        id: u64,
        root: Cid,
    ) -> Result<Option<Result<Arc<HeldData>, DealDataError>>, ChainError> {
        let store = self.store.clone();
        blocking("deal record reader", move || {
            let record = match store.accepted_deal(id) {
                Ok(r) => r?,
                Err(e) => return Some(Err(e.into())),
            };
            let check = || {
                for (cid, _) in &record.pieces {
                    if !store.has_shard(cid)? {
                        return Err(DealDataError::ShardGone(*cid));
                    }
                }
                Ok(())
            };
            Some(check().and_then(|()| HeldData::from_record(&root, record).map(Arc::new)))
        })
        .await
    }

    /// The deal data of `root` as this node holds it now: read and hashed once per set of
    /// shards held (a flood of proposals for one checkpoint costs one pass over its shards).
    async fn held_now(
        &mut self,
        root: Cid,
    ) -> Result<Result<Arc<HeldData>, DealDataError>, ChainError> {
        let store = self.store.clone();
        let listed = blocking("deal shard lister", move || {
            let (manifest, _) = store.manifest_entry(&root)?;
            held_shards(&store, &manifest)
        })
        .await?;
        let shards = match listed {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        if let Some(d) = self.trees.get(&root)
            && d.pieces
                .iter()
                .map(|p| (p.cid, p.len))
                .eq(shards.iter().copied())
        {
            return Ok(Ok(d.clone()));
        }
        let store = self.store.clone();
        self.passes += 1;
        let data = blocking("deal reader", move || {
            data_of(&store, &root, &shards).map(Arc::new)
        })
        .await?;
        if let Ok(d) = &data {
            if self.trees.len() >= MAX_CACHED_TREES {
                self.trees.clear();
            }
            self.trees.insert(root, d.clone());
        }
        Ok(data)
    }

    async fn keep_record(&self, id: u64, data: &HeldData) -> Result<(), ChainError> {
        let (store, record) = (self.store.clone(), data.record());
        blocking("deal recorder", move || {
            store.set_accepted_deal(id, &record)
        })
        .await?
        .map_err(|e| ChainError::Config(format!("cannot record deal {id}: {e}")))
    }

    /// Drop a deal's record (it ended or was never accepted); a failure only leaves a few
    /// bytes behind, dropped the next time.
    pub(super) async fn forget_record(&self, id: u64) {
        let store = self.store.clone();
        let dropped = blocking("deal record dropper", move || store.drop_accepted_deal(id)).await;
        if let Ok(Err(e)) = dropped {
            warn!(deal = id, error = %e, "cannot drop a deal's record");
        }
    }

    /// An accepted deal whose data is gone: kept (its epochs must still be proven, and every
    /// sample falling on it now fails the epoch), logged and counted.
    fn lost(&mut self, info: DealInfo, why: &str) {
        let root = word_root(&info.checkpoint);
        error!(deal = info.id, %root, why, "this node accepted a deal whose data it cannot prove");
        self.metrics.corrupt.inc();
        self.held.insert(info.id, HeldDeal { info, data: None });
    }
}
