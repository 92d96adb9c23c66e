//! Proofs of storage, pure: the tree a deal commits to, the challenges of an epoch (mirroring
//! the contract), proofs of challenged leaves and their verification. No I/O and no async:
//! the node reads chunks from its store and talks to the chain; this crate only computes.
//! The byte-level rules are in `PROOFS.md`; the contract is `contracts/CairnStorage.sol`.

pub mod challenge;
pub mod proof;
pub mod tree;

pub use proof::{
    BlobError, Challenge, Proof, ProveError, decode_blob, encode_blob, proof_size, prove, verify,
    verify_blob,
};
pub use tree::{Commitment, Node, UpperTree};

/// Format tag of the tree and blob rules (the contract's `PROOF_FORMAT`).
pub const PROOF_FORMAT: u8 = 1;

#[cfg(test)]
mod tests;
