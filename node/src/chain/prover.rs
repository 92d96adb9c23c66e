//! The prover, a [`Worker`] working in rounds of `chain.poll_ms`: it accepts deals whose
//! commitment matches what this node stores, and each epoch proves its challenged leaves,
//! early in the window, only with proofs it has verified itself. A failed round is retried at
//! the next one (its back-off never grows past one round: a proof window does not wait). Its
//! sibling, the watcher that reports other nodes' missed epochs, is in [`super::watcher`].

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::Address;
use cairn_proofs::challenge::{leaf, sample_value, slot};
use cairn_proofs::tree::CHUNK_LEAVES;
use cairn_proofs::{Proof, encode_blob, prove, verify};
use cairn_storage::{Backend, Store};
use thiserror::Error;
use tracing::{debug, error, info, warn};

use super::deals::{DealDataError, HeldData, held_data};
use super::{ChainError, DealInfo, Params, ProofChain, word_root};
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
    #[error("deal {deal}: the proof of leaf {leaf} does not verify")]
    SelfCheck { deal: u64, leaf: u64 },
    #[error(transparent)]
    Chain(#[from] ChainError),
}

/// A deal this node proves.
#[derive(Debug, Clone)]
pub struct HeldDeal {
    pub info: DealInfo,
    /// None when an accepted deal's data could not be read (lost or corrupt).
    pub data: Option<Arc<HeldData>>,
}

/// Build the proofs of `epoch` for `me` (pure apart from the store reads): the samples in
/// order, each proof verified against its deal's commitment before it is accepted.
pub fn build_epoch_proofs<B: Backend>(
    store: &Store<B>,
    held: &HashMap<u64, HeldDeal>,
    sampled: &[u64],
    seed: &[u8; 32],
    me: &Address,
    epoch: u64,
    samples: u8,
) -> Result<Vec<Proof>, ProveEpochError> {
    let mut proofs = Vec::new();
    if sampled.is_empty() {
        return Ok(proofs);
    }
    for j in 0..samples {
        let r = sample_value(seed, &me.0.0, epoch, j);
        let id = sampled[slot(&r, sampled.len() as u64) as usize];
        let Some(deal) = held.get(&id) else {
            return Err(ProveEpochError::NotHeld(id));
        };
        if !deal.info.runs_in(epoch) {
            continue; // the sample fell on an ended deal: nothing to prove
        }
        let Some(data) = &deal.data else {
            return Err(ProveEpochError::NotHeld(id));
        };
        let index = leaf(&r, deal.info.leaf_count);
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
    /// Deals to look at again next round (an RPC failed, or accepting them did).
    retry: Vec<u64>,
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
            let wei = self.chain.balance().await?;
            let gwei = wei / alloy::primitives::U256::from(1_000_000_000u64);
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
        // Ended deals are never challenged again: keep what they were, drop their trees.
        for d in self.held.values_mut() {
            if d.info.start + d.info.epochs <= epoch {
                d.data = None;
            }
        }
        self.scan_deals().await
    }

    async fn scan_deals(&mut self) -> Result<(), ChainError> {
        let me = self.chain.me();
        let count = self.chain.deal_count().await?;
        let mut todo: VecDeque<u64> = std::mem::take(&mut self.retry).into();
        todo.extend(self.scanned + 1..=count);
        self.scanned = self.scanned.max(count);
        while let Some(id) = todo.pop_front() {
            let done = match self.chain.deal(id).await {
                Ok(info) if info.node == me && info.state != 3 => self.take_up(info).await,
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            };
            if let Err(e) = done {
                self.retry.push(id);
                self.retry.extend(todo);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Check a deal against the store; accept it (if proposed) when the commitment matches.
    async fn take_up(&mut self, info: DealInfo) -> Result<(), ChainError> {
        let id = info.id;
        let root = word_root(&info.checkpoint);
        let store = self.store.clone();
        let data = tokio::task::spawn_blocking(move || {
            let (manifest, _) = store.manifest_entry(&root)?;
            held_data(&store, &root, &manifest).map_err(|e| match e {
                DealDataError::Read(r) => r,
                other => cairn_storage::ReadError::NotFound(other.to_string()),
            })
        })
        .await
        .map_err(|e| ChainError::Config(format!("deal reader failed: {e}")))?;
        let data = match data {
            Ok(d) => d,
            Err(e) if info.state == 2 => {
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
            if info.state == 2 {
                self.lost(info, "the shards held no longer match its commitment");
            } else {
                warn!(deal = id, %root, "a deal's commitment does not match the shards held here; not accepting it");
            }
            return Ok(());
        }
        let mut info = info;
        if info.state == 1 {
            if let Err(e) = self.chain.accept_deal(id).await {
                // A timeout or a lost answer may still have been mined: look again.
                let now = self.chain.deal(id).await?;
                if now.state == 1 && e.reason().is_none() {
                    warn!(deal = id, error = %e, "cannot accept a deal yet; trying again");
                    self.retry.push(id);
                    return Ok(());
                }
                if now.state != 2 {
                    warn!(deal = id, error = %e, "the contract refused this node's acceptance of a deal");
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
                data: Some(Arc::new(data)),
            },
        );
        Ok(())
    }

    /// An accepted deal whose data is gone: kept (its epochs must still be proven, and every
    /// sample falling on it now fails the epoch), logged and counted.
    fn lost(&mut self, info: DealInfo, why: &str) {
        let root = word_root(&info.checkpoint);
        error!(deal = info.id, %root, why, "this node accepted a deal whose data it cannot prove");
        self.metrics.corrupt.inc();
        self.held.insert(info.id, HeldDeal { info, data: None });
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
        let n = self.chain.sampled_deals(me, epoch).await? as usize;
        let mut sampled = self.chain.deals_of(me).await?;
        sampled.truncate(n);
        let seed = self.chain.epoch_seed(epoch).await?;
        let samples = self.params.samples;
        // The deals the samples fall on, as the chain has them now: a client may have
        // terminated one (it deleted the checkpoint), and then it is not to be proven.
        if !sampled.is_empty() {
            let hit: BTreeSet<u64> = (0..samples)
                .map(|j| {
                    let r = sample_value(&seed, &me.0.0, epoch, j);
                    sampled[slot(&r, sampled.len() as u64) as usize]
                })
                .collect();
            for id in hit {
                if let Some(d) = self.held.get_mut(&id) {
                    d.info = self.chain.deal(id).await?;
                }
            }
        }
        let (store, held) = (self.store.clone(), self.held.clone());
        let built = tokio::task::spawn_blocking(move || {
            build_epoch_proofs(&store, &held, &sampled, &seed, &me, epoch, samples)
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
            Err(e) if e.reason().is_some_and(|r| r.starts_with("AlreadyProven")) => {
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
            "{proven}; {} deals held ({with_data} with data), {} to look at again",
            self.held.len(),
            self.retry.len()
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
mod tests {
    use super::*;
    use cairn_erasure::Layout;
    use cairn_storage::MemBackend;

    /// A node holding one checkpoint; its deal covers every shard.
    fn held() -> (Store<MemBackend>, HashMap<u64, HeldDeal>) {
        let store = Store::open(MemBackend::new(), 1 << 30).expect("store");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 31 % 253) as u8).collect();
        let upload = crate::pipeline::Upload::File {
            path: "w.bin".into(),
            reader: &data[..],
        };
        let layout = Layout::new(2, 1, 128 << 10).expect("layout");
        let (root, manifest) =
            crate::pipeline::ingest(&store, layout, upload, "w", &|_| {}).expect("ingest");
        let data = held_data(&store, &root, &manifest).expect("held");
        let c = data.commitment();
        let info = DealInfo {
            id: 7,
            node: Address::ZERO,
            client: Address::ZERO,
            start: 1,
            epochs: 10,
            commitment: c.root,
            leaf_count: c.leaf_count,
            checkpoint: super::super::root_word(&root),
            state: 2,
        };
        let deal = HeldDeal {
            info,
            data: Some(Arc::new(data)),
        };
        (store, HashMap::from([(7, deal)]))
    }

    #[test]
    fn proofs_verify_and_changed_data_sends_nothing() {
        let (store, held) = held();
        let me = Address::repeat_byte(3);
        let proofs = build_epoch_proofs(&store, &held, &[7], &[9; 32], &me, 4, 8).expect("proofs");
        assert_eq!(proofs.len(), 8);
        // An epoch the deal does not run in: nothing to prove.
        let none = build_epoch_proofs(&store, &held, &[7], &[9; 32], &me, 11, 8).expect("void");
        assert!(none.is_empty());
        // A deal id this node never took up fails the epoch instead of skipping it.
        assert!(matches!(
            build_epoch_proofs(&store, &held, &[8], &[9; 32], &me, 4, 8),
            Err(ProveEpochError::NotHeld(8))
        ));
        // Flip one byte in every shard: every sample now reads data that fails its hash, and
        // no proof comes out.
        let pieces = held[&7].data.as_ref().expect("data").pieces.clone();
        for p in &pieces {
            assert!(store.backend().flip_blob_byte(&p.cid.to_bytes(), 0));
            for at in (16 << 10..p.len as usize).step_by(16 << 10) {
                store.backend().flip_blob_byte(&p.cid.to_bytes(), at);
            }
        }
        let err = build_epoch_proofs(&store, &held, &[7], &[9; 32], &me, 4, 8)
            .expect_err("corrupt data proves nothing");
        assert!(
            matches!(err, ProveEpochError::Data { deal: 7, .. }),
            "{err}"
        );
    }
}
