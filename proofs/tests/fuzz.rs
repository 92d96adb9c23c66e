//! Fuzzing of the proof blob a node submits for an epoch, read as the contract reads it
//! (`decode_blob`, `verify_blob`): random blobs against random challenges, and valid blobs
//! with bytes overwritten, inserted and cut. No panic; a blob verifies only if it is exactly
//! the valid one.
//!
//! The default case counts are a short pass for CI; `ops/fuzz.sh` runs each test for minutes
//! through `PROPTEST_CASES`.

use std::sync::LazyLock;

use cairn_proofs::tree::{
    CHUNK_LEAVES, CHUNK_SIZE, LEAF_SIZE, NODE_SIZE, chunks_for, depth, leaf_hash, shard_chunk_roots,
};
use cairn_proofs::{
    BlobError, Challenge, Commitment, Proof, UpperTree, decode_blob, encode_blob, proof_size,
    prove, verify, verify_blob,
};
use proptest::prelude::*;
use proptest::sample::Index;

#[path = "../../erasure/tests/support/mutate.rs"]
mod mutate;
use mutate::{cases, edits, mutate, noise};

/// A deal's commitment and valid proofs of some of its leaves.
struct Deal {
    commitment: Commitment,
    proofs: Vec<(u64, Proof)>,
}

/// Deals of different depths, built once: real ones over shard bytes (the proofs come from
/// `prove`, as a node builds them), and a one-leaf tree (depth 0, no siblings).
static DEALS: LazyLock<Vec<Deal>> = LazyLock::new(|| {
    let mut deals: Vec<Deal> = [
        vec![noise(1, 1)],
        vec![noise(100_000, 2)],
        vec![noise(70_000, 3), noise(10, 4), noise(CHUNK_SIZE, 5)],
    ]
    .into_iter()
    .map(|shards| {
        let upper = UpperTree::new(shards.iter().flat_map(|s| shard_chunk_roots(s)).collect())
            .expect("data");
        let commitment = upper.commitment();
        let n = commitment.leaf_count;
        let proofs = [0, 1, 2, 3, 511, 512, n / 2, n - 2, n - 1]
            .into_iter()
            .filter(|&i| i < n)
            .map(|i| {
                let proof = prove(&upper, i, &chunk_of(&shards, i)).expect("data held");
                assert!(verify(&commitment, i, &proof));
                (i, proof)
            })
            .collect();
        Deal { commitment, proofs }
    })
    .collect();
    let leaf = [7u8; LEAF_SIZE];
    deals.push(Deal {
        commitment: Commitment {
            root: leaf_hash(&leaf),
            leaf_count: 1,
        },
        proofs: vec![(
            0,
            Proof {
                leaf,
                siblings: Vec::new(),
            },
        )],
    });
    deals
});

/// The chunk holding leaf `index`, as a node reads it from its shards.
fn chunk_of(shards: &[Vec<u8>], index: u64) -> Vec<u8> {
    let mut chunk = index / CHUNK_LEAVES;
    for s in shards {
        let n = chunks_for(s.len() as u64);
        if chunk < n {
            let a = chunk as usize * CHUNK_SIZE;
            return s[a..(a + CHUNK_SIZE).min(s.len())].to_vec();
        }
        chunk -= n;
    }
    unreachable!("leaf outside the data");
}

/// An epoch's challenges from the deals above and its valid blob.
fn epoch() -> impl Strategy<Value = (Vec<Challenge>, Vec<u8>)> {
    prop::collection::vec((any::<Index>(), any::<Index>()), 0..8).prop_map(|picks| {
        let (challenges, proofs): (Vec<Challenge>, Vec<Proof>) = picks
            .into_iter()
            .map(|(d, p)| {
                let deal = &DEALS[d.index(DEALS.len())];
                let (leaf, proof) = &deal.proofs[p.index(deal.proofs.len())];
                (
                    Challenge {
                        commitment: deal.commitment,
                        leaf: *leaf,
                    },
                    proof.clone(),
                )
            })
            .unzip();
        (challenges, encode_blob(&proofs))
    })
}

/// Both readers on `blob`: no panic, and what `decode_blob` returns is exactly the blob.
fn check_blob(
    blob: &[u8],
    challenges: &[Challenge],
) -> Result<Result<(), BlobError>, TestCaseError> {
    let expected: usize = challenges
        .iter()
        .map(|c| proof_size(c.commitment.leaf_count))
        .sum();
    match decode_blob(blob, challenges) {
        Ok(proofs) => {
            prop_assert_eq!(blob.len(), expected);
            prop_assert_eq!(proofs.len(), challenges.len());
            for (p, c) in proofs.iter().zip(challenges) {
                prop_assert_eq!(p.siblings.len(), depth(c.commitment.leaf_count));
            }
            prop_assert_eq!(encode_blob(&proofs), blob);
        }
        Err(e) => {
            prop_assert_eq!(e, BlobError::Malformed);
            prop_assert!(blob.len() != expected);
        }
    }
    let verdict = verify_blob(blob, challenges);
    if verdict.is_ok() {
        prop_assert_eq!(blob.len(), expected);
    }
    Ok(verdict)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(2048)))]

    /// Random blobs against random challenges (any leaf count, so any depth), and random
    /// blobs of exactly the right length: nothing verifies unless there is nothing to prove.
    #[test]
    fn fuzz_proof_blob_random(
        challenges in prop::collection::vec(
            (any::<[u8; NODE_SIZE]>(), prop_oneof![1u64..5000, any::<u64>()], any::<u64>()),
            0..6,
        ),
        junk in prop::collection::vec(any::<u8>(), 0..3000),
        seed: u64,
    ) {
        let challenges: Vec<Challenge> = challenges
            .into_iter()
            .map(|(root, leaf_count, leaf)| Challenge {
                commitment: Commitment { root, leaf_count },
                leaf: leaf % leaf_count.max(1),
            })
            .collect();
        let sized = noise(challenges.iter().map(|c| proof_size(c.commitment.leaf_count)).sum(), seed);
        for blob in [&junk, &sized] {
            let verdict = check_blob(blob, &challenges)?;
            prop_assert_eq!(verdict.is_ok(), challenges.is_empty() && blob.is_empty());
        }
    }

    /// A valid epoch blob verifies; with bytes changed it is refused, unless the change
    /// left it as it was.
    #[test]
    fn fuzz_proof_blob_mutated(
        (challenges, blob) in epoch(),
        edits in edits(40, 40),
        cut in prop::option::of(any::<Index>()),
    ) {
        prop_assert_eq!(check_blob(&blob, &challenges)?, Ok(()));
        let changed = mutate(&blob, &edits, cut);
        let verdict = check_blob(&changed, &challenges)?;
        prop_assert_eq!(verdict.is_ok(), changed == blob, "{:?}", verdict);
        // A proof is refused for any other deal.
        if let Some(first) = challenges.first() {
            let proof = decode_blob(&blob, &challenges).expect("valid")[0].clone();
            for other in DEALS.iter().filter(|d| d.commitment != first.commitment) {
                prop_assert!(!verify(&other.commitment, first.leaf % other.commitment.leaf_count, &proof));
            }
        }
    }
}
