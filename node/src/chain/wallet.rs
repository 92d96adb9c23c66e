//! What the node's account holds and is owed, read from chain: balance, stake (bonded and
//! unbonding), credits the contract owes it, the deals it accepted as a node (running or
//! ended, settled or not, escrow left) and the escrow of deals it proposed as a client.
//! `GET /v1/wallet` answers it and `cairn wallet` prints it.

use alloy::primitives::U256;
use serde::{Deserialize, Serialize};

use super::{Chain, ChainError, DEAL_ACTIVE, DEAL_PROPOSED, ProofChain, word_root};

/// Wei amounts are decimal strings (they do not fit a JSON number).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wallet {
    pub account: String,
    pub epoch: u64,
    pub balance_wei: String,
    pub registered: bool,
    pub stake_wei: String,
    pub unbonding_wei: String,
    /// First epoch the unbonding stake may be withdrawn in.
    pub unbonding_epoch: u64,
    /// Credits the contract owes the account (deal payments, refunds, report rewards).
    pub owed_wei: String,
    /// Deals the account accepted as a storing node, in order of acceptance.
    pub node_deals: Vec<NodeDeal>,
    /// Deals the account proposed as a client that are still proposed or running.
    pub client_deals_open: u64,
    /// Escrow still held in those deals.
    pub client_escrow_wei: String,
}

/// One deal of the account as a storing node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDeal {
    pub id: u64,
    pub checkpoint: String,
    pub start: u64,
    pub epochs: u64,
    pub settled: u64,
    /// Runs in the current epoch or a later one.
    pub running: bool,
    /// Escrow of the epochs not settled yet.
    pub escrow_wei: String,
}

/// Read the wallet of `chain`'s account.
pub async fn wallet(chain: &Chain) -> Result<Wallet, ChainError> {
    let me = ProofChain::me(chain);
    let epoch = chain.params().await?.epoch_of(chain.block_number().await?);
    let n = chain
        .contract()
        .nodes(me)
        .call()
        .await
        .map_err(|e| super::from_contract("nodes", e))?;
    let owed = chain.owed().await?;
    let mut node_deals = Vec::new();
    for id in chain.deals_of(me).await? {
        let d = chain.deal(id).await?;
        node_deals.push(NodeDeal {
            id,
            checkpoint: word_root(&d.checkpoint).to_string(),
            start: d.start,
            epochs: d.epochs,
            settled: d.settled,
            running: d.state == DEAL_ACTIVE && !d.is_over(epoch),
            escrow_wei: d.unsettled_escrow().to_string(),
        });
    }
    let (mut open, mut escrow) = (0, U256::ZERO);
    for id in chain.proposed_ids(None).await? {
        let d = chain.deal(id).await?;
        if d.state == DEAL_PROPOSED || d.state == DEAL_ACTIVE && d.settled < d.epochs {
            open += 1;
            escrow += d.unsettled_escrow();
        }
    }
    Ok(Wallet {
        account: me.to_string(),
        epoch,
        balance_wei: chain.balance().await?.to_string(),
        registered: n.registered,
        stake_wei: n.stake.to_string(),
        unbonding_wei: n.unbonding.to_string(),
        unbonding_epoch: n.unbondingEpoch,
        owed_wei: owed.to_string(),
        node_deals,
        client_deals_open: open,
        client_escrow_wei: escrow.to_string(),
    })
}

impl Wallet {
    /// For people: what `cairn wallet` prints.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let registered = if self.registered {
            "registered"
        } else {
            "not registered"
        };
        let running = self.node_deals.iter().filter(|d| d.running).count();
        let unsettled: u64 = self
            .node_deals
            .iter()
            .map(|d| d.epochs.saturating_sub(d.settled))
            .sum();
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "account   {} ({registered}), epoch {}",
            self.account, self.epoch
        );
        let _ = writeln!(out, "balance   {}", eth(&self.balance_wei));
        let _ = writeln!(
            out,
            "stake     {} bonded, {} unbonding (from epoch {})",
            eth(&self.stake_wei),
            eth(&self.unbonding_wei),
            self.unbonding_epoch
        );
        let _ = writeln!(
            out,
            "credits   {} owed by the contract",
            eth(&self.owed_wei)
        );
        let _ = writeln!(
            out,
            "as node   {} deals accepted, {running} running, {unsettled} epochs not settled yet",
            self.node_deals.len()
        );
        for d in &self.node_deals {
            let state = if d.running { "running" } else { "ended" };
            let _ = writeln!(
                out,
                "  deal {}  {}  epochs {}..{}  settled {}  escrow left {}  {state}",
                d.id,
                d.checkpoint,
                d.start,
                d.start + d.epochs,
                d.settled,
                eth(&d.escrow_wei)
            );
        }
        let _ = writeln!(
            out,
            "as client {} deals open, {} in escrow",
            self.client_deals_open,
            eth(&self.client_escrow_wei)
        );
        out
    }
}

/// `wei` (a decimal string) in ETH with 6 decimals, for people.
pub fn eth(wei: &str) -> String {
    let Ok(w) = wei.parse::<U256>() else {
        return format!("{wei} wei");
    };
    let micro = w / U256::from(1_000_000_000_000u64);
    let whole = micro / U256::from(1_000_000u64);
    let frac = (micro % U256::from(1_000_000u64)).to::<u64>();
    format!("{whole}.{frac:06} ETH")
}

#[cfg(test)]
mod tests {
    #[test]
    fn eth_amounts_read_as_people_write_them() {
        assert_eq!(super::eth("1000000000000000000"), "1.000000 ETH");
        assert_eq!(super::eth("1500000000000"), "0.000001 ETH");
        assert_eq!(super::eth("0"), "0.000000 ETH");
        assert_eq!(super::eth("x"), "x wei");
    }
}
