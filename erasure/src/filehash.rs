//! A file's whole BLAKE3 hash built from one chaining value per stripe, so that the hashing
//! of a long upload can stop after any stripe and go on later (in another process) from 32
//! bytes per stripe, giving the hash `blake3::hash` gives over the whole file.
//!
//! BLAKE3 is a tree over 1 KiB chunks whose left subtrees are complete powers of two. When the
//! stripe size is a power of two of at least one chunk, every full stripe is a subtree of the
//! file's tree and so is the file's last, short stripe; their chaining values merge into the
//! root along the tree's own shape. Other stripe sizes cut subtrees apart: a file is then
//! hashed in one pass ([`FileHash::supports`] is false and nothing can be resumed).

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root,
};

/// What the hashing of one stripe gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StripeHash {
    /// The stripe's subtree chaining value.
    pub cv: ChainingValue,
    /// For the first stripe only: the root hash of the file if it ends with this stripe.
    pub root: Option<[u8; 32]>,
}

/// Hash stripe `index` of a file cut into `stripe_size` stripes. Pure and independent of the
/// other stripes: stripes may be hashed in any order, on any thread.
pub fn hash_stripe(stripe_size: u64, index: u64, bytes: &[u8]) -> StripeHash {
    let mut h = blake3::Hasher::new();
    if index > 0 {
        h.set_input_offset(index * stripe_size);
    }
    h.update(bytes);
    StripeHash {
        cv: h.finalize_non_root(),
        root: (index == 0).then(|| *h.finalize().as_bytes()),
    }
}

/// The hash of a file, stripe by stripe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHash {
    stripe_size: u64,
    len: u64,
    cvs: Vec<ChainingValue>,
    first_root: Option<[u8; 32]>,
}

impl FileHash {
    /// Whether files cut into `stripe_size` stripes can be hashed stripe by stripe.
    pub fn supports(stripe_size: u64) -> bool {
        stripe_size.is_power_of_two() && stripe_size >= blake3::CHUNK_LEN as u64
    }

    /// An empty file's hash state; `None` for a stripe size [`Self::supports`] refuses.
    pub fn new(stripe_size: u64) -> Option<Self> {
        Self::supports(stripe_size).then_some(Self {
            stripe_size,
            len: 0,
            cvs: Vec::new(),
            first_root: None,
        })
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no stripe was added yet.
    pub fn is_empty(&self) -> bool {
        self.cvs.is_empty()
    }

    /// Add the next stripe (`len` bytes, hashed by [`hash_stripe`] at index [`Self::next`]).
    /// Only the last stripe of a file may be shorter than the stripe size.
    pub fn push(&mut self, len: u64, h: StripeHash) {
        debug_assert_eq!(
            self.len % self.stripe_size,
            0,
            "a short stripe was not the last"
        );
        if self.cvs.is_empty() {
            self.first_root = h.root;
        }
        self.cvs.push(h.cv);
        self.len += len;
    }

    /// Index of the next stripe.
    pub fn next(&self) -> u64 {
        self.cvs.len() as u64
    }

    /// The chaining values so far (what a resumable upload keeps).
    pub fn cvs(&self) -> &[ChainingValue] {
        &self.cvs
    }

    /// The file's hash, as `blake3::hash` over all its bytes.
    pub fn finish(&self) -> blake3::Hash {
        match self.cvs.len() {
            0 => blake3::hash(b""),
            1 => blake3::Hash::from_bytes(self.first_root.expect("the first stripe has a root")),
            _ => {
                let (l, r) = self.split(0, self.cvs.len(), self.len);
                merge_subtrees_root(&l, &r, Mode::Hash)
            }
        }
    }

    /// The two children of the subtree over stripes `[a, b)`, `len` bytes long (b - a >= 2).
    fn split(&self, a: usize, b: usize, len: u64) -> (ChainingValue, ChainingValue) {
        let left = left_subtree_len(len);
        // A power of two above half of more than one stripe: whole stripes.
        let mid = a + usize::try_from(left / self.stripe_size).expect("stripe count fits usize");
        (self.subtree(a, mid, left), self.subtree(mid, b, len - left))
    }

    fn subtree(&self, a: usize, b: usize, len: u64) -> ChainingValue {
        if b - a == 1 {
            return self.cvs[a];
        }
        let (l, r) = self.split(a, b, len);
        merge_subtrees_non_root(&l, &r, Mode::Hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by_stripes(data: &[u8], stripe: u64) -> blake3::Hash {
        let mut fh = FileHash::new(stripe).expect("supported");
        for (i, s) in data.chunks(stripe as usize).enumerate() {
            fh.push(s.len() as u64, hash_stripe(stripe, i as u64, s));
        }
        fh.finish()
    }

    #[test]
    fn stripe_by_stripe_equals_the_whole_hash() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 31 % 253) as u8).collect();
        for stripe in [1024u64, 4096, 16384, 65536] {
            for len in [
                0usize, 1, 1023, 1024, 1025, 4095, 4096, 4097, 8192, 12288, 16384, 16385, 65535,
                65536, 65537, 100_000, 131_072, 196_608, 299_999, 300_000,
            ] {
                assert_eq!(
                    by_stripes(&data[..len], stripe),
                    blake3::hash(&data[..len]),
                    "stripe {stripe}, {len} bytes"
                );
            }
        }
    }

    #[test]
    fn only_power_of_two_stripes_of_whole_chunks_are_supported() {
        assert!(FileHash::new(16 << 20).is_some());
        assert!(FileHash::new(512).is_none());
        assert!(FileHash::new(3 * 4096).is_none());
    }
}
