//! A durability simulator over the node's own decision code: placement
//! ([`crate::net::placement::order`]), the coordinator, the tracker and the candidates of
//! [`super::policy`]. Pure: the clock and the random draws are its own.
//!
//! Model, per step (the node's repair round, 10 minutes by default): every node dies for good
//! with the step's share of `monthly_loss` (a new node joins in its place), and starts a
//! transient outage with the step's share of `outages_per_month`, lasting an exponential time
//! of mean `outage_mean_hours`. A shard on a dead node is gone; on a node in an outage it is
//! unreachable. Every stripe whose holders changed, or that is below its threshold, is
//! surveyed each step; the coordinator knows a routing table's worth of members ([`VIEW`],
//! drawn at random); a repair completes within its step (at the default 16 MiB/s a stripe of
//! 64 MiB shards is rebuilt in about a minute). A stripe is lost once fewer than `k` of its
//! shards sit on nodes that are still alive.
//!
//! Rare events: with repair, a year of 1,000 stripes shows no loss at all, so the simulation
//! measures what loss depends on, the **repair windows**: how long a stripe waits from its
//! first unrepaired loss to a repair after the grace, and from the loss that makes it urgent
//! to that repair. The annual loss probability is computed from them
//! ([`SimResult::annual_loss`]).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use libp2p::PeerId;
use libp2p::identity::Keypair;

use super::policy::{RepairPolicy, StripeHealth, Tracker, Verdict, candidates, coordinator};
use crate::net::placement::order;

/// Members a coordinator knows (a routing table's worth at 10,000 nodes: about 20 per
/// bucket over 13 buckets): rebuilt shards go to the first of them in placement order.
const VIEW: usize = 256;
/// Hours in a month and a year.
const MONTH_HOURS: f64 = 730.0;
pub const YEAR_HOURS: u64 = 8760;
const HOUR_SECS: f64 = 3600.0;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimParams {
    pub nodes: usize,
    pub k: usize,
    pub m: usize,
    /// Stripes of the checkpoint.
    pub stripes: usize,
    /// Fraction of nodes lost for good per month.
    pub monthly_loss: f64,
    pub outages_per_month: f64,
    pub outage_mean_hours: f64,
    pub hours: u64,
    /// The simulated clock's step: the node's repair round interval.
    pub step: Duration,
    /// None: no repair.
    pub repair: Option<RepairPolicy>,
    /// Bytes of one shard (for the repair traffic figures).
    pub shard_bytes: u64,
    pub seed: u64,
}

/// What happened.
#[derive(Debug, Clone, Default)]
pub struct SimResult {
    pub lost_stripes: usize,
    pub shards_repaired: u64,
    /// Bytes fetched (k shards per rebuild) and pushed (each rebuilt shard).
    pub repair_bytes: u64,
    /// Repairs after the grace: hours from the first unrepaired loss to the repair.
    pub grace_windows: Vec<f64>,
    /// Repairs made urgent by a further loss: hours from that loss to the repair.
    pub urgent_windows: Vec<f64>,
    /// Bytes stored (stripes times k + m shards).
    pub stored_bytes: u64,
}

/// The 99th percentile of `w` (0 when empty).
fn p99(w: &[f64]) -> f64 {
    let mut w = w.to_vec();
    w.sort_unstable_by(f64::total_cmp);
    w.get((w.len() * 99 / 100).min(w.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0)
}

impl SimResult {
    /// The 99th-percentile window of repairs after the grace, in hours.
    pub fn grace_window_p99(&self) -> f64 {
        p99(&self.grace_windows)
    }

    /// The 99th-percentile window of urgent repairs, in hours.
    pub fn urgent_window_p99(&self) -> f64 {
        p99(&self.urgent_windows)
    }

    /// Probability that a stripe of `k + m` is lost within a year under `policy`, from its
    /// repair windows (hours): a stripe drops to `t - 1` intact shards (`t` the threshold)
    /// about as often as one of its `k + m` holders dies, each such drop starting a window;
    /// it is lost when, within the grace window, enough of its other holders die to make it
    /// urgent (`a` deaths), and then, within the urgent window, the `b` more that leave fewer
    /// than `k` (without an urgent level: all `t - k` within the grace window). First order
    /// in the per-window death probability (exact enough far below 1), and the windows are
    /// their 99th percentiles.
    pub fn annual_loss(
        k: usize,
        m: usize,
        policy: &RepairPolicy,
        monthly_loss: f64,
        grace_window: f64,
        urgent_window: f64,
    ) -> f64 {
        let total = k + m;
        let hourly = hourly_rate(monthly_loss);
        let q = |w: f64| 1.0 - (1.0 - hourly).powf(w.max(1.0 / 60.0));
        // Expected deaths among a stripe's holders in a year (repaired holders die too).
        let starts = total as f64 * hourly * YEAR_HOURS as f64;
        let t = policy.threshold_for(k, total);
        let left = t - 1;
        let urgent_at = match policy.urgent {
            0 => None,
            u => total.checked_sub(usize::from(u)).filter(|&l| l >= k),
        };
        let per_start = match urgent_at {
            None => tail(left, t - k, q(grace_window)),
            Some(level) => {
                let level = level.min(left);
                let a = left - level;
                let b = level + 1 - k;
                let to_urgent = if a == 0 {
                    1.0
                } else {
                    tail(left, a, q(grace_window))
                };
                to_urgent * tail(level, b, q(urgent_window))
            }
        };
        starts * per_start
    }
}

/// The hourly probability of an event with monthly probability `p`.
fn hourly_rate(p: f64) -> f64 {
    1.0 - (1.0 - p).powf(1.0 / MONTH_HOURS)
}

/// P(X >= r) for X ~ Binomial(n, q).
pub fn tail(n: usize, r: usize, q: f64) -> f64 {
    (r..=n)
        .map(|x| {
            let ln = ln_choose(n, x) + x as f64 * q.ln() + (n - x) as f64 * (1.0 - q).ln();
            ln.exp()
        })
        .sum()
}

fn ln_choose(n: usize, r: usize) -> f64 {
    let f = |x: usize| (1..=x).map(|i| (i as f64).ln()).sum::<f64>();
    f(n) - f(r) - f(n - r)
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Node {
    id: PeerId,
    /// Unreachable until this step.
    offline_until: u64,
    /// Stripes this node holds a shard of.
    holds: Vec<usize>,
}

fn new_id(rng: &mut Rng) -> PeerId {
    let mut seed = [0u8; 32];
    for c in seed.chunks_mut(8) {
        c.copy_from_slice(&rng.next().to_le_bytes());
    }
    let key = Keypair::ed25519_from_bytes(seed).expect("32 bytes make a key");
    key.public().to_peer_id()
}

/// A stripe as the simulator keeps it.
struct SimStripe {
    key: [u8; 32],
    /// Per shard, the nodes (indexes) holding it.
    holders: Vec<Vec<usize>>,
    lost: bool,
    /// Step of the first unrepaired loss, and of the loss that made the stripe urgent.
    first_loss: Option<u64>,
    urgent_since: Option<u64>,
}

/// Run the simulation.
pub fn simulate(p: &SimParams) -> SimResult {
    let mut rng = Rng(p.seed | 1);
    let total = p.k + p.m;
    let step_hours = p.step.as_secs_f64() / HOUR_SECS;
    let steps = (p.hours as f64 / step_hours).round() as u64;
    let death = 1.0 - (1.0 - hourly_rate(p.monthly_loss)).powf(step_hours);
    let outage = p.outages_per_month / MONTH_HOURS * step_hours;
    let mut nodes: Vec<Node> = (0..p.nodes)
        .map(|_| Node {
            id: new_id(&mut rng),
            offline_until: 0,
            holds: Vec::new(),
        })
        .collect();
    let mut index: HashMap<PeerId, usize> =
        nodes.iter().enumerate().map(|(i, n)| (n.id, i)).collect();
    let ids: Vec<PeerId> = nodes.iter().map(|n| n.id).collect();
    let mut stripes: Vec<SimStripe> = (0..p.stripes)
        .map(|s| {
            let mut key = [0u8; 32];
            for c in key.chunks_mut(8) {
                c.copy_from_slice(&rng.next().to_le_bytes());
            }
            let holders = order(&ids, &key)[..total]
                .iter()
                .map(|id| {
                    let i = index[id];
                    nodes[i].holds.push(s);
                    vec![i]
                })
                .collect();
            SimStripe {
                key,
                holders,
                lost: false,
                first_loss: None,
                urgent_since: None,
            }
        })
        .collect();
    let mut tracker: Tracker<usize> = Tracker::default();
    // Stripes to survey this step: holders changed, or below the threshold.
    let mut pending: BTreeSet<usize> = BTreeSet::new();
    let mut out = SimResult {
        stored_bytes: (p.stripes * total) as u64 * p.shard_bytes,
        ..SimResult::default()
    };
    for now in 0..steps {
        for (i, n) in nodes.iter_mut().enumerate() {
            if rng.unit() < death {
                // Gone for good; a newcomer (holding nothing) takes the slot.
                for s in std::mem::take(&mut n.holds) {
                    for h in stripes[s].holders.iter_mut() {
                        h.retain(|&j| j != i);
                    }
                    pending.insert(s);
                }
                index.remove(&n.id);
                n.id = new_id(&mut rng);
                n.offline_until = 0;
                index.insert(n.id, i);
            } else if n.offline_until == now && now > 0 {
                pending.extend(n.holds.iter().copied()); // back online
            } else if n.offline_until < now && rng.unit() < outage {
                let len = -p.outage_mean_hours * (1.0 - rng.unit()).ln() / step_hours;
                n.offline_until = now + 1 + len as u64;
                pending.extend(n.holds.iter().copied());
            }
        }
        let online = |n: &Node| n.offline_until <= now;
        let mut members: Option<Vec<PeerId>> = None;
        let surveyed: Vec<usize> = std::mem::take(&mut pending).into_iter().collect();
        for s in surveyed {
            let st = &mut stripes[s];
            if st.lost {
                continue;
            }
            if st.holders.iter().filter(|h| !h.is_empty()).count() < p.k {
                st.lost = true;
                out.lost_stripes += 1;
                continue;
            }
            let Some(policy) = &p.repair else { continue };
            let health = StripeHealth {
                holders: st
                    .holders
                    .iter()
                    .map(|h| {
                        h.iter()
                            .filter(|&&j| online(&nodes[j]))
                            .map(|&j| nodes[j].id)
                            .collect()
                    })
                    .collect(),
            };
            if coordinator(&st.key, health.holder_set()).is_none() {
                pending.insert(s);
                continue;
            }
            let clock = p.step * u32::try_from(now).expect("steps fit in u32");
            if policy.is_urgent(total, health.intact()) {
                st.urgent_since.get_or_insert(now);
            }
            match tracker.judge(policy, &s, p.k, &health, clock) {
                Verdict::Healthy => {
                    st.first_loss = None;
                    st.urgent_since = None;
                }
                Verdict::Waiting { .. } | Verdict::Lost => {
                    st.first_loss.get_or_insert(now);
                    pending.insert(s);
                }
                Verdict::Repair { missing } => {
                    let live = members.get_or_insert_with(|| {
                        nodes.iter().filter(|n| online(n)).map(|n| n.id).collect()
                    });
                    let view: Vec<PeerId> = (0..VIEW.min(live.len()))
                        .map(|_| live[(rng.next() % live.len() as u64) as usize])
                        .collect();
                    let ordered = order(&view, &st.key);
                    let mut taken: BTreeSet<PeerId> = health.holder_set();
                    for i in &missing {
                        let Some(to) = candidates(&ordered, &taken).next() else {
                            break;
                        };
                        taken.insert(to);
                        let j = index[&to];
                        st.holders[*i].push(j);
                        nodes[j].holds.push(s);
                        out.shards_repaired += 1;
                        out.repair_bytes += p.shard_bytes;
                    }
                    out.repair_bytes += p.k as u64 * p.shard_bytes;
                    let window = |since: u64| (now - since + 1) as f64 * step_hours;
                    match st.urgent_since.take() {
                        Some(since) => out.urgent_windows.push(window(since)),
                        None => out.grace_windows.push(window(st.first_loss.unwrap_or(now))),
                    }
                    st.first_loss = None;
                    tracker.forget(&s);
                    pending.insert(s); // confirmed whole (or not) next step
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN_MINUTES: Duration = Duration::from_secs(600);

    fn params(repair: Option<RepairPolicy>) -> SimParams {
        SimParams {
            nodes: 300,
            k: 4,
            m: 2,
            stripes: 40,
            monthly_loss: 0.2,
            outages_per_month: 1.0,
            outage_mean_hours: 4.0,
            hours: 4 * 730,
            step: TEN_MINUTES,
            repair,
            shard_bytes: 1 << 20,
            seed: 7,
        }
    }

    fn policy(urgent: u8) -> RepairPolicy {
        RepairPolicy {
            threshold: 0,
            grace: Duration::from_secs(3600),
            urgent,
        }
    }

    #[test]
    fn repair_keeps_stripes_that_churn_alone_loses() {
        // 20% of nodes lost a month for four months: without repair most (4,2) stripes die.
        let without = simulate(&params(None));
        assert!(without.lost_stripes > 20, "{without:?}");
        assert_eq!(without.repair_bytes, 0);
        let with = simulate(&params(Some(policy(0))));
        assert_eq!(with.lost_stripes, 0, "{:?}", with.lost_stripes);
        assert!(with.shards_repaired > 0);
        assert!(with.urgent_windows.is_empty());
        // Each repair waited out the grace (one hour) and at most a step more.
        assert!(
            with.grace_windows
                .iter()
                .all(|w| (1.0..=1.0 + 2.0 / 6.0).contains(w)),
            "{:?}",
            with.grace_windows
        );
    }

    #[test]
    fn a_second_loss_is_repaired_within_a_step() {
        let r = simulate(&params(Some(policy(2))));
        assert_eq!(r.lost_stripes, 0);
        assert!(!r.urgent_windows.is_empty(), "no stripe lost two shards");
        assert!(
            r.urgent_windows.iter().all(|w| *w <= 1.0 / 6.0 + 1e-9),
            "{:?}",
            r.urgent_windows
        );
    }

    #[test]
    fn the_loss_estimate_falls_with_shorter_windows_and_more_parity() {
        let est = |k, m, u, g, w| SimResult::annual_loss(k, m, &policy(u), 0.05, g, w);
        let a = est(10, 4, 0, 2.0, 0.0);
        let b = est(10, 4, 0, 20.0, 0.0);
        let c = est(4, 2, 0, 2.0, 0.0);
        assert!(a < b && a < c, "{a} {b} {c}");
        // Urgent repair of a second loss cuts the window that the rest must fall in.
        let d = est(10, 4, 2, 2.0, 1.0 / 6.0);
        assert!(d < a / 100.0, "{d} {a}");
        assert!((tail(3, 0, 0.3) - 1.0).abs() < 1e-12);
    }
}
