//! The watcher: reports other nodes' missed epochs, each once, by one watcher at a time.
//!
//! Once an epoch's proof window has closed, every node with a running deal that neither
//! proved nor was slashed for it is a missed epoch. Who reports it and when is decided by
//! [`super::report`]: the watchers take turns in an order all of them compute alike, so the
//! first reports at once and the others only if it did not. At its turn the watcher reads the
//! epoch again and sends nothing if it is proven or slashed by then; the contract's
//! pre-flight refuses anything else that would revert, before it costs gas. A report mined
//! and reverted all the same (a race this order makes rare) is counted
//! (`cairn_chain_reverted_transactions_total`) and never sent again.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use alloy::primitives::Address;
use tracing::{debug, warn};

use super::report::{due_block, turn};
use super::{ChainError, DEAL_ACTIVE, DEAL_PROPOSED, DealInfo, Params, ProofChain};
use crate::metrics::ProofMetrics;
use crate::net::Membership;
use crate::worker::{Step, Worker, next_round};

/// Epochs back the watcher looks when it starts.
const WATCH_HORIZON: u64 = 8;
/// Missed epochs waiting for this watcher's turn, at most (a bound on memory if the chain
/// stalls; past it the newest are left to the other watchers).
const MAX_WAITING: usize = 16 * 1024;

/// A missed epoch of another node that this watcher may report from block `due` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Missed {
    due: u64,
    node: Address,
    epoch: u64,
}

/// Reports other nodes' missed epochs; owned by its task.
pub struct Watcher<C> {
    chain: C,
    metrics: ProofMetrics,
    params: Params,
    /// The chain's members, as the registry follows them: who takes turns to report.
    members: Membership,
    /// One round per `poll`.
    poll: Duration,
    /// Accepted deals of other nodes.
    deals: Vec<DealInfo>,
    pending: Vec<u64>,
    scanned: u64,
    checked: Option<u64>,
    /// Missed epochs found, in the order of their turn.
    waiting: BTreeSet<Missed>,
}

impl<C: ProofChain> Watcher<C> {
    pub async fn new(
        chain: C,
        metrics: ProofMetrics,
        members: Membership,
        poll: Duration,
    ) -> Result<Self, ChainError> {
        let params = chain.params().await?;
        Ok(Self {
            chain,
            metrics,
            params,
            members,
            poll,
            deals: Vec::new(),
            pending: Vec::new(),
            scanned: 0,
            checked: None,
            waiting: BTreeSet::new(),
        })
    }

    /// One round: learn new deals, find the missed epochs of every finished epoch not
    /// checked yet, then report those whose turn has come.
    pub async fn round(&mut self) -> Result<(), ChainError> {
        let me = self.chain.me();
        let count = self.chain.deal_count().await?;
        while self.scanned < count {
            self.scanned += 1;
            self.pending.push(self.scanned);
        }
        let mut todo: VecDeque<u64> = std::mem::take(&mut self.pending).into();
        while let Some(id) = todo.pop_front() {
            match self.chain.deal(id).await {
                Ok(d) if d.state == DEAL_PROPOSED => self.pending.push(id),
                Ok(d) if d.state == DEAL_ACTIVE && d.node != me => self.deals.push(d),
                Ok(_) => {}
                Err(e) => {
                    self.pending.push(id);
                    self.pending.extend(todo);
                    return Err(e);
                }
            }
        }
        let block = self.chain.block_number().await?;
        let now = self.params.epoch_of(block);
        let last_over = if self.params.is_over(now, block) {
            Some(now)
        } else {
            now.checked_sub(1)
        };
        let Some(last_over) = last_over else {
            return Ok(());
        };
        let first = match self.checked {
            Some(c) => c + 1,
            None => last_over.saturating_sub(WATCH_HORIZON),
        };
        let members: Vec<Address> = self
            .members
            .accounts()
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect();
        for epoch in first..=last_over {
            self.find_missed(epoch, &members);
            self.checked = Some(epoch);
        }
        self.report_due(block).await?;
        // Deals ended before the oldest epoch still to report cannot be missed any more.
        let oldest = self
            .waiting
            .iter()
            .map(|m| m.epoch)
            .min()
            .unwrap_or(last_over)
            .min(last_over);
        self.deals.retain(|d| d.start + d.epochs > oldest);
        Ok(())
    }

    /// Queue, at this watcher's turn, every node with a deal running in `epoch` (whether it
    /// proved is read when the turn comes: most often it did).
    fn find_missed(&mut self, epoch: u64, members: &[Address]) {
        let me = self.chain.me();
        let nodes: BTreeSet<Address> = self
            .deals
            .iter()
            .filter(|d| d.runs_in(epoch))
            .map(|d| d.node)
            .collect();
        let window_end = self.params.epoch_start(epoch) + self.params.proof_window;
        for node in nodes {
            if self.waiting.len() >= MAX_WAITING {
                warn!(
                    epoch,
                    "too many missed epochs waiting; leaving the rest to other watchers"
                );
                return;
            }
            let due = due_block(window_end, turn(&me, &node, epoch, members));
            self.waiting.insert(Missed { due, node, epoch });
        }
    }

    /// Report the missed epochs whose turn has come by `block`.
    async fn report_due(&mut self, block: u64) -> Result<(), ChainError> {
        while let Some(m) = self.waiting.first().copied() {
            if m.due > block {
                break;
            }
            // On an error `m` stays in `waiting`: retried next round.
            self.report(m).await?;
            self.waiting.remove(&m);
        }
        Ok(())
    }

    /// Report `m` unless it was proven or slashed meanwhile. Errors are those worth a retry
    /// (the chain could not be read or reached); a refusal or a revert is final.
    async fn report(&mut self, m: Missed) -> Result<(), ChainError> {
        let Missed { node, epoch, .. } = m;
        if self.chain.is_proven(node, epoch).await? || self.chain.is_slashed(node, epoch).await? {
            return Ok(());
        }
        let candidates: Vec<u64> = self
            .deals
            .iter()
            .filter(|d| d.node == node && d.runs_in(epoch))
            .map(|d| d.id)
            .collect();
        for deal in candidates {
            // The deal as the chain has it now: its client may have terminated it.
            let now = self.chain.deal(deal).await?;
            let runs = now.runs_in(epoch);
            if let Some(d) = self.deals.iter_mut().find(|d| d.id == deal) {
                *d = now;
            }
            if !runs {
                continue;
            }
            match self.chain.report_missed(node, epoch, deal).await {
                Ok(_) => {
                    self.metrics.reported.inc();
                    warn!(%node, epoch, deal, "reported a missed epoch");
                }
                // Refused by the pre-flight: nothing was sent.
                Err(ChainError::Reverted { reason, .. }) => {
                    debug!(%node, epoch, deal, %reason, "not reporting a missed epoch: the contract would refuse it");
                }
                // Mined and reverted (counted by the chain client): not sent again.
                Err(e @ ChainError::Failed { .. }) => {
                    warn!(%node, epoch, deal, error = %e, "a report reverted; not sending it again");
                }
                Err(e) => return Err(e),
            }
            return Ok(()); // once per node and epoch
        }
        Ok(())
    }
}

impl Worker for Watcher<super::Chain> {
    type Error = ChainError;

    fn name(&self) -> &'static str {
        "watcher"
    }

    async fn step(&mut self) -> Result<Step, ChainError> {
        let started = Instant::now();
        self.round().await?;
        Ok(next_round(started, self.poll))
    }

    fn progress(&self) -> String {
        let checked = self.checked.map_or_else(
            || "no epoch checked yet".to_string(),
            |e| format!("checked to epoch {e}"),
        );
        let per_node: BTreeMap<Address, usize> =
            self.waiting.iter().fold(BTreeMap::new(), |mut acc, m| {
                *acc.entry(m.node).or_default() += 1;
                acc
            });
        format!(
            "{checked}; {} running deals of other nodes watched, {} proposed; {} missed epochs \
             of {} nodes waiting for this watcher's turn",
            self.deals.len(),
            self.pending.len(),
            self.waiting.len(),
            per_node.len()
        )
    }

    fn backoff_first(&self) -> Duration {
        self.poll
    }

    fn backoff_max(&self) -> Duration {
        self.poll
    }
}
