//! The prover, a [`Worker`] working in rounds of `chain.poll_ms`: it accepts deals whose
//! commitment matches what this node stores, and each epoch proves its challenged leaves,
//! early in the window, only with proofs it has verified itself. A failed round is retried at
//! the next one (its back-off never grows past one round: a proof window does not wait). Its
//! sibling, the watcher that reports other nodes' missed epochs, is in [`super::watcher`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::Address;
use cairn_erasure::Cid;
use cairn_proofs::challenge::{DRAW_ATTEMPTS, Slot, draw};
use cairn_proofs::tree::CHUNK_LEAVES;
use cairn_proofs::{Proof, encode_blob, prove, verify};
use cairn_storage::{Backend, Store};
use thiserror::Error;
use tracing::{debug, error};

mod intake;

use super::deals::{DealDataError, HeldData};
use super::{ChainError, DealInfo, Params, ProofChain};
use crate::chain::CairnStorage;
use crate::metrics::ProofMetrics;
use crate::worker::{Step, Worker, next_round};

/// Why an epoch could not be proven.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ProveEpochError {
    #[error("deal {deal}: {source}")]
    Data {
        deal: u64,
        #[source]
        source: DealDataError,
    },
    #[error("deal {deal}: {source}")]
    Proof {
        deal: u64,
        #[source]
        source: cairn_proofs::ProveError,
    },
    #[error("deal {0} is challenged but this node holds no data for it")]
    NotHeld(u64),
    #[error(
        "sample {0} fell on deals not drawn in the epoch {DRAW_ATTEMPTS} times: ended deals are not pruned"
    )]
    Exhausted(u8),
    #[error("deal {deal}: the proof of leaf {leaf} does not verify")]
    SelfCheck { deal: u64, leaf: u64 },
    #[error(transparent)]
    Chain(#[from] ChainError),
}

/// Deals pruned from the draw tree per round at most (one transaction).
const MAX_PRUNE_PER_ROUND: usize = 64;

/// A deal this node proves.
#[derive(Debug, Clone)]
pub struct HeldDeal {
    pub info: DealInfo,
    /// None when an accepted deal's data could not be read (lost or corrupt).
    pub data: Option<Arc<HeldData>>,
}

/// Build the proofs of `epoch` for `me` (pure apart from the store reads): the samples in
/// order, each proof verified against its deal's commitment before it is accepted. `list` is
/// the node's deal list and `slots` its draw tree for the epoch (see `cairn_proofs::challenge`).
#[allow(clippy::too_many_arguments)]
pub fn build_epoch_proofs<B: Backend>(
    store: &Store<B>,
    held: &HashMap<u64, HeldDeal>,
    list: &[u64],
    slots: &[Slot],
    seed: &[u8; 32],
    me: &Address,
    epoch: u64,
    samples: u8,
) -> Result<Vec<Proof>, ProveEpochError> {
    let mut proofs = Vec::new();
    for j in 0..samples {
        let drawn = match draw(seed, &me.0.0, epoch, j, slots) {
            Ok(Some(d)) => d,
            Ok(None) => return Ok(proofs), // nothing to draw from
            Err(_) => return Err(ProveEpochError::Exhausted(j)),
        };
        let id = list[drawn.index];
        let Some(deal) = held.get(&id) else {
            return Err(ProveEpochError::NotHeld(id));
        };
        if !deal.info.runs_in(epoch) {
            continue; // terminated during this epoch: nothing to prove
        }
        let Some(data) = &deal.data else {
            return Err(ProveEpochError::NotHeld(id));
        };
        let index = drawn.leaf;
        let chunk = data
            .read_chunk(store, index / CHUNK_LEAVES)
            .map_err(|source| ProveEpochError::Data { deal: id, source })?;
        let proof = prove(&data.tree, index, &chunk)
            .map_err(|source| ProveEpochError::Proof { deal: id, source })?;
        let c = cairn_proofs::Commitment {
            root: deal.info.commitment,
            leaf_count: deal.info.leaf_count,
        };
        if !verify(&c, index, &proof) {
            return Err(ProveEpochError::SelfCheck {
                deal: id,
                leaf: index,
            });
        }
        proofs.push(proof);
    }
    Ok(proofs)
}

/// The prover's state; owned by its task.
pub struct Prover<C, B: Backend> {
    chain: C,
    store: Store<B>,
    metrics: ProofMetrics,
    params: Params,
    /// One round per `poll`.
    poll: Duration,
    held: HashMap<u64, HeldDeal>,
    /// Deals to look at again next round (an RPC failed, accepting them did, or they wait
    /// behind a proof).
    retry: Vec<u64>,
    /// The deal data last computed per checkpoint (a few, see `intake.rs`).
    trees: HashMap<Cid, Arc<HeldData>>,
    /// Passes over a checkpoint's shards to compute deal data, since the start.
    passes: u64,
    scanned: u64,
    started: bool,
    done_epoch: Option<u64>,
}

impl<C: ProofChain, B: Backend> Prover<C, B> {
    pub async fn new(
        chain: C,
        store: Store<B>,
        metrics: ProofMetrics,
        poll: Duration,
    ) -> Result<Self, ChainError> {
        let params = chain.params().await?;
        Ok(Self {
            chain,
            store,
            metrics,
            params,
            poll,
            held: HashMap::new(),
            retry: Vec::new(),
            trees: HashMap::new(),
            passes: 0,
            scanned: 0,
            started: false,
            done_epoch: None,
        })
    }

    /// One round: prove the current epoch if not done yet, then take up new deals (which can
    /// take seconds per GiB: the proof window comes first). The first round after a start
    /// takes up this node's deals before anything else.
    pub async fn round(&mut self) -> Result<(), ChainError> {
        let me = self.chain.me();
        if !self.started {
            self.scan_deals().await?;
            let epoch = self.params.epoch_of(self.chain.block_number().await?);
            if epoch > 0 && self.chain.is_proven(me, epoch - 1).await? {
                self.metrics.last_proven_epoch.set((epoch - 1) as i64);
            }
            self.started = true;
        }
        let block = self.chain.block_number().await?;
        let epoch = self.params.epoch_of(block);
        self.metrics.current_epoch.set(epoch as i64);
        let running = self.held.values().filter(|d| d.info.runs_in(epoch)).count();
        self.metrics.deals.set(running as i64);
        if self.done_epoch.is_none_or(|d| d < epoch) && block > self.params.epoch_start(epoch) {
            let gwei = super::wei_to_gwei(self.chain.balance().await?);
            self.metrics
                .balance_gwei
                .set(i64::try_from(gwei).unwrap_or(i64::MAX));
            if self.params.is_over(epoch, block + 1) {
                // Too late for this one (the node was busy or just started).
                self.done_epoch = Some(epoch);
            } else {
                self.prove_epoch(epoch).await?;
            }
        }
        // Ended deals are never challenged again: keep what they were, drop their trees
        // and records.
        let ended: Vec<u64> = self
            .held
            .values()
            .filter(|d| d.data.is_some() && d.info.is_over(epoch))
            .map(|d| d.info.id)
            .collect();
        for id in ended {
            self.forget_record(id).await;
            if let Some(d) = self.held.get_mut(&id) {
                d.data = None;
            }
        }
        if self.done_epoch.is_some_and(|d| d >= epoch) {
            match self.draw_busy().await {
                Ok(false) => self.prune(epoch).await,
                Ok(true) => {}
                Err(e) => debug!(epoch, error = %e, "pruning put off"),
            }
        }
        self.scan_deals().await
    }

    /// Once the epoch's proof is done, take the deals drawn no more from the next epoch on
    /// out of the draw tree (at most [`MAX_PRUNE_PER_ROUND`] per round): deals that ended
    /// would otherwise be drawn and drawn again, and enough of them fail a proof.
    async fn prune(&mut self, epoch: u64) {
        let mut due: Vec<(u64, u64)> = self
            .held
            .values()
            .filter(|d| d.info.prunable(epoch + 1))
            .map(|d| (d.info.draw_slot, d.info.id))
            .collect();
        if due.is_empty() {
            return;
        }
        due.sort_unstable();
        due.truncate(MAX_PRUNE_PER_ROUND);
        match self
            .chain
            .prune(due.iter().map(|(slot, _)| *slot).collect())
            .await
        {
            Ok(gas) => {
                for (_, id) in &due {
                    if let Some(d) = self.held.get_mut(id) {
                        d.info.draw_slot = 0;
                    }
                }
                self.metrics.gas.inc_by(gas);
                debug!(
                    epoch,
                    pruned = due.len(),
                    gas,
                    "ended deals pruned from the draw"
                );
            }
            // Left for a later round (the draw may not be closed yet).
            Err(e) => debug!(epoch, error = %e, "pruning ended deals failed"),
        }
    }

    async fn prove_epoch(&mut self, epoch: u64) -> Result<(), ChainError> {
        let me = self.chain.me();
        if !self.held.values().any(|d| d.info.runs_in(epoch)) {
            self.done_epoch = Some(epoch);
            return Ok(());
        }
        if self.chain.is_proven(me, epoch).await? {
            self.done_epoch = Some(epoch);
            return Ok(());
        }
        let list = self.chain.deals_of(me).await?;
        let seed = self.chain.epoch_seed(epoch).await?;
        let samples = self.params.samples;
        // The draw tree as the chain has it: a client may have terminated a deal (it deleted
        // the checkpoint), which moves the deal's end to the end of the epoch it did so in,
        // and anyone may have pruned an ended deal. A pruned deal stays out; any other is
        // read again.
        let mut slots = Vec::with_capacity(list.len());
        for id in &list {
            let known = self.held.get(id).map(|d| &d.info);
            let info = match known {
                Some(i) if i.draw_slot == 0 && i.state == super::DEAL_ACTIVE => i.clone(),
                _ => {
                    let fresh = self.chain.deal(*id).await?;
                    if let Some(d) = self.held.get_mut(id) {
                        d.info = fresh.clone();
                    }
                    fresh
                }
            };
            slots.push(info.slot_in_draw(epoch));
        }
        let (store, held) = (self.store.clone(), self.held.clone());
        let built = tokio::task::spawn_blocking(move || {
            build_epoch_proofs(&store, &held, &list, &slots, &seed, &me, epoch, samples)
        })
        .await
        .map_err(|e| ChainError::Config(format!("proof builder failed: {e}")))?;
        let proofs = match built {
            Ok(p) => p,
            Err(e) => {
                // Never send what did not verify here: the epoch will be reported missed.
                error!(epoch, error = %e, "cannot prove this epoch from the data held; no proof sent");
                if matches!(
                    e,
                    ProveEpochError::Data { .. } | ProveEpochError::Proof { .. }
                ) {
                    self.metrics.corrupt.inc();
                }
                self.metrics.failures.inc();
                self.done_epoch = Some(epoch);
                return Ok(());
            }
        };
        let count = proofs.len();
        match self.chain.submit_proofs(epoch, encode_blob(&proofs)).await {
            Ok(gas) => {
                self.done_epoch = Some(epoch);
                self.metrics.epochs_proven.inc();
                self.metrics.samples.inc_by(count as u64);
                self.metrics.gas.inc_by(gas);
                self.metrics.last_proven_epoch.set(epoch as i64);
                debug!(epoch, samples = count, gas, "epoch proven");
                Ok(())
            }
            Err(e) if e.refused_with::<CairnStorage::AlreadyProven>() => {
                self.done_epoch = Some(epoch);
                Ok(())
            }
            // Refused before anything was sent: a node slashed below the minimum stake is
            // out until its operator tops up.
            Err(e) if e.refused_with::<CairnStorage::StakeTooLow>() => {
                error!(epoch, error = %e, "this node's bonded stake is below the contract's minimum (it was slashed): no proof is taken until its account tops up (the contract's topUp; `cairn wallet` shows the stake)");
                self.metrics.failures.inc();
                self.done_epoch = Some(epoch);
                Ok(())
            }
            Err(e) => {
                self.metrics.submit_errors.inc();
                Err(e)
            }
        }
    }
}

// The jobs run on the node's real chain client (whose futures are known to be `Send`);
// tests drive `round` on any `ProofChain`.
impl<B: Backend> Worker for Prover<super::Chain, B> {
    type Error = ChainError;

    fn name(&self) -> &'static str {
        "prover"
    }

    async fn step(&mut self) -> Result<Step, ChainError> {
        let started = Instant::now();
        self.round().await?;
        Ok(next_round(started, self.poll))
    }

    fn progress(&self) -> String {
        let proven = self.done_epoch.map_or_else(
            || "no epoch done yet".to_string(),
            |e| format!("epoch {e} done"),
        );
        let with_data = self.held.values().filter(|d| d.data.is_some()).count();
        format!(
            "{proven}; {} deals held ({with_data} with data), {} to look at again, {} passes over deal data",
            self.held.len(),
            self.retry.len(),
            self.passes
        )
    }

    fn backoff_first(&self) -> Duration {
        self.poll
    }

    fn backoff_max(&self) -> Duration {
        self.poll
    }
}

#[cfg(test)]
mod tests;
