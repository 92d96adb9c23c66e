//! Cluster-wide delete, the publisher's side: end this node's deals on the checkpoint (the
//! holders refuse to drop data under a running deal), then ask every node that may hold it
//! (members, the peers this node knows, the root's providers) to unpin it,
//! a few at a time, each within a deadline, and unpin it here. Holders check that this node
//! is the publisher the manifest names.

use serde::Serialize;

use super::*;
use cairn_storage::PendingDelete;

use crate::chain::Chain;
use crate::chain::ending::EndedDeals;
use crate::net::transfer::{DeleteError, TransferError, delete_for};
use crate::worker::{Step, Worker};

/// Members asked at once.
const ASKED_AT_ONCE: usize = 8;
/// How long a member may take to answer a delete.
const DELETE_DEADLINE: Duration = Duration::from_secs(15);
/// How long the nodes that missed a delete (down, or refusing while a deal ran) are asked
/// again.
pub const DELETE_RETRY_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

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

impl NodeAnswer {
    /// Whether the node may still hold the checkpoint, so it is asked again later.
    fn ask_again(&self) -> bool {
        matches!(self, Self::Refused { .. } | Self::Unreachable { .. })
    }
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
    /// How long the nodes that did not confirm are asked again (0: every node confirmed).
    pub retried_for_secs: u64,
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
            .map(|peer| async move { (peer, self.ask_delete(peer, &root).await) })
            .buffer_unordered(ASKED_AT_ONCE);
        let mut report = DeleteReport {
            root: root.to_string(),
            deals_terminated: ended.terminated,
            deals_cancelled: ended.cancelled,
            refunded_wei: ended.refunded_wei.to_string(),
            ..DeleteReport::default()
        };
        let mut again = Vec::new();
        while let Some((peer, answer)) = answers.next().await {
            if answer.ask_again() {
                again.push(peer.to_bytes());
            }
            report.nodes.insert(peer.to_string(), answer);
        }
        drop(answers);
        // The nodes that did not confirm are asked again by the retry job (`delete_retry`).
        if !again.is_empty() {
            let pending = PendingDelete {
                root,
                started: now_unix(),
                peers: again,
            };
            let store = self.store.clone();
            let saved = tokio::task::spawn_blocking(move || store.set_pending_delete(&pending))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
            match saved {
                Ok(()) => report.retried_for_secs = DELETE_RETRY_FOR.as_secs(),
                Err(e) => warn!(%root, error = %e, "cannot save the nodes to ask again"),
            }
        }
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

    /// Ask `peer` to unpin `root` (this node being its publisher), within a deadline.
    async fn ask_delete(&self, peer: PeerId, root: &Cid) -> NodeAnswer {
        let r = tokio::time::timeout(DELETE_DEADLINE, self.transfers.delete(peer, root)).await;
        match r {
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
        }
    }
}

/// The publisher's `delete_retry` job: every `every`, the nodes that did not confirm a
/// network-wide delete are asked again, until they do or [`DELETE_RETRY_FOR`] has passed.
pub struct DeleteRetry<B: Backend> {
    pub cluster: Cluster<B>,
    pub every: Duration,
    /// Deletes pending and nodes still to ask, after the last round.
    pending: (usize, usize),
    /// Nodes that confirmed on a retry, since start.
    confirmed: u64,
}

/// A retry round failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RetryError {
    #[error("reading the pending deletes: {0}")]
    Read(#[from] ReadError),
    #[error("saving a pending delete: {0}")]
    Save(#[from] cairn_storage::BackendError),
    #[error("store task failed: {0}")]
    Thread(String),
}

impl<B: Backend> DeleteRetry<B> {
    pub fn new(cluster: Cluster<B>, every: Duration) -> Self {
        Self {
            cluster,
            every,
            pending: (0, 0),
            confirmed: 0,
        }
    }

    async fn store<T: Send + 'static, E: Into<RetryError> + Send + 'static>(
        &self,
        f: impl FnOnce(&Store<B>) -> Result<T, E> + Send + 'static,
    ) -> Result<T, RetryError> {
        let store = self.cluster.store.clone();
        tokio::task::spawn_blocking(move || f(&store).map_err(Into::into))
            .await
            .map_err(|e| RetryError::Thread(e.to_string()))?
    }
}

impl<B: Backend> Worker for DeleteRetry<B> {
    type Error = RetryError;

    fn name(&self) -> &'static str {
        "delete_retry"
    }

    async fn step(&mut self) -> Result<Step, RetryError> {
        let all = self.store(|s| s.pending_deletes()).await?;
        let now = now_unix();
        let mut left = (0, 0);
        for mut p in all {
            if now.saturating_sub(p.started) > DELETE_RETRY_FOR.as_secs() {
                warn!(root = %p.root, nodes = p.peers.len(), "giving up asking nodes to delete a checkpoint");
                p.peers.clear();
            }
            // Asked as the first time: a few at once, each within the deadline.
            let root = p.root;
            let cluster = &self.cluster;
            let peers: Vec<PeerId> = std::mem::take(&mut p.peers)
                .iter()
                .filter_map(|b| PeerId::from_bytes(b).ok())
                .collect();
            let mut answers = libp2p::futures::stream::iter(peers)
                .map(|peer| async move { (peer, cluster.ask_delete(peer, &root).await) })
                .buffer_unordered(ASKED_AT_ONCE);
            let mut still = Vec::new();
            while let Some((peer, answer)) = answers.next().await {
                if answer.ask_again() {
                    still.push(peer.to_bytes());
                } else {
                    info!(%root, %peer, ?answer, "a node that missed a delete confirmed it");
                    self.confirmed += 1;
                }
            }
            drop(answers);
            p.peers = still;
            if !p.peers.is_empty() {
                left = (left.0 + 1, left.1 + p.peers.len());
            }
            self.store(move |s| s.set_pending_delete(&p)).await?;
        }
        self.pending = left;
        Ok(Step::Idle(self.every))
    }

    fn progress(&self) -> String {
        format!(
            "{} deletes waiting on {} nodes; {} nodes confirmed on a retry since start",
            self.pending.0, self.pending.1, self.confirmed
        )
    }
}
