use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use cairn_erasure::{Cid, Manifest, Outboard, ShardMeta, shard_hash};
use tracing::{debug, warn};

use crate::backend::{Backend, BatchOp};
use crate::error::{BackendError, CommitError, OpenError, PutError, ReadError, UnpinError};

mod deals;
mod deleted;
mod names;
mod scrub;
mod uploads;
pub use deals::{AcceptedDeal, CHUNK_ROOT_LEN};
pub use deleted::{MAX_PENDING_PEERS, PendingDelete};
pub use names::{MAX_NAME_HISTORY, MAX_NAME_LEN, NameEntry, NameError, check_name};
pub use scrub::{ScrubState, ShardPlace};
pub use uploads::{StagedRecord, UPLOAD_KEY_LEN};

/// How many shards of a stripe [`PutSession::put_stripe`] writes at once. Measured on a
/// virtio disk (ARCHITECTURE.md): files written and synced one at a time reached half the
/// device's write speed; eight at once reach it.
const STRIPE_WRITERS: usize = 8;

/// `s/<shard cid>` -> outboard bytes. Present iff the shard's bytes were stored.
const SHARD: &[u8] = b"s/";
/// `r/<shard cid>` -> `[1][u64 LE]`: how many pinned checkpoints reference the shard.
const REFS: &[u8] = b"r/";
/// `m/<root cid>` -> checkpoint record (see [`encode_record`]).
const CHECKPOINT: &[u8] = b"m/";

/// Version tag of reference counts, and of checkpoint records written before record flags.
const RECORD_VERSION: u8 = 1;
/// Checkpoint records carry a flags byte from this version on.
const RECORD_VERSION_FLAGS: u8 = 2;
/// Record flag: this node holds only some of the checkpoint's shards (a cluster member).
const FLAG_PARTIAL: u8 = 1;
/// Record flag: this node's operator keeps this share (it came through the node's own API),
/// paid for or not. Complete records are always kept.
const FLAG_KEPT: u8 = 2;

/// Shard files are charged in whole filesystem blocks: a 1-byte shard costs a block.
const CHARGE_BLOCK: u64 = 4096;
/// What an index entry, a file's inode and directory entry cost beyond the bytes, charged
/// per shard and per checkpoint record.
const ENTRY_OVERHEAD: u64 = 512;

/// Bytes a stored shard counts against capacity: its bytes in whole blocks, its outboard and
/// the per-entry overhead, so that many tiny shards cost what they really take.
pub fn shard_charge(len: u64, outboard_len: u64) -> u64 {
    len.div_ceil(CHARGE_BLOCK) * CHARGE_BLOCK + outboard_len + ENTRY_OVERHEAD
}

/// Bytes a checkpoint record (its manifest, name and header) counts against capacity.
pub fn record_charge(record_len: u64) -> u64 {
    record_len + ENTRY_OVERHEAD
}

fn ob_charge(ob: &Outboard) -> u64 {
    shard_charge(ob.len(), ob.encoded_len() as u64)
}

fn key(prefix: &[u8], cid: &Cid) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&cid.to_bytes());
    k
}

/// A decoded checkpoint record.
struct Record<'a> {
    created: u64,
    name: String,
    partial: bool,
    kept: bool,
    manifest: &'a [u8],
}

/// `[2][flags: u8][created: u64 LE unix seconds][name len: u16 LE][name: utf-8][manifest:
/// dag-cbor]`. Version 1 records (no flags byte, always complete) are still read.
fn encode_record(created: u64, name: &str, partial: bool, kept: bool, manifest: &[u8]) -> Vec<u8> {
    let name = &name.as_bytes()[..name.len().min(u16::MAX as usize)];
    let mut out = Vec::with_capacity(12 + name.len() + manifest.len());
    out.push(RECORD_VERSION_FLAGS);
    out.push(if partial { FLAG_PARTIAL } else { 0 } | if kept { FLAG_KEPT } else { 0 });
    out.extend_from_slice(&created.to_le_bytes());
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(name);
    out.extend_from_slice(manifest);
    out
}

fn decode_record(bytes: &[u8]) -> Result<Record<'_>, String> {
    let (&v, rest) = bytes.split_first().ok_or("empty record")?;
    let (flags, rest) = match v {
        RECORD_VERSION => (0, rest),
        RECORD_VERSION_FLAGS => {
            let (&f, rest) = rest.split_first().ok_or("truncated record")?;
            (f, rest)
        }
        _ => return Err(format!("unknown record version {v}")),
    };
    if flags & !(FLAG_PARTIAL | FLAG_KEPT) != 0 {
        return Err(format!("unknown record flags {flags:#04x}"));
    }
    let (created, rest) = rest.split_first_chunk::<8>().ok_or("truncated record")?;
    let (name_len, rest) = rest.split_first_chunk::<2>().ok_or("truncated record")?;
    let name_len = usize::from(u16::from_le_bytes(*name_len));
    if rest.len() < name_len {
        return Err("truncated record name".into());
    }
    let (name, manifest) = rest.split_at(name_len);
    let name = String::from_utf8(name.to_vec()).map_err(|_| "record name is not utf-8")?;
    Ok(Record {
        created: u64::from_le_bytes(*created),
        name,
        partial: flags & FLAG_PARTIAL != 0,
        kept: flags & FLAG_PARTIAL == 0 || flags & FLAG_KEPT != 0,
        manifest,
    })
}

fn decode_refs(bytes: &[u8]) -> Option<u64> {
    match bytes {
        [RECORD_VERSION, rest @ ..] => rest.try_into().ok().map(u64::from_le_bytes),
        _ => None,
    }
}

fn encode_refs(n: u64) -> Vec<u8> {
    let mut v = vec![RECORD_VERSION];
    v.extend_from_slice(&n.to_le_bytes());
    v
}

/// A pinned checkpoint, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointInfo {
    pub root: Cid,
    pub name: String,
    /// Unix seconds when it was committed.
    pub created: u64,
    pub files: usize,
    pub size: u64,
    /// False when this node holds only its share of the shards (cluster placement).
    pub complete: bool,
    /// Kept by this node's operator (put or pinned through its own API), whether or not a
    /// deal pays for it. A share pushed here by another gateway is not, until kept.
    pub kept: bool,
}

/// What a verified read of one shard found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardStatus {
    Ok,
    Missing,
    Corrupt(String),
}

/// Counters and gauges of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    /// Bytes counted against capacity: shards (in whole blocks) with their outboards, and
    /// checkpoint records, each with a per-entry overhead ([`shard_charge`], [`record_charge`]).
    pub used_bytes: u64,
    pub capacity_bytes: u64,
    pub shards: u64,
    /// Reads that found bytes not matching their CID (since start).
    pub corrupt_reads: u64,
}

struct Inner<B> {
    backend: B,
    capacity: u64,
    used: AtomicU64,
    shards: AtomicU64,
    corrupt_reads: AtomicU64,
    /// Serializes commits and unpins (reference count updates).
    commit: Mutex<()>,
    /// Shards written or claimed by uploads not yet committed: never garbage-collected.
    pending: Mutex<HashMap<Cid, usize>>,
}

/// Verified shard and checkpoint store. Cheap to clone.
pub struct Store<B: Backend> {
    inner: Arc<Inner<B>>,
}

impl<B: Backend> Clone for Store<B> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<B: Backend> std::fmt::Debug for Store<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("stats", &self.stats())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves no half-applied state in memory that matters:
    // the data is in the backend. Keep going.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<B: Backend> Store<B> {
    /// Open a store over `backend` with a capacity in bytes, removing anything a crash left
    /// behind that no committed checkpoint references.
    pub fn open(backend: B, capacity: u64) -> Result<Self, OpenError> {
        let inner = Inner {
            backend,
            capacity,
            used: AtomicU64::new(0),
            shards: AtomicU64::new(0),
            corrupt_reads: AtomicU64::new(0),
            commit: Mutex::new(()),
            pending: Mutex::new(HashMap::new()),
        };
        let store = Self {
            inner: Arc::new(inner),
        };
        store.sweep()?;
        Ok(store)
    }

    /// The backend (tests use it to inject faults).
    pub fn backend(&self) -> &B {
        &self.inner.backend
    }

    fn sweep(&self) -> Result<(), OpenError> {
        let b = &self.inner.backend;
        let mut orphans = Vec::new();
        let mut bad = None;
        let (mut used, mut count) = (0u64, 0u64);
        let mut refs_err = None;
        b.scan(SHARD, &mut |k, v| {
            let cid_bytes = &k[SHARD.len()..];
            let referenced = {
                let mut rk = REFS.to_vec();
                rk.extend_from_slice(cid_bytes);
                match b.get(&rk) {
                    Ok(r) => r.and_then(|r| decode_refs(&r)).unwrap_or(0) > 0,
                    Err(e) => {
                        refs_err = Some(e);
                        return false;
                    }
                }
            };
            if !referenced {
                orphans.push(cid_bytes.to_vec());
                return true;
            }
            match Outboard::from_bytes(v) {
                Ok(ob) => {
                    used += ob_charge(&ob);
                    count += 1;
                }
                Err(e) => {
                    bad = Some((format!("{k:02x?}"), e.to_string()));
                    return false;
                }
            }
            true
        })?;
        if let Some(e) = refs_err {
            return Err(e.into());
        }
        if let Some((key, reason)) = bad {
            return Err(OpenError::Corrupt { key, reason });
        }
        let mut batch = Vec::with_capacity(orphans.len());
        for cid in &orphans {
            let mut k = SHARD.to_vec();
            k.extend_from_slice(cid);
            batch.push(BatchOp::Delete(k));
        }
        if !batch.is_empty() {
            b.write(batch, false)?;
        }
        for cid in &orphans {
            b.delete_blob(cid)?;
        }
        // Blobs without an index entry: written by an upload that never got further.
        let mut blob_keys = Vec::new();
        b.list_blobs(&mut |k| blob_keys.push(k.to_vec()))?;
        let mut stray = 0usize;
        for k in blob_keys {
            let mut ik = SHARD.to_vec();
            ik.extend_from_slice(&k);
            if b.get(&ik)?.is_none() {
                b.delete_blob(&k)?;
                stray += 1;
            }
        }
        b.scan(CHECKPOINT, &mut |_, v| {
            used += record_charge(v.len() as u64);
            true
        })?;
        if !orphans.is_empty() || stray > 0 {
            warn!(
                unreferenced = orphans.len(),
                stray, "removed shards left by interrupted uploads"
            );
        }
        self.inner.used.store(used, Ordering::Relaxed);
        self.inner.shards.store(count, Ordering::Relaxed);
        Ok(())
    }

    /// Current counters.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            used_bytes: self.inner.used.load(Ordering::Relaxed),
            capacity_bytes: self.inner.capacity,
            shards: self.inner.shards.load(Ordering::Relaxed),
            corrupt_reads: self.inner.corrupt_reads.load(Ordering::Relaxed),
        }
    }

    /// Start an upload. Shards it stores are protected from garbage collection until it is
    /// committed or dropped; dropping it without commit removes what only it referenced.
    pub fn begin_put(&self) -> PutSession<B> {
        PutSession {
            store: self.clone(),
            claimed: BTreeSet::new(),
            committed: false,
        }
    }

    fn corrupt(&self, cid: &Cid, reason: impl Into<String>) -> ReadError {
        self.inner.corrupt_reads.fetch_add(1, Ordering::Relaxed);
        let reason = reason.into();
        warn!(%cid, %reason, "corrupt shard");
        ReadError::Corrupt {
            cid: cid.to_string(),
            reason,
        }
    }

    fn outboard(&self, cid: &Cid) -> Result<(blake3::Hash, Outboard), ReadError> {
        let hash = shard_hash(cid).map_err(|e| self.corrupt(cid, e.to_string()))?;
        let ob = self
            .inner
            .backend
            .get(&key(SHARD, cid))?
            .ok_or(ReadError::NotFound(cid.to_string()))?;
        let ob = Outboard::from_bytes(&ob).map_err(|e| self.corrupt(cid, e.to_string()))?;
        ob.check(&hash)
            .map_err(|e| self.corrupt(cid, e.to_string()))?;
        Ok((hash, ob))
    }

    /// A stored shard's outboard, checked against its CID (what a peer needs to verify any
    /// range of it).
    pub fn shard_outboard(&self, cid: &Cid) -> Result<Outboard, ReadError> {
        Ok(self.outboard(cid)?.1)
    }

    /// Whether the shard's bytes are held (not verified).
    pub fn has_shard(&self, cid: &Cid) -> Result<bool, BackendError> {
        Ok(self.inner.backend.get(&key(SHARD, cid))?.is_some())
    }

    /// Whether the shard is indexed and its bytes exist (not verified; cheap).
    pub fn shard_present(&self, cid: &Cid) -> Result<bool, BackendError> {
        Ok(self.has_shard(cid)? && self.inner.backend.has_blob(&cid.to_bytes())?)
    }

    /// Ask the backend to start reading bytes `[start, end)` of a shard (readahead hint).
    pub fn prefetch_shard(&self, cid: &Cid, start: u64, end: u64) {
        self.inner
            .backend
            .prefetch_blob(&cid.to_bytes(), start, end.saturating_sub(start));
    }

    /// Length of a stored shard.
    pub fn shard_len(&self, cid: &Cid) -> Result<u64, ReadError> {
        Ok(self.outboard(cid)?.1.len())
    }

    /// Read a whole shard, verified against its CID.
    pub fn read_shard(&self, cid: &Cid) -> Result<Vec<u8>, ReadError> {
        let (hash, ob) = self.outboard(cid)?;
        let data = self
            .inner
            .backend
            .read_blob(&cid.to_bytes(), 0, ob.len())?
            .ok_or_else(|| self.corrupt(cid, "shard bytes are missing"))?;
        ob.verify_all(&hash, &data)
            .map_err(|e| self.corrupt(cid, e.to_string()))?;
        Ok(data)
    }

    /// Read bytes `[start, end)` of a shard; only the 16 KiB groups covering them are read,
    /// and each is verified.
    pub fn read_shard_range(&self, cid: &Cid, start: u64, end: u64) -> Result<Vec<u8>, ReadError> {
        let (_, a, data) = self.read_groups(cid, start, end)?;
        let from = usize::try_from(start - a).expect("within a read buffer");
        let to = usize::try_from(end - a).expect("within a read buffer");
        let mut data = data;
        data.truncate(to);
        if from > 0 {
            data.drain(..from);
        }
        Ok(data)
    }

    /// Read the 16 KiB groups covering bytes `[start, end)` of a shard, verified: returns the
    /// shard's outboard, the aligned start offset and the bytes (what a peer needs to verify
    /// the same range again).
    pub fn read_groups(
        &self,
        cid: &Cid,
        start: u64,
        end: u64,
    ) -> Result<(Outboard, u64, Vec<u8>), ReadError> {
        let (hash, ob) = self.outboard(cid)?;
        let (a, b) = ob.aligned(start, end).map_err(|_| ReadError::Range {
            cid: cid.to_string(),
            start,
            end,
            len: ob.len(),
        })?;
        let data = self
            .inner
            .backend
            .read_blob(&cid.to_bytes(), a, b - a)?
            .ok_or_else(|| self.corrupt(cid, "shard bytes are missing"))?;
        if data.len() as u64 != b - a {
            return Err(self.corrupt(cid, "shard bytes are truncated"));
        }
        ob.verify_groups(&hash, a, &data)
            .map_err(|e| self.corrupt(cid, e.to_string()))?;
        Ok((ob, a, data))
    }

    /// Verify a shard without returning it.
    pub fn check_shard(&self, cid: &Cid) -> Result<ShardStatus, BackendError> {
        match self.read_shard(cid) {
            Ok(_) => Ok(ShardStatus::Ok),
            Err(ReadError::NotFound(_)) => Ok(ShardStatus::Missing),
            Err(ReadError::Corrupt { reason, .. }) => Ok(ShardStatus::Corrupt(reason)),
            Err(ReadError::Range { .. }) => Ok(ShardStatus::Corrupt("bad length".into())),
            Err(ReadError::Backend(e)) => Err(e),
        }
    }

    /// Rewrite a shard's bytes after rebuilding them elsewhere (repair on read). The bytes are
    /// verified against the CID first; the shard must be known to the index.
    pub fn repair_shard(&self, cid: &Cid, data: &[u8]) -> Result<(), PutError> {
        let hash = shard_hash(cid).map_err(|_| PutError::Verify {
            cid: cid.to_string(),
            source: cairn_erasure::VerifyError::Whole,
        })?;
        if blake3::hash(data) != hash {
            return Err(PutError::Verify {
                cid: cid.to_string(),
                source: cairn_erasure::VerifyError::Whole,
            });
        }
        // Under the commit lock: garbage collection cannot remove the shard meanwhile, and a
        // shard it already removed is not brought back (nothing references it).
        let _guard = lock(&self.inner.commit);
        if !self.has_shard(cid)? {
            return Ok(());
        }
        let b = &self.inner.backend;
        b.put_blob(&cid.to_bytes(), data)?;
        b.sync_blobs()?;
        debug!(%cid, "repaired shard");
        Ok(())
    }

    /// The manifest of a pinned checkpoint.
    pub fn manifest(&self, root: &Cid) -> Result<Manifest, ReadError> {
        let bytes = self.manifest_bytes(root)?;
        Manifest::decode(&bytes).map_err(|e| self.corrupt(root, e.to_string()))
    }

    /// The manifest of a pinned checkpoint and whether every shard of it is held here (false
    /// for a cluster member's share).
    pub fn manifest_entry(&self, root: &Cid) -> Result<(Manifest, bool), ReadError> {
        let record = self
            .inner
            .backend
            .get(&key(CHECKPOINT, root))?
            .ok_or(ReadError::NotFound(root.to_string()))?;
        let r = decode_record(&record).map_err(|e| self.corrupt(root, e))?;
        if cairn_erasure::manifest_cid(r.manifest) != *root {
            return Err(self.corrupt(root, "manifest bytes do not match the root cid"));
        }
        let m = Manifest::decode(r.manifest).map_err(|e| self.corrupt(root, e.to_string()))?;
        Ok((m, !r.partial))
    }

    /// The encoded manifest bytes of a pinned checkpoint (verified against the root).
    pub fn manifest_bytes(&self, root: &Cid) -> Result<Vec<u8>, ReadError> {
        let record = self
            .inner
            .backend
            .get(&key(CHECKPOINT, root))?
            .ok_or(ReadError::NotFound(root.to_string()))?;
        let bytes = decode_record(&record)
            .map_err(|e| self.corrupt(root, e))?
            .manifest;
        if cairn_erasure::manifest_cid(bytes) != *root {
            return Err(self.corrupt(root, "manifest bytes do not match the root cid"));
        }
        Ok(bytes.to_vec())
    }

    /// Pinned checkpoints, in root order.
    pub fn list(&self) -> Result<Vec<CheckpointInfo>, ReadError> {
        let mut out = Vec::new();
        let mut bad = None;
        self.inner.backend.scan(CHECKPOINT, &mut |k, v| {
            let Ok(root) = Cid::try_from(&k[CHECKPOINT.len()..]) else {
                bad = Some("unparsable checkpoint key".to_string());
                return false;
            };
            match decode_record(v).and_then(|r| {
                Manifest::decode(r.manifest)
                    .map(|m| (r, m))
                    .map_err(|e| e.to_string())
            }) {
                Ok((r, m)) => out.push(CheckpointInfo {
                    root,
                    name: r.name,
                    created: r.created,
                    files: m.files.len(),
                    size: m.total_size(),
                    complete: !r.partial,
                    kept: r.kept,
                }),
                Err(e) => {
                    // Listed as a broken entry rather than hiding it.
                    warn!(%root, error = %e, "unreadable checkpoint record");
                    out.push(CheckpointInfo {
                        root,
                        name: format!("<unreadable: {e}>"),
                        created: 0,
                        files: 0,
                        size: 0,
                        complete: false,
                        kept: true,
                    });
                }
            }
            true
        })?;
        if let Some(reason) = bad {
            return Err(ReadError::Backend(BackendError::Rocks(reason)));
        }
        Ok(out)
    }

    /// Mark a pinned checkpoint as kept by this node's operator (never freed for want of a
    /// deal). Returns whether it was kept already.
    pub fn keep(&self, root: &Cid) -> Result<bool, ReadError> {
        let _guard = lock(&self.inner.commit);
        let b = &self.inner.backend;
        let ck = key(CHECKPOINT, root);
        let record = b.get(&ck)?.ok_or(ReadError::NotFound(root.to_string()))?;
        let r = decode_record(&record).map_err(|e| self.corrupt(root, e))?;
        if r.kept {
            return Ok(true);
        }
        let kept = encode_record(r.created, &r.name, r.partial, true, r.manifest);
        debug_assert_eq!(kept.len(), record.len(), "a flag changes no length");
        b.write(vec![BatchOp::Put(ck, kept)], true)?;
        Ok(false)
    }

    /// Unpin a checkpoint and free every shard no other pinned checkpoint references.
    /// Returns the number of shards freed.
    pub fn unpin(&self, root: &Cid) -> Result<usize, UnpinError> {
        let _guard = lock(&self.inner.commit);
        let b = &self.inner.backend;
        let ck = key(CHECKPOINT, root);
        let record = b.get(&ck)?.ok_or(UnpinError::NotFound(root.to_string()))?;
        let manifest = decode_record(&record)
            .map_err(|reason| UnpinError::Corrupt {
                cid: root.to_string(),
                reason,
            })
            .and_then(|r| {
                Manifest::decode(r.manifest).map_err(|e| UnpinError::Corrupt {
                    cid: root.to_string(),
                    reason: e.to_string(),
                })
            })?;
        let distinct: BTreeSet<Cid> = manifest.shard_cids().copied().collect();
        let record_len = record.len() as u64;
        let mut batch = vec![BatchOp::Delete(ck)];
        let mut freed = Vec::new();
        for cid in &distinct {
            let rk = key(REFS, cid);
            let n = b.get(&rk)?.and_then(|v| decode_refs(&v)).unwrap_or(0);
            if n <= 1 {
                batch.push(BatchOp::Delete(rk));
                freed.push(*cid);
            } else {
                batch.push(BatchOp::Put(rk, encode_refs(n - 1)));
            }
        }
        b.write(batch, true)?;
        self.inner
            .used
            .fetch_sub(record_charge(record_len), Ordering::Relaxed);
        let mut removed = 0;
        for cid in &freed {
            if self.collect(cid)? {
                removed += 1;
            }
        }
        debug!(%root, freed = removed, "unpinned checkpoint");
        Ok(removed)
    }

    /// Store one shard that an upload has claimed (`already`: its index entry existed then).
    fn store_claimed(&self, meta: &ShardMeta, data: &[u8], already: bool) -> Result<(), PutError> {
        let inner = &self.inner;
        let blob_key = meta.cid.to_bytes();
        if already {
            // Already indexed. If its bytes were lost, this upload restores them.
            if !inner.backend.has_blob(&blob_key)? {
                inner.backend.put_blob(&blob_key, data)?;
            }
            return Ok(());
        }
        let needed = ob_charge(&meta.outboard);
        let before = inner.used.fetch_add(needed, Ordering::Relaxed);
        let refund = || inner.used.fetch_sub(needed, Ordering::Relaxed);
        if before.saturating_add(needed) > inner.capacity {
            refund();
            return Err(PutError::StoreFull {
                needed,
                used: before,
                capacity: inner.capacity,
            });
        }
        if let Err(e) = inner.backend.put_blob(&blob_key, data) {
            refund();
            return Err(e.into());
        }
        // Index and count the shard once, even if another upload stored the same bytes
        // meanwhile (the pending lock orders the two).
        let indexed = {
            let _pending = lock(&inner.pending);
            let k = key(SHARD, &meta.cid);
            inner.backend.get(&k).and_then(|held| match held {
                Some(_) => Ok(false),
                None => inner
                    .backend
                    .write(vec![BatchOp::Put(k, meta.outboard.to_bytes())], false)
                    .map(|()| true),
            })
        };
        if matches!(indexed, Ok(true)) {
            inner.shards.fetch_add(1, Ordering::Relaxed);
        } else {
            refund();
        }
        indexed?;
        Ok(())
    }

    /// Delete a shard if nothing references it and no upload claims it. Caller holds the
    /// commit lock or the shard is otherwise known unreferenced.
    fn collect(&self, cid: &Cid) -> Result<bool, BackendError> {
        let b = &self.inner.backend;
        let pending = lock(&self.inner.pending);
        if pending.contains_key(cid) {
            return Ok(false);
        }
        if b.get(&key(REFS, cid))?
            .and_then(|v| decode_refs(&v))
            .unwrap_or(0)
            > 0
        {
            return Ok(false);
        }
        let Some(ob) = b.get(&key(SHARD, cid))? else {
            return Ok(false);
        };
        b.write(vec![BatchOp::Delete(key(SHARD, cid))], false)?;
        b.delete_blob(&cid.to_bytes())?;
        drop(pending);
        if let Ok(ob) = Outboard::from_bytes(&ob) {
            self.inner.used.fetch_sub(ob_charge(&ob), Ordering::Relaxed);
        }
        self.inner.shards.fetch_sub(1, Ordering::Relaxed);
        Ok(true)
    }
}

/// An upload in progress. See [`Store::begin_put`].
pub struct PutSession<B: Backend> {
    store: Store<B>,
    claimed: BTreeSet<Cid>,
    committed: bool,
}

impl<B: Backend> PutSession<B> {
    /// Store one shard whose identity was computed from `data` by the caller (the encoder).
    /// A shard already held is not written again.
    pub fn put_shard(&mut self, meta: &ShardMeta, data: &[u8]) -> Result<(), PutError> {
        let already = self.claim(&meta.cid)?;
        self.store.store_claimed(meta, data, already)
    }

    /// Store the shards of one stripe, writing up to `STRIPE_WRITERS` of them at once: a
    /// storage device reaches its throughput only with several writes in flight. Every shard
    /// is claimed first; on error the first one is returned once all writes have ended (the
    /// shards written meanwhile stay claimed by this session and are collected with it).
    pub fn put_stripe(&mut self, shards: &[(&ShardMeta, &[u8])]) -> Result<(), PutError> {
        let mut work = Vec::with_capacity(shards.len());
        let mut seen = BTreeSet::new();
        for &(meta, data) in shards {
            // A shard repeated within the stripe (zero regions code into identical shards)
            // is written once.
            if seen.insert(meta.cid) {
                work.push((meta, data, self.claim(&meta.cid)?));
            }
        }
        let store = &self.store;
        let next = std::sync::atomic::AtomicUsize::new(0);
        let failed = Mutex::new(None);
        let writer = || {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(meta, data, already)) = work.get(i) else {
                    break;
                };
                if let Err(e) = store.store_claimed(meta, data, already) {
                    lock(&failed).get_or_insert(e);
                    next.store(work.len(), Ordering::Relaxed); // the others stop early
                    break;
                }
            }
        };
        let threads = STRIPE_WRITERS.min(work.len());
        std::thread::scope(|s| {
            for _ in 1..threads {
                s.spawn(writer);
            }
            writer();
        });
        match lock(&failed).take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Protect a shard from garbage collection until this session ends, and say whether its
    /// bytes are already held. Lets a manifest be pinned over shards stored earlier.
    pub fn claim(&mut self, cid: &Cid) -> Result<bool, BackendError> {
        let inner = &self.store.inner;
        let mut pending = lock(&inner.pending);
        if self.claimed.insert(*cid) {
            *pending.entry(*cid).or_insert(0) += 1;
        }
        Ok(inner.backend.get(&key(SHARD, cid))?.is_some())
    }

    /// Verify shard bytes received from elsewhere against `cid`, then store them.
    pub fn put_shard_verified(&mut self, cid: &Cid, data: &[u8]) -> Result<(), PutError> {
        let (hash, outboard) = Outboard::compute(data);
        if cairn_erasure::shard_cid(&hash) != *cid {
            return Err(PutError::Verify {
                cid: cid.to_string(),
                source: cairn_erasure::VerifyError::Whole,
            });
        }
        self.put_shard(
            &ShardMeta {
                cid: *cid,
                hash,
                outboard,
            },
            data,
        )
    }

    /// Make the checkpoint durable and pinned: shards are synced first, then the manifest and
    /// reference counts are written in one atomic, durable batch. Idempotent for a root that
    /// is already pinned.
    pub fn commit(
        self,
        manifest: &Manifest,
        name: &str,
        now_unix: u64,
    ) -> Result<Cid, CommitError> {
        self.commit_inner(manifest, name, now_unix, false, true)
    }

    /// Commit this node's share of a checkpoint placed across a cluster: the manifest is
    /// recorded and every shard of it is referenced, but only the shards this session stored
    /// are held here (the others live on other nodes). Reads of it go through the cluster.
    pub fn commit_partial(
        self,
        manifest: &Manifest,
        name: &str,
        now_unix: u64,
    ) -> Result<Cid, CommitError> {
        self.commit_inner(manifest, name, now_unix, true, true)
    }

    /// [`Self::commit_partial`] for a share another gateway pushed here: not kept by this
    /// node's operator (with a chain it is freed after a grace time unless a deal covers it).
    pub fn commit_received(
        self,
        manifest: &Manifest,
        name: &str,
        now_unix: u64,
    ) -> Result<Cid, CommitError> {
        self.commit_inner(manifest, name, now_unix, true, false)
    }

    fn commit_inner(
        mut self,
        manifest: &Manifest,
        name: &str,
        now_unix: u64,
        partial: bool,
        kept: bool,
    ) -> Result<Cid, CommitError> {
        let (bytes, root) = manifest
            .encode_with_cid()
            .map_err(|e| CommitError::Manifest(e.to_string()))?;
        let inner = &self.store.inner;
        let _guard = lock(&inner.commit);
        let b = &inner.backend;
        let ck = key(CHECKPOINT, &root);
        if self.store.tombstone(&root)?.is_some() {
            return Err(CommitError::Deleted(root.to_string()));
        }
        if let Some(existing) = b.get(&ck)? {
            // Pinned already; an operator's put of a share received earlier keeps it.
            if kept
                && let Ok(r) = decode_record(&existing)
                && !r.kept
            {
                let record = encode_record(r.created, &r.name, r.partial, true, r.manifest);
                b.write(vec![BatchOp::Put(ck, record)], true)?;
            }
            self.committed = true;
            return Ok(root);
        }
        let distinct: BTreeSet<Cid> = manifest.shard_cids().copied().collect();
        let held = |cid: &Cid| -> Result<bool, BackendError> {
            Ok(self.claimed.contains(cid) && b.get(&key(SHARD, cid))?.is_some())
        };
        for cid in &distinct {
            if !partial && !held(cid)? {
                return Err(CommitError::MissingShard(cid.to_string()));
            }
        }
        for cid in &self.claimed {
            if partial && !distinct.contains(cid) {
                return Err(CommitError::Unlisted(cid.to_string()));
            }
        }
        let record = encode_record(now_unix, name, partial, kept, &bytes);
        let needed = record_charge(record.len() as u64);
        let before = inner.used.fetch_add(needed, Ordering::Relaxed);
        if before.saturating_add(needed) > inner.capacity {
            inner.used.fetch_sub(needed, Ordering::Relaxed);
            return Err(CommitError::StoreFull {
                needed,
                used: before,
                capacity: inner.capacity,
            });
        }
        let written = b.sync_blobs().and_then(|()| {
            let mut batch = Vec::with_capacity(distinct.len() + 1);
            for cid in &distinct {
                let rk = key(REFS, cid);
                let n = b.get(&rk)?.and_then(|v| decode_refs(&v)).unwrap_or(0);
                batch.push(BatchOp::Put(rk, encode_refs(n + 1)));
            }
            batch.push(BatchOp::Put(ck, record));
            b.write(batch, true)
        });
        if let Err(e) = written {
            inner.used.fetch_sub(needed, Ordering::Relaxed);
            return Err(e.into());
        }
        self.committed = true;
        Ok(root)
    }
}

impl<B: Backend> Drop for PutSession<B> {
    fn drop(&mut self) {
        let inner = &self.store.inner;
        {
            let mut pending = lock(&inner.pending);
            for cid in &self.claimed {
                if let Some(n) = pending.get_mut(cid) {
                    *n -= 1;
                    if *n == 0 {
                        pending.remove(cid);
                    }
                }
            }
        }
        if self.committed || self.claimed.is_empty() {
            return;
        }
        let _guard = lock(&inner.commit);
        let mut freed = 0usize;
        for cid in &self.claimed {
            match self.store.collect(cid) {
                Ok(true) => freed += 1,
                Ok(false) => {}
                Err(e) => {
                    warn!(%cid, error = %e, "could not remove shard of an abandoned upload; it will be swept at next open")
                }
            }
        }
        debug!(freed, "abandoned upload cleaned up");
    }
}

/// A store over RocksDB in `dir` (tests of the store's records over the real backend).
#[cfg(test)]
pub(crate) fn rocks_store(dir: &std::path::Path) -> Store<crate::RocksBackend> {
    let b = crate::RocksBackend::open(dir, &crate::RocksOptions::default()).expect("rocks");
    Store::open(b, 1 << 30).expect("open")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemBackend;
    use cairn_erasure::{Coder, FileEntry, Layout, encode_stripe};

    fn layout() -> Layout {
        Layout::new(3, 2, 64 * 1024).expect("valid")
    }

    /// Put one file of `data` through the real encoder; returns the manifest.
    fn put_file<B: Backend>(session: &mut PutSession<B>, path: &str, data: &[u8]) -> FileEntry {
        let layout = layout();
        let coder = Coder::new(&layout);
        let mut stripes = Vec::new();
        for chunk in data.chunks(layout.stripe_size() as usize) {
            let enc = encode_stripe(&coder, &layout, chunk.to_vec(), Vec::new());
            let shards = enc.shards_with_bytes();
            session.put_stripe(&shards).expect("put stripe");
            stripes.push(enc.cids());
        }
        FileEntry {
            path: path.into(),
            size: data.len() as u64,
            blake3: blake3::hash(data).as_bytes().to_vec(),
            stripes,
        }
    }

    fn data(len: usize, seed: u8) -> Vec<u8> {
        let mut x = u64::from(seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn put_commit_read_unpin() {
        let store = Store::open(MemBackend::new(), 1 << 30).expect("open");
        let mut s = store.begin_put();
        let f = put_file(&mut s, "a.bin", &data(200_000, 1));
        let m = Manifest::new(&layout(), vec![f]).expect("manifest");
        let root = s.commit(&m, "a", 1).expect("commit");
        assert_eq!(store.manifest(&root).expect("manifest"), m);
        let list = store.list().expect("list");
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].size, 200_000);
        for cid in m.shard_cids() {
            assert_eq!(store.check_shard(cid).expect("check"), ShardStatus::Ok);
        }
        let used = store.stats().used_bytes;
        assert!(used > 200_000);
        let freed = store.unpin(&root).expect("unpin");
        assert_eq!(freed, 4 * 5, "4 stripes of 5 shards");
        assert_eq!(store.stats().used_bytes, 0);
        assert!(matches!(store.manifest(&root), Err(ReadError::NotFound(_))));
        assert!(matches!(store.unpin(&root), Err(UnpinError::NotFound(_))));
    }

    #[test]
    fn partial_commit_holds_only_its_share_and_unpins_cleanly() {
        let store = Store::open(MemBackend::new(), 1 << 30).expect("open");
        // The full checkpoint is coded elsewhere; this node keeps shard 1 of every stripe.
        let elsewhere = Store::open(MemBackend::new(), 1 << 30).expect("open");
        let mut s = elsewhere.begin_put();
        let f = put_file(&mut s, "w.bin", &data(150_000, 4));
        let m = Manifest::new(&layout(), vec![f]).expect("manifest");
        let mut mine = store.begin_put();
        for stripe in &m.files[0].stripes {
            let bytes = elsewhere.read_shard(&stripe[1]).expect("read");
            mine.put_shard_verified(&stripe[1], &bytes).expect("put");
        }
        // Unlisted shards are refused.
        let mut stray = store.begin_put();
        let d = data(5000, 8);
        let enc = encode_stripe(&Coder::new(&layout()), &layout(), d, Vec::new());
        stray.put_shard(&enc.shards[0], enc.shard(0)).expect("put");
        assert!(matches!(
            stray.commit_partial(&m, "x", 4),
            Err(CommitError::Unlisted(_))
        ));
        let root = mine.commit_partial(&m, "share", 3).expect("partial commit");
        let (got, complete) = store.manifest_entry(&root).expect("entry");
        assert_eq!(got, m);
        assert!(!complete);
        assert!(!store.list().expect("list")[0].complete);
        assert_eq!(store.stats().shards, m.files[0].stripes.len() as u64);
        assert_eq!(store.unpin(&root).expect("unpin"), m.files[0].stripes.len());
        assert_eq!(store.stats().shards, 0);
    }

    #[test]
    fn shared_shards_survive_unpin_of_one_checkpoint() {
        let store = Store::open(MemBackend::new(), 1 << 30).expect("open");
        let shared = data(100_000, 7);
        let mut s1 = store.begin_put();
        let f1 = put_file(&mut s1, "shared.bin", &shared);
        let r1 = s1
            .commit(
                &Manifest::new(&layout(), vec![f1.clone()]).expect("m"),
                "one",
                1,
            )
            .expect("commit");
        let mut s2 = store.begin_put();
        let f2 = put_file(&mut s2, "shared.bin", &shared);
        let own = put_file(&mut s2, "own.bin", &data(5000, 9));
        let m2 = Manifest::new(&layout(), vec![f2, own]).expect("m");
        let r2 = s2.commit(&m2, "two", 2).expect("commit");
        store.unpin(&r1).expect("unpin");
        for cid in m2.shard_cids() {
            assert_eq!(
                store.check_shard(cid).expect("check"),
                ShardStatus::Ok,
                "{cid}"
            );
        }
        store.unpin(&r2).expect("unpin");
        assert_eq!(store.stats().shards, 0);
    }

    #[test]
    fn abandoned_upload_leaves_nothing() {
        let store = Store::open(MemBackend::new(), 1 << 30).expect("open");
        {
            let mut s = store.begin_put();
            put_file(&mut s, "x", &data(150_000, 3));
            assert!(store.stats().shards > 0);
        }
        assert_eq!(store.stats().shards, 0);
        assert_eq!(store.stats().used_bytes, 0);
    }

    #[test]
    fn unpin_does_not_collect_shards_claimed_by_an_upload() {
        let store = Store::open(MemBackend::new(), 1 << 30).expect("open");
        let d = data(70_000, 5);
        let mut s1 = store.begin_put();
        let f1 = put_file(&mut s1, "f", &d);
        let r1 = s1
            .commit(&Manifest::new(&layout(), vec![f1]).expect("m"), "", 1)
            .expect("commit");
        // A second upload of the same bytes dedups against the first...
        let mut s2 = store.begin_put();
        let f2 = put_file(&mut s2, "f", &d);
        // ...then the first is unpinned before the second commits.
        store.unpin(&r1).expect("unpin");
        let m2 = Manifest::new(&layout(), vec![f2]).expect("m");
        let r2 = s2.commit(&m2, "", 2).expect("commit");
        assert_eq!(r1, r2);
        for cid in m2.shard_cids() {
            assert_eq!(store.check_shard(cid).expect("check"), ShardStatus::Ok);
        }
    }

    #[test]
    fn full_store_refuses_cleanly() {
        let store = Store::open(MemBackend::new(), 50_000).expect("open");
        let mut s = store.begin_put();
        let layout = layout();
        let enc = encode_stripe(
            &Coder::new(&layout),
            &layout,
            data(64 * 1024, 1),
            Vec::new(),
        );
        let mut err = None;
        for (i, meta) in enc.shards.iter().enumerate() {
            if let Err(e) = s.put_shard(meta, enc.shard(i)) {
                err = Some(e);
                break;
            }
        }
        assert!(matches!(
            err,
            Some(PutError::StoreFull {
                capacity: 50_000,
                ..
            })
        ));
        drop(s);
        assert_eq!(store.stats().used_bytes, 0);

        // The same through the parallel stripe writer: the shards that fit are written, the
        // first refusal is returned, and dropping the upload frees what it wrote.
        let mut s = store.begin_put();
        let shards = enc.shards_with_bytes();
        assert!(matches!(
            s.put_stripe(&shards),
            Err(PutError::StoreFull {
                capacity: 50_000,
                ..
            })
        ));
        assert!(store.stats().used_bytes <= 50_000);
        drop(s);
        assert_eq!(store.stats().used_bytes, 0);
        assert_eq!(store.stats().shards, 0);
    }

    #[test]
    fn received_shares_are_not_kept_until_the_operator_keeps_them() {
        let store = Store::open(MemBackend::new(), 1 << 30).expect("open");
        let mut s = store.begin_put();
        let f = put_file(&mut s, "f", &data(70_000, 3));
        let m = Manifest::new(&layout(), vec![f]).expect("m");
        let root = s.commit_received(&m, "pushed", 1).expect("commit");
        let info = |st: &Store<MemBackend>| st.list().expect("list")[0].clone();
        assert!(!info(&store).kept && !info(&store).complete);
        assert!(!store.keep(&root).expect("keep"), "was not kept before");
        assert!(info(&store).kept);
        assert!(store.keep(&root).expect("keep"), "kept now");
        assert_eq!(
            info(&store).name,
            "pushed",
            "the record is otherwise unchanged"
        );
        assert!(matches!(
            store.keep(&cairn_erasure::manifest_cid(b"nothing")),
            Err(ReadError::NotFound(_))
        ));
        // A complete checkpoint is always kept; a gateway's own share too.
        let mut s = store.begin_put();
        let f = put_file(&mut s, "g", &data(1000, 4));
        let m = Manifest::new(&layout(), vec![f]).expect("m");
        s.commit_partial(&m, "mine", 1).expect("commit");
        assert!(store.list().expect("list").iter().all(|c| c.kept));
    }

    #[test]
    fn tiny_shards_and_manifests_count_against_capacity() {
        // A 1-byte shard costs a block, its outboard and an entry; a manifest costs its record.
        assert_eq!(shard_charge(1, 32), CHARGE_BLOCK + 32 + ENTRY_OVERHEAD);
        assert_eq!(
            shard_charge(CHARGE_BLOCK + 1, 32),
            2 * CHARGE_BLOCK + 32 + ENTRY_OVERHEAD
        );
        let backend = std::sync::Arc::new(MemBackend::new());
        let store = Store::open(backend.clone(), 1 << 20).expect("open");
        let mut s = store.begin_put();
        let f = put_file(&mut s, "tiny", b"x");
        let m = Manifest::new(&layout(), vec![f]).expect("m");
        let shards_only = store.stats().used_bytes;
        let distinct = m.shard_cids().collect::<BTreeSet<_>>().len() as u64;
        assert!(
            shards_only >= distinct * (CHARGE_BLOCK + ENTRY_OVERHEAD),
            "{shards_only}"
        );
        let root = s.commit(&m, "tiny", 1).expect("commit");
        let with_record = store.stats().used_bytes;
        assert!(with_record > shards_only + m.encode().expect("enc").len() as u64);
        // Reopening counts the same; unpinning frees all of it.
        let reopened = Store::open(backend.clone(), 1 << 20).expect("reopen");
        assert_eq!(reopened.stats().used_bytes, with_record);
        store.unpin(&root).expect("unpin");
        assert_eq!(store.stats().used_bytes, 0);
        // A manifest that does not fit is refused, and nothing stays counted.
        let full = Store::open(MemBackend::new(), shards_only + 10).expect("open");
        let mut s = full.begin_put();
        let f = put_file(&mut s, "tiny", b"x");
        let m = Manifest::new(&layout(), vec![f]).expect("m");
        assert!(matches!(
            s.commit(&m, "tiny", 1),
            Err(CommitError::StoreFull { .. })
        ));
        assert_eq!(full.stats().used_bytes, 0);
    }

    #[test]
    fn a_stripe_of_identical_shards_is_stored_once() {
        // All-zero data codes into k + m identical shards: one copy is written, indexed and
        // counted, so a store with room for exactly one copy takes the stripe.
        let layout = layout();
        let enc = encode_stripe(&Coder::new(&layout), &layout, vec![0; 60_000], Vec::new());
        assert!(enc.shards.iter().all(|s| s.cid == enc.shards[0].cid));
        let one = shard_charge(
            enc.shard(0).len() as u64,
            enc.shards[0].outboard.encoded_len() as u64,
        );
        let store = Store::open(MemBackend::new(), one).expect("open");
        let shards = enc.shards_with_bytes();
        let mut s = store.begin_put();
        s.put_stripe(&shards).expect("put stripe");
        assert_eq!(store.stats().shards, 1);
        assert_eq!(store.stats().used_bytes, one);
        assert_eq!(
            store.check_shard(&enc.shards[0].cid).expect("check"),
            ShardStatus::Ok
        );
        drop(s);
        assert_eq!(store.stats().shards, 0);
        assert_eq!(store.stats().used_bytes, 0);
    }

    #[test]
    fn corrupt_and_missing_bytes_are_reported_never_returned() {
        let store = Store::open(MemBackend::new(), 1 << 30).expect("open");
        let mut s = store.begin_put();
        let f = put_file(&mut s, "a", &data(200_000, 2));
        let m = Manifest::new(&layout(), vec![f]).expect("m");
        s.commit(&m, "", 1).expect("commit");
        let cids: Vec<Cid> = m.shard_cids().copied().collect();
        assert!(store.backend().flip_blob_byte(&cids[0].to_bytes(), 12345));
        assert!(matches!(
            store.read_shard(&cids[0]),
            Err(ReadError::Corrupt { .. })
        ));
        assert!(matches!(
            store.read_shard_range(&cids[0], 12000, 12500),
            Err(ReadError::Corrupt { .. })
        ));
        // A range in an untouched group still reads.
        let len = store.shard_len(&cids[0]).expect("len");
        assert!(len > 17_100);
        store
            .read_shard_range(&cids[0], 17_000, 17_100)
            .expect("other group verifies");
        assert!(store.backend().drop_blob(&cids[1].to_bytes()));
        assert!(matches!(
            store.read_shard(&cids[1]),
            Err(ReadError::Corrupt { .. })
        ));
        assert_eq!(store.stats().corrupt_reads, 3);
        // Repair restores it.
        let good = store.read_shard(&cids[2]).expect("intact");
        store
            .repair_shard(&cids[2], &good)
            .expect("repair with own bytes");
        assert!(
            store.repair_shard(&cids[1], &good).is_err(),
            "wrong bytes refused"
        );
    }

    #[test]
    fn two_uploads_of_the_same_bytes_share_shards_and_a_reupload_restores_lost_bytes() {
        let store = Store::open(MemBackend::new(), 1 << 30).expect("open");
        let d = data(70_000, 11);
        let mut s1 = store.begin_put();
        let mut s2 = store.begin_put();
        let f1 = put_file(&mut s1, "f", &d);
        let f2 = put_file(&mut s2, "f", &d);
        let m = Manifest::new(&layout(), vec![f1]).expect("m");
        let shards = m.shard_cids().collect::<BTreeSet<_>>().len() as u64;
        assert_eq!(store.stats().shards, shards);
        let root = s1.commit(&m, "", 1).expect("commit");
        let used = store.stats().used_bytes;
        drop(s2);
        assert_eq!(
            store.stats().used_bytes,
            used,
            "the abandoned twin freed nothing in use"
        );
        drop(f2);
        // Lose a shard's bytes; a new upload of the same content restores them.
        let lost = *m.shard_cids().next().expect("a shard");
        assert!(store.backend().drop_blob(&lost.to_bytes()));
        assert_eq!(
            store.check_shard(&lost).expect("check"),
            ShardStatus::Corrupt("shard bytes are missing".into())
        );
        let mut s3 = store.begin_put();
        let f3 = put_file(&mut s3, "f", &d);
        let root3 = s3
            .commit(&Manifest::new(&layout(), vec![f3]).expect("m"), "", 2)
            .expect("commit");
        assert_eq!(root, root3);
        assert_eq!(store.check_shard(&lost).expect("check"), ShardStatus::Ok);
        assert_eq!(store.stats().used_bytes, used);
        store.unpin(&root).expect("unpin");
        assert_eq!(store.stats().used_bytes, 0);
    }

    #[test]
    fn received_shards_are_verified_before_they_are_stored() {
        let store = Store::open(MemBackend::new(), 1 << 30).expect("open");
        let mut s = store.begin_put();
        let good = data(40_000, 3);
        let cid = cairn_erasure::shard_cid(&blake3::hash(&good));
        let mut bad = good.clone();
        bad[39_999] ^= 1;
        assert!(matches!(
            s.put_shard_verified(&cid, &bad),
            Err(PutError::Verify { .. })
        ));
        assert_eq!(store.stats().shards, 0);
        s.put_shard_verified(&cid, &good).expect("matching bytes");
        assert_eq!(store.read_shard(&cid).expect("read"), good);
    }

    #[test]
    fn reopen_sweeps_uncommitted_shards() {
        let backend = std::sync::Arc::new(MemBackend::new());
        // Simulate a crash: shards written, session leaked (never committed, never dropped).
        let store = Store::open(backend.clone(), 1 << 30).expect("open");
        let mut s = store.begin_put();
        put_file(&mut s, "a", &data(100_000, 4));
        std::mem::forget(s);
        backend.put_blob(b"stray", b"junk").expect("stray blob");
        drop(store);
        let store = Store::open(backend.clone(), 1 << 30).expect("reopen");
        assert_eq!(store.stats().shards, 0);
        let mut blobs = 0;
        backend.list_blobs(&mut |_| blobs += 1).expect("list");
        assert_eq!(blobs, 0);
    }
}
