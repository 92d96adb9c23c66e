//! The deals this node accepted, as they were agreed: which shards each covers, in order, and
//! the roots of their 64 KiB chunks. A deal's data is fixed when the node accepts it: shards
//! of the same checkpoint that reach this node later (a repair, a second put) do not change
//! what it proves, and after a restart the node proves from this record without reading and
//! hashing its share again (every proof still reads its chunk, verified against the shard's
//! outboard).
//!
//! About 16 bytes per 64 KiB of the deal's data (0.03%), in the index only.

use cairn_erasure::Cid;

use crate::backend::{Backend, BatchOp};
use crate::error::{BackendError, ReadError};

use super::Store;

/// `a/<deal id: u64 BE>` -> [`encode`].
const ACCEPTED: &[u8] = b"a/";
/// Version tag of the record.
const VERSION: u8 = 1;
/// Bytes of a chunk root.
pub const CHUNK_ROOT_LEN: usize = 16;

/// What an accepted deal covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedDeal {
    /// The shards, in deal order, with their lengths in bytes.
    pub pieces: Vec<(Cid, u64)>,
    /// The root of every chunk of the deal's data, in order.
    pub chunk_roots: Vec<[u8; CHUNK_ROOT_LEN]>,
}

fn deal_key(id: u64) -> Vec<u8> {
    let mut k = ACCEPTED.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// `[version][pieces: u32 BE]([cid len: u8][cid][len: u64 BE])*[roots: u32 BE]([root: 16])*`.
fn encode(d: &AcceptedDeal) -> Vec<u8> {
    // A deal has at most 2^40 leaves (the contract's bound): 2^31 chunks, fewer shards.
    let count = |n: usize| u32::try_from(n).expect("a deal has fewer than 2^32 chunks");
    let mut out = vec![VERSION];
    out.extend_from_slice(&count(d.pieces.len()).to_be_bytes());
    for (cid, len) in &d.pieces {
        let b = cid.to_bytes();
        out.push(u8::try_from(b.len()).expect("a CID is shorter than 256 bytes"));
        out.extend_from_slice(&b);
        out.extend_from_slice(&len.to_be_bytes());
    }
    out.extend_from_slice(&count(d.chunk_roots.len()).to_be_bytes());
    for r in &d.chunk_roots {
        out.extend_from_slice(r);
    }
    out
}

fn decode(v: &[u8]) -> Result<AcceptedDeal, String> {
    fn take<'a>(v: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
        if v.len() < n {
            return Err("truncated".into());
        }
        let (head, tail) = v.split_at(n);
        *v = tail;
        Ok(head)
    }
    fn u32_of(v: &mut &[u8]) -> Result<u32, String> {
        Ok(u32::from_be_bytes(
            take(v, 4)?.try_into().map_err(|_| "truncated")?,
        ))
    }
    let mut v = v;
    let version = take(&mut v, 1)?[0];
    if version != VERSION {
        return Err(format!("unknown version {version}"));
    }
    let count = u32_of(&mut v)? as usize;
    // Each piece takes at least 10 bytes: a count beyond what is left is a lie.
    if count > v.len() / 10 {
        return Err("piece count beyond the record".into());
    }
    let mut pieces = Vec::with_capacity(count);
    for _ in 0..count {
        let n = take(&mut v, 1)?[0] as usize;
        let cid = cairn_erasure::cid_from_bytes(take(&mut v, n)?).map_err(|e| e.to_string())?;
        let len = u64::from_be_bytes(take(&mut v, 8)?.try_into().map_err(|_| "truncated")?);
        pieces.push((cid, len));
    }
    let roots = u32_of(&mut v)? as usize;
    if v.len() != roots * CHUNK_ROOT_LEN {
        return Err("chunk roots do not fill the record".into());
    }
    let chunk_roots = v
        .chunks_exact(CHUNK_ROOT_LEN)
        .map(|r| r.try_into().expect("chunks_exact gives 16 bytes"))
        .collect();
    Ok(AcceptedDeal {
        pieces,
        chunk_roots,
    })
}

impl<B: Backend> Store<B> {
    /// Record what deal `id` covers (durable before it returns).
    pub fn set_accepted_deal(&self, id: u64, d: &AcceptedDeal) -> Result<(), BackendError> {
        self.inner
            .backend
            .write(vec![BatchOp::Put(deal_key(id), encode(d))], true)
    }

    /// What deal `id` covers, if this node recorded it.
    pub fn accepted_deal(&self, id: u64) -> Result<Option<AcceptedDeal>, ReadError> {
        match self.inner.backend.get(&deal_key(id))? {
            None => Ok(None),
            Some(v) => decode(&v).map(Some).map_err(|reason| ReadError::Corrupt {
                cid: format!("accepted deal {id}"),
                reason,
            }),
        }
    }

    /// Forget deal `id` (it ended, or was never accepted).
    pub fn drop_accepted_deal(&self, id: u64) -> Result<(), BackendError> {
        self.inner
            .backend
            .write(vec![BatchOp::Delete(deal_key(id))], true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemBackend;

    fn deal() -> AcceptedDeal {
        AcceptedDeal {
            pieces: (0..3u8)
                .map(|i| (cairn_erasure::manifest_cid(&[i; 4]), 70_000 + u64::from(i)))
                .collect(),
            chunk_roots: (0..6u8).map(|i| [i; CHUNK_ROOT_LEN]).collect(),
        }
    }

    fn round_trip<B: Backend>(store: &Store<B>) {
        assert_eq!(store.accepted_deal(7).expect("read"), None);
        store.set_accepted_deal(7, &deal()).expect("write");
        store.set_accepted_deal(8, &deal()).expect("write");
        assert_eq!(store.accepted_deal(7).expect("read"), Some(deal()));
        store.drop_accepted_deal(8).expect("drop");
        assert_eq!(store.accepted_deal(8).expect("read"), None);
    }

    #[test]
    fn accepted_deals_over_memory() {
        round_trip(&Store::open(MemBackend::new(), 1 << 20).expect("open"));
    }

    #[test]
    fn accepted_deals_over_rocksdb_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let open = || crate::store::rocks_store(dir.path());
        round_trip(&open());
        assert_eq!(open().accepted_deal(7).expect("read"), Some(deal()));
    }

    #[test]
    fn a_damaged_record_is_an_error_not_a_deal() {
        let good = encode(&deal());
        for cut in 0..good.len() {
            assert!(decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut lying = good.clone();
        lying[1..5].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode(&lying).is_err());
        let mut longer = good;
        longer.push(0);
        assert!(decode(&longer).is_err());
    }
}
