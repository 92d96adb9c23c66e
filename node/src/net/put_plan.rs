//! What an upload has learned of each node, and what it decides from it. Pure: time comes
//! in as `Instant`s, so unit tests drive the very decisions a put makes.
//!
//! - A node whose push failed, or that lost a hedge (it was slower than the copy sent
//!   elsewhere), is avoided by the rest of the upload for a while ([`AVOID_FIRST`], doubling
//!   with each further failure up to [`AVOID_MAX`]), then tried again. So a dead or hung
//!   node costs one timeout per upload, not one per stripe.
//! - A push that runs late relative to the others is hedged: the same shard also goes to
//!   the next eligible node and the first acknowledgement wins. "Late" is
//!   [`HEDGE_FACTOR`] times the time the finished pushes of the stripe took (their median),
//!   or, before half the stripe is in, what this upload's pushes took per byte (their
//!   slowest recent rate); never sooner than [`HEDGE_MIN`].

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use libp2p::PeerId;

/// How long a node that failed once is avoided.
pub const AVOID_FIRST: Duration = Duration::from_secs(30);
/// The longest a node is avoided (it is then tried again).
pub const AVOID_MAX: Duration = Duration::from_secs(600);
/// A push is late at this many times what its peers took.
pub const HEDGE_FACTOR: u32 = 4;
/// No push is hedged sooner than this.
pub const HEDGE_MIN: Duration = Duration::from_millis(250);
/// Recent push rates remembered (seconds per byte).
const HISTORY: usize = 64;

#[derive(Debug, Clone, Default)]
struct PeerState {
    /// Failures and lost hedges in a row.
    strikes: u32,
    avoid_until: Option<Instant>,
}

/// The learning of one upload.
#[derive(Debug, Clone, Default)]
pub struct PutPlanner {
    peers: HashMap<PeerId, PeerState>,
    /// Seconds per byte of recent successful pushes.
    rates: VecDeque<f64>,
}

/// Which node each shard of a stripe goes to first, and the spare nodes in the order they
/// are used (for failures and hedges).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub placed: Vec<PeerId>,
    pub spare: Vec<PeerId>,
}

impl PutPlanner {
    /// Whether `peer` is being avoided at `now`.
    pub fn avoided(&self, peer: &PeerId, now: Instant) -> bool {
        self.peers
            .get(peer)
            .and_then(|s| s.avoid_until)
            .is_some_and(|t| now < t)
    }

    /// A push to `peer` of `bytes` succeeded in `took`.
    pub fn pushed(&mut self, peer: PeerId, bytes: u64, took: Duration) {
        let s = self.peers.entry(peer).or_default();
        s.strikes = 0;
        s.avoid_until = None;
        if bytes > 0 {
            if self.rates.len() == HISTORY {
                self.rates.pop_front();
            }
            self.rates.push_back(took.as_secs_f64() / bytes as f64);
        }
    }

    /// A push to `peer` failed, or lost its hedge, at `now`.
    pub fn struck(&mut self, peer: PeerId, now: Instant) {
        let s = self.peers.entry(peer).or_default();
        s.strikes = s.strikes.saturating_add(1);
        let avoid = AVOID_FIRST
            .saturating_mul(1u32 << (s.strikes - 1).min(16))
            .min(AVOID_MAX);
        s.avoid_until = Some(now + avoid);
    }

    /// Nodes for a stripe's shards: `natural[i]` is shard i's rendezvous holder, `spares`
    /// the members after them in rendezvous order. An avoided holder is replaced by the first
    /// spare that is not avoided, keeping every other shard where readers look first;
    /// avoided spares come after the good ones, and the holders skipped last. `me` is never
    /// avoided (its shards are stored locally).
    pub fn assign(
        &self,
        natural: &[PeerId],
        spares: &[PeerId],
        me: &PeerId,
        now: Instant,
    ) -> Assignment {
        let ok = |p: &PeerId| p == me || !self.avoided(p, now);
        let mut spare: Vec<PeerId> = spares.iter().filter(|p| ok(p)).copied().collect();
        let mut placed = Vec::with_capacity(natural.len());
        let mut skipped = Vec::new();
        for p in natural {
            if ok(p) || spare.is_empty() {
                placed.push(*p);
            } else {
                placed.push(spare.remove(0));
                skipped.push(*p);
            }
        }
        spare.extend(spares.iter().filter(|p| !ok(p)).copied());
        spare.extend(skipped);
        Assignment { placed, spare }
    }

    /// How long a push of `bytes` may run before it is hedged, given how long the pushes of
    /// this stripe that already finished took (`done`, of `total` remote pushes). `None`:
    /// nothing is known yet to call a push late.
    pub fn hedge_after(&self, bytes: u64, done: &[Duration], total: usize) -> Option<Duration> {
        let base = if !done.is_empty() && done.len() * 2 >= total {
            let mut d = done.to_vec();
            d.sort_unstable();
            Some(d[d.len() / 2])
        } else {
            self.rates
                .iter()
                .copied()
                .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))))
                .map(|per_byte| Duration::from_secs_f64(per_byte * bytes as f64))
        }?;
        Some(base.saturating_mul(HEDGE_FACTOR).max(HEDGE_MIN))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(n: usize) -> Vec<PeerId> {
        (0..n).map(|_| PeerId::random()).collect()
    }

    #[test]
    fn an_avoided_holder_is_replaced_and_the_others_stay() {
        let p = peers(8);
        let me = p[0];
        let now = Instant::now();
        let mut plan = PutPlanner::default();
        let a = plan.assign(&p[..6], &p[6..], &me, now);
        assert_eq!(a.placed, p[..6]);
        assert_eq!(a.spare, p[6..]);
        plan.struck(p[3], now);
        let a = plan.assign(&p[..6], &p[6..], &me, now);
        assert_eq!(a.placed, vec![p[0], p[1], p[2], p[6], p[4], p[5]]);
        assert_eq!(
            a.spare,
            vec![p[7], p[3]],
            "the avoided holder is the last resort"
        );
        // Distinct nodes always.
        let mut all = a.placed.clone();
        all.extend(&a.spare);
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 8);
        // Avoided spares go after the good ones; with no spare left, the holder stays.
        plan.struck(p[6], now);
        plan.struck(p[7], now);
        let a = plan.assign(&p[..6], &p[6..], &me, now);
        assert_eq!(a.placed, p[..6]);
        assert_eq!(a.spare, vec![p[6], p[7]]);
        // This node is never avoided.
        plan.struck(me, now);
        assert_eq!(plan.assign(&p[..6], &p[6..], &me, now).placed[0], me);
    }

    #[test]
    fn avoidance_ends_and_grows_with_strikes() {
        let p = PeerId::random();
        let t0 = Instant::now();
        let mut plan = PutPlanner::default();
        plan.struck(p, t0);
        assert!(plan.avoided(&p, t0 + AVOID_FIRST - Duration::from_millis(1)));
        assert!(!plan.avoided(&p, t0 + AVOID_FIRST));
        plan.struck(p, t0);
        assert!(plan.avoided(&p, t0 + AVOID_FIRST));
        assert!(!plan.avoided(&p, t0 + AVOID_FIRST * 2));
        for _ in 0..40 {
            plan.struck(p, t0);
        }
        assert!(!plan.avoided(&p, t0 + AVOID_MAX), "capped");
        plan.pushed(p, 10, Duration::from_millis(1));
        assert!(!plan.avoided(&p, t0), "a success clears the record");
    }

    #[test]
    fn late_is_relative_to_the_others() {
        let mut plan = PutPlanner::default();
        assert_eq!(plan.hedge_after(1 << 20, &[], 6), None, "nothing known yet");
        let ms = Duration::from_millis;
        // Half the stripe in: 4x their median.
        assert_eq!(
            plan.hedge_after(1 << 20, &[ms(100), ms(200), ms(300)], 6),
            Some(ms(800))
        );
        // Never sooner than the floor.
        assert_eq!(
            plan.hedge_after(1 << 20, &[ms(1), ms(1), ms(1)], 6),
            Some(HEDGE_MIN)
        );
        // Before half the stripe is in: from the upload's slowest recent rate.
        plan.pushed(PeerId::random(), 1 << 20, ms(100));
        plan.pushed(PeerId::random(), 1 << 20, ms(50));
        assert_eq!(plan.hedge_after(2 << 20, &[ms(10)], 6), Some(ms(800)));
    }
}
