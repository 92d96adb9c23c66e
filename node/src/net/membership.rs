//! Who is a member of the network: a node that may be placed on, may push shards to others,
//! may announce provider records, and is used as a source by reads. Everyone else (clients,
//! strangers) may only read, within per-peer limits.
//!
//! Membership comes from one of three places ([`Mode`]):
//! - **chain**: the contract's registry. A peer is a member iff its peer id is bound on chain
//!   to an account registered with at least `minStake` bonded (`chain::registry` keeps the
//!   set current from the contract's events);
//! - **list**: the peer ids listed in `network.members` (a network without a chain);
//! - **open**: everyone (local development only; the node says so loudly at start).
//!
//! The set is published by whoever owns it as an immutable snapshot over a `watch` channel,
//! so checks are a lookup with no lock held across an await.

use std::collections::HashMap;
use std::sync::Arc;

use libp2p::PeerId;
use tokio::sync::watch;

/// The 32 bytes a peer id is known by in the registry: keccak256 of its bytes (what
/// `register(bytes32 peer)` records on chain).
pub fn peer_word(peer: &PeerId) -> [u8; 32] {
    alloy::primitives::keccak256(peer.to_bytes()).0
}

/// Where membership comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Everyone is a member: local development only.
    Open,
    /// The peer ids of `network.members`.
    List,
    /// The contract's registry.
    Chain,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Open => "open",
            Mode::List => "list",
            Mode::Chain => "chain",
        }
    }
}

/// One snapshot of the members: peer word -> the member's chain account, when known.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MemberSet {
    members: HashMap<[u8; 32], Option<String>>,
}

impl MemberSet {
    pub fn new(members: HashMap<[u8; 32], Option<String>>) -> Self {
        Self { members }
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

/// Cheap-to-clone view of the current members.
#[derive(Clone, Debug)]
pub struct Membership {
    mode: Mode,
    set: watch::Receiver<Arc<MemberSet>>,
}

/// The owner's side of a [`Membership`]: publishes new snapshots.
#[derive(Debug)]
pub struct MembershipWriter(watch::Sender<Arc<MemberSet>>);

impl MembershipWriter {
    /// Replace the member set (readers see it at their next check).
    pub fn publish(&self, set: MemberSet) {
        self.0.send_replace(Arc::new(set));
    }

    /// Members in the current snapshot.
    pub fn current(&self) -> Arc<MemberSet> {
        Arc::clone(&self.0.borrow())
    }
}

impl Membership {
    fn fixed(mode: Mode, set: MemberSet) -> Self {
        let (tx, rx) = watch::channel(Arc::new(set));
        // A fixed set never changes: the receiver keeps the last value after the sender goes.
        drop(tx);
        Self { mode, set: rx }
    }

    /// Everyone is a member.
    pub fn open() -> Self {
        Self::fixed(Mode::Open, MemberSet::default())
    }

    /// Exactly `peers` are members.
    pub fn list(peers: &[PeerId]) -> Self {
        Self::fixed(
            Mode::List,
            MemberSet::new(peers.iter().map(|p| (peer_word(p), None)).collect()),
        )
    }

    /// A set kept current by its writer (the chain registry); empty until the first publish.
    pub fn dynamic(mode: Mode) -> (Self, MembershipWriter) {
        let (tx, rx) = watch::channel(Arc::new(MemberSet::default()));
        (Self { mode, set: rx }, MembershipWriter(tx))
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn is_member(&self, peer: &PeerId) -> bool {
        self.mode == Mode::Open || self.set.borrow().members.contains_key(&peer_word(peer))
    }

    /// The chain account a member is bound to (chain mode).
    pub fn account(&self, peer: &PeerId) -> Option<String> {
        self.set
            .borrow()
            .members
            .get(&peer_word(peer))
            .cloned()
            .flatten()
    }

    /// The chain accounts of the current members (chain mode; empty otherwise).
    pub fn accounts(&self) -> Vec<String> {
        self.set
            .borrow()
            .members
            .values()
            .filter_map(Clone::clone)
            .collect()
    }

    /// `peers` without the non-members, in order.
    pub fn filter(&self, peers: impl IntoIterator<Item = PeerId>) -> Vec<PeerId> {
        peers.into_iter().filter(|p| self.is_member(p)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_open_and_dynamic_membership() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let list = Membership::list(&[a]);
        assert!(list.is_member(&a));
        assert!(!list.is_member(&b));
        assert_eq!(list.filter([b, a, b]), vec![a]);
        assert!(Membership::open().is_member(&b));
        let (m, w) = Membership::dynamic(Mode::Chain);
        assert!(!m.is_member(&a));
        w.publish(MemberSet::new(
            [(peer_word(&a), Some("0xabc".to_owned()))].into(),
        ));
        assert!(m.is_member(&a));
        assert_eq!(m.account(&a).as_deref(), Some("0xabc"));
        assert!(!m.is_member(&b));
        w.publish(MemberSet::default());
        assert!(!m.is_member(&a), "a member that left is no longer one");
        assert_ne!(peer_word(&a), peer_word(&b));
    }
}
