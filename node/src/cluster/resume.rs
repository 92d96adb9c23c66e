//! Resumable puts: what the gateway keeps of a put that may be cut off, and how a later run of
//! the same put (the same upload key) goes on from it.
//!
//! The gateway stages a head record (salt, upload id, parameters) before the first stripe and
//! one record per placed stripe (where its shards went, its part of the file hash and of the
//! deal trees, and the body offset after it), in its store under the upload key. The shards it
//! kept itself are referenced by those records, so they outlive the put and a restart. The
//! other nodes hold theirs in the upload session (keyed by this node and the upload id) until
//! it idles out (`storage.upload_idle_secs`). A later run rebuilds the encoder's state and the
//! placement from the records and asks the client for the body from the next stripe on. The
//! manifest, and so the root, is the one an uninterrupted put with the same salt makes.

use std::collections::HashMap;

use cairn_erasure::{Cid, FileEntry, FileHash, Layout, StripeHash, parse_shard_cid};
use cairn_proofs::tree::{NODE_SIZE, Node};
use cairn_storage::{Backend, ReadError, StagedRecord, Store, UPLOAD_KEY_LEN};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::net::wire::UploadId;
use crate::pipeline::{PartialFile, Resume, StripeMark, tar_padded};

/// The key a client names a resumable upload by (derived from what it uploads).
pub type UploadKey = [u8; UPLOAD_KEY_LEN];

/// Version of the records' payloads.
const RECORD_VERSION: u8 = 1;

/// The head record's sequence number; stripes follow from 1.
const HEAD_SEQ: u64 = 0;

/// What a put is, as its head record keeps it: a later run must ask for the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutParams {
    pub k: u8,
    pub m: u8,
    pub stripe_size: u64,
    /// The single file's name (`None`: a tar archive of a folder).
    pub path: Option<String>,
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Head {
    version: u8,
    params: PutParams,
    salt: String,
    upload_id: String,
    /// Set once the put committed: a later run of it answers this instead of uploading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    done: Option<Done>,
}

/// What a committed put stored (kept under its key for a while, for a client that went away
/// before the answer came).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    pub root: String,
    pub files: usize,
    pub size: u64,
    pub stripes: u64,
    pub shards: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct StripeRecord {
    version: u8,
    path: String,
    file_end: u64,
    file_size: Option<u64>,
    body_end: u64,
    cv: String,
    first_root: Option<String>,
    empty_before: Vec<String>,
    cids: Vec<String>,
    /// The node holding each shard.
    placed: Vec<String>,
    /// Second copies that landed: (shard index, node).
    extra: Vec<(usize, String)>,
    /// Cancelled copies that may have landed: (shard index, node).
    maybe: Vec<(usize, String)>,
    /// Each shard's 64 KiB chunk roots, when the put makes deals.
    deal_roots: Option<Vec<String>>,
}

/// A resumable upload's records could not be read or written.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ResumeError {
    #[error("cannot read the interrupted upload: {0}")]
    Read(#[from] ReadError),
    #[error("cannot write the upload's progress: {0}")]
    Write(#[from] cairn_storage::BackendError),
    #[error("the interrupted upload's record {seq} is unreadable: {reason}")]
    Corrupt { seq: u64, reason: String },
}

/// An interrupted upload, rebuilt from its records.
#[derive(Debug, Default)]
pub struct Resumed {
    pub params: Option<PutParams>,
    /// The put committed already.
    pub done: Option<Done>,
    pub salt: Vec<u8>,
    pub upload_id: UploadId,
    /// Stripes placed.
    pub stripes: u64,
    /// Bytes of file data placed.
    pub bytes: u64,
    pub resume: Resume,
    /// Every stripe's placement, in order.
    pub placements: Vec<Placement>,
    /// Chunk roots of every shard, when the put makes deals.
    pub deal_roots: HashMap<Cid, Vec<Node>>,
}

/// Where one recorded stripe's shards went.
#[derive(Debug, Clone)]
pub struct Placement {
    pub cids: Vec<Cid>,
    /// Bytes of each of the stripe's shards.
    pub shard_len: u64,
    pub placed: Vec<PeerId>,
    pub extra: Vec<(usize, PeerId)>,
    pub maybe: Vec<(usize, PeerId)>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// An upload key as 64 hex digits.
pub fn key_hex(key: &UploadKey) -> String {
    hex(key)
}

/// Parse an upload key given as 64 hex digits.
pub fn parse_key(s: &str) -> Option<UploadKey> {
    unhex(s)?.try_into().ok()
}

/// Start recording a put (replacing any records under `key`).
pub fn begin<B: Backend>(
    store: &Store<B>,
    key: &UploadKey,
    params: &PutParams,
    salt: &[u8],
    upload_id: &UploadId,
    now: u64,
) -> Result<(), ResumeError> {
    store.drop_upload(key)?;
    let head = Head {
        version: RECORD_VERSION,
        params: params.clone(),
        salt: hex(salt),
        upload_id: hex(upload_id),
        done: None,
    };
    let bytes = serde_json::to_vec(&head).expect("a head record serializes");
    store.stage_upload(key, HEAD_SEQ, now, &[], &bytes)?;
    Ok(())
}

/// A placed stripe, to be recorded (with a put that makes deals, by the stage that hashes its
/// deal trees, once it has them: a record never lacks the roots a resumed put's deals need).
pub struct PlacedStripe {
    /// The stripe's number (from 0).
    pub stripe: u64,
    pub cids: Vec<Cid>,
    /// The node holding each shard.
    pub placed: Vec<PeerId>,
    /// Second copies that landed: (shard index, node).
    pub extra: Vec<(usize, PeerId)>,
    /// Cancelled copies that may have landed: (shard index, node).
    pub maybe: Vec<(usize, PeerId)>,
    /// The shards this node kept.
    pub kept: Vec<Cid>,
}

/// Record a placed stripe, with each shard's 64 KiB chunk roots when the put makes deals.
pub fn record<B: Backend>(
    store: &Store<B>,
    key: &UploadKey,
    s: &PlacedStripe,
    mark: &StripeMark,
    deal_roots: Option<&[Vec<Node>]>,
    now: u64,
) -> Result<(), ResumeError> {
    let peer = |p: &PeerId| p.to_string();
    let hash = mark.hash.as_ref();
    let rec = StripeRecord {
        version: RECORD_VERSION,
        path: mark.path.clone(),
        file_end: mark.file_end,
        file_size: mark.file_size,
        body_end: mark.body_end,
        cv: hash.map(|h| hex(&h.cv)).unwrap_or_default(),
        first_root: hash.and_then(|h| h.root.map(|r| hex(r.as_slice()))),
        empty_before: mark.empty_before.clone(),
        cids: s.cids.iter().map(ToString::to_string).collect(),
        placed: s.placed.iter().map(peer).collect(),
        extra: s.extra.iter().map(|(i, p)| (*i, peer(p))).collect(),
        maybe: s.maybe.iter().map(|(i, p)| (*i, peer(p))).collect(),
        deal_roots: deal_roots.map(|all| all.iter().map(|r| hex(r.as_flattened())).collect()),
    };
    let bytes = serde_json::to_vec(&rec).expect("a stripe record serializes");
    store.stage_upload(key, HEAD_SEQ + 1 + s.stripe, now, &s.kept, &bytes)?;
    Ok(())
}

/// Forget a put's records (it committed, or failed for good); frees the shards only they kept.
pub fn forget<B: Backend>(store: &Store<B>, key: &UploadKey) -> Result<usize, ResumeError> {
    Ok(store.drop_upload(key)?)
}

/// The put committed: its stripe records (and their hold on this node's shards) go, and what
/// it stored is kept under its key until it expires.
pub fn complete<B: Backend>(
    store: &Store<B>,
    key: &UploadKey,
    params: &PutParams,
    done: Done,
    now: u64,
) -> Result<(), ResumeError> {
    store.drop_upload(key)?;
    let head = Head {
        version: RECORD_VERSION,
        params: params.clone(),
        salt: String::new(),
        upload_id: String::new(),
        done: Some(done),
    };
    let bytes = serde_json::to_vec(&head).expect("a head record serializes");
    store.stage_upload(key, HEAD_SEQ, now, &[], &bytes)?;
    Ok(())
}

fn corrupt(seq: u64, reason: impl Into<String>) -> ResumeError {
    ResumeError::Corrupt {
        seq,
        reason: reason.into(),
    }
}

/// The interrupted upload under `key`, if there is one.
pub fn load<B: Backend>(store: &Store<B>, key: &UploadKey) -> Result<Option<Resumed>, ResumeError> {
    let records = store.staged_upload(key)?;
    let Some((head, stripes)) = records.split_first() else {
        return Ok(None);
    };
    if head.seq != HEAD_SEQ {
        return Err(corrupt(head.seq, "the head record is missing"));
    }
    let h: Head =
        serde_json::from_slice(&head.payload).map_err(|e| corrupt(HEAD_SEQ, e.to_string()))?;
    if let Some(done) = h.done {
        return Ok(Some(Resumed {
            params: Some(h.params),
            done: Some(done),
            ..Resumed::default()
        }));
    }
    let upload_id: UploadId = unhex(&h.upload_id)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| corrupt(HEAD_SEQ, "bad upload id"))?;
    let layout = Layout::new(h.params.k, h.params.m, h.params.stripe_size)
        .map_err(|e| corrupt(HEAD_SEQ, e.to_string()))?;
    let mut out = Resumed {
        salt: unhex(&h.salt).ok_or_else(|| corrupt(HEAD_SEQ, "bad salt"))?,
        upload_id,
        params: Some(h.params),
        ..Resumed::default()
    };
    rebuild(&layout, stripes, &mut out)?;
    Ok(Some(out))
}

fn rebuild(
    layout: &Layout,
    stripes: &[StagedRecord],
    out: &mut Resumed,
) -> Result<(), ResumeError> {
    let mut files: Vec<FileEntry> = Vec::new();
    let mut partial: Option<PartialFile> = None;
    let mut body = 0u64;
    let empty = |path: &str| FileEntry {
        path: path.to_owned(),
        size: 0,
        blake3: blake3::hash(b"").as_bytes().to_vec(),
        stripes: Vec::new(),
    };
    for (n, r) in stripes.iter().enumerate() {
        if r.seq != HEAD_SEQ + 1 + n as u64 {
            return Err(corrupt(r.seq, "a stripe record is missing before it"));
        }
        let bad = |why: &str| corrupt(r.seq, why);
        let rec: StripeRecord =
            serde_json::from_slice(&r.payload).map_err(|e| corrupt(r.seq, e.to_string()))?;
        let peer = |s: &str| s.parse::<PeerId>().map_err(|_| bad("bad peer id"));
        let cids = rec
            .cids
            .iter()
            .map(|c| parse_shard_cid(c).map_err(|_| bad("bad cid")))
            .collect::<Result<Vec<Cid>, _>>()?;
        let placed = rec
            .placed
            .iter()
            .map(|p| peer(p))
            .collect::<Result<Vec<_>, _>>()?;
        if cids.len() != layout.total() || placed.len() != cids.len() {
            return Err(bad("wrong shard count"));
        }
        let pairs = |v: &[(usize, String)]| {
            v.iter()
                .map(|(i, p)| {
                    if *i < cids.len() {
                        Ok((*i, peer(p)?))
                    } else {
                        Err(bad("shard index out of range"))
                    }
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let (extra, maybe) = (pairs(&rec.extra)?, pairs(&rec.maybe)?);
        if let Some(roots) = &rec.deal_roots {
            if roots.len() != cids.len() {
                return Err(bad("wrong deal root count"));
            }
            for (c, r) in cids.iter().zip(roots) {
                let bytes = unhex(r).ok_or_else(|| bad("bad deal roots"))?;
                let nodes = bytes
                    .chunks_exact(NODE_SIZE)
                    .map(|n| n.try_into().expect("exact chunks"))
                    .collect();
                out.deal_roots.insert(*c, nodes);
            }
        }
        for e in &rec.empty_before {
            files.push(empty(e));
        }
        let cv: [u8; 32] = unhex(&rec.cv)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("bad chaining value"))?;
        let root = match &rec.first_root {
            Some(r) => Some(
                unhex(r)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| bad("bad root"))?,
            ),
            None => None,
        };
        let same_file = partial.as_ref().is_some_and(|p| p.path == rec.path);
        if !same_file {
            if let Some(p) = partial.take() {
                if p.size != Some(p.hash.len()) {
                    return Err(bad("a file ended before its size"));
                }
                files.push(finish(p));
            }
            partial = Some(PartialFile {
                path: rec.path.clone(),
                size: rec.file_size,
                stripes: Vec::new(),
                hash: FileHash::new(layout.stripe_size())
                    .ok_or_else(|| bad("this stripe size cannot be resumed"))?,
            });
        }
        let p = partial.as_mut().expect("a file is open");
        let len = rec
            .file_end
            .checked_sub(p.hash.len())
            .ok_or_else(|| bad("file offset"))?;
        if len == 0 || len > layout.stripe_size() {
            return Err(bad("stripe length"));
        }
        p.hash.push(len, StripeHash { cv, root });
        p.stripes.push(cids.clone());
        out.bytes += len;
        body = rec.body_end;
        out.placements.push(Placement {
            cids,
            shard_len: layout.shard_len(len),
            placed,
            extra,
            maybe,
        });
    }
    out.stripes = stripes.len() as u64;
    // An archive entry whose last stripe was placed is whole: the body goes on after its
    // padding with the next entry.
    if let Some(p) = partial.take_if(|p| p.size == Some(p.hash.len())) {
        let size = p.hash.len();
        body += tar_padded(size) - size;
        files.push(finish(p));
    }
    out.resume = Resume {
        body_offset: body,
        files,
        partial,
    };
    Ok(())
}

fn finish(p: PartialFile) -> FileEntry {
    FileEntry {
        path: p.path,
        size: p.hash.len(),
        blake3: p.hash.finish().as_bytes().to_vec(),
        stripes: p.stripes,
    }
}

/// Which records expire: the uploads staged here last written before `cutoff` (unix s).
pub fn expired<B: Backend>(store: &Store<B>, cutoff: u64) -> Vec<UploadKey> {
    match store.staged_uploads() {
        Ok(all) => all
            .into_iter()
            .filter(|(_, at)| *at < cutoff)
            .map(|(k, _)| k)
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list interrupted uploads");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_storage::MemBackend;

    use crate::pipeline::{IngestError, Upload, encode};

    /// A body that fails after `cut` bytes, as a dropped connection does.
    struct CutOff<'a> {
        data: &'a [u8],
        at: usize,
        cut: usize,
    }

    impl std::io::Read for CutOff<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.at >= self.cut {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "client went away",
                ));
            }
            let n = buf
                .len()
                .min(self.cut - self.at)
                .min(self.data.len() - self.at);
            if n == 0 {
                return Ok(0);
            }
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    fn bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut v = vec![0u8; len];
        crate::sample::fill_random(&mut (seed | 1), &mut v);
        v
    }

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (p, d) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(d.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, p, *d).expect("append");
        }
        b.into_inner().expect("tar")
    }

    /// Run an upload cut off after each of `cuts` body bytes in turn (each run resuming from
    /// the records the earlier ones left), then to its end; returns the manifest and the body
    /// bytes read in all (the excess over the body is what was sent again).
    fn cut_and_resume(tar: bool, body: &[u8], cuts: &[usize]) -> (cairn_erasure::Manifest, u64) {
        let layout = Layout::new(2, 1, 4096).expect("layout");
        let store = Store::open(MemBackend::new(), 1 << 30).expect("store");
        let key = [3u8; 32];
        let params = PutParams {
            k: 2,
            m: 1,
            stripe_size: 4096,
            path: (!tar).then(|| "w.bin".to_owned()),
            name: "w".into(),
        };
        begin(&store, &key, &params, &[9; 32], &[1; 16], 0).expect("begin");
        let me = PeerId::random();
        let mut sent = 0u64;
        let mut run = |cut: usize| -> Result<cairn_erasure::Manifest, IngestError> {
            let from = load(&store, &key).expect("load").expect("head");
            let mut stripe = from.stripes;
            let start = usize::try_from(from.resume.body_offset).expect("offset");
            sent += (cut.min(body.len()) - start.min(cut)) as u64;
            let reader = CutOff {
                data: &body[start..],
                at: 0,
                cut: cut.saturating_sub(start),
            };
            let upload = if tar {
                Upload::Tar(reader)
            } else {
                Upload::File {
                    path: "w.bin".into(),
                    reader,
                }
            };
            encode(layout, upload, from.resume, &|_| {}, &mut |enc, mark| {
                let s = PlacedStripe {
                    stripe,
                    cids: enc.cids(),
                    placed: vec![me; enc.shards.len()],
                    extra: Vec::new(),
                    maybe: Vec::new(),
                    kept: Vec::new(),
                };
                record(&store, &key, &s, mark, None, 0)
                    .map_err(|e| IngestError::Progress(e.to_string()))?;
                stripe += 1;
                Ok(())
            })
        };
        for &cut in cuts {
            match run(cut) {
                Err(IngestError::Body(_)) => {}
                other => panic!("a cut at {cut} was not a body error: {other:?}"),
            }
        }
        let m = run(usize::MAX).expect("the last run completes");
        (m, sent)
    }

    fn whole(tar: bool, body: &[u8]) -> cairn_erasure::Manifest {
        cut_and_resume(tar, body, &[]).0
    }

    #[test]
    fn a_file_cut_anywhere_resumes_to_the_same_manifest() {
        let data = bytes(4096 * 5 + 1000, 1);
        let uncut = whole(false, &data);
        assert_eq!(uncut.files[0].hash(), blake3::hash(&data));
        for cuts in [
            vec![1],
            vec![4096],
            vec![5000, 9000],
            vec![4096 * 5],
            vec![4096 * 5 + 999],
            vec![100, 8192, 8193, 20000],
        ] {
            let (m, sent) = cut_and_resume(false, &data, &cuts);
            assert_eq!(m, uncut, "cut at {cuts:?}");
            // Each run loses at most the stripe it was reading.
            let again = sent - data.len() as u64;
            assert!(
                again <= 4096 * cuts.len() as u64,
                "{again} bytes sent again for {cuts:?}"
            );
        }
    }

    #[test]
    fn a_folder_cut_anywhere_resumes_to_the_same_manifest() {
        let (a, b, c) = (bytes(10_000, 2), bytes(4096, 3), bytes(300, 4));
        let body = tar_of(&[
            ("a.bin", &a),
            ("e1", b""),
            ("b.bin", &b),
            ("e2", b""),
            ("c.bin", &c),
        ]);
        let uncut = whole(true, &body);
        assert_eq!(uncut.files.len(), 5);
        let by_path = |p: &str| uncut.files.iter().find(|f| f.path == p).expect("file");
        assert_eq!(by_path("b.bin").hash(), blake3::hash(&b));
        assert_eq!(by_path("a.bin").hash(), blake3::hash(&a));
        assert_eq!(by_path("e2").hash(), blake3::hash(b""));
        // Cut points one at a time, and a few in a row (a reader stops at the archive's first
        // end block: a cut in the second one is not seen).
        for cut in (1..body.len() - 512).step_by(97) {
            let (m, _) = cut_and_resume(true, &body, &[cut]);
            assert_eq!(m, uncut, "cut at {cut}");
        }
        let (m, _) = cut_and_resume(true, &body, &[700, 5000, 9000, 13000, 15000]);
        assert_eq!(m, uncut);
    }

    #[test]
    fn records_that_do_not_follow_each_other_are_refused() {
        let store = Store::open(MemBackend::new(), 1 << 30).expect("store");
        let key = [4u8; 32];
        let params = PutParams {
            k: 2,
            m: 1,
            stripe_size: 4096,
            path: None,
            name: "x".into(),
        };
        begin(&store, &key, &params, &[1; 32], &[2; 16], 0).expect("begin");
        assert_eq!(load(&store, &key).expect("load").expect("head").stripes, 0);
        store.stage_upload(&key, 5, 0, &[], b"{}").expect("stage");
        assert!(load(&store, &key).is_err(), "a gap before record 5");
        forget(&store, &key).expect("forget");
        assert!(load(&store, &key).expect("load").is_none());
    }
}
