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

/// One challenged leaf of an epoch: a sample that fell on a running deal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Challenge {
    pub commitment: Commitment,
    pub leaf: u64,
}

/// Why the contract refuses an epoch's blob.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlobError {
    /// The blob is not exactly one proof per challenge (the contract's `MalformedProof`).
    #[error("the blob does not hold exactly one proof per challenge")]
    Malformed,
    /// The proof of challenge `index` does not hash to its deal's root (`BadProof`).
    #[error("the proof of challenge {index} does not verify")]
    BadProof { index: usize },
}

/// The next proof of `blob` for a deal of `leaf_count` leaves, and what follows it.
fn take_proof(blob: &[u8], leaf_count: u64) -> Option<(Proof, &[u8])> {
    let (leaf, rest) = blob.split_first_chunk::<LEAF_SIZE>()?;
    let (siblings, rest) = rest.split_at_checked(depth(leaf_count) * NODE_SIZE)?;
    let (siblings, _) = siblings.as_chunks::<NODE_SIZE>();
    Some((
        Proof {
            leaf: *leaf,
            siblings: siblings.to_vec(),
        },
        rest,
    ))
}

/// Cut an epoch's blob into its proofs, one per challenge in order, as the contract reads it:
/// the blob carries no lengths, each proof's size follows from its deal's leaf count.
pub fn decode_blob(blob: &[u8], challenges: &[Challenge]) -> Result<Vec<Proof>, BlobError> {
    let mut rest = blob;
    let mut proofs = Vec::with_capacity(challenges.len());
    for c in challenges {
        let (proof, tail) =
            take_proof(rest, c.commitment.leaf_count).ok_or(BlobError::Malformed)?;
        proofs.push(proof);
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(BlobError::Malformed);
    }
    Ok(proofs)
}

/// What the contract's `submitProofs` checks of a blob, in its order: each challenge's proof
/// in turn (a blob too short for it is malformed, a proof that does not verify is bad), then
/// that nothing is left over.
pub fn verify_blob(blob: &[u8], challenges: &[Challenge]) -> Result<(), BlobError> {
    let mut rest = blob;
    for (index, c) in challenges.iter().enumerate() {
        let (proof, tail) =
            take_proof(rest, c.commitment.leaf_count).ok_or(BlobError::Malformed)?;
        if !verify(&c.commitment, c.leaf, &proof) {
            return Err(BlobError::BadProof { index });
        }
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(BlobError::Malformed);
    }
    Ok(())
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
