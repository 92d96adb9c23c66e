//! The put and get data paths, synchronous: they run on blocking threads and do CPU work
//! (coding, hashing) and store I/O. The HTTP layer feeds them through bounded channels.

use std::io::Read;
use std::time::{SystemTime, UNIX_EPOCH};

use cairn_erasure::manifest::validate_path;
use cairn_erasure::stripe::decode_stripe;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use cairn_erasure::{
    Cid, Coder, EncodedStripe, FileEntry, Layout, Manifest, ManifestError, Stripe,
};
use cairn_storage::{Backend, CommitError, PutError, ReadError, Store};
use thiserror::Error;

/// An upload could not be stored.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum IngestError {
    #[error("upload body ended early or could not be read: {0}")]
    Body(std::io::Error),
    #[error("invalid archive: {0}")]
    Archive(String),
    #[error(
        "unsupported entry {path:?} in archive: only regular files and directories are accepted"
    )]
    EntryType { path: String },
    #[error("path {0:?} appears twice in the upload")]
    DuplicatePath(String),
    #[error("upload contains no files")]
    Empty,
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Put(#[from] PutError),
    #[error(transparent)]
    Commit(#[from] CommitError),
    /// The shard writer stopped before the encoder (its own error is reported instead).
    #[error("internal: the shard writer stopped early")]
    WriterStopped,
    /// The cluster has fewer nodes than a stripe has shards.
    #[error(
        "{live} nodes are reachable but a stripe has {needed} shards that must sit on distinct \
         nodes: start at least {needed} nodes, or allow co-location (network.allow_colocation)"
    )]
    TooFewNodes { live: usize, needed: usize },
    /// Shards could not be placed on the cluster.
    #[error("could not place shards: {0}")]
    Placement(String),
    /// This node may not place shards on the network.
    #[error("{0}")]
    NotMember(String),
}

/// What an upload carries.
pub enum Upload<R> {
    /// One file, stored under `path`.
    File { path: String, reader: R },
    /// A tar archive of a folder.
    Tar(R),
}

/// A stripe buffer and its parity shards, recycled between stripes (fresh 64 MiB allocations
/// are page-faulted in, which costs as much as the coding on some machines).
type Buffers = (Vec<u8>, Vec<Vec<u8>>);

/// How many stripes' buffers an upload may hold: one being coded, one being written.
const STRIPES_IN_FLIGHT: usize = 2;

/// Threads that code one stripe: every core, up to a point (beyond it the whole-file hash,
/// which runs beside them on one thread, and the writes set the pace).
fn coding_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_CODING_THREADS))
}

/// Upper bound of [`coding_threads`].
const MAX_CODING_THREADS: usize = 8;

/// Cuts files into stripes and codes them; finished stripes go to the writer thread, which
/// stores their shards and hands the buffers back.
struct Encoder<'a> {
    layout: Layout,
    coder: Coder,
    /// Threads that code a stripe ([`coding_threads`]).
    threads: usize,
    to_writer: SyncSender<EncodedStripe>,
    returned: Receiver<Buffers>,
    spare: Vec<Buffers>,
    allocated: usize,
    progress: &'a dyn Fn(u64),
}

impl Encoder<'_> {
    fn buffers(&mut self) -> Result<Buffers, IngestError> {
        if let Some(b) = self.spare.pop() {
            return Ok(b);
        }
        if self.allocated < STRIPES_IN_FLIGHT {
            self.allocated += 1;
            let cap = usize::try_from(self.layout.stripe_size()).expect("stripe size <= 1 GiB")
                + self.layout.k();
            return Ok((Vec::with_capacity(cap), Vec::new()));
        }
        self.returned.recv().map_err(|_| IngestError::WriterStopped)
    }

    fn file(&mut self, path: &str, reader: &mut dyn Read) -> Result<FileEntry, IngestError> {
        validate_path(path)?;
        let stripe_size = usize::try_from(self.layout.stripe_size()).expect("stripe size <= 1 GiB");
        let mut hasher = blake3::Hasher::new();
        let mut size = 0u64;
        let mut stripes = Vec::new();
        loop {
            let (mut buf, parity) = self.buffers()?;
            buf.clear();
            let n = reader
                .take(stripe_size as u64)
                .read_to_end(&mut buf)
                .map_err(IngestError::Body)?;
            if n == 0 {
                self.spare.push((buf, parity));
                break;
            }
            size += n as u64;
            // The whole-file hash runs beside the stripe's coding and shard hashing: both
            // only read the stripe.
            let stripe = Stripe::new(&self.layout, buf);
            let coded = std::thread::scope(|s| {
                s.spawn(|| {
                    hasher.update(stripe.bytes());
                });
                stripe.code_parallel(&self.coder, &self.layout, parity, self.threads)
            });
            let enc = stripe.finish(coded);
            stripes.push(enc.cids());
            self.to_writer
                .send(enc)
                .map_err(|_| IngestError::WriterStopped)?;
            (self.progress)(n as u64);
            if n < stripe_size {
                break;
            }
        }
        Ok(FileEntry {
            path: path.to_owned(),
            size,
            blake3: hasher.finalize().as_bytes().to_vec(),
            stripes,
        })
    }
}

/// Hand every stripe it receives to `sink` (which stores its shards), then return the buffers.
fn write_stripes(
    sink: &mut dyn FnMut(&EncodedStripe) -> Result<(), IngestError>,
    stripes: Receiver<EncodedStripe>,
    returned: SyncSender<Buffers>,
) -> Result<(), IngestError> {
    for enc in stripes {
        sink(&enc)?;
        // The encoder may have finished already; then nobody needs the buffers.
        let _ = returned.send(enc.into_buffers());
    }
    Ok(())
}

/// Records the first error the underlying reader returned, so that a truncated upload is told
/// apart from a malformed archive.
struct Tracked<R> {
    inner: R,
    failed: Option<std::io::ErrorKind>,
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            self.failed.get_or_insert(e.kind());
        })
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Store an upload and commit it as a pinned checkpoint. Nothing is pinned unless every byte
/// arrived and every shard was stored; on error, the shards written so far are removed.
/// `progress` is called with the number of file bytes stored after each stripe.
pub fn ingest<B: Backend, R: Read>(
    store: &Store<B>,
    layout: Layout,
    upload: Upload<R>,
    name: &str,
    progress: &dyn Fn(u64),
) -> Result<(Cid, Manifest), IngestError> {
    let mut session = store.begin_put();
    let manifest = encode(layout, upload, progress, &mut |enc| {
        let shards = enc.shards_with_bytes();
        Ok(session.put_stripe(&shards)?)
    })?;
    let root = session.commit(&manifest, name, now_unix())?;
    Ok((root, manifest))
}

/// Cut an upload into stripes and code them; `sink` stores each stripe's shards on a second
/// thread while the next stripe is coded. Returns the manifest once every stripe was stored.
pub fn encode<R: Read>(
    layout: Layout,
    upload: Upload<R>,
    progress: &dyn Fn(u64),
    sink: &mut (dyn FnMut(&EncodedStripe) -> Result<(), IngestError> + Send),
) -> Result<Manifest, IngestError> {
    let (to_writer, stripes) = sync_channel::<EncodedStripe>(0);
    let (to_encoder, returned) = sync_channel::<Buffers>(STRIPES_IN_FLIGHT);
    let (files, written) = std::thread::scope(|s| {
        let writer = s.spawn(move || write_stripes(sink, stripes, to_encoder));
        let mut enc = Encoder {
            layout,
            coder: Coder::new(&layout),
            threads: coding_threads(),
            to_writer,
            returned,
            spare: Vec::new(),
            allocated: 0,
            progress,
        };
        let files = encode_upload(&mut enc, upload);
        drop(enc); // closes the channel: the writer drains what is left and stops
        let written = writer.join().expect("the shard writer does not panic");
        (files, written)
    });
    // A storage error stops the writer first; the encoder then only saw it stop.
    written?;
    let files = files?;
    if files.is_empty() {
        return Err(IngestError::Empty);
    }
    Ok(Manifest::new(&layout, files)?)
}

/// Read every file of an upload and send its stripes to the writer.
fn encode_upload<R: Read>(
    enc: &mut Encoder<'_>,
    upload: Upload<R>,
) -> Result<Vec<FileEntry>, IngestError> {
    let mut files = Vec::new();
    match upload {
        Upload::File { path, reader } => {
            let mut reader = reader;
            files.push(enc.file(&path, &mut reader)?);
        }
        Upload::Tar(reader) => {
            let mut archive = tar::Archive::new(Tracked {
                inner: reader,
                failed: None,
            });
            let mut seen = std::collections::BTreeSet::new();
            let result = (|| -> Result<(), IngestError> {
                let archive_err = |e: std::io::Error| IngestError::Archive(e.to_string());
                for entry in archive.entries().map_err(archive_err)? {
                    let mut entry = entry.map_err(archive_err)?;
                    let kind = entry.header().entry_type();
                    let raw = entry.path().map_err(archive_err)?;
                    let path = raw.to_string_lossy().replace('\\', "/");
                    let path = path
                        .trim_start_matches("./")
                        .trim_end_matches('/')
                        .to_owned();
                    if kind.is_dir() || path.is_empty() {
                        continue;
                    }
                    if !kind.is_file() {
                        return Err(IngestError::EntryType { path });
                    }
                    if !seen.insert(path.clone()) {
                        return Err(IngestError::DuplicatePath(path));
                    }
                    files.push(enc.file(&path, &mut entry)?);
                }
                Ok(())
            })();
            if let Err(e) = result {
                let failed = archive.into_inner().failed;
                return Err(match (failed, e) {
                    (Some(kind), e @ (IngestError::Archive(_) | IngestError::Body(_))) => {
                        IngestError::Body(std::io::Error::new(kind, e.to_string()))
                    }
                    (_, e) => e,
                });
            }
        }
    }
    Ok(files)
}

/// A read that cannot be served.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum GetError {
    /// Too few intact shards remain in a stripe.
    #[error(
        "stripe {stripe} of {path:?} cannot be reconstructed: {available} of {total} shards intact, {needed} needed ({detail})"
    )]
    Unrecoverable {
        path: String,
        stripe: u64,
        available: usize,
        needed: usize,
        total: usize,
        detail: String,
    },
    /// Reconstruction produced bytes that do not match the manifest (should not happen).
    #[error("stripe {stripe} of {path:?}: reconstructed shard {shard} does not match its cid")]
    Reconstructed {
        path: String,
        stripe: u64,
        shard: usize,
    },
    #[error(transparent)]
    Store(#[from] ReadError),
    #[error(transparent)]
    Backend(#[from] cairn_storage::BackendError),
}

/// How many pieces (data-shard ranges, up to one shard each) a read asks the disk for ahead.
const PREFETCH_PIECES: usize = 2;

/// Reads files of one checkpoint, verified, reconstructing stripes from parity when needed.
pub struct FileReader<'a, B: Backend> {
    store: &'a Store<B>,
    layout: Layout,
    coder: Coder,
}

impl<'a, B: Backend> FileReader<'a, B> {
    pub fn new(store: &'a Store<B>, layout: Layout) -> Self {
        Self {
            store,
            layout,
            coder: Coder::new(&layout),
        }
    }

    /// Cheap pre-flight: every stripe touched by `[start, end)` has at least `k` shards whose
    /// bytes are present (not verified). Lets a request fail before any byte is sent.
    pub fn preflight(&self, file: &FileEntry, start: u64, end: u64) -> Result<(), GetError> {
        if start >= end {
            return Ok(());
        }
        let first = start / self.layout.stripe_size();
        let last = (end - 1) / self.layout.stripe_size();
        for stripe in first..=last {
            let cids = &file.stripes[usize::try_from(stripe).expect("stripe index fits usize")];
            let mut missing = Vec::new();
            for (i, cid) in cids.iter().enumerate() {
                if !self.store.shard_present(cid)? {
                    missing.push(i);
                }
            }
            let available = cids.len() - missing.len();
            if available < self.layout.k() {
                return Err(GetError::Unrecoverable {
                    path: file.path.clone(),
                    stripe,
                    available,
                    needed: self.layout.k(),
                    total: cids.len(),
                    detail: format!("shards {missing:?} missing"),
                });
            }
        }
        Ok(())
    }

    /// Stream bytes `[start, end)` of `file` to `emit`, in order, in pieces of at most one
    /// shard. Every byte is verified before `emit` sees it. Stops early when `emit` returns
    /// `false` (the reader went away).
    pub fn read(
        &self,
        file: &FileEntry,
        start: u64,
        end: u64,
        emit: &mut dyn FnMut(Vec<u8>) -> bool,
    ) -> Result<(), GetError> {
        let pieces = self.layout.pieces(file.size, start, end);
        let mut rebuilt: Option<(u64, Vec<u8>)> = None;
        // Readahead: the disk fetches the next pieces while this one is verified and sent.
        let prefetch = |i: usize| {
            if let Some(p) = pieces.get(i) {
                let cid = &file.stripes
                    [usize::try_from(p.stripe).expect("stripe index fits usize")][p.shard];
                self.store.prefetch_shard(cid, p.offset, p.offset + p.len);
            }
        };
        for i in 0..PREFETCH_PIECES {
            prefetch(i);
        }
        for (i, &p) in pieces.iter().enumerate() {
            prefetch(i + PREFETCH_PIECES);
            let cids = &file.stripes[usize::try_from(p.stripe).expect("stripe index fits usize")];
            let shard_len = self
                .layout
                .shard_len(self.layout.stripe_len(file.size, p.stripe));
            let from_rebuilt = |data: &Vec<u8>| {
                let at = usize::try_from(p.shard as u64 * shard_len + p.offset).expect("in stripe");
                data[at..at + usize::try_from(p.len).expect("in stripe")].to_vec()
            };
            let bytes = match &rebuilt {
                Some((s, data)) if *s == p.stripe => from_rebuilt(data),
                _ => match self
                    .store
                    .read_shard_range(&cids[p.shard], p.offset, p.offset + p.len)
                {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(path = %file.path, stripe = p.stripe, shard = p.shard, error = %e, "data shard unreadable, reconstructing stripe");
                        let data = self.rebuild(file, p.stripe)?;
                        let out = from_rebuilt(&data);
                        rebuilt = Some((p.stripe, data));
                        out
                    }
                },
            };
            if !emit(bytes) {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Rebuild a whole stripe from any `k` intact shards, verify the rebuilt data shards
    /// against their CIDs, and write back the ones that were damaged.
    pub fn rebuild(&self, file: &FileEntry, stripe: u64) -> Result<Vec<u8>, GetError> {
        let cids = &file.stripes[usize::try_from(stripe).expect("stripe index fits usize")];
        let stripe_len = self.layout.stripe_len(file.size, stripe);
        let k = self.layout.k();
        let mut shards: Vec<Option<Vec<u8>>> = vec![None; cids.len()];
        let mut failures = Vec::new();
        let mut available = 0;
        for (i, cid) in cids.iter().enumerate() {
            if available == k {
                break;
            }
            match self.store.read_shard(cid) {
                Ok(b) => {
                    shards[i] = Some(b);
                    available += 1;
                }
                Err(ReadError::Backend(e)) => return Err(ReadError::Backend(e).into()),
                Err(e) => failures.push(format!("shard {i}: {e}")),
            }
        }
        if available < k {
            return Err(GetError::Unrecoverable {
                path: file.path.clone(),
                stripe,
                available,
                needed: k,
                total: cids.len(),
                detail: failures.join("; "),
            });
        }
        let damaged: Vec<usize> = (0..k).filter(|&i| shards[i].is_none()).collect();
        let data = decode_stripe(&self.coder, &self.layout, stripe_len, shards).map_err(|e| {
            GetError::Unrecoverable {
                path: file.path.clone(),
                stripe,
                available,
                needed: k,
                total: cids.len(),
                detail: e.to_string(),
            }
        })?;
        if let Err(shard) = check_rebuilt(&self.layout, stripe_len, &data, cids, &damaged) {
            return Err(GetError::Reconstructed {
                path: file.path.clone(),
                stripe,
                shard,
            });
        }
        for i in damaged {
            let shard = rebuilt_shard(&self.layout, stripe_len, &data, i);
            if let Err(e) = self.store.repair_shard(&cids[i], &shard) {
                tracing::warn!(cid = %cids[i], error = %e, "could not write back a repaired shard");
            }
        }
        Ok(data)
    }
}

/// Data shard `i` of a decoded stripe, zero-padded to the shard length.
pub(crate) fn rebuilt_shard(layout: &Layout, stripe_len: u64, data: &[u8], i: usize) -> Vec<u8> {
    let shard_len = usize::try_from(layout.shard_len(stripe_len)).expect("in memory");
    let mut shard = vec![0u8; shard_len];
    let lo = (i * shard_len).min(data.len());
    let hi = ((i + 1) * shard_len).min(data.len());
    shard[..hi - lo].copy_from_slice(&data[lo..hi]);
    shard
}

/// Check that the data shards `rebuilt` of a decoded stripe hash to their CIDs: parity that
/// is inconsistent with the data (a lying publisher, or bytes corrupted before they were
/// hashed) decodes into wrong bytes, which must never be served. `Err(i)`: shard `i` does not.
pub(crate) fn check_rebuilt(
    layout: &Layout,
    stripe_len: u64,
    data: &[u8],
    cids: &[Cid],
    rebuilt: &[usize],
) -> Result<(), usize> {
    for &i in rebuilt {
        let shard = rebuilt_shard(layout, stripe_len, data, i);
        if cairn_erasure::shard_cid(&blake3::hash(&shard)) != cids[i] {
            return Err(i);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_storage::MemBackend;

    fn layout() -> Layout {
        Layout::new(4, 2, 8192).expect("valid")
    }

    fn bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut v = vec![0u8; len];
        crate::sample::fill_random(&mut (seed | 1), &mut v);
        v
    }

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in files {
            // Raw name bytes: the builder would refuse the hostile paths some tests need.
            let mut h = tar::Header::new_gnu();
            h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append(&h, *data).expect("append");
        }
        b.into_inner().expect("tar")
    }

    fn read_all(
        store: &Store<MemBackend>,
        m: &Manifest,
        path: &str,
        a: u64,
        b: u64,
    ) -> Result<Vec<u8>, GetError> {
        let f = m.file(path).expect("file");
        let mut out = Vec::new();
        FileReader::new(store, m.layout().expect("layout")).read(f, a, b, &mut |c| {
            out.extend_from_slice(&c);
            true
        })?;
        Ok(out)
    }

    #[test]
    fn tar_upload_round_trips_with_ranges_and_repairs() {
        let store = Store::open(MemBackend::new(), 1 << 30).expect("open");
        let w = bytes(100_000, 1);
        let c = br#"{"hidden_size": 8}"#.to_vec();
        let tar = tar_of(&[
            ("./model.safetensors", &w),
            ("config.json", &c),
            ("empty", b""),
        ]);
        let (root, m) =
            ingest(&store, layout(), Upload::Tar(&tar[..]), "t", &|_| {}).expect("ingest");
        assert_eq!(m.files.len(), 3);
        assert_eq!(store.manifest(&root).expect("stored"), m);
        assert_eq!(
            read_all(&store, &m, "model.safetensors", 0, 100_000).expect("read"),
            w
        );
        assert_eq!(
            read_all(&store, &m, "config.json", 0, c.len() as u64).expect("read"),
            c
        );
        assert_eq!(read_all(&store, &m, "empty", 0, 0).expect("read"), b"");
        assert_eq!(
            read_all(&store, &m, "model.safetensors", 8000, 8500).expect("read"),
            &w[8000..8500]
        );

        // Lose m = 2 shards of every stripe: still byte-identical, and data shards repaired.
        let f = m.file("model.safetensors").expect("file");
        for (i, s) in f.stripes.iter().enumerate() {
            store.backend().drop_blob(&s[i % 4].to_bytes());
            store
                .backend()
                .flip_blob_byte(&s[(i + 1) % 6].to_bytes(), i);
        }
        assert_eq!(
            read_all(&store, &m, "model.safetensors", 0, 100_000).expect("rebuilt"),
            w
        );
        for s in &f.stripes {
            for cid in &s[..4] {
                assert_eq!(
                    store.check_shard(cid).expect("check"),
                    cairn_storage::ShardStatus::Ok
                );
            }
        }
        // Lose m + 1 of stripe 3: a clear error naming it, from preflight and from the read.
        for cid in &f.stripes[3][..3] {
            store.backend().drop_blob(&cid.to_bytes());
        }
        let reader = FileReader::new(&store, layout());
        let err = reader
            .preflight(f, 0, f.size)
            .expect_err("stripe 3 is gone");
        assert!(err.to_string().contains("stripe 3"), "{err}");
        reader
            .preflight(f, 0, 3 * 8192)
            .expect("stripes before it are fine");
        let err = read_all(&store, &m, "model.safetensors", 0, 100_000).expect_err("gone");
        assert!(
            matches!(err, GetError::Unrecoverable { stripe: 3, .. }),
            "{err}"
        );
    }

    #[test]
    fn truncated_and_bad_archives_leave_nothing() {
        let store = Store::open(MemBackend::new(), 1 << 30).expect("open");
        let tar = tar_of(&[("a.bin", &bytes(50_000, 2)), ("b.bin", &bytes(50_000, 3))]);
        let cut = &tar[..tar.len() / 2 + 100];
        let err =
            ingest(&store, layout(), Upload::Tar(Failing(cut)), "t", &|_| {}).expect_err("cut");
        assert!(matches!(err, IngestError::Body(_)), "{err}");
        let dup = tar_of(&[("a", b"1"), ("a", b"2")]);
        let err = ingest(&store, layout(), Upload::Tar(&dup[..]), "t", &|_| {}).expect_err("dup");
        assert!(matches!(err, IngestError::DuplicatePath(_)), "{err}");
        let evil = tar_of(&[("../../etc/x", b"1")]);
        assert!(ingest(&store, layout(), Upload::Tar(&evil[..]), "t", &|_| {}).is_err());
        let err = ingest(
            &store,
            layout(),
            Upload::Tar(&[0u8; 1024][..]),
            "t",
            &|_| {},
        )
        .expect_err("empty");
        assert!(matches!(err, IngestError::Empty), "{err}");
        let mut link = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_cksum();
        link.append_link(&mut h, "l", "/etc/passwd").expect("link");
        let link = link.into_inner().expect("tar");
        let err = ingest(&store, layout(), Upload::Tar(&link[..]), "t", &|_| {}).expect_err("link");
        assert!(matches!(err, IngestError::EntryType { .. }), "{err}");
        let st = store.stats();
        assert_eq!((st.shards, st.used_bytes), (0, 0));
        assert!(store.list().expect("list").is_empty());
    }

    #[test]
    fn store_full_is_reported_and_cleaned_up() {
        let store = Store::open(MemBackend::new(), 20_000).expect("open");
        let data = bytes(60_000, 9);
        let err = ingest(
            &store,
            layout(),
            Upload::File {
                path: "x".into(),
                reader: &data[..],
            },
            "x",
            &|_| {},
        )
        .expect_err("full");
        assert!(
            matches!(err, IngestError::Put(PutError::StoreFull { .. })),
            "{err}"
        );
        assert_eq!(store.stats().used_bytes, 0);
    }

    /// A reader that fails (like a dropped connection) after its bytes run out.
    struct Failing<'a>(&'a [u8]);
    impl Read for Failing<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "connection reset",
                ));
            }
            self.0.read(buf)
        }
    }
}
