//! What every `fuzz_*` test shares: its case count and the changes it makes to valid
//! encodings. Included by path from the fuzz tests of erasure, proofs and node.
#![allow(dead_code)]

use proptest::prelude::*;
use proptest::sample::Index;

/// Cases per test: `PROPTEST_CASES` when set (the long run, `ops/fuzz.sh`), else `ci`.
pub fn cases(ci: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ci)
}

/// One change to a valid encoding.
#[derive(Debug, Clone)]
pub enum Edit {
    Set(Index, u8),
    Flip(Index, u8),
    Insert(Index, Vec<u8>),
    Remove(Index, usize),
}

/// One to five changes; inserted runs are shorter than `insert_max` bytes, removed ones than
/// `remove_max`.
pub fn edits(insert_max: usize, remove_max: usize) -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        3 => (any::<Index>(), any::<u8>()).prop_map(|(i, v)| Edit::Set(i, v)),
        3 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Edit::Flip(i, b)),
        1 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..insert_max))
            .prop_map(|(i, v)| Edit::Insert(i, v)),
        1 => (any::<Index>(), 1usize..remove_max).prop_map(|(i, n)| Edit::Remove(i, n)),
    ];
    prop::collection::vec(edit, 1..6)
}

/// `bytes` with `edits` applied in order, then cut to `cut` of its length when given.
pub fn mutate(bytes: &[u8], edits: &[Edit], cut: Option<Index>) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for e in edits {
        match e {
            Edit::Set(i, v) if !b.is_empty() => {
                let i = i.index(b.len());
                b[i] = *v;
            }
            Edit::Flip(i, bit) if !b.is_empty() => {
                let i = i.index(b.len());
                b[i] ^= 1 << bit;
            }
            Edit::Insert(i, v) => {
                let at = i.index(b.len() + 1);
                b.splice(at..at, v.iter().copied());
            }
            Edit::Remove(i, n) if !b.is_empty() => {
                let at = i.index(b.len());
                b.drain(at..(at + n).min(b.len()));
            }
            _ => {}
        }
    }
    if let Some(cut) = cut {
        b.truncate(cut.index(b.len() + 1));
    }
    b
}

/// Deterministic pseudo-random bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
