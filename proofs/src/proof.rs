//! Proofs of single leaves, their verification, and the blob a node submits for an epoch.

use thiserror::Error;

use crate::tree::{
    CHUNK_LEAVES, CHUNK_SIZE, ChunkTree, Commitment, LEAF_SIZE, NODE_SIZE, Node, UpperTree, depth,
    leaf_hash, node_hash,
};

/// One proven leaf: its bytes and the siblings from it to the root, bottom up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    pub leaf: [u8; LEAF_SIZE],
    pub siblings: Vec<Node>,
}

/// Why a proof could not be built.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProveError {
    #[error("leaf {index} is outside the deal's {leaf_count} leaves")]
    OutOfRange { index: u64, leaf_count: u64 },
    #[error("chunk {chunk} is {len} bytes, more than a chunk")]
    ChunkTooLong { chunk: u64, len: usize },
    #[error("chunk {chunk} does not match the commitment: the data held for it has changed")]
    ChunkMismatch { chunk: u64 },
}

/// Prove leaf `index` of a deal from its upper tree and the bytes of the chunk holding the
/// leaf (as held, without the zero padding). Fails, instead of building a proof that would not
/// verify, when the chunk's bytes do not hash to the committed chunk root.
pub fn prove(upper: &UpperTree, index: u64, chunk_data: &[u8]) -> Result<Proof, ProveError> {
    let leaf_count = upper.commitment().leaf_count;
    if index >= leaf_count {
        return Err(ProveError::OutOfRange { index, leaf_count });
    }
    let chunk = index / CHUNK_LEAVES;
    if chunk_data.len() > CHUNK_SIZE {
        return Err(ProveError::ChunkTooLong {
            chunk,
            len: chunk_data.len(),
        });
    }
    let tree = ChunkTree::build(chunk_data);
    if Some(tree.root()) != upper.chunk_root(chunk) {
        return Err(ProveError::ChunkMismatch { chunk });
    }
    let within = index % CHUNK_LEAVES;
    let start = within as usize * LEAF_SIZE;
    let mut leaf = [0u8; LEAF_SIZE];
    if start < chunk_data.len() {
        let end = (start + LEAF_SIZE).min(chunk_data.len());
        leaf[..end - start].copy_from_slice(&chunk_data[start..end]);
    }
    let mut siblings = tree.path(within);
    siblings.extend(upper.path(chunk));
    Ok(Proof { leaf, siblings })
}

/// Check a proof of leaf `index` against a commitment (what the contract does).
pub fn verify(c: &Commitment, index: u64, proof: &Proof) -> bool {
    if index >= c.leaf_count || proof.siblings.len() != depth(c.leaf_count) {
        return false;
    }
    let mut h = leaf_hash(&proof.leaf);
    let mut i = index;
    for (n, s) in proof.siblings.iter().enumerate() {
        h = if i & 1 == 0 {
            node_hash(n + 1, &h, s)
        } else {
            node_hash(n + 1, s, &h)
        };
        i >>= 1;
    }
    h == c.root
}

/// Bytes one proof takes in a blob, for a deal of `leaf_count` leaves.
pub fn proof_size(leaf_count: u64) -> usize {
    LEAF_SIZE + depth(leaf_count) * NODE_SIZE
}

/// The epoch's blob: the proofs in sample order, each the leaf then its siblings.
pub fn encode_blob(proofs: &[Proof]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        proofs
            .iter()
            .map(|p| LEAF_SIZE + p.siblings.len() * NODE_SIZE)
            .sum(),
    );
    for p in proofs {
        out.extend_from_slice(&p.leaf);
        for s in &p.siblings {
            out.extend_from_slice(s);
        }
    }
    out
}
