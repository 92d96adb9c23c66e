//! Deals that end with their checkpoint: the publisher (the deals' client) ends its deals on
//! a root when it deletes it from the network (running ones terminated, proposed ones
//! cancelled, unused escrow refunded), and a storing node refuses to drop data that a deal
//! it accepted still runs on (it would miss proofs and be slashed).

use alloy::primitives::{B256, U256};
use alloy::providers::Provider;
use alloy::rpc::types::Filter;
use alloy::sol_types::SolEvent;
use cairn_erasure::Cid;

use super::bindings::CairnStorage;
use super::{
    Chain, ChainError, DEAL_ACTIVE, DEAL_PROPOSED, DealInfo, ProofChain, from_contract, root_word,
    rpc,
};

/// A deal this node accepted that still runs on a checkpoint (now or in a later epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningDeal {
    pub id: u64,
    /// The first epoch it no longer runs in.
    pub ends: u64,
}

/// The deals this node (`chain.me()`) accepted on `root` that run in the current epoch or
/// later: data under them must stay until their client ends them.
pub async fn running_deals_on<C: ProofChain>(
    chain: &C,
    root: &Cid,
) -> Result<Vec<RunningDeal>, ChainError> {
    let word = root_word(root);
    let epoch = chain.params().await?.epoch_of(chain.block_number().await?);
    let mut out = Vec::new();
    for id in chain.deals_of(chain.me()).await? {
        let d = chain.deal(id).await?;
        if d.checkpoint == word
            && d.state == DEAL_ACTIVE
            && d.epochs > 0
            && d.start + d.epochs > epoch
        {
            out.push(RunningDeal {
                id,
                ends: d.start + d.epochs,
            });
        }
    }
    Ok(out)
}

/// A deal this account proposed, as its log shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    pub id: u64,
    pub checkpoint: B256,
    /// The block it was proposed in.
    pub block: u64,
}

/// What ending a checkpoint's deals did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndedDeals {
    /// Running deals cut short (their remaining epochs refunded).
    pub terminated: Vec<u64>,
    /// Proposed deals withdrawn (their whole escrow refunded).
    pub cancelled: Vec<u64>,
    /// Wei credited back to this account (withdraw it with the contract's `withdraw`).
    pub refunded_wei: U256,
}

impl Chain {
    /// This account's deals (as client) on `root`, as the chain holds them now.
    pub async fn client_deals(&self, root: &Cid) -> Result<Vec<DealInfo>, ChainError> {
        let word = root_word(root);
        let mut out = Vec::new();
        for id in self.proposed_ids(Some(word)).await? {
            out.push(self.deal(id).await?);
        }
        Ok(out)
    }

    /// Ids of the deals this account proposed (as client), on `root` if given: found by
    /// their `DealProposed` logs, which index the client.
    pub async fn proposed_ids(&self, root: Option<B256>) -> Result<Vec<u64>, ChainError> {
        let from = self.genesis_block().await?;
        let found = self.proposals_between(from, None).await?;
        Ok(found
            .into_iter()
            .filter(|p| root.is_none_or(|w| p.checkpoint == w))
            .map(|p| p.id)
            .collect())
    }

    /// The deals this account proposed in blocks `from..=to` (to the latest without `to`).
    pub async fn proposals_between(
        &self,
        from: u64,
        to: Option<u64>,
    ) -> Result<Vec<Proposal>, ChainError> {
        let mut filter = Filter::new()
            .address(*self.contract.address())
            .event_signature(CairnStorage::DealProposed::SIGNATURE_HASH)
            .topic2(self.me.into_word())
            .from_block(from);
        if let Some(to) = to {
            filter = filter.to_block(to);
        }
        let logs = self
            .provider
            .get_logs(&filter)
            .await
            .map_err(rpc("eth_getLogs"))?;
        let mut out = Vec::new();
        for log in logs {
            let ev = CairnStorage::DealProposed::decode_log(&log.inner).map_err(|e| {
                ChainError::Rpc {
                    call: "eth_getLogs",
                    reason: format!("undecodable DealProposed log: {e}"),
                }
            })?;
            out.push(Proposal {
                id: ev.data.id.saturating_to(),
                checkpoint: ev.data.checkpoint,
                block: log.block_number.unwrap_or(from),
            });
        }
        Ok(out)
    }

    /// Wei the contract owes this account.
    pub async fn owed(&self) -> Result<U256, ChainError> {
        self.contract
            .owed(self.me)
            .call()
            .await
            .map_err(|e| from_contract("owed", e))
    }

    /// End every deal this account made on `root`: terminate the running ones, cancel the
    /// proposed ones. Deals already over are left as they are.
    pub async fn end_deals(&self, root: &Cid) -> Result<EndedDeals, ChainError> {
        let before = self.owed().await?;
        let epoch = self.params().await?.epoch_of(self.block_number().await?);
        let mut out = EndedDeals::default();
        for d in self.client_deals(root).await? {
            let id = U256::from(d.id);
            let mut state = d.state;
            if state == DEAL_PROPOSED {
                match self.send("cancelDeal", self.contract.cancelDeal(id)).await {
                    Ok(_) => {
                        out.cancelled.push(d.id);
                        continue;
                    }
                    // The node accepted it meanwhile: terminate it instead.
                    Err(e) if e.refused_with::<CairnStorage::DealNotProposed>() => {
                        state = self.deal(d.id).await?.state;
                    }
                    Err(e) => return Err(e),
                }
            }
            let d = self.deal(d.id).await?;
            // Running, or accepted and starting next epoch: cut what has not run.
            if state == DEAL_ACTIVE && d.epochs > 0 && d.start + d.epochs > epoch.max(d.start) {
                match self
                    .send("terminateDeal", self.contract.terminateDeal(id))
                    .await
                {
                    Ok(_) => out.terminated.push(d.id),
                    // Its last epoch is settled already: nothing left to cut.
                    Err(e) if e.refused_with::<CairnStorage::DealNotActive>() => {}
                    Err(e) => return Err(e),
                }
            }
        }
        out.refunded_wei = self.owed().await?.saturating_sub(before);
        Ok(out)
    }
}
