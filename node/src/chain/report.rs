//! Who reports a missed epoch, and when (pure: accounts and blocks in, a turn out).
//!
//! Every node's watcher sees the same missed epoch at the same time. If all of them sent
//! `reportMissed` at once, one transaction would slash and the others would be mined and
//! revert, each paying for its gas. Instead the watchers that may report `(node, epoch)` are
//! put in one order that every watcher computes alike, from the chain's member list: by
//! `keccak256(node || epoch || watcher)`. The first in that order reports as soon as the
//! epoch's proof window has closed; each next one only `REPORT_STAGGER_BLOCKS` blocks later,
//! and only if the epoch is still neither proven nor slashed when its turn comes. A watcher
//! that is down, out of gas or lagging costs the others one stagger each, never a reverted
//! transaction. The order changes with every node and epoch, so no watcher is always first
//! (the reward goes around) and none can choose to be.

use alloy::primitives::{Address, keccak256};

/// Blocks between one watcher's turn to report and the next one's: enough for the first
/// report to be mined (one block) and seen by the next watcher (its next round), with a
/// block to spare.
pub const REPORT_STAGGER_BLOCKS: u64 = 3;

/// The key that orders the watchers of `node`'s missed `epoch`.
fn order_key(node: &Address, epoch: u64, watcher: &Address) -> [u8; 32] {
    let mut buf = [0u8; 20 + 8 + 20];
    buf[..20].copy_from_slice(node.as_slice());
    buf[20..28].copy_from_slice(&epoch.to_be_bytes());
    buf[28..].copy_from_slice(watcher.as_slice());
    keccak256(buf).0
}

/// `me`'s turn (0 = first) to report `node`'s missed `epoch`, among `members` (the chain's
/// member accounts; `node` itself never reports). A watcher that is not a member comes after
/// every member.
pub fn turn(me: &Address, node: &Address, epoch: u64, members: &[Address]) -> u64 {
    let others = members.iter().filter(|a| *a != node && *a != me);
    if !members.contains(me) {
        return others.count() as u64;
    }
    let mine = order_key(node, epoch, me);
    others.filter(|a| order_key(node, epoch, a) < mine).count() as u64
}

/// The first block in which the watcher at `turn` may report an epoch whose proof window
/// closes at block `window_end` (reports are valid from `window_end + 1`).
pub fn due_block(window_end: u64, turn: u64) -> u64 {
    window_end + 1 + turn * REPORT_STAGGER_BLOCKS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accounts(n: u8) -> Vec<Address> {
        (1..=n).map(Address::repeat_byte).collect()
    }

    #[test]
    fn the_watchers_of_a_missed_epoch_take_distinct_turns() {
        let members = accounts(9);
        let node = members[4];
        for epoch in 0..50 {
            let mut turns: Vec<u64> = members
                .iter()
                .filter(|a| **a != node)
                .map(|a| turn(a, &node, epoch, &members))
                .collect();
            turns.sort_unstable();
            assert_eq!(turns, (0..8).collect::<Vec<_>>(), "epoch {epoch}");
        }
    }

    #[test]
    fn every_watcher_computes_the_same_order_and_the_first_changes() {
        let members = accounts(6);
        let node = members[0];
        // The member list may come in any order.
        let mut shuffled = members.clone();
        shuffled.reverse();
        let mut firsts = std::collections::BTreeSet::new();
        for epoch in 0..40 {
            for a in &members[1..] {
                assert_eq!(
                    turn(a, &node, epoch, &members),
                    turn(a, &node, epoch, &shuffled)
                );
            }
            let first = members[1..]
                .iter()
                .find(|a| turn(a, &node, epoch, &members) == 0)
                .expect("someone is first");
            firsts.insert(*first);
        }
        // Over 40 epochs each of the 5 watchers is first at least once (a fixed order would
        // give one of them every reward; the chance that a fair draw misses one is < 1e-3).
        assert_eq!(firsts.len(), 5);
    }

    #[test]
    fn outsiders_come_last_and_turns_are_staggered() {
        let members = accounts(4);
        let outsider = Address::repeat_byte(0xee);
        assert_eq!(turn(&outsider, &members[0], 7, &members), 3);
        assert_eq!(due_block(100, 0), 101);
        assert_eq!(due_block(100, 2), 101 + 2 * REPORT_STAGGER_BLOCKS);
    }
}
