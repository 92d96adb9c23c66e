//! Cluster-wide delete, the publisher's side: end this node's deals on the checkpoint (the
//! holders refuse to drop data under a running deal), then ask every node that may hold it
//! (members, the peers this node knows, the root's providers) to unpin it,
//! a few at a time, each within a deadline, and unpin it here. Holders check that this node
//! is the publisher the manifest names.

use serde::Serialize;

use super::*;
use crate::chain::Chain;
use crate::chain::ending::EndedDeals;
use crate::net::transfer::{DeleteError, TransferError, delete_for};

/// Members asked at once.
const ASKED_AT_ONCE: usize = 8;
/// How long a member may take to answer a delete.
const DELETE_DEADLINE: Duration = Duration::from_secs(15);

/// A network-wide delete that could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetworkDeleteError {
    #[error("cannot find the manifest of {root}: {source}")]
    Manifest {
        root: Cid,
        #[source]
        source: ReadError,
    },
    #[error(
        "{root} was published by {publisher}, not by this node ({me}): only its publisher may \
         delete it from the network"
    )]
    NotPublisher {
        root: Cid,
        publisher: String,
        me: PeerId,
    },
    #[error("ending the deals on {root}: {source}")]
    Deals {
        root: Cid,
        #[source]
        source: crate::chain::ChainError,
    },
}

/// What one node said.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum NodeAnswer {
    /// It unpinned the checkpoint and freed this many shards.
    Freed { shards: u64 },
    /// It does not pin the checkpoint.
    NotHeld,
    /// It refused (the message says why).
    Refused { reason: String },
    /// It did not answer.
    Unreachable { reason: String },
}

/// What a network-wide delete did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeleteReport {
    pub root: String,
    /// Per node (peer id), its answer; this node included.
    pub nodes: BTreeMap<String, NodeAnswer>,
    /// Shards freed on all nodes together.
    pub freed_shards: u64,
    /// Deals ended on chain, and the escrow refunded (none without a chain).
    pub deals_terminated: Vec<u64>,
    pub deals_cancelled: Vec<u64>,
    pub refunded_wei: String,
}

impl<B: Backend> Cluster<B> {
    /// Delete `root` from every member that pins it (this node being its publisher), after
    /// ending this node's deals on it when there is a chain.
    pub async fn delete_everywhere(
        &self,
        root: Cid,
        chain: Option<&Chain>,
    ) -> Result<DeleteReport, NetworkDeleteError> {
        let (manifest, _) = self
            .manifest(&root)
            .await
            .map_err(|source| NetworkDeleteError::Manifest { root, source })?;
        let me = self.net.peer_id();
        if manifest.publisher() != Some(me.to_bytes().as_slice()) {
            return Err(NetworkDeleteError::NotPublisher {
                root,
                publisher: manifest
                    .publisher()
                    .and_then(|p| PeerId::from_bytes(p).ok())
                    .map_or_else(
                        || "no one (a single node's put)".to_owned(),
                        |p| p.to_string(),
                    ),
                me,
            });
        }
        let ended = match chain {
            Some(c) => c
                .end_deals(&root)
                .await
                .map_err(|source| NetworkDeleteError::Deals { root, source })?,
            None => EndedDeals::default(),
        };
        info!(%root, terminated = ended.terminated.len(), cancelled = ended.cancelled.len(), "deleting a checkpoint from the network");
        // Everyone who may hold it, not only today's members: a holder slashed below the
        // minimum stake (or gone through exit) keeps its copy until asked.
        let mut others: Vec<PeerId> = self.members().await;
        others.extend(self.net.peers().await);
        others.extend(self.net.providers(&root.to_bytes()).await);
        others.sort();
        others.dedup();
        others.retain(|p| *p != me);
        let mut answers = libp2p::futures::stream::iter(others)
            .map(|peer| async move {
                let r =
                    tokio::time::timeout(DELETE_DEADLINE, self.transfers.delete(peer, &root)).await;
                let answer = match r {
                    Ok(Ok(shards)) => NodeAnswer::Freed { shards },
                    Ok(Err(e)) if e.is_not_found() => NodeAnswer::NotHeld,
                    Ok(Err(e @ TransferError::Remote { .. })) => NodeAnswer::Refused {
                        reason: e.to_string(),
                    },
                    Ok(Err(e)) => NodeAnswer::Unreachable {
                        reason: e.to_string(),
                    },
                    Err(_) => NodeAnswer::Unreachable {
                        reason: format!("no answer within {DELETE_DEADLINE:?}"),
                    },
                };
                (peer, answer)
            })
            .buffer_unordered(ASKED_AT_ONCE);
        let mut report = DeleteReport {
            root: root.to_string(),
            deals_terminated: ended.terminated,
            deals_cancelled: ended.cancelled,
            refunded_wei: ended.refunded_wei.to_string(),
            ..DeleteReport::default()
        };
        while let Some((peer, answer)) = answers.next().await {
            report.nodes.insert(peer.to_string(), answer);
        }
        drop(answers);
        let here = match delete_for(&self.store, chain, me, root).await {
            Ok(n) => NodeAnswer::Freed { shards: n as u64 },
            Err(DeleteError::NotPinned(_)) => NodeAnswer::NotHeld,
            Err(e) => NodeAnswer::Refused {
                reason: e.to_string(),
            },
        };
        report.nodes.insert(me.to_string(), here);
        report.freed_shards = report
            .nodes
            .values()
            .map(|a| match a {
                NodeAnswer::Freed { shards } => *shards,
                _ => 0,
            })
            .sum();
        Ok(report)
    }
}
