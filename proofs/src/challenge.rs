//! Challenge derivation, mirroring `CairnStorage.challenge` exactly.
//!
//! Sample `j` of node `a` in epoch `e`: `r = sha256(seed_e || a || e as u64 BE || j as u8)`,
//! with `seed_e` the hash of the epoch's first block. The sample falls on the node's deal in
//! slot `r mod n` (n = deals accepted before the epoch started) and, when that deal runs in
//! `e`, on leaf `(r >> 128) mod leaf_count`.

use sha2::{Digest, Sha256};

/// The 256-bit value behind one sample.
pub fn sample_value(seed: &[u8; 32], node: &[u8; 20], epoch: u64, j: u8) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(seed);
    h.update(node);
    h.update(epoch.to_be_bytes());
    h.update([j]);
    h.finalize().into()
}

/// `r mod n` for a big-endian 256-bit `r`.
fn mod_be(bytes: &[u8], n: u64) -> u64 {
    assert!(n > 0, "modulus is positive");
    bytes.iter().fold(0u128, |acc, &b| {
        ((acc << 8) | u128::from(b)) % u128::from(n)
    }) as u64
}

/// The deal slot a sample falls on among `deals` sampled deals.
pub fn slot(r: &[u8; 32], deals: u64) -> u64 {
    mod_be(r, deals)
}

/// The leaf a sample falls on in a deal of `leaf_count` leaves.
pub fn leaf(r: &[u8; 32], leaf_count: u64) -> u64 {
    mod_be(&r[..16], leaf_count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mod_matches_u128_arithmetic() {
        let mut r = [0u8; 32];
        r[16..].copy_from_slice(&0x0123_4567_89ab_cdef_fedc_ba98_7654_3210u128.to_be_bytes());
        assert_eq!(
            slot(&r, 1000),
            (0x0123_4567_89ab_cdef_fedc_ba98_7654_3210u128 % 1000) as u64
        );
        r[..16].copy_from_slice(&77u128.to_be_bytes());
        assert_eq!(leaf(&r, 10), 7);
    }
}
