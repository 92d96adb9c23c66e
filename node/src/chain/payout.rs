//! Money that moves by itself: the node settles the finished epochs of its deals (payment per
//! proven epoch, credited by the contract), cancels the proposals it made as a gateway that
//! no node accepted in time (their escrow comes back), and withdraws what it is owed, on a
//! schedule (`chain.settle_every_epochs`, `chain.cancel_proposals_after_epochs`,
//! `chain.withdraw_min_gwei`). The decisions ([`to_settle`], [`to_cancel`],
//! [`should_withdraw`]) are pure; the task around them reads the chain and sends.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use alloy::primitives::U256;
use tracing::{info, warn};

use super::{Chain, ChainError, DEAL_ACTIVE, DEAL_PROPOSED, DealInfo, Params, ProofChain};
use crate::metrics::ProofMetrics;

/// Epochs one `settle` call pays at most (each costs a storage read on chain).
pub const MAX_SETTLE_EPOCHS: u64 = 256;
/// Settlements sent per round at most; the rest wait for the next round.
pub const MAX_SETTLES_PER_ROUND: usize = 8;
/// Cancellations sent per round at most; the rest wait for the next round.
pub const MAX_CANCELS_PER_ROUND: usize = 8;
/// Open proposals of this account followed at most (the oldest are forgotten beyond it: they
/// stay cancellable by hand).
pub const MAX_OPEN_PROPOSALS: usize = 100_000;
/// A payout round every this many chain polls.
pub const PAYOUT_POLLS: u32 = 20;

/// The first epoch whose proof window has not closed at `block` (the contract's rule: the
/// epochs before it are finished and can be settled).
pub fn first_unfinished(params: &Params, block: u64) -> u64 {
    let now = params.epoch_of(block);
    if block > params.epoch_start(now) + params.proof_window {
        now + 1
    } else {
        now
    }
}

/// The deals of this node to settle now: accepted ones with finished, unsettled epochs,
/// either all of them (the deal is over) or at least `every` of them. `every == 0` settles
/// nothing.
pub fn to_settle(deals: &[DealInfo], first_unfinished: u64, every: u64) -> Vec<u64> {
    if every == 0 {
        return Vec::new();
    }
    deals
        .iter()
        .filter(|d| d.state == DEAL_ACTIVE && d.start != 0 && first_unfinished > d.start)
        .filter(|d| {
            let finished = (first_unfinished - d.start).min(d.epochs);
            let unsettled = finished.saturating_sub(d.settled);
            unsettled > 0 && (finished == d.epochs || unsettled >= every)
        })
        .map(|d| d.id)
        .collect()
}

/// The proposals to look at for cancellation: proposed in an epoch at least `after` epochs
/// before `epoch` (`after == 0`: never cancel). `open` maps a proposal to its epoch.
pub fn to_cancel(open: &BTreeMap<u64, u64>, epoch: u64, after: u64) -> Vec<u64> {
    if after == 0 {
        return Vec::new();
    }
    open.iter()
        .filter(|(_, proposed)| proposed.saturating_add(after) <= epoch)
        .map(|(id, _)| *id)
        .collect()
}

/// Whether to withdraw `owed` wei now (`min_gwei == 0`: never).
pub fn should_withdraw(owed: U256, min_gwei: u64) -> bool {
    min_gwei > 0 && owed >= super::gwei_to_wei(min_gwei)
}

/// The task that settles and withdraws, one round a step.
pub struct Payout {
    pub chain: Chain,
    pub params: Params,
    pub settle_every: u64,
    pub cancel_after: u64,
    pub withdraw_min_gwei: u64,
    pub every: Duration,
    pub metrics: ProofMetrics,
    /// Settlements, cancellations and withdrawals sent since start.
    pub settled: u64,
    pub cancelled: u64,
    pub withdrawn: u64,
    /// This account's proposals not known to be accepted or cancelled: id -> epoch proposed.
    pub open: BTreeMap<u64, u64>,
    /// The next block whose proposals to read.
    pub next_block: u64,
    /// This node's deals settled to their last epoch: nothing more to pay, not read again.
    pub paid_out: BTreeSet<u64>,
}

impl Payout {
    /// A payout task for `chain`'s account.
    pub fn new(chain: Chain, params: Params, every: Duration, metrics: ProofMetrics) -> Self {
        Self {
            chain,
            params,
            settle_every: crate::config::DEFAULT_SETTLE_EVERY_EPOCHS,
            cancel_after: crate::config::DEFAULT_CANCEL_PROPOSALS_AFTER_EPOCHS,
            withdraw_min_gwei: crate::config::DEFAULT_WITHDRAW_MIN_GWEI,
            every,
            metrics,
            settled: 0,
            cancelled: 0,
            withdrawn: 0,
            open: BTreeMap::new(),
            next_block: params.genesis_block,
            paid_out: BTreeSet::new(),
        }
    }

    /// Cancel this account's proposals that no node accepted within `cancel_after` epochs.
    async fn cancel_stale(&mut self, block: u64) -> Result<(), ChainError> {
        if self.cancel_after == 0 {
            return Ok(());
        }
        if self.next_block <= block {
            for p in self
                .chain
                .proposals_between(self.next_block, Some(block))
                .await?
            {
                self.open.insert(p.id, self.params.epoch_of(p.block));
            }
            self.next_block = block + 1;
        }
        while self.open.len() > MAX_OPEN_PROPOSALS {
            self.open.pop_first();
        }
        let epoch = self.params.epoch_of(block);
        let mut sent = 0;
        for id in to_cancel(&self.open, epoch, self.cancel_after) {
            if self.chain.deal(id).await?.state != DEAL_PROPOSED {
                self.open.remove(&id);
                continue;
            }
            if sent == MAX_CANCELS_PER_ROUND {
                break;
            }
            sent += 1;
            let call = self.chain.contract().cancelDeal(U256::from(id));
            match self.chain.send("cancelDeal", call).await {
                Ok(_) => {
                    self.open.remove(&id);
                    self.cancelled += 1;
                    self.metrics.cancellations.inc();
                    info!(deal = id, "cancelled a proposal no node accepted in time");
                }
                // Accepted meanwhile (refused before sending, nothing spent).
                Err(e) if e.reason().is_some() => {
                    self.open.remove(&id);
                    warn!(deal = id, error = %e, "the contract refuses to cancel a proposal");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// One round: settle, cancel, withdraw.
    pub async fn round(&mut self) -> Result<(), ChainError> {
        let me = self.chain.me();
        let block = self.chain.block_number().await?;
        let mut deals = Vec::new();
        for id in self.chain.deals_of(me).await? {
            if self.paid_out.contains(&id) {
                continue;
            }
            let d = self.chain.deal(id).await?;
            if d.settled == d.epochs {
                self.paid_out.insert(id);
            } else {
                deals.push(d);
            }
        }
        let due = to_settle(
            &deals,
            first_unfinished(&self.params, block),
            self.settle_every,
        );
        for id in due.into_iter().take(MAX_SETTLES_PER_ROUND) {
            let call = self
                .chain
                .contract()
                .settle(U256::from(id), MAX_SETTLE_EPOCHS);
            match self.chain.send("settle", call).await {
                Ok(_) => {
                    self.settled += 1;
                    self.metrics.settlements.inc();
                    info!(deal = id, "settled a deal's finished epochs");
                }
                // Refused before sending (nothing spent): looked at again next round.
                Err(e) if e.reason().is_some() => {
                    warn!(deal = id, error = %e, "the contract refuses to settle a deal")
                }
                Err(e) => return Err(e),
            }
        }
        self.cancel_stale(block).await?;
        let owed = self.chain.owed().await?;
        if should_withdraw(owed, self.withdraw_min_gwei) {
            self.chain
                .send("withdraw", self.chain.contract().withdraw())
                .await?;
            self.withdrawn += 1;
            self.metrics.withdrawn_gwei.inc_by(super::wei_to_gwei(owed));
            info!(wei = %owed, "withdrew what the contract owed this node");
        }
        Ok(())
    }
}

impl crate::worker::Worker for Payout {
    type Error = ChainError;

    fn name(&self) -> &'static str {
        "payout"
    }

    async fn step(&mut self) -> Result<crate::worker::Step, ChainError> {
        self.round().await?;
        Ok(crate::worker::Step::Idle(self.every))
    }

    fn progress(&self) -> String {
        format!(
            "{} settlements, {} cancelled proposals and {} withdrawals since start; {} proposals open",
            self.settled,
            self.cancelled,
            self.withdrawn,
            self.open.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::{Address, B256};

    fn deal(id: u64, start: u64, epochs: u64, settled: u64, state: u8) -> DealInfo {
        DealInfo {
            id,
            node: Address::ZERO,
            client: Address::ZERO,
            start,
            epochs,
            commitment: [0; 16],
            leaf_count: 1,
            checkpoint: B256::ZERO,
            state,
            settled,
            draw_epochs: epochs,
            draw_slot: 1,
            proposed_epoch: 0,
            price: U256::from(1),
        }
    }

    #[test]
    fn deals_are_settled_when_over_or_every_n_finished_epochs() {
        let deals = [
            deal(1, 10, 5, 0, DEAL_ACTIVE),    // over at 15: settle it
            deal(2, 10, 5, 5, DEAL_ACTIVE),    // over and settled
            deal(3, 10, 100, 0, DEAL_ACTIVE),  // 10 finished of 100, every 8: due
            deal(4, 10, 100, 4, DEAL_ACTIVE),  // 6 unsettled: not yet
            deal(5, 0, 100, 0, DEAL_PROPOSED), // not accepted
            deal(6, 25, 100, 0, DEAL_ACTIVE),  // starts later
        ];
        assert_eq!(to_settle(&deals, 20, 8), vec![1, 3]);
        assert_eq!(to_settle(&deals, 22, 8), vec![1, 3, 4]);
        assert!(to_settle(&deals, 22, 0).is_empty(), "0 settles nothing");
        // A deal terminated early has fewer epochs: it is over sooner.
        assert_eq!(
            to_settle(&[deal(7, 10, 2, 0, DEAL_ACTIVE)], 13, 50),
            vec![7]
        );
    }

    #[test]
    fn finished_epochs_follow_the_proof_window() {
        let p = Params {
            genesis_block: 100,
            epoch_blocks: 10,
            proof_window: 3,
            samples: 8,
            slash_amount: U256::ZERO,
            reward_bps: 0,
            min_stake: U256::ZERO,
            min_escrow: U256::ZERO,
            proposal_epochs: 1_000,
        };
        assert_eq!(first_unfinished(&p, 120), 2);
        assert_eq!(first_unfinished(&p, 123), 2);
        assert_eq!(first_unfinished(&p, 124), 3);
    }

    #[test]
    fn proposals_are_cancelled_once_old_enough() {
        let open = BTreeMap::from([(1, 10), (2, 14), (3, 16)]);
        assert_eq!(to_cancel(&open, 16, 2), vec![1, 2]);
        assert_eq!(to_cancel(&open, 18, 2), vec![1, 2, 3]);
        assert!(to_cancel(&open, 100, 0).is_empty(), "0 never cancels");
    }

    #[test]
    fn withdrawals_wait_for_the_minimum() {
        let gwei = super::super::gwei_to_wei(1);
        assert!(!should_withdraw(U256::from(999) * gwei, 1000));
        assert!(should_withdraw(U256::from(1000) * gwei, 1000));
        assert!(!should_withdraw(U256::MAX, 0), "0 never withdraws");
    }
}
