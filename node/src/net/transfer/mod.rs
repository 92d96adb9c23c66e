//! Shard transfer over QUIC streams (`/cairn/shard/1`, one request per stream): the client
//! calls a gateway makes ([`client`]), and the server every node runs ([`server`]) with its
//! upload sessions ([`sessions`]) and per-peer limits ([`budget`]). Everything received is
//! verified against its CID before it is used or stored; a peer whose bytes do not verify is
//! cut off.

mod budget;
mod client;
mod delete;
mod server;
mod sessions;
mod sweep;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use cairn_erasure::{Cid, Manifest};
use cairn_storage::{Backend, Store};
use libp2p::futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{PeerId, Stream};
use thiserror::Error;

use super::wire::{self, HEADER_LEN, Response, Status, WireError};
use crate::metrics::TransferMetrics;

pub use client::Transfers;
pub use delete::{DeleteError, delete_for};
#[cfg(feature = "fault-injection")]
pub use server::FAULT_CORRUPT_SERVED_ENV;
pub use server::{ServerLimits, ShardServer};
pub use sweep::UploadSweeper;

/// Longest a single request may take end to end (a 256 MiB shard at ~10 MiB/s fits).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A transfer with a peer failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TransferError {
    #[error("cannot open a stream to {peer}: {reason}")]
    Open { peer: PeerId, reason: String },
    #[error("i/o with {peer}: {source}")]
    Io {
        peer: PeerId,
        #[source]
        source: std::io::Error,
    },
    #[error("{peer} sent a malformed message: {source}")]
    Wire {
        peer: PeerId,
        #[source]
        source: WireError,
    },
    #[error("{peer} answered {status:?}: {message}")]
    Remote {
        peer: PeerId,
        status: Status,
        message: String,
    },
    #[error("{peer} sent bytes that do not match {cid}: {reason}")]
    Verify {
        peer: PeerId,
        cid: String,
        reason: String,
    },
    #[error("{peer} did not answer within {0:?}", REQUEST_TIMEOUT)]
    Timeout { peer: PeerId },
    /// The stream ended before any answer: the peer dropped it unread (its inbound queue was
    /// full), so the request can be sent again.
    #[error("{peer} dropped the stream without answering")]
    Dropped { peer: PeerId },
}

impl TransferError {
    /// The peer answered that it does not have what was asked.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            TransferError::Remote {
                status: Status::NotFound,
                ..
            }
        )
    }
}

/// What this node's transfers moved: the component's Prometheus metrics, and bytes received
/// per peer (for `cairn get`'s per-source figures).
#[derive(Debug)]
pub struct TransferStats {
    pub metrics: TransferMetrics,
    /// Shard bytes received from each peer (one entry per peer ever read from).
    pub per_peer_in: Mutex<HashMap<PeerId, u64>>,
}

impl TransferStats {
    pub fn new(metrics: TransferMetrics) -> Self {
        Self {
            metrics,
            per_peer_in: Mutex::new(HashMap::new()),
        }
    }

    /// Bytes received from each peer so far.
    pub fn sources(&self) -> Vec<(PeerId, u64)> {
        let mut v: Vec<_> = lock(&self.per_peer_in)
            .iter()
            .map(|(p, n)| (*p, *n))
            .collect();
        v.sort();
        v
    }
}

/// Lock a mutex whose data stays consistent even if a holder panicked (counters, maps of
/// sessions): a poisoned lock is taken over.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn read_frame(stream: &mut Stream, peer: PeerId) -> Result<(u8, Vec<u8>), TransferError> {
    let mut h = [0u8; HEADER_LEN];
    read_exact(stream, &mut h, peer).await?;
    let (kind, len) =
        wire::decode_header(&h).map_err(|source| TransferError::Wire { peer, source })?;
    let mut body = vec![0u8; len as usize];
    read_exact(stream, &mut body, peer).await?;
    Ok((kind, body))
}

async fn read_exact(
    stream: &mut Stream,
    buf: &mut [u8],
    peer: PeerId,
) -> Result<(), TransferError> {
    stream
        .read_exact(buf)
        .await
        .map_err(|source| TransferError::Io { peer, source })
}

async fn write_all(stream: &mut Stream, buf: &[u8], peer: PeerId) -> Result<(), TransferError> {
    stream
        .write_all(buf)
        .await
        .map_err(|source| TransferError::Io { peer, source })
}

/// Read a response; an error status becomes [`TransferError::Remote`], a stream that ends
/// before the first byte [`TransferError::Dropped`].
async fn read_response(stream: &mut Stream, peer: PeerId) -> Result<Vec<u8>, TransferError> {
    let mut first = [0u8; 1];
    match stream.read(&mut first).await {
        Ok(0) => return Err(TransferError::Dropped { peer }),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(TransferError::Dropped { peer });
        }
        Err(source) => return Err(TransferError::Io { peer, source }),
    }
    let mut h = [0u8; HEADER_LEN];
    h[0] = first[0];
    read_exact(stream, &mut h[1..], peer).await?;
    let (kind, len) =
        wire::decode_header(&h).map_err(|source| TransferError::Wire { peer, source })?;
    let mut body = vec![0u8; len as usize];
    read_exact(stream, &mut body, peer).await?;
    let r = Response::decode(kind, body).map_err(|source| TransferError::Wire { peer, source })?;
    if r.status != Status::Ok {
        return Err(TransferError::Remote {
            peer,
            status: r.status,
            message: r.message(),
        });
    }
    Ok(r.body)
}

/// What a node announces after pinning its share of `root`: the root and every shard of the
/// manifest it holds, each once.
pub(crate) fn announcements<B: Backend>(
    store: &Store<B>,
    manifest: &Manifest,
    root: Cid,
) -> Result<Vec<Cid>, cairn_storage::BackendError> {
    let mut keys = vec![root];
    let distinct: std::collections::BTreeSet<&Cid> = manifest.shard_cids().collect();
    for cid in distinct {
        if store.has_shard(cid)? {
            keys.push(*cid);
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests;
