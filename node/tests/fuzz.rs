//! Fuzzing of the upload path's tar reader: folders arrive as tar streams from clients and go
//! through `pipeline::ingest` into a store. Random bytes, header-shaped blocks (valid
//! checksum, random fields), and valid archives with bytes overwritten, inserted and cut: each
//! ingest ends in an error that leaves the store as it was, or in a valid checkpoint whose
//! every file reads back as its manifest says.
//!
//! The default case counts are a short pass for CI; `ops/fuzz.sh` runs each test for minutes
//! through `PROPTEST_CASES`.

use std::collections::BTreeMap;

use cairn_erasure::{Layout, Manifest, manifest_cid};
use cairn_node::pipeline::{FileReader, Upload, ingest};
use cairn_storage::{Backend, MemBackend, Store};
use proptest::prelude::*;
use proptest::sample::Index;

#[path = "../../erasure/tests/support/mutate.rs"]
mod mutate;
use mutate::{cases, edits, mutate, noise};

/// Small stripes, so that a file of a few KiB spans several.
fn layout() -> Layout {
    Layout::new(4, 2, 8192).expect("valid")
}

/// Recompute the checksum of the 512-byte header block at `at`, so that changed header
/// fields get past the checksum to the parsers behind it.
fn fix_checksum(bytes: &mut [u8], at: usize) {
    if let Some(block) = bytes.get_mut(at..at + 512) {
        let mut h = tar::Header::new_old();
        h.as_mut_bytes().copy_from_slice(block);
        h.set_cksum();
        block.copy_from_slice(h.as_bytes());
    }
}

/// How a file is written into the archive.
#[derive(Debug, Clone, Copy)]
enum Style {
    Gnu,
    Ustar,
    /// Its path in a PAX extended header before it.
    Pax,
}

/// A valid archive: files (no path both a file and a directory), directory entries, names
/// long enough for GNU long-name entries, PAX paths.
#[derive(Debug, Clone)]
struct Archive {
    bytes: Vec<u8>,
    /// Path to content of every file.
    files: BTreeMap<String, Vec<u8>>,
    /// Where each header block starts (extension headers included).
    headers: Vec<usize>,
}

fn archive() -> impl Strategy<Value = Archive> {
    let name = prop_oneof![
        4 => "[a-c]{1,2}(/[a-c]{1,2}){0,2}",
        1 => "[d-f]{90,130}(/[a-c]{1,3})?",
    ];
    let style = prop_oneof![Just(Style::Gnu), Just(Style::Ustar), Just(Style::Pax)];
    let file = (
        name,
        prop_oneof![0usize..600, 0usize..20_000],
        any::<u64>(),
        style,
        any::<bool>(),
    );
    prop::collection::vec(file, 1..5).prop_map(|entries| {
        let mut b = tar::Builder::new(Vec::new());
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for (path, len, seed, style, dir_first) in entries {
            let conflicts = |other: &str| {
                other == path
                    || path.starts_with(&format!("{other}/"))
                    || other.starts_with(&format!("{path}/"))
            };
            if files.keys().any(|p| conflicts(p)) {
                continue;
            }
            if let Some((dir, _)) = path.rsplit_once('/').filter(|_| dir_first) {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, format!("{dir}/"), &[][..])
                    .expect("dir");
            }
            let data = noise(len, seed);
            match style {
                Style::Gnu | Style::Ustar if path.len() <= 100 || matches!(style, Style::Gnu) => {
                    let mut h = if matches!(style, Style::Gnu) {
                        tar::Header::new_gnu()
                    } else {
                        tar::Header::new_ustar()
                    };
                    h.set_mode(0o644);
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, &path, &data[..]).expect("file");
                }
                _ => {
                    let record = |n: usize| format!("{n} path={path}\n");
                    let mut n = record(0).len();
                    while record(n).len() != n {
                        n = record(n).len();
                    }
                    let pax = record(n);
                    let mut x = tar::Header::new_ustar();
                    x.set_entry_type(tar::EntryType::XHeader);
                    x.set_size(pax.len() as u64);
                    x.set_path("PaxHeader").expect("short");
                    x.set_cksum();
                    b.append(&x, pax.as_bytes()).expect("pax");
                    let mut h = tar::Header::new_ustar();
                    h.set_mode(0o644);
                    h.set_size(data.len() as u64);
                    h.set_path("placeholder").expect("short");
                    h.set_cksum();
                    b.append(&h, &data[..]).expect("file");
                }
            }
            files.insert(path, data);
        }
        let bytes = b.into_inner().expect("tar");
        let mut headers = Vec::new();
        let mut a = tar::Archive::new(&bytes[..]);
        for e in a.entries().expect("entries").raw(true) {
            headers.push(e.expect("valid archive").raw_header_position() as usize);
        }
        Archive {
            bytes,
            files,
            headers,
        }
    })
}

/// Every key and value of the store's index, and every blob key.
type Contents = (Vec<(Vec<u8>, Vec<u8>)>, Vec<Vec<u8>>);

fn contents(store: &Store<MemBackend>) -> Contents {
    let mut index = Vec::new();
    store
        .backend()
        .scan(b"", &mut |k, v| {
            index.push((k.to_vec(), v.to_vec()));
            true
        })
        .expect("scan");
    let mut blobs = Vec::new();
    store
        .backend()
        .list_blobs(&mut |k| blobs.push(k.to_vec()))
        .expect("blobs");
    (index, blobs)
}

/// Ingest `tar` into a fresh store. An error must leave the store as it was (no shard, no
/// checkpoint, no byte used); a success must be a valid checkpoint, stored under its root,
/// whose every file reads back whole with the size and hash the manifest gives.
fn check_ingest(tar: &[u8]) -> Result<Option<Manifest>, TestCaseError> {
    let store = Store::open(MemBackend::new(), 1 << 30).expect("open");
    let before = contents(&store);
    let (root, m) = match ingest(&store, layout(), Upload::Tar(tar), "fuzz", &|_| {}) {
        Ok(done) => done,
        Err(_) => {
            prop_assert!(
                contents(&store) == before,
                "a failed ingest left data behind"
            );
            let st = store.stats();
            prop_assert_eq!((st.used_bytes, st.shards), (0, 0));
            prop_assert!(store.list().expect("list").is_empty());
            return Ok(None);
        }
    };
    let bytes = m.encode().expect("encodes");
    prop_assert_eq!(manifest_cid(&bytes), root);
    prop_assert_eq!(&Manifest::decode(&bytes).expect("decodes"), &m);
    prop_assert_eq!(&store.manifest(&root).expect("stored"), &m);
    prop_assert_eq!(store.list().expect("list").len(), 1);
    let reader = FileReader::new(&store, layout());
    for f in &m.files {
        let mut hasher = blake3::Hasher::new();
        let mut n = 0u64;
        reader
            .read(f, 0, f.size, &mut |c| {
                n += c.len() as u64;
                hasher.update(&c);
                true
            })
            .expect("a stored file reads back");
        prop_assert_eq!(n, f.size);
        prop_assert_eq!(hasher.finalize(), f.hash());
    }
    Ok(Some(m))
}

/// Header type bytes worth trying: files, directories, links, GNU long names and sparse
/// files, PAX headers.
const TYPES: [u8; 11] = [
    b'0', 0, b'5', b'1', b'2', b'L', b'K', b'S', b'x', b'g', b'7',
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    /// Random bytes, and random header blocks with a valid checksum and a chosen type (so the
    /// field parsers behind the checksum run), maybe a plain name and an octal size, followed
    /// by random data: as much as the size says and the end-of-archive blocks, or any amount.
    #[test]
    fn fuzz_tar_random(
        junk in prop::collection::vec(any::<u8>(), 0..2048),
        (header, kind) in (
            prop::collection::vec(any::<u8>(), 512),
            prop_oneof![prop::sample::select(&TYPES[..]), any::<u8>()],
        ),
        magic in prop_oneof![Just(&b"ustar\x0000"[..]), Just(&b"ustar  \x00"[..]), Just(&b""[..])],
        (name, no_prefix) in (prop::option::weighted(0.8, "[a-z]{1,8}(/[a-z]{1,8}){0,3}"), any::<bool>()),
        octal_size in prop::option::weighted(0.8, prop_oneof![0u64..600, 0u64..20_000]),
        (whole, rest_len, seed) in (any::<bool>(), 0usize..4096, any::<u64>()),
    ) {
        check_ingest(&junk)?;
        let mut block = header;
        block[156] = kind;
        block[257..257 + magic.len()].copy_from_slice(magic);
        if let Some(name) = name {
            block[..100].fill(0);
            block[..name.len()].copy_from_slice(name.as_bytes());
        }
        if no_prefix {
            block[345..500].fill(0);
        }
        let mut len = rest_len;
        if let Some(size) = octal_size {
            block[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
            if whole {
                len = size.div_ceil(512) as usize * 512;
            }
        }
        fix_checksum(&mut block, 0);
        block.extend_from_slice(&noise(len, seed));
        if whole {
            block.extend_from_slice(&[0; 1024]);
        }
        check_ingest(&block)?;
    }

    /// A valid archive ingests to exactly its files. Changed (bytes overwritten, inserted or
    /// removed, header checksums maybe recomputed, then maybe cut short), it gives an error
    /// that leaves nothing behind or a valid checkpoint; only cut short, the checkpoint holds
    /// original files whole, never a truncated one.
    #[test]
    fn fuzz_tar_mutated(
        a in archive(),
        edits in prop::option::of(edits(600, 600)),
        fix in any::<bool>(),
        cut in prop::option::of(any::<Index>()),
    ) {
        let m = check_ingest(&a.bytes)?.expect("a valid archive ingests");
        let got: BTreeMap<&str, (u64, blake3::Hash)> =
            m.files.iter().map(|f| (f.path.as_str(), (f.size, f.hash()))).collect();
        let want: BTreeMap<&str, (u64, blake3::Hash)> = a
            .files
            .iter()
            .map(|(p, d)| (p.as_str(), (d.len() as u64, blake3::hash(d))))
            .collect();
        prop_assert_eq!(got, want);

        let mut bytes = a.bytes.clone();
        if let Some(edits) = &edits {
            bytes = mutate(&bytes, edits, None);
            if fix && bytes.len() == a.bytes.len() {
                for &at in &a.headers {
                    fix_checksum(&mut bytes, at);
                }
            }
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        let ingested = check_ingest(&bytes)?;
        if let Some(m) = ingested.filter(|_| edits.is_none()) {
            for f in &m.files {
                let data = a.files.get(&f.path).expect("only original files");
                prop_assert_eq!((f.size, f.hash()), (data.len() as u64, blake3::hash(data)));
            }
        }
    }
}
