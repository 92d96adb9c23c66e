//! BLAKE3 verified streaming for shards.
//!
//! A shard's CID carries the BLAKE3 hash of the whole shard. BLAKE3 is a tree hash; cutting that
//! tree at 16 KiB *groups* (16 chunks of 1 KiB) gives one 32-byte chaining value per group. That
//! list of chaining values is the shard's [`Outboard`] (0.2% of the shard). From it the root hash
//! is recomputed and compared with the CID, after which any group read alone is checked against
//! its own chaining value: a range read is verified without reading the rest of the shard, and a
//! bad byte is caught within 16 KiB.
//!
//! Shards of at most one group have an empty outboard: they are verified whole.

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root,
};
use thiserror::Error;

/// Bytes per verification group: 16 BLAKE3 chunks.
pub const GROUP_LEN: usize = 16 * 1024;
const GROUP_LEN_U64: u64 = GROUP_LEN as u64;

/// Outboard encoding version byte.
pub const OUTBOARD_VERSION: u8 = 1;

/// Something did not hash to what it claims to be.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyError {
    /// The outboard does not hash to the expected root.
    #[error("outboard does not match the shard hash")]
    Outboard,
    /// A group's bytes do not match its chaining value.
    #[error("bytes of group {group} do not match the shard hash")]
    Group { group: u64 },
    /// The whole (single-group) shard does not match.
    #[error("shard bytes do not match the shard hash")]
    Whole,
    /// The request does not line up with the outboard.
    #[error("range {start}..{end} is not within a shard of {len} bytes")]
    Range { start: u64, end: u64, len: u64 },
    /// The serialized outboard is malformed.
    #[error("malformed outboard: {0}")]
    Malformed(&'static str),
}

/// The chaining values of a shard's 16 KiB groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outboard {
    len: u64,
    cvs: Vec<ChainingValue>,
}

/// Number of groups of a shard of `len` bytes (at least 1).
pub fn group_count(len: u64) -> u64 {
    len.div_ceil(GROUP_LEN_U64).max(1)
}

fn group_cv(group: u64, bytes: &[u8]) -> ChainingValue {
    blake3::Hasher::new()
        .set_input_offset(group * GROUP_LEN_U64)
        .update(bytes)
        .finalize_non_root()
}

/// Chaining value of the subtree covering `len` bytes whose group CVs are `cvs`.
fn subtree_cv(cvs: &[ChainingValue], len: u64) -> ChainingValue {
    if cvs.len() == 1 {
        return cvs[0];
    }
    let (left, right, left_len) = split(cvs, len);
    merge_subtrees_non_root(
        &subtree_cv(left, left_len),
        &subtree_cv(right, len - left_len),
        Mode::Hash,
    )
}

fn split(cvs: &[ChainingValue], len: u64) -> (&[ChainingValue], &[ChainingValue], u64) {
    // len > GROUP_LEN here, so the left subtree is a power of two of at least one group.
    let left_len = left_subtree_len(len);
    let left_groups = usize::try_from(left_len / GROUP_LEN_U64).expect("group count fits usize");
    (&cvs[..left_groups], &cvs[left_groups..], left_len)
}

impl Outboard {
    /// Hash a whole shard: its BLAKE3 hash and its outboard, in one pass.
    pub fn compute(data: &[u8]) -> (blake3::Hash, Outboard) {
        let len = data.len() as u64;
        if data.len() <= GROUP_LEN {
            return (
                blake3::hash(data),
                Outboard {
                    len,
                    cvs: Vec::new(),
                },
            );
        }
        let cvs: Vec<ChainingValue> = data
            .chunks(GROUP_LEN)
            .enumerate()
            .map(|(g, bytes)| group_cv(g as u64, bytes))
            .collect();
        let ob = Outboard { len, cvs };
        let root = ob.root().expect("multi-group outboard has a root");
        (root, ob)
    }

    /// Length of the shard this outboard describes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the shard is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Root hash implied by the outboard; `None` for single-group shards, which carry no tree.
    pub fn root(&self) -> Option<blake3::Hash> {
        if self.cvs.len() < 2 {
            return None;
        }
        let (left, right, left_len) = split(&self.cvs, self.len);
        Some(merge_subtrees_root(
            &subtree_cv(left, left_len),
            &subtree_cv(right, self.len - left_len),
            Mode::Hash,
        ))
    }

    /// Check the outboard itself against the shard's hash. Call once before
    /// [`verify_groups`](Self::verify_groups).
    pub fn check(&self, hash: &blake3::Hash) -> Result<(), VerifyError> {
        match self.root() {
            Some(root) if root == *hash => Ok(()),
            Some(_) => Err(VerifyError::Outboard),
            None if self.cvs.is_empty() && self.len <= GROUP_LEN_U64 => Ok(()),
            None => Err(VerifyError::Outboard),
        }
    }

    /// Group-aligned span covering bytes `[start, end)` of the shard: what a reader must fetch
    /// to verify that range.
    pub fn aligned(&self, start: u64, end: u64) -> Result<(u64, u64), VerifyError> {
        if start > end || end > self.len {
            return Err(VerifyError::Range {
                start,
                end,
                len: self.len,
            });
        }
        if self.cvs.is_empty() {
            return Ok((0, self.len));
        }
        let a = start / GROUP_LEN_U64 * GROUP_LEN_U64;
        let b = end.div_ceil(GROUP_LEN_U64).saturating_mul(GROUP_LEN_U64);
        Ok((a, b.min(self.len)))
    }

    /// Verify `data`, the shard bytes starting at the group-aligned offset `start`, against an
    /// outboard already [`check`](Self::check)ed against `hash`. `data` must end on a group
    /// boundary or at the end of the shard.
    pub fn verify_groups(
        &self,
        hash: &blake3::Hash,
        start: u64,
        data: &[u8],
    ) -> Result<(), VerifyError> {
        // A start near u64::MAX must be an error, not an overflow.
        let end = start.saturating_add(data.len() as u64);
        let range_err = VerifyError::Range {
            start,
            end,
            len: self.len,
        };
        if end > self.len || end - start != data.len() as u64 {
            return Err(range_err);
        }
        if self.cvs.is_empty() {
            if start != 0 || end != self.len {
                return Err(range_err);
            }
            return if blake3::hash(data) == *hash {
                Ok(())
            } else {
                Err(VerifyError::Whole)
            };
        }
        if !start.is_multiple_of(GROUP_LEN_U64)
            || (!end.is_multiple_of(GROUP_LEN_U64) && end != self.len)
        {
            return Err(range_err);
        }
        let first = start / GROUP_LEN_U64;
        for (i, bytes) in data.chunks(GROUP_LEN).enumerate() {
            let g = first + i as u64;
            let expected = self
                .cvs
                .get(usize::try_from(g).map_err(|_| VerifyError::Group { group: g })?)
                .ok_or(VerifyError::Group { group: g })?;
            if group_cv(g, bytes) != *expected {
                return Err(VerifyError::Group { group: g });
            }
        }
        Ok(())
    }

    /// Verify a whole shard against its hash (outboard and every group).
    pub fn verify_all(&self, hash: &blake3::Hash, data: &[u8]) -> Result<(), VerifyError> {
        if data.len() as u64 != self.len {
            return Err(VerifyError::Range {
                start: 0,
                end: data.len() as u64,
                len: self.len,
            });
        }
        self.check(hash)?;
        self.verify_groups(hash, 0, data)
    }

    /// Serialized size in bytes.
    pub fn encoded_len(&self) -> usize {
        9 + 32 * self.cvs.len()
    }

    /// `[version: u8 = 1][shard length: u64 LE][chaining values: 32 bytes each]`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.push(OUTBOARD_VERSION);
        out.extend_from_slice(&self.len.to_le_bytes());
        for cv in &self.cvs {
            out.extend_from_slice(cv);
        }
        out
    }

    /// Parse [`to_bytes`](Self::to_bytes) output; rejects any length inconsistency.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, VerifyError> {
        let (&version, rest) = bytes.split_first().ok_or(VerifyError::Malformed("empty"))?;
        if version != OUTBOARD_VERSION {
            return Err(VerifyError::Malformed("unknown version"));
        }
        let (len_bytes, cv_bytes) = rest
            .split_first_chunk::<8>()
            .ok_or(VerifyError::Malformed("truncated length"))?;
        let len = u64::from_le_bytes(*len_bytes);
        let groups = if len <= GROUP_LEN_U64 {
            0
        } else {
            group_count(len)
        };
        if cv_bytes.len() as u64 != groups.saturating_mul(32) {
            return Err(VerifyError::Malformed(
                "chaining value count does not match length",
            ));
        }
        let cvs = cv_bytes
            .chunks_exact(32)
            .map(|c| <[u8; 32]>::try_from(c).expect("chunks_exact(32)"))
            .collect();
        Ok(Outboard { len, cvs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn root_matches_blake3_at_boundaries() {
        for len in [
            0,
            1,
            1024,
            GROUP_LEN - 1,
            GROUP_LEN,
            GROUP_LEN + 1,
            2 * GROUP_LEN,
            3 * GROUP_LEN + 5,
            17 * GROUP_LEN,
            64 * GROUP_LEN + 1,
        ] {
            let d = data(len, 7);
            let (hash, ob) = Outboard::compute(&d);
            assert_eq!(hash, blake3::hash(&d), "len {len}");
            ob.verify_all(&hash, &d).expect("verifies");
            let back = Outboard::from_bytes(&ob.to_bytes()).expect("round trip");
            assert_eq!(back, ob);
        }
    }

    #[test]
    fn flipped_byte_is_caught_in_its_group() {
        let mut d = data(5 * GROUP_LEN + 100, 1);
        let (hash, ob) = Outboard::compute(&d);
        d[3 * GROUP_LEN + 17] ^= 1;
        assert_eq!(
            ob.verify_groups(
                &hash,
                3 * GROUP_LEN as u64,
                &d[3 * GROUP_LEN..4 * GROUP_LEN]
            ),
            Err(VerifyError::Group { group: 3 })
        );
        // Neighbouring groups still verify.
        ob.verify_groups(&hash, 4 * GROUP_LEN as u64, &d[4 * GROUP_LEN..])
            .expect("untouched group verifies");
        assert!(ob.verify_all(&hash, &d).is_err());
    }

    #[test]
    fn outboard_for_other_hash_is_rejected() {
        let d = data(3 * GROUP_LEN, 2);
        let (_, ob) = Outboard::compute(&d);
        let other = blake3::hash(b"other");
        assert_eq!(ob.check(&other), Err(VerifyError::Outboard));
    }

    #[test]
    fn malformed_outboards_are_rejected() {
        assert!(Outboard::from_bytes(&[]).is_err());
        assert!(Outboard::from_bytes(&[2, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        let mut b = Outboard::compute(&data(3 * GROUP_LEN, 0)).1.to_bytes();
        b.pop();
        assert!(Outboard::from_bytes(&b).is_err());
        let mut huge = vec![OUTBOARD_VERSION];
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(Outboard::from_bytes(&huge).is_err());
    }

    #[test]
    fn a_single_group_claim_is_only_checked_with_the_bytes() {
        let d = data(3 * GROUP_LEN, 5);
        let (hash, _) = Outboard::compute(&d);
        let mut claim = vec![OUTBOARD_VERSION];
        claim.extend_from_slice(&100u64.to_le_bytes());
        let claim = Outboard::from_bytes(&claim).expect("a 100-byte shard's outboard");
        claim
            .check(&hash)
            .expect("nothing to check without the bytes");
        assert_eq!(
            claim.verify_groups(&hash, 0, &d[..100]),
            Err(VerifyError::Whole)
        );
    }

    #[test]
    fn ranges_past_the_end_of_u64_are_errors() {
        let d = data(3 * GROUP_LEN, 4);
        let (hash, ob) = Outboard::compute(&d);
        let start = u64::MAX - GROUP_LEN_U64 + 1;
        assert!(matches!(
            ob.verify_groups(&hash, start, &d[..GROUP_LEN]),
            Err(VerifyError::Range { .. })
        ));
        let (hash, small) = Outboard::compute(&d[..10]);
        assert!(matches!(
            small.verify_groups(&hash, u64::MAX, &d[..10]),
            Err(VerifyError::Range { .. })
        ));
    }

    proptest! {
        #[test]
        fn any_aligned_range_verifies(len in 0usize..200_000, a in 0u64..200_000, b in 0u64..200_000, seed: u8) {
            let d = data(len, seed);
            let (hash, ob) = Outboard::compute(&d);
            let (lo, hi) = (a.min(b).min(len as u64), a.max(b).min(len as u64));
            let (s, e) = ob.aligned(lo, hi).expect("in range");
            prop_assert!(s <= lo && e >= hi);
            ob.check(&hash).expect("outboard");
            ob.verify_groups(&hash, s, &d[s as usize..e as usize]).expect("verifies");
        }
    }
}
