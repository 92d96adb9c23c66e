//! Challenge derivation, mirroring `CairnStorage`'s draw exactly.
//!
//! A node's **draw tree** holds its deal list, in acceptance order, each deal weighted by its
//! leaf count from its acceptance until it is pruned (after its end). Sample `j` of node `a`
//! in epoch `e`, attempt `t`: `r = sha256(seed_e || a || e as u64 BE || j as u8 || t as u8)`,
//! with `seed_e` the hash of the epoch's first block. With `W` the tree's total weight,
//! `x = r mod W` falls on the deal whose range of `[0, W)`, in list order, holds `x`, at leaf
//! `x` minus the weights before it. If that deal is not drawn in `e` (not started, ended, or
//! terminated before `e`) the next attempt is made, up to [`DRAW_ATTEMPTS`]: every leaf of
//! every deal drawn in `e` is equally likely. The contract finds the deal in a Fenwick tree;
//! [`draw`] walks the prefix sums, which gives the same deal and leaf.

use sha2::{Digest, Sha256};

/// Attempts per sample before the draw fails (the contract's `DRAW_ATTEMPTS`).
pub const DRAW_ATTEMPTS: u8 = 32;

/// The 256-bit value behind one attempt of one sample.
pub fn sample_value(seed: &[u8; 32], node: &[u8; 20], epoch: u64, j: u8, attempt: u8) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(seed);
    h.update(node);
    h.update(epoch.to_be_bytes());
    h.update([j, attempt]);
    h.finalize().into()
}
/// Above this a draw's total weight would overflow [`mod_be`]; the contract's limits (2^40
/// leaves per deal, 2^32 deals per node) keep it below 2^72.
const MAX_TOTAL: u128 = 1 << 120;

/// `r mod n` for a big-endian 256-bit `r` and `0 < n < 2^120`.
fn mod_be(bytes: &[u8], n: u128) -> u128 {
    assert!(
        n > 0 && n < MAX_TOTAL,
        "modulus is positive and below 2^120"
    );
    bytes
        .iter()
        .fold(0u128, |acc, &b| ((acc << 8) | u128::from(b)) % n)
}

/// One position of a node's draw tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Its leaf count while in the tree, 0 once pruned.
    pub weight: u64,
    /// Drawn in the epoch (started, not ended, not terminated before it).
    pub drawn: bool,
}

/// Where a sample falls in a draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drawn {
    /// Position in the node's deal list.
    pub index: usize,
    /// Leaf within that deal.
    pub leaf: u64,
}

/// Every attempt of a sample fell on a deal not drawn in the epoch (the contract's
/// `DrawExhausted`): the node's tree holds too much that has ended and is not pruned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted;

/// The deal (position in `slots`, the node's deal list) and leaf that value `r` falls on.
fn find(r: &[u8; 32], slots: &[Slot], total: u128) -> Drawn {
    let mut x = mod_be(r, total);
    for (index, s) in slots.iter().enumerate() {
        let w = u128::from(s.weight);
        if x < w {
            // x < w <= u64::MAX
            return Drawn {
                index,
                leaf: x as u64,
            };
        }
        x -= w;
    }
    unreachable!("x is below the total of the weights")
}

/// Sample `j` of `node` in `epoch` over its draw tree `slots`: `Ok(None)` when the tree is
/// empty.
pub fn draw(
    seed: &[u8; 32],
    node: &[u8; 20],
    epoch: u64,
    j: u8,
    slots: &[Slot],
) -> Result<Option<Drawn>, Exhausted> {
    let total: u128 = slots.iter().map(|s| u128::from(s.weight)).sum();
    if total == 0 {
        return Ok(None);
    }
    for attempt in 0..DRAW_ATTEMPTS {
        let d = find(&sample_value(seed, node, epoch, j, attempt), slots, total);
        if slots[d.index].drawn {
            return Ok(Some(d));
        }
    }
    Err(Exhausted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mod_matches_u128_arithmetic() {
        let mut r = [0u8; 32];
        r[16..].copy_from_slice(&0x0123_4567_89ab_cdef_fedc_ba98_7654_3210u128.to_be_bytes());
        assert_eq!(
            mod_be(&r, 1000),
            0x0123_4567_89ab_cdef_fedc_ba98_7654_3210u128 % 1000
        );
        r[..16].copy_from_slice(&77u128.to_be_bytes());
        // 77 * 2^128 + low: reduce by hand with 2^128 mod 10 = 6.
        let low = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210u128 % 10;
        assert_eq!(mod_be(&r, 10), (77 * 6 + low) % 10);
    }

    fn r_of(x: u64) -> [u8; 32] {
        let mut r = [0u8; 32];
        r[24..].copy_from_slice(&x.to_be_bytes());
        r
    }

    fn slots(w: &[u64]) -> Vec<Slot> {
        w.iter()
            .map(|&weight| Slot {
                weight,
                drawn: true,
            })
            .collect()
    }

    #[test]
    fn a_value_falls_on_the_deal_whose_range_holds_it() {
        let s = slots(&[3, 0, 5, 1]);
        let want = [
            (0, 0),
            (0, 1),
            (0, 2),
            (2, 0),
            (2, 1),
            (2, 2),
            (2, 3),
            (2, 4),
            (3, 0),
        ];
        for (x, &(index, leaf)) in want.iter().enumerate() {
            assert_eq!(find(&r_of(x as u64), &s, 9), Drawn { index, leaf });
        }
        // r wraps around the total weight
        assert_eq!(find(&r_of(9 + 4), &s, 9), Drawn { index: 2, leaf: 1 });
        assert_eq!(draw(&[0; 32], &[0; 20], 1, 0, &slots(&[0, 0])), Ok(None));
        assert_eq!(draw(&[0; 32], &[0; 20], 1, 0, &[]), Ok(None));
    }

    #[test]
    fn samples_follow_the_bytes_not_the_deal_count() {
        // One client deal of 1 GiB (2^23 leaves of 128 bytes) among 1,000 one-leaf deals of
        // the node's own: the client deal is hit at its share of the leaves, not 1 in 1,001.
        let mut w = vec![1u64; 1001];
        w[500] = 1 << 23;
        let s = slots(&w);
        let share = (1u64 << 23) as f64 / ((1u64 << 23) + 1000) as f64;
        let n = 200_000;
        let mut hits = 0u32;
        for e in 0..n {
            let d = draw(&[7; 32], &[1; 20], e, 0, &s)
                .expect("not exhausted")
                .expect("drawn");
            if d.index == 500 {
                hits += 1;
                assert!(d.leaf < 1 << 23);
            } else {
                assert_eq!(d.leaf, 0);
            }
        }
        // Binomial(n, share): 6 standard deviations either side.
        let (mean, sd) = (n as f64 * share, (n as f64 * share * (1.0 - share)).sqrt());
        assert!(
            (f64::from(hits) - mean).abs() <= 6.0 * sd,
            "{hits} hits of {n}, expected {mean:.0} ± {:.0}",
            6.0 * sd
        );
        // Against a draw uniform over the deals, 1 in 1,001.
        assert!(f64::from(hits) > 0.99 * n as f64);
    }

    #[test]
    fn a_deal_out_of_the_draw_is_drawn_again_and_never_chosen() {
        // Half of the tree's weight is an ended deal and a pruned one weighs nothing: the
        // running deals share the samples by their sizes.
        let s = [
            Slot {
                weight: 4,
                drawn: true,
            },
            Slot {
                weight: 0,
                drawn: false,
            },
            Slot {
                weight: 12,
                drawn: false,
            },
            Slot {
                weight: 8,
                drawn: true,
            },
        ];
        let mut first = 0u32;
        let n = 30_000;
        for e in 0..n {
            let d = draw(&[3; 32], &[2; 20], e, 1, &s)
                .expect("not exhausted")
                .expect("drawn");
            assert!(d.index == 0 || d.index == 3, "{d:?}");
            assert!(d.leaf < s[d.index].weight);
            first += u32::from(d.index == 0);
        }
        // 4 of the 12 running leaves: 1/3, within 6 standard deviations.
        let sd = (f64::from(n as u32) * (1.0 / 3.0) * (2.0 / 3.0)).sqrt();
        assert!(
            (f64::from(first) - n as f64 / 3.0).abs() < 6.0 * sd,
            "{first}"
        );
        // Nothing drawn at all: every attempt falls out of the draw.
        let ended = [Slot {
            weight: 5,
            drawn: false,
        }];
        assert_eq!(draw(&[3; 32], &[2; 20], 1, 0, &ended), Err(Exhausted));
    }
}
