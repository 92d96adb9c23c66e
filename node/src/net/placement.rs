//! Where the shards of a stripe live: the k+m nodes closest to the stripe's key by Kademlia's
//! XOR distance (SHA-256 of the peer id against SHA-256 of the key, as libp2p-kad measures
//! it), shard i on the i-th closest. Anyone who knows the members can compute it; a node that
//! stored a shard elsewhere (its first choice failed) also announces it as a provider record.

use cairn_erasure::Cid;
use libp2p::PeerId;
use libp2p::kad::KBucketKey;

/// Domain tag of stripe keys.
const STRIPE_KEY_TAG: &[u8] = b"cairn-stripe-v1";

/// The key a stripe is placed by: BLAKE3 over a tag and its shard CIDs in order.
pub fn stripe_key(shards: &[Cid]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(STRIPE_KEY_TAG);
    for cid in shards {
        h.update(&cid.to_bytes());
    }
    *h.finalize().as_bytes()
}

/// `members` ordered by distance to `key`, closest first (ties cannot happen: distinct peer
/// ids hash apart). Duplicates are removed.
pub fn order(members: &[PeerId], key: &[u8; 32]) -> Vec<PeerId> {
    let target = KBucketKey::new(key.to_vec());
    let mut v: Vec<PeerId> = members.to_vec();
    v.sort();
    v.dedup();
    v.sort_by_cached_key(|p| KBucketKey::from(*p).distance(&target));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(n: usize) -> Vec<PeerId> {
        (0..n).map(|_| PeerId::random()).collect()
    }

    #[test]
    fn order_is_deterministic_and_independent_of_input_order() {
        let ps = peers(12);
        let key = stripe_key(&[cairn_erasure::shard_cid(&blake3::hash(b"x"))]);
        let a = order(&ps, &key);
        let mut rev = ps.clone();
        rev.reverse();
        rev.push(ps[0]);
        assert_eq!(order(&rev, &key), a);
        assert_eq!(a.len(), 12);
        // Closest first.
        let t = KBucketKey::new(key.to_vec());
        for w in a.windows(2) {
            assert!(KBucketKey::from(w[0]).distance(&t) < KBucketKey::from(w[1]).distance(&t));
        }
    }

    #[test]
    fn removing_a_member_only_shifts_those_behind_it() {
        let ps = peers(10);
        let key = stripe_key(&[]);
        let full = order(&ps, &key);
        let gone = full[3];
        let rest: Vec<_> = ps.iter().copied().filter(|p| *p != gone).collect();
        let fewer = order(&rest, &key);
        assert_eq!(&fewer[..3], &full[..3]);
        assert_eq!(&fewer[3..], &full[4..]);
    }

    #[test]
    fn different_stripes_spread_over_members() {
        let ps = peers(8);
        let mut firsts = std::collections::HashSet::new();
        for i in 0..64u8 {
            let key = stripe_key(&[cairn_erasure::shard_cid(&blake3::hash(&[i]))]);
            firsts.insert(order(&ps, &key)[0]);
        }
        assert!(firsts.len() >= 5, "first choices: {}", firsts.len());
    }
}
