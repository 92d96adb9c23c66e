//! The publisher's side of a put: the provenance record, then one deal per storing node.

use std::collections::HashMap;

use alloy::primitives::{Address, B256, U256};
use cairn_erasure::Cid;
use cairn_proofs::Commitment;
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{Chain, ChainError, Record};
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
    /// Deals proposed: (node account, deal id).
    pub deals: Vec<(String, u64)>,
    /// Storing nodes no deal could be made with, and why.
    pub skipped: Vec<String>,
    /// Why the chain part failed, if it did (the data is stored either way).
    pub error: Option<String>,
}

impl Publisher {
    /// Record `root` (child of `parent`) and propose a deal to each storing node. The data is
    /// stored already; failures are reported, not fatal.
    pub async fn publish(
        &self,
        net: Option<(&Network, &crate::net::Membership)>,
        root: &Cid,
        parent: Option<&Cid>,
        name: &str,
        commitments: HashMap<PeerId, Commitment>,
        own: Result<Option<Commitment>, String>,
    ) -> ChainReport {
        let mut report = ChainReport::default();
        let own = own.unwrap_or_else(|e| {
            report.skipped.push(format!("this node: {e}"));
            None
        });
        let meta = B256::from(*blake3::hash(name.as_bytes()).as_bytes());
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
        match self
            .chain
            .publish_with_deals(
                root,
                parent,
                meta,
                &registered,
                self.deal_epochs,
                self.deal_price,
            )
            .await
        {
            Ok((published, ids)) => {
                report.published = published;
                for ((node, c), id) in registered.iter().zip(ids) {
                    info!(%root, %node, deal = id, leaves = c.leaf_count, "deal proposed");
                    report.deals.push((node.to_string(), id));
                }
            }
            Err(e)
                if e.reason()
                    .is_some_and(|r| r.starts_with("AlreadyPublished")) =>
            {
                let why = "the checkpoint is recorded on chain by another publisher (or with \
                           another parent); no deals made";
                warn!(%root, "{why}");
                report.error = Some(why.into());
            }
            Err(e) => {
                warn!(%root, error = %e, "cannot record the checkpoint and its deals on chain");
                report.error = Some(e.to_string());
            }
        }
        report
    }

    /// The lineage of `root`: its record, its parent's, ... back to a base checkpoint.
    pub async fn lineage(&self, root: &Cid) -> Result<Vec<Record>, ChainError> {
        let mut out = Vec::new();
        let mut next = Some(super::root_word(root));
        while let Some(w) = next {
            let Some(r) = self.chain.record(w).await? else {
                break;
            };
            next = r.parent;
            out.push(r);
            if out.len() > 10_000 {
                break; // records are append-only with known parents: no cycles; a bound anyway
            }
        }
        Ok(out)
    }
}
