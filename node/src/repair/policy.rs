//! Repair decisions, pure: no I/O, time passed in (as time since any fixed origin), so the
//! node's repairer, its unit tests and a simulator run the very same code.
//!
//! - A stripe's **coordinator** is the live holder with the highest coordination weight for
//!   the stripe's placement key: every holder computes the same one from the same survey, so
//!   exactly one acts, and when it dies the next one does.
//! - A stripe is **repaired** when fewer than the threshold of its shards are intact and
//!   reachable, continuously for at least the grace time (a node restarting does not trigger
//!   it), or at once when it misses `urgent` shards or more (two holders gone together is
//!   rarely an outage, and every round then waited is a round in which the stripe may lose
//!   the rest); a stripe with fewer than `k` is lost.
//! - Rebuilt shards go to the members in placement order that hold **no** shard of the
//!   stripe, so a stripe never has two shards on one node.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::time::Duration;

use libp2p::PeerId;

use crate::net::placement::weight;

/// Domain tag of the coordination key (distinct from placement, so the coordinator is not
/// simply the first shard's holder).
const COORDINATOR_TAG: &[u8] = b"cairn-repair-coordinator-v1";

/// When to repair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepairPolicy {
    /// Repair a stripe when fewer than this many of its shards are intact and reachable
    /// (clamped to `k + 1 ..= k + m`); 0 means `k + m`: any loss that outlasts the grace.
    pub threshold: u8,
    /// How long a stripe must stay below the threshold before it is repaired.
    pub grace: Duration,
    /// A stripe missing this many shards or more is repaired at once, without the grace
    /// (0: always wait out the grace).
    pub urgent: u8,
}

impl RepairPolicy {
    /// The threshold for a stripe of `k` data shards out of `total`.
    pub fn threshold_for(&self, k: usize, total: usize) -> usize {
        match self.threshold {
            0 => total,
            t => usize::from(t).max(k + 1).min(total),
        }
    }

    /// Whether a stripe of `total` shards with `intact` of them is repaired without the grace.
    pub fn is_urgent(&self, total: usize, intact: usize) -> bool {
        self.urgent > 0 && total.saturating_sub(intact) >= usize::from(self.urgent)
    }
}

/// Who holds each shard of a stripe, as a survey of the live members found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StripeHealth {
    /// Per shard index, the live nodes that hold it.
    pub holders: Vec<Vec<PeerId>>,
}

impl StripeHealth {
    /// Shards held by at least one live node.
    pub fn intact(&self) -> usize {
        self.holders.iter().filter(|h| !h.is_empty()).count()
    }

    /// Indexes of the shards no live node holds.
    pub fn missing(&self) -> Vec<usize> {
        (0..self.holders.len())
            .filter(|&i| self.holders[i].is_empty())
            .collect()
    }

    /// Every live node holding some shard of the stripe.
    pub fn holder_set(&self) -> BTreeSet<PeerId> {
        self.holders.iter().flatten().copied().collect()
    }
}

/// The stripe's coordinator among its live holders.
pub fn coordinator(
    stripe_key: &[u8; 32],
    holders: impl IntoIterator<Item = PeerId>,
) -> Option<PeerId> {
    let mut h = blake3::Hasher::new();
    h.update(COORDINATOR_TAG);
    h.update(stripe_key);
    let key = *h.finalize().as_bytes();
    holders.into_iter().max_by_key(|p| weight(&key, p))
}

/// Whether `me` coordinates the stripe held by `holders`. A coordinator asks again after each
/// shard it places: the new holder may outrank it, and then hands the rest of the repair to
/// it (the new holder's own survey names itself), so no two nodes repair one stripe at once.
pub fn is_coordinator(
    stripe_key: &[u8; 32],
    holders: impl IntoIterator<Item = PeerId>,
    me: PeerId,
) -> bool {
    coordinator(stripe_key, holders) == Some(me)
}

/// What to do about a stripe this round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// At or above the threshold.
    Healthy,
    /// Below the threshold since `since`, not yet for the grace time.
    Waiting { since: Duration },
    /// Rebuild these shard indexes now.
    Repair { missing: Vec<usize> },
    /// Fewer than `k` shards left: nothing can rebuild it.
    Lost,
}

/// How long each stripe has been below its threshold (the repairer's only memory between
/// rounds). `Id` names a stripe.
#[derive(Debug)]
pub struct Tracker<Id> {
    below_since: HashMap<Id, Duration>,
}

impl<Id: Eq + Hash + Clone> Default for Tracker<Id> {
    fn default() -> Self {
        Self {
            below_since: HashMap::new(),
        }
    }
}

impl<Id: Eq + Hash + Clone> Tracker<Id> {
    /// Judge a stripe of `k` data shards surveyed at `now`.
    pub fn judge(
        &mut self,
        policy: &RepairPolicy,
        id: &Id,
        k: usize,
        health: &StripeHealth,
        now: Duration,
    ) -> Verdict {
        let total = health.holders.len();
        let intact = health.intact();
        if intact >= policy.threshold_for(k, total) {
            self.below_since.remove(id);
            return Verdict::Healthy;
        }
        let since = *self.below_since.entry(id.clone()).or_insert(now);
        if intact < k {
            return Verdict::Lost;
        }
        if !policy.is_urgent(total, intact) && now.saturating_sub(since) < policy.grace {
            return Verdict::Waiting { since };
        }
        Verdict::Repair {
            missing: health.missing(),
        }
    }

    /// Forget a stripe (repaired, or no longer this node's to coordinate).
    pub fn forget(&mut self, id: &Id) {
        self.below_since.remove(id);
    }

    /// Forget every stripe `keep` rejects (unpinned, or not surveyed this round).
    pub fn retain(&mut self, keep: impl Fn(&Id) -> bool) {
        self.below_since.retain(|id, _| keep(id));
    }

    /// Stripes currently tracked as below their threshold.
    pub fn len(&self) -> usize {
        self.below_since.len()
    }

    pub fn is_empty(&self) -> bool {
        self.below_since.is_empty()
    }
}

/// Where rebuilt shards may go: the members in placement order that hold no shard of the
/// stripe (a failed push moves on to the next).
pub fn candidates<'a>(
    ordered: &'a [PeerId],
    holders: &'a BTreeSet<PeerId>,
) -> impl Iterator<Item = PeerId> + 'a {
    ordered.iter().copied().filter(|p| !holders.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(n: usize) -> Vec<PeerId> {
        (0..n).map(|_| PeerId::random()).collect()
    }

    fn health(holders: &[Option<PeerId>]) -> StripeHealth {
        StripeHealth {
            holders: holders
                .iter()
                .map(|h| h.iter().copied().collect())
                .collect(),
        }
    }

    #[test]
    fn thresholds_are_clamped_between_k_plus_one_and_k_plus_m() {
        let p = |t| RepairPolicy {
            threshold: t,
            grace: Duration::ZERO,
            urgent: 0,
        };
        assert_eq!(p(0).threshold_for(10, 14), 14);
        assert_eq!(p(12).threshold_for(10, 14), 12);
        assert_eq!(p(3).threshold_for(10, 14), 11);
        assert_eq!(p(200).threshold_for(4, 6), 6);
    }

    #[test]
    fn a_short_outage_waits_out_the_grace_and_a_recovery_resets_it() {
        let ps = peers(6);
        let policy = RepairPolicy {
            threshold: 0,
            grace: Duration::from_secs(60),
            urgent: 0,
        };
        let mut t = Tracker::default();
        let full = health(&ps.iter().copied().map(Some).collect::<Vec<_>>());
        let mut one_gone = full.clone();
        one_gone.holders[2].clear();
        let s = |x| Duration::from_secs(x);
        assert_eq!(t.judge(&policy, &1, 4, &full, s(0)), Verdict::Healthy);
        assert_eq!(
            t.judge(&policy, &1, 4, &one_gone, s(10)),
            Verdict::Waiting { since: s(10) }
        );
        assert_eq!(
            t.judge(&policy, &1, 4, &one_gone, s(69)),
            Verdict::Waiting { since: s(10) }
        );
        // Back before the grace ran out: healthy, and the clock starts over.
        assert_eq!(t.judge(&policy, &1, 4, &full, s(65)), Verdict::Healthy);
        assert_eq!(
            t.judge(&policy, &1, 4, &one_gone, s(100)),
            Verdict::Waiting { since: s(100) }
        );
        assert_eq!(
            t.judge(&policy, &1, 4, &one_gone, s(160)),
            Verdict::Repair { missing: vec![2] }
        );
        assert_eq!(t.len(), 1);
        t.forget(&1);
        assert!(t.is_empty());
    }

    #[test]
    fn a_second_loss_is_repaired_at_once() {
        let ps = peers(14);
        let policy = RepairPolicy {
            threshold: 0,
            grace: Duration::from_secs(3600),
            urgent: 2,
        };
        let mut t = Tracker::default();
        let mut h = health(&ps.iter().copied().map(Some).collect::<Vec<_>>());
        let s = |x| Duration::from_secs(x);
        h.holders[3].clear();
        assert_eq!(
            t.judge(&policy, &1, 10, &h, s(0)),
            Verdict::Waiting { since: s(0) }
        );
        h.holders[9].clear();
        assert_eq!(
            t.judge(&policy, &1, 10, &h, s(600)),
            Verdict::Repair {
                missing: vec![3, 9]
            }
        );
    }

    #[test]
    fn below_k_is_lost_and_above_the_threshold_is_left_alone() {
        let ps = peers(6);
        let policy = RepairPolicy {
            threshold: 5,
            grace: Duration::ZERO,
            urgent: 0,
        };
        let mut t = Tracker::default();
        let mut h = health(&ps.iter().copied().map(Some).collect::<Vec<_>>());
        h.holders[0].clear();
        // 5 of 6 intact, threshold 5: nothing to do.
        assert_eq!(
            t.judge(&policy, &7, 4, &h, Duration::ZERO),
            Verdict::Healthy
        );
        h.holders[1].clear();
        assert_eq!(
            t.judge(&policy, &7, 4, &h, Duration::ZERO),
            Verdict::Repair {
                missing: vec![0, 1]
            }
        );
        h.holders[2].clear();
        assert_eq!(t.judge(&policy, &7, 4, &h, Duration::ZERO), Verdict::Lost);
    }

    #[test]
    fn every_holder_names_the_same_coordinator_and_a_dead_one_is_replaced() {
        let ps = peers(6);
        let key = [9u8; 32];
        let c = coordinator(&key, ps.iter().copied()).expect("holders");
        // Any order of the same holders gives the same answer.
        let mut rev = ps.clone();
        rev.reverse();
        assert_eq!(coordinator(&key, rev), Some(c));
        // Without it, another holder takes over.
        let rest: Vec<PeerId> = ps.iter().copied().filter(|p| *p != c).collect();
        let next = coordinator(&key, rest.clone()).expect("holders");
        assert_ne!(next, c);
        assert!(rest.contains(&next));
        assert_eq!(coordinator(&key, Vec::new()), None);
    }

    #[test]
    fn a_coordinator_hands_over_to_a_new_holder_that_outranks_it() {
        let key = [3u8; 32];
        let five = peers(5);
        let top = coordinator(&key, five.iter().copied()).expect("peers");
        // Four holders without the top one; a rebuilt shard then goes to the top one.
        let holders: Vec<PeerId> = five.iter().copied().filter(|p| *p != top).collect();
        let c = coordinator(&key, holders.iter().copied()).expect("holders");
        assert!(is_coordinator(&key, holders.iter().copied(), c));
        assert!(
            !is_coordinator(&key, five.iter().copied(), c),
            "the old one stops"
        );
        assert!(
            is_coordinator(&key, five.iter().copied(), top),
            "the newcomer goes on"
        );
        // A newcomer that does not outrank the coordinator leaves it in charge.
        let lower = five
            .iter()
            .copied()
            .find(|p| *p != top)
            .expect("four others");
        let without: Vec<PeerId> = five.iter().copied().filter(|p| *p != lower).collect();
        assert!(is_coordinator(&key, without.iter().copied(), top));
        assert!(is_coordinator(&key, five.iter().copied(), top));
    }

    #[test]
    fn rebuilt_shards_never_go_to_a_holder_of_the_stripe() {
        let ps = peers(10);
        let holders: BTreeSet<PeerId> = ps[..4].iter().copied().collect();
        let c: Vec<PeerId> = candidates(&ps, &holders).collect();
        assert_eq!(c, ps[4..].to_vec());
    }
}
