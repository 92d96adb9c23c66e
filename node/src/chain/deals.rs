//! The data behind a deal: which shards a node holds for a checkpoint, in what order, and
//! the proof tree over them (`cairn_proofs::tree`). Both sides compute it the same way: the
//! gateway from the shards it places, the node from the shards it stores.
//!
//! A node's deal data for a checkpoint is the manifest's shards (stripe by stripe, shard by
//! shard, each CID once) that the node holds, each zero-padded to whole 64 KiB chunks.

use std::collections::{HashMap, HashSet};

use cairn_erasure::{Cid, Manifest};
use cairn_proofs::tree::{CHUNK_SIZE, Node, chunks_for, shard_chunk_roots};
use cairn_proofs::{Commitment, UpperTree};
use cairn_storage::{AcceptedDeal, Backend, CHUNK_ROOT_LEN, ReadError, Store};
use thiserror::Error;

/// One shard of a deal's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub cid: Cid,
    pub len: u64,
    /// Index of the shard's first chunk in the deal's data.
    pub first_chunk: u64,
}

/// What a node keeps in memory to prove a deal.
#[derive(Debug, Clone)]
pub struct HeldData {
    pub pieces: Vec<Piece>,
    pub tree: UpperTree,
}

/// The deal data could not be read.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DealDataError {
    #[error("this node holds no shard of checkpoint {0}")]
    NothingHeld(Cid),
    #[error("chunk {0} is outside the deal's data")]
    NoSuchChunk(u64),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("cannot list shards: {0}")]
    Backend(#[from] cairn_storage::BackendError),
    #[error("the record of the deal lists {pieces} chunks of shards but {roots} chunk roots")]
    BadRecord { pieces: u64, roots: u64 },
    #[error("shard {0} of the deal is gone")]
    ShardGone(Cid),
}

const _: () = assert!(CHUNK_ROOT_LEN == cairn_proofs::tree::NODE_SIZE);

/// The manifest's shards in deal order (each CID once).
fn ordered_shards(manifest: &Manifest) -> Vec<Cid> {
    let mut seen = HashSet::new();
    manifest
        .shard_cids()
        .filter(|c| seen.insert(**c))
        .copied()
        .collect()
}

/// Read the shards this node holds for `manifest` (every read verified) and build the tree.
pub fn held_data<B: Backend>(
    store: &Store<B>,
    root: &Cid,
    manifest: &Manifest,
) -> Result<HeldData, DealDataError> {
    data_of(store, root, &held_shards(store, manifest)?)
}

/// The shards of `manifest` this node holds now, in deal order, with their lengths (index
/// reads only: nothing is hashed).
pub fn held_shards<B: Backend>(
    store: &Store<B>,
    manifest: &Manifest,
) -> Result<Vec<(Cid, u64)>, DealDataError> {
    let mut out = Vec::new();
    for cid in ordered_shards(manifest) {
        if store.has_shard(&cid)? {
            out.push((cid, store.shard_len(&cid)?));
        }
    }
    Ok(out)
}

/// Read `shards` (from [`held_shards`]; every read verified) and build the tree over them.
pub fn data_of<B: Backend>(
    store: &Store<B>,
    root: &Cid,
    shards: &[(Cid, u64)],
) -> Result<HeldData, DealDataError> {
    let mut pieces = Vec::with_capacity(shards.len());
    let mut roots: Vec<Node> = Vec::new();
    for &(cid, len) in shards {
        let first_chunk = roots.len() as u64;
        let mut at = 0;
        while at < len {
            let end = (at + 16 * CHUNK_SIZE as u64).min(len);
            let bytes = store.read_shard_range(&cid, at, end)?;
            roots.extend(shard_chunk_roots(&bytes));
            at = end;
        }
        pieces.push(Piece {
            cid,
            len,
            first_chunk,
        });
    }
    let tree = UpperTree::new(roots).ok_or(DealDataError::NothingHeld(*root))?;
    Ok(HeldData { pieces, tree })
}

impl HeldData {
    pub fn commitment(&self) -> Commitment {
        self.tree.commitment()
    }

    /// The shards and their lengths, in deal order.
    pub fn shards(&self) -> Vec<(Cid, u64)> {
        self.pieces.iter().map(|p| (p.cid, p.len)).collect()
    }

    /// What the node keeps of an accepted deal, so it proves the same data after a restart.
    pub fn record(&self) -> AcceptedDeal {
        AcceptedDeal {
            pieces: self.shards(),
            chunk_roots: self.tree.chunk_roots().to_vec(),
        }
    }

    /// Rebuild from an accepted deal's record, without reading a byte of its shards.
    pub fn from_record(root: &Cid, record: AcceptedDeal) -> Result<HeldData, DealDataError> {
        let mut pieces = Vec::with_capacity(record.pieces.len());
        let mut chunks = 0;
        for (cid, len) in record.pieces {
            pieces.push(Piece {
                cid,
                len,
                first_chunk: chunks,
            });
            chunks += chunks_for(len);
        }
        let roots = record.chunk_roots.len() as u64;
        if chunks != roots {
            return Err(DealDataError::BadRecord {
                pieces: chunks,
                roots,
            });
        }
        let tree = UpperTree::new(record.chunk_roots).ok_or(DealDataError::NothingHeld(*root))?;
        Ok(HeldData { pieces, tree })
    }

    /// The bytes of chunk `c` as stored (verified by the store; without the zero padding).
    pub fn read_chunk<B: Backend>(
        &self,
        store: &Store<B>,
        c: u64,
    ) -> Result<Vec<u8>, DealDataError> {
        let i = self.pieces.partition_point(|p| p.first_chunk <= c);
        let p = i
            .checked_sub(1)
            .map(|i| &self.pieces[i])
            .ok_or(DealDataError::NoSuchChunk(c))?;
        let start = (c - p.first_chunk) * CHUNK_SIZE as u64;
        if start >= p.len.max(1) {
            return Err(DealDataError::NoSuchChunk(c));
        }
        let end = (start + CHUNK_SIZE as u64).min(p.len);
        Ok(store.read_shard_range(&p.cid, start, end)?)
    }
}

/// The gateway's side: chunk roots of every shard as it is encoded, then one commitment per
/// node from where the shards went. Holds 16 bytes per 64 KiB of shard data.
#[derive(Debug, Default)]
pub struct DealPlanner {
    roots: HashMap<Cid, Vec<Node>>,
}

impl DealPlanner {
    pub fn add_shard(&mut self, cid: &Cid, bytes: &[u8]) {
        if !self.roots.contains_key(cid) {
            self.roots.insert(*cid, shard_chunk_roots(bytes));
        }
    }

    /// Chunk roots of a shard computed earlier (an interrupted put's records).
    pub fn add_roots(&mut self, cid: Cid, roots: Vec<Node>) {
        self.roots.entry(cid).or_insert(roots);
    }

    /// A shard's chunk roots (empty if it was not added).
    pub fn roots(&self, cid: &Cid) -> &[Node] {
        self.roots.get(cid).map_or(&[], Vec::as_slice)
    }

    /// The commitment of each holder, given which holders took each shard.
    pub fn commitments<P: Copy + Eq + std::hash::Hash>(
        &self,
        manifest: &Manifest,
        holders: &HashMap<Cid, Vec<P>>,
    ) -> HashMap<P, Commitment> {
        let mut per: HashMap<P, Vec<Node>> = HashMap::new();
        for cid in ordered_shards(manifest) {
            let (Some(roots), Some(hs)) = (self.roots.get(&cid), holders.get(&cid)) else {
                continue;
            };
            let mut once = HashSet::new();
            for h in hs {
                if once.insert(*h) {
                    per.entry(*h).or_default().extend_from_slice(roots);
                }
            }
        }
        per.into_iter()
            .filter_map(|(p, roots)| UpperTree::new(roots).map(|t| (p, t.commitment())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_erasure::Layout;
    use cairn_storage::MemBackend;

    #[test]
    fn gateway_and_node_compute_the_same_commitment() {
        let layout = Layout::new(2, 1, 200_000).expect("layout");
        let store = Store::open(MemBackend::new(), 1 << 30).expect("store");
        let data: Vec<u8> = (0..450_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut planner = DealPlanner::default();
        let mut holders: HashMap<Cid, Vec<u8>> = HashMap::new();
        let mut session = store.begin_put();
        let upload = crate::pipeline::Upload::File {
            path: "w.bin".into(),
            reader: &data[..],
        };
        let manifest = crate::pipeline::encode(
            layout,
            upload,
            Default::default(),
            &|_| {},
            &mut |enc, _| {
                for (i, cid) in enc.shards.iter().enumerate() {
                    planner.add_shard(&cid.cid, enc.shard(i));
                    // This node takes shard 0 and 2 of every stripe; another node shard 1.
                    if i != 1 {
                        session.put_shard(cid, enc.shard(i))?;
                        holders.entry(cid.cid).or_default().push(0);
                    } else {
                        holders.entry(cid.cid).or_default().push(1);
                    }
                }
                Ok(())
            },
        )
        .expect("encode");
        let root = session.commit_partial(&manifest, "w", 0).expect("commit");
        let held = held_data(&store, &root, &manifest).expect("held");
        let planned = planner.commitments(&manifest, &holders);
        assert_eq!(planned[&0u8], held.commitment());
        assert_ne!(planned[&1u8], held.commitment());
        // Every chunk reads back and proves.
        let c = held.commitment();
        for chunk in 0..held.tree.chunks() {
            let bytes = held.read_chunk(&store, chunk).expect("chunk");
            let leaf = chunk * cairn_proofs::tree::CHUNK_LEAVES + 5;
            let proof = cairn_proofs::prove(&held.tree, leaf, &bytes).expect("prove");
            assert!(cairn_proofs::verify(&c, leaf, &proof));
        }
    }
}
