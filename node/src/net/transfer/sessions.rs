//! Upload sessions a gateway holds open on this node: keyed by (peer, upload id), so only the
//! peer that opened a session can add to it, commit it or abort it. Each peer's uncommitted
//! bytes (charged as the store charges them) and open sessions are bounded. Time is passed
//! in, so the rules are unit-tested without a clock.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_erasure::Cid;
use cairn_storage::{Backend, PutSession, Store};
use libp2p::PeerId;
use thiserror::Error;

use crate::net::wire::UploadId;

/// Limits on what one peer may hold open here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Charged bytes of uncommitted shards one peer may hold in its sessions.
    pub peer_pending_bytes: u64,
    /// Sessions one peer may have open.
    pub max_sessions_per_peer: usize,
    /// Idle time after which a session is dropped with its shards.
    pub idle: Duration,
}

/// A session could not take more.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SessionError {
    #[error("peer has {open} uploads open here, the most allowed")]
    TooManySessions { open: usize },
    #[error(
        "peer's uncommitted shards would take {wanted} bytes here, over its quota of {quota} bytes"
    )]
    OverQuota { wanted: u64, quota: u64 },
}

/// One upload of one peer.
pub struct Session<B: Backend> {
    pub put: Arc<Mutex<PutSession<B>>>,
    last: Instant,
    /// Shards stored through this session (each once).
    pub received: BTreeSet<Cid>,
    /// Bytes charged for shards being or having been stored.
    charged: u64,
}

impl<B: Backend> Session<B> {
    /// Bytes charged to this session.
    pub fn charged(&self) -> u64 {
        self.charged
    }
}

#[derive(Default, Clone, Copy)]
struct PeerUse {
    bytes: u64,
    sessions: usize,
}

/// Every open session, and what each peer holds.
pub struct Sessions<B: Backend> {
    map: HashMap<(PeerId, UploadId), Session<B>>,
    peers: HashMap<PeerId, PeerUse>,
    limits: SessionLimits,
}

impl<B: Backend> Sessions<B> {
    pub fn new(limits: SessionLimits) -> Self {
        Self {
            map: HashMap::new(),
            peers: HashMap::new(),
            limits,
        }
    }

    /// Charge `bytes` to `peer`'s upload (opening it if needed) before a shard is received,
    /// and return the store session to put it in.
    pub fn reserve(
        &mut self,
        peer: PeerId,
        upload: UploadId,
        bytes: u64,
        now: Instant,
        store: &Store<B>,
    ) -> Result<Arc<Mutex<PutSession<B>>>, SessionError> {
        let used = self.peers.get(&peer).copied().unwrap_or_default();
        let open = self.map.contains_key(&(peer, upload));
        if !open && used.sessions >= self.limits.max_sessions_per_peer {
            return Err(SessionError::TooManySessions {
                open: used.sessions,
            });
        }
        let wanted = used.bytes.saturating_add(bytes);
        if wanted > self.limits.peer_pending_bytes {
            return Err(SessionError::OverQuota {
                wanted,
                quota: self.limits.peer_pending_bytes,
            });
        }
        let s = self.map.entry((peer, upload)).or_insert_with(|| Session {
            put: Arc::new(Mutex::new(store.begin_put())),
            last: now,
            received: BTreeSet::new(),
            charged: 0,
        });
        s.last = now;
        s.charged += bytes;
        let u = self.peers.entry(peer).or_default();
        u.bytes = wanted;
        if !open {
            u.sessions += 1;
        }
        Ok(Arc::clone(&s.put))
    }

    /// Whether `peer` may hold `extra` more bytes (e.g. the manifest of a commit) on top of
    /// its uncommitted shards.
    pub fn fits(&self, peer: &PeerId, extra: u64) -> Result<(), SessionError> {
        let wanted = self.usage(peer).0.saturating_add(extra);
        if wanted > self.limits.peer_pending_bytes {
            return Err(SessionError::OverQuota {
                wanted,
                quota: self.limits.peer_pending_bytes,
            });
        }
        Ok(())
    }

    /// A reserved shard was stored.
    pub fn stored(&mut self, peer: PeerId, upload: UploadId, cid: Cid, now: Instant) {
        if let Some(s) = self.map.get_mut(&(peer, upload)) {
            s.received.insert(cid);
            s.last = now;
        }
    }

    /// A reserved shard was not stored: give its charge back.
    pub fn release(&mut self, peer: PeerId, upload: UploadId, bytes: u64) {
        if let Some(s) = self.map.get_mut(&(peer, upload)) {
            s.charged = s.charged.saturating_sub(bytes);
        }
        if let Some(u) = self.peers.get_mut(&peer) {
            u.bytes = u.bytes.saturating_sub(bytes);
        }
    }

    /// Take a peer's session out (to commit or abort it); its charge is released.
    pub fn take(&mut self, peer: PeerId, upload: UploadId) -> Option<Session<B>> {
        let s = self.map.remove(&(peer, upload))?;
        if let Some(u) = self.peers.get_mut(&peer) {
            u.bytes = u.bytes.saturating_sub(s.charged);
            u.sessions -= 1;
            if u.sessions == 0 {
                self.peers.remove(&peer);
            }
        }
        Some(s)
    }

    /// Put a session back that could not be committed (the gateway may still abort it).
    pub fn restore(&mut self, peer: PeerId, upload: UploadId, session: Session<B>) {
        let u = self.peers.entry(peer).or_default();
        u.bytes = u.bytes.saturating_add(session.charged);
        u.sessions += 1;
        self.map.insert((peer, upload), session);
    }

    /// Take out every session idle for longer than the limit.
    pub fn expire(&mut self, now: Instant) -> Vec<Session<B>> {
        let idle: Vec<(PeerId, UploadId)> = self
            .map
            .iter()
            .filter(|(_, s)| now.saturating_duration_since(s.last) >= self.limits.idle)
            .map(|(k, _)| *k)
            .collect();
        idle.into_iter()
            .filter_map(|(p, u)| self.take(p, u))
            .collect()
    }

    /// Uncommitted bytes charged to `peer` and its open sessions.
    pub fn usage(&self, peer: &PeerId) -> (u64, usize) {
        self.peers
            .get(peer)
            .map_or((0, 0), |u| (u.bytes, u.sessions))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_storage::MemBackend;

    fn limits() -> SessionLimits {
        SessionLimits {
            peer_pending_bytes: 100,
            max_sessions_per_peer: 2,
            idle: Duration::from_secs(10),
        }
    }

    #[test]
    fn sessions_belong_to_their_peer_and_are_bounded() {
        let store = Store::open(MemBackend::new(), 1 << 20).expect("store");
        let mut s = Sessions::new(limits());
        let (a, b) = (PeerId::random(), PeerId::random());
        let t = Instant::now();
        s.reserve(a, [1; 16], 60, t, &store).expect("first");
        // Another peer with the same upload id gets its own session, not a's.
        s.reserve(b, [1; 16], 60, t, &store).expect("b's own");
        assert_eq!(s.usage(&a), (60, 1));
        assert_eq!(
            s.reserve(a, [1; 16], 50, t, &store).err(),
            Some(SessionError::OverQuota {
                wanted: 110,
                quota: 100
            })
        );
        s.release(a, [1; 16], 20);
        s.reserve(a, [2; 16], 10, t, &store)
            .expect("second session");
        assert_eq!(
            s.reserve(a, [3; 16], 1, t, &store).err(),
            Some(SessionError::TooManySessions { open: 2 })
        );
        assert!(s.take(a, [9; 16]).is_none(), "unknown upload");
        let taken = s.take(b, [1; 16]).expect("b's session");
        assert_eq!(s.usage(&b), (0, 0));
        s.restore(b, [1; 16], taken);
        assert_eq!(s.usage(&b), (60, 1));
        // Idle sessions expire with their charge.
        let later = t + Duration::from_secs(11);
        s.stored(
            a,
            [2; 16],
            cairn_erasure::shard_cid(&blake3::hash(b"x")),
            later,
        );
        let gone = s.expire(later);
        assert_eq!(gone.len(), 2, "a's first session and b's");
        assert_eq!(s.usage(&a), (10, 1));
        assert_eq!(s.usage(&b), (0, 0));
    }
}
