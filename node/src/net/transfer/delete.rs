//! Cluster-wide delete, a holder's side: the publisher the manifest names (its peer id,
//! authenticated by the connection's handshake) asks this node to unpin a checkpoint. The
//! node refuses anyone else, and refuses while a deal it accepted on the checkpoint still
//! runs (dropping the data would fail that deal's proofs and be slashed). A delete it does
//! leaves a tombstone: the store never pins that root again.

use cairn_erasure::Cid;
use cairn_storage::{Backend, ReadError, Store, UnpinError};
use libp2p::PeerId;
use thiserror::Error;

use crate::chain::Chain;
use crate::chain::ending::running_deals_on;
use crate::pipeline::now_unix;

/// A delete this node refused or could not do.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DeleteError {
    #[error("this node does not pin {0}")]
    NotPinned(Cid),
    #[error(
        "{root} names no publisher (a single node's put): only the operator of a node holding \
         it can unpin it there"
    )]
    NoPublisher { root: Cid },
    #[error("only the publisher {publisher} may delete {root}; {asked} asked")]
    NotPublisher {
        root: Cid,
        publisher: String,
        asked: PeerId,
    },
    #[error(
        "deal {deal} this node accepted on {root} runs until epoch {ends}: its client must end \
         it first (cairn rm --network ends the publisher's deals before deleting)"
    )]
    DealRunning { root: Cid, deal: u64, ends: u64 },
    #[error("reading the deals on chain: {0}")]
    Chain(#[from] crate::chain::ChainError),
    #[error(transparent)]
    Read(ReadError),
    #[error(transparent)]
    Unpin(UnpinError),
    #[error("recording the delete: {0}")]
    Tombstone(cairn_storage::BackendError),
    #[error("delete task failed: {0}")]
    Thread(String),
}

/// Whether `peer` may have this node drop `root`, and if so drop it; returns the shards
/// freed.
pub async fn delete_for<B: Backend>(
    store: &Store<B>,
    chain: Option<&Chain>,
    peer: PeerId,
    root: Cid,
) -> Result<usize, DeleteError> {
    let s = store.clone();
    let (manifest, _) = tokio::task::spawn_blocking(move || s.manifest_entry(&root))
        .await
        .map_err(|e| DeleteError::Thread(e.to_string()))?
        .map_err(|e| match e {
            ReadError::NotFound(_) => DeleteError::NotPinned(root),
            e => DeleteError::Read(e),
        })?;
    let publisher = manifest
        .publisher()
        .ok_or(DeleteError::NoPublisher { root })?;
    if PeerId::from_bytes(publisher).ok() != Some(peer) {
        return Err(DeleteError::NotPublisher {
            root,
            publisher: PeerId::from_bytes(publisher)
                .map_or_else(|_| "(not a peer id)".to_owned(), |p| p.to_string()),
            asked: peer,
        });
    }
    if let Some(chain) = chain
        && let Some(d) = running_deals_on(chain, &root).await?.into_iter().next()
    {
        return Err(DeleteError::DealRunning {
            root,
            deal: d.id,
            ends: d.ends,
        });
    }
    // The tombstone first: from here on this node never pins the root again (a holder that
    // missed the delete cannot repair it back onto this one).
    let s = store.clone();
    tokio::task::spawn_blocking(move || s.set_tombstone(&root, now_unix()))
        .await
        .map_err(|e| DeleteError::Thread(e.to_string()))?
        .map_err(DeleteError::Tombstone)?;
    let s = store.clone();
    tokio::task::spawn_blocking(move || s.unpin(&root))
        .await
        .map_err(|e| DeleteError::Thread(e.to_string()))?
        .map_err(|e| match e {
            UnpinError::NotFound(_) => DeleteError::NotPinned(root),
            e => DeleteError::Unpin(e),
        })
}
