//! What the shard server lets one peer, and everyone together, hold at once: streams being
//! served, and memory for request and answer bytes. Every message kind takes its bytes from
//! the same budget, a peer's share first and then the global one, so one peer can neither
//! starve the others nor make the node allocate beyond the global bound.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use libp2p::PeerId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::lock;

/// Memory for message bytes held at once by the server, in MiB.
pub const GLOBAL_BUDGET_MIB: u32 = 512;
/// A peer's share of it: enough for the largest shard the wire allows (256 MiB).
pub const PEER_BUDGET_MIB: u32 = 256;
/// Streams served at once, from everyone.
pub const MAX_STREAMS: usize = 256;
/// Streams served at once for one peer; more are refused with `Busy` right away.
pub const MAX_STREAMS_PER_PEER: usize = 32;

/// Why a stream was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The peer has [`MAX_STREAMS_PER_PEER`] streams being served.
    Peer,
    /// [`MAX_STREAMS`] streams are being served.
    Global,
}

struct PeerState {
    streams: usize,
    bytes: Arc<Semaphore>,
}

struct Inner {
    peers: HashMap<PeerId, PeerState>,
    streams: usize,
}

/// Streams and byte budgets, per peer and global. Cheap to clone.
#[derive(Clone)]
pub struct Budget {
    inner: Arc<Mutex<Inner>>,
    global: Arc<Semaphore>,
    global_mib: u32,
    max_streams: usize,
    max_per_peer: usize,
}

/// One admitted stream; dropping it frees the stream slot.
pub struct StreamSlot {
    budget: Budget,
    peer: PeerId,
    bytes: Arc<Semaphore>,
}

/// Memory taken from the budget; returned when dropped.
pub struct Bytes {
    _peer: OwnedSemaphorePermit,
    _global: OwnedSemaphorePermit,
}

impl Budget {
    pub fn new() -> Self {
        Self::with_limits(MAX_STREAMS, MAX_STREAMS_PER_PEER, GLOBAL_BUDGET_MIB)
    }

    pub fn with_limits(max_streams: usize, max_per_peer: usize, global_mib: u32) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                peers: HashMap::new(),
                streams: 0,
            })),
            global: Arc::new(Semaphore::new(global_mib as usize)),
            global_mib,
            max_streams,
            max_per_peer,
        }
    }

    /// Admit a stream from `peer`, or say which limit it hit.
    pub fn admit(&self, peer: PeerId) -> Result<StreamSlot, Refusal> {
        let mut inner = lock(&self.inner);
        if inner.streams >= self.max_streams {
            return Err(Refusal::Global);
        }
        let state = inner.peers.entry(peer).or_insert_with(|| PeerState {
            streams: 0,
            bytes: Arc::new(Semaphore::new(PEER_BUDGET_MIB as usize)),
        });
        if state.streams >= self.max_per_peer {
            return Err(Refusal::Peer);
        }
        state.streams += 1;
        let bytes = Arc::clone(&state.bytes);
        inner.streams += 1;
        Ok(StreamSlot {
            budget: self.clone(),
            peer,
            bytes,
        })
    }

    /// Streams being served now (everyone, and `peer`).
    #[cfg(test)]
    pub fn streams(&self, peer: &PeerId) -> (usize, usize) {
        let inner = lock(&self.inner);
        (
            inner.streams,
            inner.peers.get(peer).map_or(0, |p| p.streams),
        )
    }
}

impl Default for Budget {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamSlot {
    /// Take `len` bytes (rounded up to whole MiB, at least one) from the peer's share and the
    /// global budget, waiting for room. `None` when shutting down.
    pub async fn bytes(&self, len: u64) -> Option<Bytes> {
        let mib = u32::try_from(len.div_ceil(1 << 20).max(1))
            .unwrap_or(u32::MAX)
            .min(PEER_BUDGET_MIB)
            .min(self.budget.global_mib);
        let peer = Arc::clone(&self.bytes).acquire_many_owned(mib).await.ok()?;
        let global = Arc::clone(&self.budget.global)
            .acquire_many_owned(mib)
            .await
            .ok()?;
        Some(Bytes {
            _peer: peer,
            _global: global,
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut inner = lock(&self.budget.inner);
        inner.streams -= 1;
        if let Some(p) = inner.peers.get_mut(&self.peer) {
            p.streams -= 1;
            if p.streams == 0 {
                inner.peers.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_peer_cannot_take_every_stream() {
        let b = Budget::with_limits(4, 2, 8);
        let (x, y) = (PeerId::random(), PeerId::random());
        let x1 = b.admit(x).expect("first");
        let _x2 = b.admit(x).expect("second");
        assert_eq!(b.admit(x).err(), Some(Refusal::Peer));
        let _y1 = b.admit(y).expect("another peer still gets in");
        let _y2 = b.admit(y).expect("and again");
        assert_eq!(b.admit(PeerId::random()).err(), Some(Refusal::Global));
        drop(x1);
        assert_eq!(b.streams(&x), (3, 1));
        let _x3 = b.admit(x).expect("a freed slot is reusable");
    }
}
