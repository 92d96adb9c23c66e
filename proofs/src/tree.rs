//! The proof tree over the data a node holds for one deal.
//!
//! Leaves are 128-byte pieces of the deal's data; tree nodes are 16 bytes, domain-separated
//! (`0x00 || leaf` for leaves, `0x01 || left || right` inside): SHA-256 truncated for leaves
//! and the nodes up to height `SHA_LEVELS` (1 KiB subtrees: fast to build off chain with the
//! CPU's SHA extensions), Keccak-256 truncated above (cheap on chain: the EVM's own opcode
//! instead of a precompile call, and only a few nodes per chunk to build). The data is
//! the node's shards in manifest order, each zero-padded to a whole number of 64 KiB chunks,
//! so every chunk is an aligned subtree of 512 leaves whose root needs only that chunk. The
//! tree is padded to a power of two with all-zero data. Reasons and numbers: `PROOFS.md`.

use sha2::compress256;

/// A tree node: SHA-256 truncated to 128 bits.
pub type Node = [u8; NODE_SIZE];
/// Bytes of a tree node.
pub const NODE_SIZE: usize = 16;
/// Bytes of a leaf.
pub const LEAF_SIZE: usize = 128;
/// Bytes of a chunk: the unit a shard is padded to and a proof reads.
pub const CHUNK_SIZE: usize = 64 * 1024;
/// Leaves of a chunk.
pub const CHUNK_LEAVES: u64 = (CHUNK_SIZE / LEAF_SIZE) as u64;
/// Levels from a leaf to its chunk's root.
pub const CHUNK_LEVELS: usize = 9;
/// Inner nodes of height 1..=SHA_LEVELS (subtrees up to 1 KiB) hash with SHA-256, higher ones
/// with Keccak-256.
pub const SHA_LEVELS: usize = 3;

const H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// SHA-256 of `prefix || a || b` (33 bytes, one compression), truncated.
// sha2 0.10's block type is generic-array 0.14's, which that crate marks deprecated.
#[allow(deprecated)]
fn hash33(prefix: u8, a: &[u8], b: &[u8]) -> Node {
    debug_assert_eq!(a.len() + b.len(), 2 * NODE_SIZE);
    let mut block = [0u8; 64];
    block[0] = prefix;
    block[1..1 + a.len()].copy_from_slice(a);
    block[1 + a.len()..33].copy_from_slice(b);
    block[33] = 0x80;
    block[56..64].copy_from_slice(&(33u64 * 8).to_be_bytes());
    let mut state = H0;
    compress256(
        &mut state,
        &[sha2::digest::generic_array::GenericArray::from(block)],
    );
    let mut out = [0u8; NODE_SIZE];
    for (o, w) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&w.to_be_bytes());
    }
    out
}

/// Hash of a leaf: SHA-256 of `0x00 || leaf` (129 bytes, three compressions), truncated.
// sha2 0.10's block type is generic-array 0.14's, which that crate marks deprecated.
#[allow(deprecated)]
pub fn leaf_hash(leaf: &[u8]) -> Node {
    debug_assert_eq!(leaf.len(), LEAF_SIZE);
    let mut blocks = [[0u8; 64]; 3];
    blocks[0][0] = 0x00;
    blocks[0][1..].copy_from_slice(&leaf[..63]);
    blocks[1].copy_from_slice(&leaf[63..127]);
    blocks[2][0] = leaf[127];
    blocks[2][1] = 0x80;
    blocks[2][56..].copy_from_slice(&((1 + LEAF_SIZE as u64) * 8).to_be_bytes());
    let mut state = H0;
    compress256(
        &mut state,
        &blocks.map(sha2::digest::generic_array::GenericArray::from),
    );
    let mut out = [0u8; NODE_SIZE];
    for (o, w) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&w.to_be_bytes());
    }
    out
}

/// Hash of an inner node of height `height` (>= 1; leaves' hashes are height 0).
pub fn node_hash(height: usize, left: &Node, right: &Node) -> Node {
    if height <= SHA_LEVELS {
        return hash33(0x01, left, right);
    }
    use sha3::Digest;
    let mut k = sha3::Keccak256::new();
    k.update([0x01]);
    k.update(left);
    k.update(right);
    let full = k.finalize();
    let mut out = [0u8; NODE_SIZE];
    out.copy_from_slice(&full[..NODE_SIZE]);
    out
}

/// Root of a subtree of 2^level all-zero leaves.
pub fn zero_root(level: usize) -> Node {
    let mut h = leaf_hash(&[0u8; LEAF_SIZE]);
    for height in 1..=level {
        h = node_hash(height, &h, &h);
    }
    h
}

/// Chunks a shard of `len` bytes takes (zero-padded to whole chunks).
pub fn chunks_for(len: u64) -> u64 {
    len.div_ceil(CHUNK_SIZE as u64)
}

/// Levels of a tree over `leaf_count` leaves: ceil(log2(leaf_count)).
pub fn depth(leaf_count: u64) -> usize {
    (64 - leaf_count.saturating_sub(1).leading_zeros()) as usize
}

/// The 512-leaf subtree of one chunk, all levels (leaf hashes first, root last).
#[derive(Debug, Clone)]
pub struct ChunkTree {
    levels: Vec<Vec<Node>>,
}

impl ChunkTree {
    /// Build from up to `CHUNK_SIZE` bytes; the rest of the chunk is zeros.
    pub fn build(data: &[u8]) -> Self {
        assert!(
            data.len() <= CHUNK_SIZE,
            "a chunk is at most CHUNK_SIZE bytes"
        );
        let mut leaves = Vec::with_capacity(CHUNK_LEAVES as usize);
        let mut pieces = data.chunks(LEAF_SIZE);
        for _ in 0..CHUNK_LEAVES {
            let h = match pieces.next() {
                Some(p) if p.len() == LEAF_SIZE => leaf_hash(p),
                Some(p) => {
                    let mut leaf = [0u8; LEAF_SIZE];
                    leaf[..p.len()].copy_from_slice(p);
                    leaf_hash(&leaf)
                }
                None => leaf_hash(&[0u8; LEAF_SIZE]),
            };
            leaves.push(h);
        }
        let mut levels = vec![leaves];
        while levels.last().map_or(0, Vec::len) > 1 {
            let height = levels.len();
            let below = levels.last().expect("levels start with the leaves");
            let up = below
                .chunks_exact(2)
                .map(|p| node_hash(height, &p[0], &p[1]))
                .collect();
            levels.push(up);
        }
        Self { levels }
    }

    pub fn root(&self) -> Node {
        self.levels[CHUNK_LEVELS][0]
    }

    /// Siblings from leaf `i` (< CHUNK_LEAVES) up to the chunk root.
    pub fn path(&self, i: u64) -> Vec<Node> {
        let mut i = i as usize;
        let mut out = Vec::with_capacity(CHUNK_LEVELS);
        for level in &self.levels[..CHUNK_LEVELS] {
            out.push(level[i ^ 1]);
            i >>= 1;
        }
        out
    }
}

/// Root of one chunk of data (zero-padded).
pub fn chunk_root(data: &[u8]) -> Node {
    ChunkTree::build(data).root()
}

/// Chunk roots of one shard's bytes, in order.
pub fn shard_chunk_roots(shard: &[u8]) -> Vec<Node> {
    shard.chunks(CHUNK_SIZE).map(chunk_root).collect()
}

/// What a deal commits to: the tree root and the leaf count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commitment {
    pub root: Node,
    pub leaf_count: u64,
}

/// The tree above the chunk roots of a deal: all a node keeps in memory per deal (32 bytes
/// per 64 KiB of data); the levels below a chunk are rebuilt from the chunk when proving.
#[derive(Debug, Clone)]
pub struct UpperTree {
    levels: Vec<Vec<Node>>,
}

impl UpperTree {
    /// Build over the chunk roots of a deal's data, in order. At least one chunk.
    pub fn new(chunk_roots: Vec<Node>) -> Option<Self> {
        if chunk_roots.is_empty() {
            return None;
        }
        let mut levels = vec![chunk_roots];
        let mut level = CHUNK_LEVELS;
        while levels.last().map_or(0, Vec::len) > 1 {
            let below = levels.last().expect("at least one level");
            let zero = zero_root(level);
            let up = below
                .chunks(2)
                .map(|p| node_hash(level + 1, &p[0], p.get(1).unwrap_or(&zero)))
                .collect();
            levels.push(up);
            level += 1;
        }
        Some(Self { levels })
    }

    pub fn chunks(&self) -> u64 {
        self.levels[0].len() as u64
    }

    pub fn chunk_root(&self, chunk: u64) -> Option<Node> {
        self.levels[0].get(chunk as usize).copied()
    }

    /// Every chunk root, in order (what [`UpperTree::new`] was built over).
    pub fn chunk_roots(&self) -> &[Node] {
        &self.levels[0]
    }

    pub fn commitment(&self) -> Commitment {
        let top = self.levels.last().expect("at least one level");
        Commitment {
            root: top[0],
            leaf_count: self.chunks() * CHUNK_LEAVES,
        }
    }

    /// Siblings from chunk `c`'s root up to the tree root.
    pub fn path(&self, c: u64) -> Vec<Node> {
        let mut i = c as usize;
        let mut out = Vec::with_capacity(self.levels.len() - 1);
        for (n, level) in self.levels[..self.levels.len() - 1].iter().enumerate() {
            out.push(
                level
                    .get(i ^ 1)
                    .copied()
                    .unwrap_or_else(|| zero_root(CHUNK_LEVELS + n)),
            );
            i >>= 1;
        }
        out
    }

    /// Memory held, in bytes.
    pub fn heap_bytes(&self) -> usize {
        self.levels.iter().map(|l| l.len() * NODE_SIZE).sum()
    }
}
