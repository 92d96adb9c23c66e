//! Deletes by a checkpoint's publisher, remembered.
//!
//! - A holder keeps a **tombstone** for every root its publisher deleted here: the store then
//!   refuses to pin that root again ([`CommitError::Deleted`]), so a node that missed the
//!   delete (it was down) cannot spread the checkpoint back by repairing it onto this one.
//! - The publisher keeps a **pending delete** per root: the nodes that did not confirm yet
//!   (unreachable, or refusing while a deal ran). Its retry job asks them again until they
//!   answer or the delete is too old.
//!
//! Both live in the index only (a few dozen bytes each), not in memory.

use cairn_erasure::Cid;

use super::{Store, key};
use crate::backend::{Backend, BatchOp};
use crate::error::{BackendError, ReadError};

/// `d/<root>` -> `[version][deleted at: u64 BE unix s]`.
const TOMBSTONE: &[u8] = b"d/";
/// `q/<root>` -> [`encode_pending`].
const PENDING: &[u8] = b"q/";
/// Version tag of both records.
const VERSION: u8 = 1;
/// Most nodes a pending delete names (a larger network's rest is not retried).
pub const MAX_PENDING_PEERS: usize = 4096;

/// A network-wide delete not every node has confirmed yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingDelete {
    pub root: Cid,
    /// Unix seconds when the publisher first asked.
    pub started: u64,
    /// The nodes still to ask (peer ids as bytes: the store knows nothing of libp2p).
    pub peers: Vec<Vec<u8>>,
}

/// `[version][started: u64 BE][count: u16 BE]([len: u8][peer bytes])*`.
fn encode_pending(p: &PendingDelete) -> Vec<u8> {
    let peers: Vec<&Vec<u8>> = p
        .peers
        .iter()
        .filter(|b| b.len() <= usize::from(u8::MAX))
        .take(MAX_PENDING_PEERS)
        .collect();
    let mut out = vec![VERSION];
    out.extend_from_slice(&p.started.to_be_bytes());
    out.extend_from_slice(&(peers.len() as u16).to_be_bytes());
    for b in peers {
        out.push(b.len() as u8);
        out.extend_from_slice(b);
    }
    out
}

fn decode_pending(root: Cid, v: &[u8]) -> Option<PendingDelete> {
    let (&version, rest) = v.split_first()?;
    if version != VERSION || rest.len() < 10 {
        return None;
    }
    let started = u64::from_be_bytes(rest[..8].try_into().ok()?);
    let count = u16::from_be_bytes(rest[8..10].try_into().ok()?);
    let mut rest = &rest[10..];
    let mut peers = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let (&len, tail) = rest.split_first()?;
        let len = usize::from(len);
        if tail.len() < len {
            return None;
        }
        peers.push(tail[..len].to_vec());
        rest = &tail[len..];
    }
    rest.is_empty().then_some(PendingDelete {
        root,
        started,
        peers,
    })
}

impl<B: Backend> Store<B> {
    /// Remember that `root`'s publisher deleted it here (durable before it returns).
    pub fn set_tombstone(&self, root: &Cid, at: u64) -> Result<(), BackendError> {
        let mut v = vec![VERSION];
        v.extend_from_slice(&at.to_be_bytes());
        self.inner
            .backend
            .write(vec![BatchOp::Put(key(TOMBSTONE, root), v)], true)
    }

    /// When `root`'s publisher deleted it here, if it did.
    pub fn tombstone(&self, root: &Cid) -> Result<Option<u64>, BackendError> {
        Ok(self
            .inner
            .backend
            .get(&key(TOMBSTONE, root))?
            .and_then(|v| Some(u64::from_be_bytes(v.get(1..9)?.try_into().ok()?))))
    }

    /// Record (or replace) a pending delete; one with no peers left is removed.
    pub fn set_pending_delete(&self, p: &PendingDelete) -> Result<(), BackendError> {
        let k = key(PENDING, &p.root);
        let op = if p.peers.is_empty() {
            BatchOp::Delete(k)
        } else {
            BatchOp::Put(k, encode_pending(p))
        };
        self.inner.backend.write(vec![op], true)
    }

    /// Every pending delete, oldest root key first.
    pub fn pending_deletes(&self) -> Result<Vec<PendingDelete>, ReadError> {
        let mut out = Vec::new();
        let mut bad = None;
        self.inner.backend.scan(PENDING, &mut |k, v| {
            let parsed = cairn_erasure::cid_from_bytes(&k[PENDING.len()..])
                .ok()
                .and_then(|root| decode_pending(root, v));
            match parsed {
                Some(p) => {
                    out.push(p);
                    true
                }
                None => {
                    bad = Some(k.to_vec());
                    false
                }
            }
        })?;
        match bad {
            Some(k) => Err(ReadError::Corrupt {
                cid: format!("pending delete {k:02x?}"),
                reason: "unreadable record".into(),
            }),
            None => Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemBackend;
    use crate::error::CommitError;
    use cairn_erasure::{Coder, FileEntry, Layout, Manifest, encode_stripe};

    fn deleted_roots_stay_deleted<B: Backend>(store: Store<B>) {
        let layout = Layout::new(2, 1, 64 * 1024).expect("layout");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 13 % 251) as u8).collect();
        let put = |store: &Store<B>| {
            let mut session = store.begin_put();
            let mut stripes = Vec::new();
            for chunk in data.chunks(layout.stripe_size() as usize) {
                let enc = encode_stripe(&Coder::new(&layout), &layout, chunk.to_vec(), Vec::new());
                session.put_stripe(&enc.shards_with_bytes()).expect("put");
                stripes.push(enc.cids());
            }
            let file = FileEntry {
                path: "w.bin".into(),
                size: data.len() as u64,
                blake3: blake3::hash(&data).as_bytes().to_vec(),
                stripes,
            };
            let m = Manifest::new(&layout, vec![file]).expect("manifest");
            session.commit(&m, "w", 1)
        };
        let root = put(&store).expect("first put");
        assert_eq!(store.tombstone(&root).expect("read"), None);
        store.set_tombstone(&root, 42).expect("tombstone");
        store.unpin(&root).expect("unpin");
        assert_eq!(store.tombstone(&root).expect("read"), Some(42));
        // The same checkpoint may not be pinned here again, and nothing of it stays.
        match put(&store) {
            Err(CommitError::Deleted(r)) => assert_eq!(r, root.to_string()),
            other => panic!("a deleted root was pinned again: {other:?}"),
        }
        assert!(store.list().expect("list").is_empty());
        assert_eq!(store.stats().shards, 0);

        // Pending deletes: kept as written, replaced, removed once no peer is left.
        assert!(store.pending_deletes().expect("pending").is_empty());
        let mut p = PendingDelete {
            root,
            started: 7,
            peers: vec![vec![1, 2, 3], vec![9; 38]],
        };
        store.set_pending_delete(&p).expect("save");
        assert_eq!(store.pending_deletes().expect("pending"), vec![p.clone()]);
        p.peers.remove(0);
        store.set_pending_delete(&p).expect("save");
        assert_eq!(store.pending_deletes().expect("pending"), vec![p.clone()]);
        p.peers.clear();
        store.set_pending_delete(&p).expect("save");
        assert!(store.pending_deletes().expect("pending").is_empty());
    }

    #[test]
    fn deleted_roots_stay_deleted_in_memory() {
        deleted_roots_stay_deleted(Store::open(MemBackend::new(), 1 << 30).expect("open"));
    }

    #[test]
    fn deleted_roots_stay_deleted_in_rocksdb() {
        let dir = tempfile::tempdir().expect("tempdir");
        deleted_roots_stay_deleted(crate::store::rocks_store(dir.path()));
    }

    #[test]
    fn a_truncated_pending_record_is_refused() {
        let root = cairn_erasure::manifest_cid(b"x");
        let p = PendingDelete {
            root,
            started: 1,
            peers: vec![vec![5; 10], vec![6; 3]],
        };
        let bytes = encode_pending(&p);
        assert_eq!(decode_pending(root, &bytes), Some(p));
        for cut in 0..bytes.len() {
            assert_eq!(decode_pending(root, &bytes[..cut]), None, "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode_pending(root, &longer), None);
    }
}
