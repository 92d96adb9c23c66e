use proptest::prelude::*;
use sha2::{Digest, Sha256};

use crate::tree::*;
use crate::*;

/// The whole tree over every leaf of the padded data, the slow obvious way.
fn reference_commitment(shards: &[Vec<u8>]) -> Commitment {
    let mut data = Vec::new();
    for s in shards {
        let mut p = s.clone();
        p.resize(chunks_for(s.len() as u64) as usize * CHUNK_SIZE, 0);
        data.extend(p);
    }
    let leaf_count = (data.len() / LEAF_SIZE) as u64;
    let mut level: Vec<Node> = data.chunks(LEAF_SIZE).map(leaf_hash).collect();
    level.resize(1 << depth(leaf_count), leaf_hash(&[0u8; LEAF_SIZE]));
    let mut height = 0;
    while level.len() > 1 {
        height += 1;
        level = level
            .chunks(2)
            .map(|p| node_hash(height, &p[0], &p[1]))
            .collect();
    }
    Commitment {
        root: level[0],
        leaf_count,
    }
}

fn upper_of(shards: &[Vec<u8>]) -> UpperTree {
    UpperTree::new(shards.iter().flat_map(|s| shard_chunk_roots(s)).collect()).expect("data")
}

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
    panic!("leaf outside the data");
}

#[test]
fn node_hashes_are_truncated_sha256_with_prefixes() {
    let leaf = [7u8; LEAF_SIZE];
    let mut m = vec![0u8];
    m.extend(leaf);
    assert_eq!(leaf_hash(&leaf)[..], Sha256::digest(&m)[..16]);
    let (l, r) = ([1u8; 16], [2u8; 16]);
    let mut m = vec![1u8];
    m.extend(l);
    m.extend(r);
    assert_eq!(node_hash(1, &l, &r)[..], Sha256::digest(&m)[..16]);
    assert_eq!(node_hash(SHA_LEVELS, &l, &r)[..], Sha256::digest(&m)[..16]);
    use sha3::Digest as _;
    assert_eq!(
        node_hash(SHA_LEVELS + 1, &l, &r)[..],
        sha3::Keccak256::digest(&m)[..16]
    );
}

#[test]
fn depth_is_ceil_log2() {
    assert_eq!(depth(1), 0);
    assert_eq!(depth(2), 1);
    assert_eq!(depth(3), 2);
    assert_eq!(depth(CHUNK_LEAVES), CHUNK_LEVELS);
    assert_eq!(depth(CHUNK_LEAVES + 1), CHUNK_LEVELS + 1);
}

#[test]
fn changed_data_is_refused_before_a_proof_is_built() {
    let shards = vec![vec![5u8; 100_000]];
    let upper = upper_of(&shards);
    let mut chunk = chunk_of(&shards, 0);
    assert!(prove(&upper, 3, &chunk).is_ok());
    chunk[4000] ^= 1;
    assert_eq!(
        prove(&upper, 3, &chunk),
        Err(ProveError::ChunkMismatch { chunk: 0 })
    );
    let leaves = upper.commitment().leaf_count;
    assert!(matches!(
        prove(&upper, leaves, &chunk),
        Err(ProveError::OutOfRange { .. })
    ));
}

#[test]
fn empty_data_has_no_tree() {
    assert!(UpperTree::new(Vec::new()).is_none());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn proofs_of_random_leaves_verify_and_tampering_fails(
        lens in prop::collection::vec(1usize..200_000, 1..5),
        seed in any::<u8>(),
        picks in prop::collection::vec(any::<u64>(), 1..6),
        flip in any::<u16>(),
    ) {
        let shards: Vec<Vec<u8>> = lens.iter().enumerate().map(|(n, &len)| {
            (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed).wrapping_add(n as u8)).collect()
        }).collect();
        let upper = upper_of(&shards);
        let c = upper.commitment();
        prop_assert_eq!(c, reference_commitment(&shards));
        for p in picks {
            let index = p % c.leaf_count;
            let proof = prove(&upper, index, &chunk_of(&shards, index)).expect("data held");
            prop_assert!(verify(&c, index, &proof));
            prop_assert_eq!(proof.siblings.len() * NODE_SIZE + LEAF_SIZE, proof_size(c.leaf_count));
            // Another index (unless the leaf and its neighbour are equal), a flipped leaf
            // bit or a flipped sibling bit: refused.
            if leaf_hash(&proof.leaf) != proof.siblings[0] {
                prop_assert!(!verify(&c, index ^ 1, &proof));
            }
            let mut bad = proof.clone();
            bad.leaf[flip as usize % LEAF_SIZE] ^= 1;
            prop_assert!(!verify(&c, index, &bad));
            let mut bad = proof.clone();
            let s = flip as usize % bad.siblings.len();
            bad.siblings[s][flip as usize % NODE_SIZE] ^= 0x80;
            prop_assert!(!verify(&c, index, &bad));
            let mut bad = proof;
            bad.siblings.pop();
            prop_assert!(!verify(&c, index, &bad));
        }
    }
}

#[test]
fn blob_is_leaf_then_siblings_per_proof() {
    let shards = vec![vec![9u8; 70_000]];
    let upper = upper_of(&shards);
    let a = prove(&upper, 1, &chunk_of(&shards, 1)).expect("held");
    let far = CHUNK_LEAVES + 2;
    let b = prove(&upper, far, &chunk_of(&shards, far)).expect("held");
    let blob = encode_blob(&[a.clone(), b]);
    assert_eq!(blob.len(), 2 * proof_size(upper.commitment().leaf_count));
    assert_eq!(&blob[..LEAF_SIZE], &a.leaf);
    assert_eq!(&blob[LEAF_SIZE..LEAF_SIZE + NODE_SIZE], &a.siblings[0]);
}

#[test]
fn blobs_are_read_as_the_contract_reads_them() {
    let shards = vec![vec![3u8; 70_000]];
    let upper = upper_of(&shards);
    let commitment = upper.commitment();
    let leaves = [5, CHUNK_LEAVES + 1];
    let proofs: Vec<Proof> = leaves
        .iter()
        .map(|&i| prove(&upper, i, &chunk_of(&shards, i)).expect("held"))
        .collect();
    let challenges: Vec<Challenge> = leaves
        .iter()
        .map(|&leaf| Challenge { commitment, leaf })
        .collect();
    let blob = encode_blob(&proofs);
    assert_eq!(decode_blob(&blob, &challenges), Ok(proofs));
    assert_eq!(verify_blob(&blob, &challenges), Ok(()));
    assert_eq!(verify_blob(&[], &[]), Ok(()));
    assert_eq!(
        verify_blob(&blob[..blob.len() - 1], &challenges),
        Err(BlobError::Malformed)
    );
    let mut longer = blob.clone();
    longer.push(0);
    assert_eq!(verify_blob(&longer, &challenges), Err(BlobError::Malformed));
    assert_eq!(decode_blob(&longer, &challenges), Err(BlobError::Malformed));
    let mut bad = blob.clone();
    bad[proof_size(commitment.leaf_count) + 3] ^= 1;
    assert_eq!(
        verify_blob(&bad, &challenges),
        Err(BlobError::BadProof { index: 1 })
    );
}
