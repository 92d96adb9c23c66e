//! The publisher's side of a put: the provenance record, then one deal per storing node.

use std::collections::HashMap;

use alloy::primitives::{Address, B256, U256};
use cairn_erasure::Cid;
use cairn_proofs::Commitment;
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::provenance::{Provenance, name_keys};
use super::{CairnStorage, Chain};
use crate::net::Network;

/// What a put through this node does on chain.
#[derive(Clone)]
pub struct Publisher {
    pub chain: Chain,
    /// Epochs each deal lasts.
    pub deal_epochs: u32,
    /// Wei per epoch each deal pays.
    pub deal_price: U256,
}

/// What happened on chain for one put (part of the put's answer).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChainReport {
    /// The provenance record was written by this put (false when this node had recorded it
    /// before: a re-put only adds deals).
    pub published: bool,
    /// The name's revision this put wrote on chain (none when the put named nothing on
    /// chain, or the name already pointed at this root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_revision: Option<u64>,
    /// Deals proposed: (node account, deal id).
    pub deals: Vec<(String, u64)>,
    /// Storing nodes no deal could be made with, and why.
    pub skipped: Vec<String>,
    /// Why the chain part failed, if it did (the data is stored either way).
    pub error: Option<String>,
}

impl Publisher {
    /// Record `root` as this account's (child of `parent`, as recorded by its publisher),
    /// point `chain_name` at it, and propose a deal to each storing node. The data is stored
    /// already; failures are reported, not fatal.
    #[allow(clippy::too_many_arguments)]
    pub async fn publish(
        &self,
        net: Option<(&Network, &crate::net::Membership)>,
        root: &Cid,
        parent: Option<(Address, &Cid)>,
        meta_name: &str,
        chain_name: Option<&str>,
        commitments: HashMap<PeerId, Commitment>,
        own: Result<Option<Commitment>, String>,
    ) -> ChainReport {
        let mut report = ChainReport::default();
        let own = own.unwrap_or_else(|e| {
            report.skipped.push(format!("this node: {e}"));
            None
        });
        let meta = B256::from(*blake3::hash(meta_name.as_bytes()).as_bytes());
        // A name the contract would refuse is left out rather than failing the deals.
        let chain_name = chain_name.filter(|n| match name_keys(n) {
            Ok(_) => true,
            Err(e) => {
                report
                    .skipped
                    .push(format!("name {n:?} not recorded on chain: {e}"));
                false
            }
        });
        let mut targets: Vec<(Address, Commitment)> = Vec::new();
        if let Some(c) = own {
            targets.push((super::ProofChain::me(&self.chain), c));
        }
        let me = net.map(|(n, _)| n.peer_id());
        for (peer, c) in commitments {
            // The account the registry binds the peer id to: what a peer claims about itself
            // is never used to name who gets paid.
            let account = if Some(peer) == me {
                Some(super::ProofChain::me(&self.chain).to_string())
            } else if let Some((_, m)) = net {
                m.account(&peer)
            } else {
                None
            };
            match account.as_deref().map(str::parse::<Address>) {
                Some(Ok(a)) => targets.push((a, c)),
                _ => report
                    .skipped
                    .push(format!("{peer}: no chain account bound to this peer id")),
            }
        }
        // A node that is not registered cannot take a deal (and would fail the batch).
        let mut registered = Vec::with_capacity(targets.len());
        for (node, c) in targets {
            match self.chain.is_registered(node).await {
                Ok(true) => registered.push((node, c)),
                Ok(false) => report
                    .skipped
                    .push(format!("{node}: not registered on chain")),
                Err(e) => report.skipped.push(format!("{node}: {e}")),
            }
        }
        let mut provenance = Provenance {
            root,
            parent,
            meta,
            name: chain_name,
        };
        let mut sent = self
            .chain
            .publish_with_deals(provenance, &registered, self.deal_epochs, self.deal_price)
            .await;
        // A name whose org someone else claimed (perhaps just now, from the pool) must not
        // cost the record and the deals: they are sent again without it.
        if let (Some(name), Err(e)) = (chain_name, &sent)
            && (e.refused_with::<CairnStorage::OrgTaken>()
                || matches!(e, super::ChainError::Failed { .. }))
        {
            warn!(%root, %name, error = %e, "the name was refused on chain; recording the checkpoint without it");
            report.skipped.push(format!(
                "name {name:?} not recorded on chain: its org belongs to another publisher \
                 (or the transaction failed: {e})"
            ));
            provenance.name = None;
            sent = self
                .chain
                .publish_with_deals(provenance, &registered, self.deal_epochs, self.deal_price)
                .await;
        }
        match sent {
            Ok(done) => {
                report.published = done.recorded;
                report.name_revision = done.revision;
                for ((node, c), id) in registered.iter().zip(done.deals) {
                    info!(%root, %node, deal = id, leaves = c.leaf_count, "deal proposed");
                    report.deals.push((node.to_string(), id));
                }
            }
            Err(e) => {
                let why = if e.refused_with::<CairnStorage::AlreadyPublished>() {
                    "this node recorded the checkpoint before with another parent; no deals made"
                        .to_owned()
                } else if e.refused_with::<CairnStorage::UnknownParent>() {
                    match parent {
                        Some((who, p)) => {
                            format!("{who} has no record of the parent {p}; no deals made")
                        }
                        None => "the parent is unknown; no deals made".to_owned(),
                    }
                } else if e.refused_with::<CairnStorage::EscrowTooLow>() {
                    format!(
                        "a deal's escrow ({} epochs at {} wei) is below the contract's minimum ({}); \
                         raise chain.deal_price_gwei or chain.deal_epochs; nothing recorded",
                        self.deal_epochs,
                        self.deal_price,
                        e.reason().unwrap_or_default()
                    )
                } else {
                    e.to_string()
                };
                warn!(%root, error = %why, "cannot record the checkpoint and its deals on chain");
                report.error = Some(why);
            }
        }
        report
    }
}
