//! What the scrubber needs of the store: a walk over the stored shards that resumes where it
//! stopped, and where a shard sits in the checkpoints pinned here.

use cairn_erasure::{Cid, Manifest, Outboard};

use super::{CHECKPOINT, SHARD, Store, decode_record, key};
use crate::backend::{Backend, BatchOp};
use crate::error::{BackendError, ReadError};

/// `x/scrub` -> [`ScrubState`]: where the scrubber is, so a restart neither starts a pass
/// over nor skips one.
const SCRUB_STATE: &[u8] = b"x/scrub";
/// Version tag of the scrub state.
const SCRUB_STATE_VERSION: u8 = 1;

/// The scrubber's progress: `[1][pass started: u64 LE unix s][done: u8][cursor: CID bytes]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrubState {
    /// Unix seconds when the last (or current) pass started.
    pub pass_started: u64,
    /// Whether that pass finished.
    pub done: bool,
    /// The last shard checked in the current pass.
    pub cursor: Option<Cid>,
}

/// Where a shard sits: which checkpoint, file, stripe and shard index.
#[derive(Debug, Clone)]
pub struct ShardPlace {
    pub root: Cid,
    pub manifest: Manifest,
    pub file: usize,
    pub stripe: usize,
    pub shard: usize,
}

impl<B: Backend> Store<B> {
    /// Up to `limit` stored shards after `after` (from the first with `None`), in key order,
    /// with their lengths.
    pub fn shards_after(
        &self,
        after: Option<&Cid>,
        limit: usize,
    ) -> Result<Vec<(Cid, u64)>, ReadError> {
        let from = match after {
            Some(c) => {
                let mut k = key(SHARD, c);
                k.push(0); // the first key after it
                k
            }
            None => SHARD.to_vec(),
        };
        let mut out = Vec::with_capacity(limit);
        let mut bad = None;
        self.inner.backend.scan_from(SHARD, &from, &mut |k, v| {
            if out.len() >= limit {
                return false;
            }
            match (Cid::try_from(&k[SHARD.len()..]), Outboard::from_bytes(v)) {
                (Ok(cid), Ok(ob)) => out.push((cid, ob.len())),
                _ => {
                    bad = Some(String::from_utf8_lossy(k).into_owned());
                    return false;
                }
            }
            true
        })?;
        match bad {
            Some(k) => Err(ReadError::Backend(BackendError::Rocks(format!(
                "unreadable shard index entry {k}"
            )))),
            None => Ok(out),
        }
    }

    /// The scrubber's saved progress (`None` on a store never scrubbed, or an unreadable
    /// record, which only costs a pass).
    pub fn scrub_state(&self) -> Result<Option<ScrubState>, BackendError> {
        let Some(v) = self.inner.backend.get(SCRUB_STATE)? else {
            return Ok(None);
        };
        let parsed = (|| {
            let (&version, rest) = v.split_first()?;
            let (started, rest) = rest.split_first_chunk::<8>()?;
            let (&done, cursor) = rest.split_first()?;
            if version != SCRUB_STATE_VERSION || done > 1 {
                return None;
            }
            let cursor = match cursor {
                [] => None,
                c => Some(Cid::try_from(c).ok()?),
            };
            Some(ScrubState {
                pass_started: u64::from_le_bytes(*started),
                done: done == 1,
                cursor,
            })
        })();
        Ok(parsed)
    }

    /// Save the scrubber's progress (not synced: losing the last save costs a few shards
    /// checked again).
    pub fn set_scrub_state(&self, s: &ScrubState) -> Result<(), BackendError> {
        let mut v = vec![SCRUB_STATE_VERSION];
        v.extend_from_slice(&s.pass_started.to_le_bytes());
        v.push(u8::from(s.done));
        if let Some(c) = &s.cursor {
            v.extend_from_slice(&c.to_bytes());
        }
        self.inner
            .backend
            .write(vec![BatchOp::Put(SCRUB_STATE.to_vec(), v)], false)
    }

    /// The first pinned checkpoint, file, stripe and shard index that `cid` is, if any.
    pub fn shard_place(&self, cid: &Cid) -> Result<Option<ShardPlace>, ReadError> {
        let mut found = None;
        self.inner.backend.scan(CHECKPOINT, &mut |k, v| {
            let (Ok(root), Ok(r)) = (Cid::try_from(&k[CHECKPOINT.len()..]), decode_record(v))
            else {
                return true; // an unreadable record is reported by `list`, not here
            };
            let Ok(manifest) = Manifest::decode(r.manifest) else {
                return true;
            };
            for (fi, f) in manifest.files.iter().enumerate() {
                for (si, stripe) in f.stripes.iter().enumerate() {
                    if let Some(j) = stripe.iter().position(|c| c == cid) {
                        found = Some(ShardPlace {
                            root,
                            manifest: manifest.clone(),
                            file: fi,
                            stripe: si,
                            shard: j,
                        });
                        return false;
                    }
                }
            }
            true
        })?;
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemBackend;
    use cairn_erasure::{Coder, FileEntry, Layout, encode_stripe};

    fn walk_finds_every_shard<B: Backend>(store: Store<B>) {
        let layout = Layout::new(3, 2, 64 * 1024).expect("layout");
        let coder = Coder::new(&layout);
        let mut session = store.begin_put();
        let mut stripes = Vec::new();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for chunk in data.chunks(layout.stripe_size() as usize) {
            let enc = encode_stripe(&coder, &layout, chunk.to_vec(), Vec::new());
            session.put_stripe(&enc.shards_with_bytes()).expect("put");
            stripes.push(enc.cids());
        }
        let file = FileEntry {
            path: "w.bin".into(),
            size: data.len() as u64,
            blake3: blake3::hash(&data).as_bytes().to_vec(),
            stripes: stripes.clone(),
        };
        let m = Manifest::new(&layout, vec![file]).expect("manifest");
        let root = session.commit(&m, "w", 1).expect("commit");
        // Walk in batches of 3: every shard once, in key order.
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let batch = store.shards_after(cursor.as_ref(), 3).expect("walk");
            if batch.is_empty() {
                break;
            }
            assert!(batch.len() <= 3);
            cursor = batch.last().map(|(c, _)| *c);
            seen.extend(batch);
        }
        let mut want: Vec<Cid> = stripes.iter().flatten().copied().collect();
        want.sort_by_key(|c| c.to_bytes());
        want.dedup();
        let got: Vec<Cid> = seen.iter().map(|(c, _)| *c).collect();
        assert_eq!(got, want);
        assert!(
            seen.iter()
                .all(|(c, len)| store.shard_len(c).expect("len") == *len)
        );
        let place = store
            .shard_place(&stripes[1][4])
            .expect("place")
            .expect("found");
        assert_eq!(
            (place.root, place.file, place.stripe, place.shard),
            (root, 0, 1, 4)
        );
        let stranger = cairn_erasure::manifest_cid(b"not a shard here");
        assert!(store.shard_place(&stranger).expect("place").is_none());
        // The scrubber's progress survives as saved.
        assert_eq!(store.scrub_state().expect("state"), None);
        for state in [
            ScrubState {
                pass_started: 7,
                done: false,
                cursor: Some(stripes[0][1]),
            },
            ScrubState {
                pass_started: 9,
                done: true,
                cursor: None,
            },
        ] {
            store.set_scrub_state(&state).expect("save");
            assert_eq!(store.scrub_state().expect("state"), Some(state));
        }
    }

    #[test]
    fn walk_over_memory() {
        walk_finds_every_shard(Store::open(MemBackend::new(), 1 << 30).expect("open"));
    }

    #[test]
    fn walk_over_rocksdb() {
        let dir = tempfile::tempdir().expect("tempdir");
        walk_finds_every_shard(crate::store::rocks_store(dir.path()));
    }
}
