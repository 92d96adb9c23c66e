//! Resumable uploads, staged: a gateway writes one record per placed stripe of a put that may
//! be cut off, and the shards it kept itself are referenced by those records, so that they
//! outlive the put's session and a restart (the sweep at open frees only unreferenced
//! shards). The records' payload is the caller's; the store keeps it opaque.
//!
//! `u/<key: 32 bytes><seq: u64 BE>` -> `[version][at: u64 BE unix s][count: u32 BE]
//! (cid bytes with a u8 length)*[payload]`.

use std::collections::BTreeMap;

use cairn_erasure::Cid;

use super::{REFS, Store, decode_refs, encode_refs, key, lock};
use crate::backend::{Backend, BatchOp};
use crate::error::{BackendError, ReadError};

const UPLOAD: &[u8] = b"u/";
const VERSION: u8 = 1;
/// Length of an upload's key.
pub const UPLOAD_KEY_LEN: usize = 32;

/// One staged record of an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedRecord {
    pub seq: u64,
    /// Unix seconds when it was written.
    pub at: u64,
    /// Shards held here that the record references.
    pub local: Vec<Cid>,
    pub payload: Vec<u8>,
}

fn record_key(upload: &[u8; UPLOAD_KEY_LEN], seq: u64) -> Vec<u8> {
    let mut k = UPLOAD.to_vec();
    k.extend_from_slice(upload);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn encode(at: u64, local: &[Cid], payload: &[u8]) -> Vec<u8> {
    let mut out = vec![VERSION];
    out.extend_from_slice(&at.to_be_bytes());
    out.extend_from_slice(&u32::try_from(local.len()).unwrap_or(u32::MAX).to_be_bytes());
    for c in local {
        let b = c.to_bytes();
        out.push(u8::try_from(b.len()).expect("a CID is under 256 bytes"));
        out.extend_from_slice(&b);
    }
    out.extend_from_slice(payload);
    out
}

fn decode(seq: u64, v: &[u8]) -> Option<StagedRecord> {
    let (&version, rest) = v.split_first()?;
    if version != VERSION || rest.len() < 12 {
        return None;
    }
    let at = u64::from_be_bytes(rest[..8].try_into().ok()?);
    let count = u32::from_be_bytes(rest[8..12].try_into().ok()?);
    let mut rest = &rest[12..];
    let mut local = Vec::new();
    for _ in 0..count {
        let (&len, tail) = rest.split_first()?;
        let len = usize::from(len);
        local.push(cairn_erasure::cid_from_bytes(tail.get(..len)?).ok()?);
        rest = &tail[len..];
    }
    Some(StagedRecord {
        seq,
        at,
        local,
        payload: rest.to_vec(),
    })
}

impl<B: Backend> Store<B> {
    /// Write record `seq` of `upload`, referencing `local` shards (held here: their bytes are
    /// made durable first). Replacing a record moves its references.
    pub fn stage_upload(
        &self,
        upload: &[u8; UPLOAD_KEY_LEN],
        seq: u64,
        at: u64,
        local: &[Cid],
        payload: &[u8],
    ) -> Result<(), BackendError> {
        let b = &self.inner.backend;
        if !local.is_empty() {
            b.sync_blobs()?;
        }
        let _guard = lock(&self.inner.commit);
        let k = record_key(upload, seq);
        let mut delta: BTreeMap<Cid, i64> = BTreeMap::new();
        if let Some(old) = b.get(&k)?.and_then(|v| decode(seq, &v)) {
            for c in old.local {
                *delta.entry(c).or_default() -= 1;
            }
        }
        for c in local {
            *delta.entry(*c).or_default() += 1;
        }
        let mut batch = self.ref_changes(&delta)?;
        batch.push(BatchOp::Put(k, encode(at, local, payload)));
        b.write(batch, true)
    }

    /// Every record of `upload`, in order.
    pub fn staged_upload(
        &self,
        upload: &[u8; UPLOAD_KEY_LEN],
    ) -> Result<Vec<StagedRecord>, ReadError> {
        let mut prefix = UPLOAD.to_vec();
        prefix.extend_from_slice(upload);
        let mut out = Vec::new();
        let mut bad = None;
        self.inner.backend.scan(&prefix, &mut |k, v| {
            let seq = k[prefix.len()..]
                .try_into()
                .ok()
                .map(u64::from_be_bytes)
                .and_then(|seq| decode(seq, v));
            match seq {
                Some(r) => {
                    out.push(r);
                    true
                }
                None => {
                    bad = Some(format!("{k:02x?}"));
                    false
                }
            }
        })?;
        match bad {
            Some(k) => Err(ReadError::Corrupt {
                cid: k,
                reason: "unreadable staged upload record".into(),
            }),
            None => Ok(out),
        }
    }

    /// Every staged upload, with the time of its newest record.
    pub fn staged_uploads(&self) -> Result<Vec<([u8; UPLOAD_KEY_LEN], u64)>, BackendError> {
        let mut out: BTreeMap<[u8; UPLOAD_KEY_LEN], u64> = BTreeMap::new();
        self.inner.backend.scan(UPLOAD, &mut |k, v| {
            if let Some(id) = k
                .get(UPLOAD.len()..UPLOAD.len() + UPLOAD_KEY_LEN)
                .and_then(|b| <[u8; UPLOAD_KEY_LEN]>::try_from(b).ok())
            {
                let at = v
                    .get(1..9)
                    .and_then(|b| b.try_into().ok())
                    .map_or(0, u64::from_be_bytes);
                let e = out.entry(id).or_default();
                *e = (*e).max(at);
            }
            true
        })?;
        Ok(out.into_iter().collect())
    }

    /// Drop every record of `upload` and free the shards only they referenced; how many.
    pub fn drop_upload(&self, upload: &[u8; UPLOAD_KEY_LEN]) -> Result<usize, ReadError> {
        let records = self.staged_upload(upload)?;
        let mut delta: BTreeMap<Cid, i64> = BTreeMap::new();
        {
            let _guard = lock(&self.inner.commit);
            for r in &records {
                for c in &r.local {
                    *delta.entry(*c).or_default() -= 1;
                }
            }
            let mut batch = self.ref_changes(&delta)?;
            for r in &records {
                batch.push(BatchOp::Delete(record_key(upload, r.seq)));
            }
            self.inner.backend.write(batch, true)?;
        }
        let mut freed = 0;
        for c in delta.keys() {
            if self.collect(c)? {
                freed += 1;
            }
        }
        Ok(freed)
    }

    /// The reference-count writes that apply `delta` (the commit lock is held).
    fn ref_changes(&self, delta: &BTreeMap<Cid, i64>) -> Result<Vec<BatchOp>, BackendError> {
        let b = &self.inner.backend;
        let mut batch = Vec::new();
        for (c, d) in delta.iter().filter(|(_, d)| **d != 0) {
            let rk = key(REFS, c);
            let n = b.get(&rk)?.and_then(|v| decode_refs(&v)).unwrap_or(0);
            let n = n.saturating_add_signed(*d);
            batch.push(if n == 0 {
                BatchOp::Delete(rk)
            } else {
                BatchOp::Put(rk, encode_refs(n))
            });
        }
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemBackend;
    use cairn_erasure::{Coder, Layout, encode_stripe};

    /// Stage a stripe's shards from a session that then ends uncommitted, reopen the store
    /// (`reopen` gives the same data back), and drop the upload.
    fn staged_shards_outlive_their_session<B: Backend>(
        store: Store<B>,
        reopen: &dyn Fn(Store<B>) -> Store<B>,
    ) {
        let layout = Layout::new(2, 1, 64 * 1024).expect("layout");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 253) as u8).collect();
        let enc = encode_stripe(
            &Coder::new(&layout),
            &layout,
            data[..65536].to_vec(),
            Vec::new(),
        );
        let cids = enc.cids();
        let key = [7u8; UPLOAD_KEY_LEN];
        {
            let mut session = store.begin_put();
            session.put_stripe(&enc.shards_with_bytes()).expect("put");
            store.stage_upload(&key, 0, 10, &[], b"head").expect("head");
            store
                .stage_upload(&key, 1, 11, &cids[..2], b"stripe 0")
                .expect("stage");
            // Re-staging a record moves its references: shard 2 becomes referenced, 0 not.
            store
                .stage_upload(&key, 1, 12, &cids[1..], b"stripe 0 again")
                .expect("restage");
        }
        assert_eq!(
            store.stats().shards,
            2,
            "the session's end kept what a record holds"
        );
        let store = reopen(store);
        assert_eq!(store.stats().shards, 2, "the sweep at open kept them too");
        assert!(store.has_shard(&cids[1]).expect("has") && store.has_shard(&cids[2]).expect("has"));
        let recs = store.staged_upload(&key).expect("records");
        assert_eq!(recs.len(), 2);
        assert_eq!((recs[0].seq, recs[0].payload.as_slice()), (0, &b"head"[..]));
        assert_eq!(recs[1].local, cids[1..].to_vec());
        assert_eq!(recs[1].payload, b"stripe 0 again");
        assert_eq!(store.staged_uploads().expect("list"), vec![(key, 12)]);
        assert!(
            store
                .staged_upload(&[8; UPLOAD_KEY_LEN])
                .expect("other")
                .is_empty()
        );
        assert_eq!(store.drop_upload(&key).expect("drop"), 2);
        assert_eq!(store.stats().shards, 0);
        assert!(store.staged_uploads().expect("list").is_empty());
    }

    #[test]
    fn staged_shards_outlive_their_session_in_memory() {
        let open = |old: Store<MemBackend>| {
            Store::open(old.backend().snapshot(), 1 << 30).expect("reopen")
        };
        let store = Store::open(MemBackend::new(), 1 << 30).expect("open");
        staged_shards_outlive_their_session(store, &open);
    }

    #[test]
    fn staged_shards_outlive_their_session_in_rocksdb() {
        let dir = tempfile::tempdir().expect("tempdir");
        let open = || crate::store::rocks_store(dir.path());
        staged_shards_outlive_their_session(open(), &|old| {
            drop(old);
            open()
        });
    }

    #[test]
    fn a_truncated_record_is_refused() {
        let c = cairn_erasure::shard_cid(&blake3::hash(b"s"));
        let bytes = encode(5, &[c, c], b"");
        assert_eq!(decode(1, &bytes).map(|r| r.local.len()), Some(2));
        for cut in 0..bytes.len() {
            assert_eq!(decode(1, &bytes[..cut]), None, "cut at {cut}");
        }
    }
}
