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

mod encode;
mod read;

pub use encode::{After, PartialFile, Resume, StripeMark, encode, encode_then, tar_padded};
pub use read::*;

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
    /// A resumable upload's progress could not be recorded or read back.
    #[error("cannot record the upload's progress: {0}")]
    Progress(String),
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
    let manifest = encode(
        layout,
        upload,
        Resume::default(),
        progress,
        &mut |enc, _| {
            let shards = enc.shards_with_bytes();
            Ok(session.put_stripe(&shards)?)
        },
    )?;
    let root = session.commit(&manifest, name, now_unix())?;
    Ok((root, manifest))
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
