//! Fuzzing of the decoders peers and clients feed this crate: CIDs (text and bytes),
//! outboards and manifests. Each gets random input and valid encodings with bytes overwritten,
//! inserted and cut; it must answer an error or a value that passes its own checks, never
//! panic, and never hold more than its declared limits.
//!
//! The default case counts are a short pass for CI; `ops/fuzz.sh` runs each test for minutes
//! through `PROPTEST_CASES`.

use std::sync::LazyLock;

use cairn_erasure::ids::{BLAKE3, DAG_CBOR, RAW, manifest_cid_from_digest};
use cairn_erasure::layout::{MAX_SHARDS, MAX_STRIPE_SIZE, MIN_STRIPE_SIZE};
use cairn_erasure::manifest::{
    CODEC_RS_GF8, MANIFEST_VERSION, MANIFEST_VERSION_SALTED, MANIFEST_VERSION_UNSALTED,
    MAX_MANIFEST_LEN, MAX_PATH_LEN, MAX_PUBLISHER_LEN, SALT_LEN,
};
use cairn_erasure::verify::group_count;
use cairn_erasure::{
    Cid, CidError, FileEntry, GROUP_LEN, Layout, Manifest, ManifestError, Outboard, cid_from_bytes,
    manifest_cid, parse_cid, parse_shard_cid, shard_cid, shard_hash,
};
use cid::multibase::Base;
use cid::multihash::Multihash;
use proptest::prelude::*;
use proptest::sample::Index;

#[path = "support/mutate.rs"]
mod mutate;
use mutate::{cases, edits, mutate, noise};

// ------------------------------------------------------------------------------------ CIDs

const BASES: [Base; 10] = [
    Base::Base32Lower,
    Base::Base32Upper,
    Base::Base58Btc,
    Base::Base16Lower,
    Base::Base16Upper,
    Base::Base36Lower,
    Base::Base64,
    Base::Base64Url,
    Base::Base32HexLower,
    Base::Base10,
];

/// What every CID a Cairn parser accepts must be.
fn assert_cairn_cid(cid: &Cid, codec: u64) -> Result<(), TestCaseError> {
    prop_assert_eq!(cid.version(), cid::Version::V1);
    prop_assert_eq!(cid.codec(), codec);
    prop_assert_eq!(cid.hash().code(), BLAKE3);
    prop_assert_eq!(cid.hash().digest().len(), 32);
    // Its canonical forms parse back to it.
    let back = cid_from_bytes(&cid.to_bytes());
    prop_assert_eq!(back.as_ref(), Ok(cid));
    let text = cid.to_string();
    let back = if codec == RAW {
        parse_shard_cid(&text)
    } else {
        parse_cid(&text)
    };
    prop_assert_eq!(back.as_ref(), Ok(cid));
    Ok(())
}

/// Both text parsers on `text`: an error, or a Cairn CID of the right kind.
fn check_text(text: &str) -> Result<(), TestCaseError> {
    if let Ok(cid) = parse_cid(text) {
        assert_cairn_cid(&cid, DAG_CBOR)?;
        prop_assert!(parse_shard_cid(text).is_err());
    }
    if let Ok(cid) = parse_shard_cid(text) {
        assert_cairn_cid(&cid, RAW)?;
        prop_assert_eq!(shard_cid(&shard_hash(&cid).expect("a shard cid")), cid);
    }
    Ok(())
}

/// The byte parser on `bytes`: an error, or exactly one CID spelled exactly as given.
fn check_bytes(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(cid) = cid_from_bytes(bytes) {
        prop_assert_eq!(cid.to_bytes(), bytes);
        match shard_hash(&cid) {
            Ok(h) => {
                prop_assert_eq!(shard_cid(&h), cid);
                assert_cairn_cid(&cid, RAW)?;
            }
            Err(e) => prop_assert!(matches!(e, CidError::Unsupported { .. }), "{e}"),
        }
    }
    Ok(())
}

/// A Cairn CID of either kind: `(cid, is_shard)`.
fn cairn_cid() -> impl Strategy<Value = (Cid, bool)> {
    (any::<[u8; 32]>(), any::<bool>()).prop_map(|(d, shard)| {
        let cid = if shard {
            shard_cid(&blake3::Hash::from_bytes(d))
        } else {
            manifest_cid_from_digest(d)
        };
        (cid, shard)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(4096)))]

    /// Valid CIDs round-trip through text (every base) and bytes; the kind checks hold.
    #[test]
    fn fuzz_cid_valid_round_trip((cid, shard) in cairn_cid(), base in prop::sample::select(&BASES[..])) {
        let text = cid.to_string_of_base(base).expect("v1 cids print in any base");
        let (ok, other) = if shard {
            (parse_shard_cid(&text), parse_cid(&text))
        } else {
            (parse_cid(&text), parse_shard_cid(&text))
        };
        prop_assert_eq!(ok, Ok(cid));
        prop_assert!(matches!(other, Err(CidError::Unsupported { .. })), "{:?}", other);
        prop_assert_eq!(cid_from_bytes(&cid.to_bytes()), Ok(cid));
        prop_assert_eq!(shard_hash(&cid).is_ok(), shard);
    }

    /// Random text, and text shaped like a multibase CID: no panic, only Cairn CIDs accepted.
    #[test]
    fn fuzz_cid_text_random(
        any_text in ".{0,80}",
        shaped in "[bBzfFkmuv0-9][a-zA-Z0-9+/=_-]{0,90}",
    ) {
        check_text(&any_text)?;
        check_text(&shaped)?;
    }

    /// Valid CIDs with their text or their bytes (then printed again) changed.
    #[test]
    fn fuzz_cid_text_mutated(
        (cid, _) in cairn_cid(),
        base in prop::sample::select(&BASES[..]),
        edits in edits(8, 16),
        cut in prop::option::of(any::<Index>()),
    ) {
        let text = cid.to_string_of_base(base).expect("v1 cids print in any base");
        let changed = mutate(text.as_bytes(), &edits, cut);
        check_text(&String::from_utf8_lossy(&changed))?;
        let bytes = mutate(&cid.to_bytes(), &edits, cut);
        let printed = cid::multibase::encode(base, &bytes);
        check_text(&printed)?;
        // Bytes that are not exactly a CID are refused, whatever the base.
        if cid_from_bytes(&bytes).is_err() {
            prop_assert!(parse_cid(&printed).is_err() && parse_shard_cid(&printed).is_err());
        }
    }

    /// CIDs as the wire reads them: random bytes, valid CIDs changed, and CIDs of every
    /// version, codec and hash shape. Only exactly one CID is accepted; only raw BLAKE3 ones
    /// are shard CIDs, only dag-cbor BLAKE3 ones roots.
    #[test]
    fn fuzz_cid_bytes(
        junk in prop::collection::vec(any::<u8>(), 0..80),
        (cid, _) in cairn_cid(),
        edits in edits(8, 16),
        cut in prop::option::of(any::<Index>()),
        codec in prop_oneof![Just(RAW), Just(DAG_CBOR), any::<u64>()],
        code in prop_oneof![Just(BLAKE3), Just(0x12u64), any::<u64>()],
        digest in prop::collection::vec(any::<u8>(), 0..=64),
    ) {
        check_bytes(&junk)?;
        check_bytes(&mutate(&cid.to_bytes(), &edits, cut))?;
        let mh = Multihash::<64>::wrap(code, &digest).expect("at most 64 bytes");
        let other = Cid::new_v1(codec, mh);
        check_bytes(&other.to_bytes())?;
        let cairn = code == BLAKE3 && digest.len() == 32;
        prop_assert_eq!(shard_hash(&other).is_ok(), cairn && codec == RAW);
        prop_assert_eq!(parse_shard_cid(&other.to_string()).is_ok(), cairn && codec == RAW);
        prop_assert_eq!(parse_cid(&other.to_string()).is_ok(), cairn && codec == DAG_CBOR);
    }
}

// ------------------------------------------------------------------------------- outboards

const G: usize = GROUP_LEN;

/// Real shards of lengths around the group and tree boundaries, with their hash and outboard.
static SHARDS: LazyLock<Vec<(Vec<u8>, blake3::Hash, Outboard)>> = LazyLock::new(|| {
    [
        0,
        1,
        1000,
        G - 1,
        G,
        G + 1,
        2 * G,
        3 * G + 5,
        4 * G,
        5 * G + 100,
        8 * G + 1,
        9 * G - 1,
    ]
    .iter()
    .enumerate()
    .map(|(i, &len)| {
        let d = noise(len, 0x9e37_79b9_7f4a_7c15 ^ i as u64);
        let (h, ob) = Outboard::compute(&d);
        (d, h, ob)
    })
    .collect()
});

/// What any decoded outboard must be: its own canonical encoding, with a chaining value
/// per group. Random ranges and data must not panic `aligned`, `check` or `verify_groups`.
fn check_outboard(
    bytes: &[u8],
    hash: &blake3::Hash,
    a: u64,
    b: u64,
    start: u64,
    data: &[u8],
) -> Result<Option<Outboard>, TestCaseError> {
    let Ok(ob) = Outboard::from_bytes(bytes) else {
        return Ok(None);
    };
    prop_assert_eq!(ob.to_bytes(), bytes);
    prop_assert_eq!(ob.encoded_len(), bytes.len());
    let cvs = if ob.len() <= G as u64 {
        0
    } else {
        group_count(ob.len())
    };
    prop_assert_eq!(bytes.len() as u64, 9 + 32 * cvs);
    let _ = ob.check(hash);
    let (lo, hi) = (a.min(b), a.max(b));
    match ob.aligned(lo, hi) {
        Ok((s, e)) => {
            prop_assert!(hi <= ob.len());
            prop_assert!(s <= lo && hi <= e && e <= ob.len());
            if cvs > 0 {
                prop_assert!(s % G as u64 == 0 && (e % G as u64 == 0 || e == ob.len()));
            } else {
                prop_assert_eq!((s, e), (0, ob.len()));
            }
        }
        Err(_) => prop_assert!(hi > ob.len()),
    }
    let _ = ob.verify_groups(hash, start, data);
    let _ = ob.verify_all(hash, data);
    Ok(Some(ob))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(2048)))]

    /// Random bytes, and outboard-shaped ones (version byte, a length, about the right number
    /// of chaining values); random hashes, ranges and data.
    #[test]
    fn fuzz_outboard_random(
        junk in prop::collection::vec(any::<u8>(), 0..200),
        len in prop_oneof![0u64..(12 * G as u64), any::<u64>()],
        extra in -1i64..=1,
        cv_seed: u64,
        hash in any::<[u8; 32]>(),
        (a, b, start) in (any::<u64>(), any::<u64>(), prop_oneof![0u64..(12 * G as u64), any::<u64>()]),
        (data_len, data_seed) in (0..(2 * G), any::<u64>()),
    ) {
        let hash = blake3::Hash::from_bytes(hash);
        let data = noise(data_len, data_seed);
        check_outboard(&junk, &hash, a, b, start, &data)?;
        let groups = if len <= G as u64 { 0 } else { group_count(len).min(64) };
        let n = (groups as i64 + extra).max(0) as usize;
        let mut shaped = vec![1u8];
        shaped.extend_from_slice(&len.to_le_bytes());
        shaped.extend(noise(32 * n, cv_seed));
        if let Some(ob) = check_outboard(&shaped, &hash, a % len.saturating_add(1), b % len.saturating_add(1), start, &data)? {
            // Chaining values that are noise verify no bytes.
            if !data.is_empty() {
                prop_assert!(ob.verify_groups(&hash, start, &data).is_err());
            }
        }
    }

    /// A real shard's outboard with bytes changed: whatever decodes and passes `check`, no
    /// bytes other than the shard's own ever verify against it; and the real outboard refuses
    /// the shard's bytes with any byte changed.
    #[test]
    fn fuzz_outboard_mutated(
        pick in any::<Index>(),
        edits in prop::option::of(edits(8, 16)),
        cut in prop::option::of(any::<Index>()),
        (a, b) in (any::<Index>(), any::<Index>()),
        shift in prop_oneof![Just(0usize), 1usize..(3 * G)],
        flip in prop::option::of((any::<Index>(), 0u8..8)),
    ) {
        let (shard, hash, real) = &SHARDS[pick.index(SHARDS.len())];
        let real_bytes = real.to_bytes();
        let bytes = match &edits {
            Some(edits) => mutate(&real_bytes, edits, cut),
            None => real_bytes.clone(),
        };
        let len = shard.len() as u64;
        let (a, b) = (a.index(shard.len() + 1) as u64, b.index(shard.len() + 1) as u64);
        let Some(ob) = check_outboard(&bytes, hash, a, b, 0, shard)? else {
            return Ok(());
        };
        // A claim of a single group (no chaining values) has nothing to check until the bytes
        // come, and they must then hash to the CID whole. Otherwise the root covers every
        // chaining value: only the length may have changed, and only within the last group.
        if ob.check(hash).is_ok() && bytes.len() > 9 {
            prop_assert_eq!(&bytes[9..], &real_bytes[9..]);
            prop_assert_eq!(group_count(ob.len()), group_count(len));
        }
        // Fetch what this outboard says covers [a, b), from the shard (maybe from the wrong
        // place, maybe with a byte changed), and verify it.
        let (lo, hi) = (a.min(b).min(ob.len()), a.max(b).min(ob.len()));
        let Ok((s, e)) = ob.aligned(lo, hi) else {
            return Ok(());
        };
        let from = (s as usize + shift).min(shard.len());
        let to = (from + (e - s) as usize).min(shard.len());
        let mut data = shard[from..to].to_vec();
        if let Some((at, bit)) = flip.filter(|_| !data.is_empty()) {
            let i = at.index(data.len());
            data[i] ^= 1 << bit;
        }
        let accepted = ob.verify_groups(hash, s, &data).is_ok();
        if accepted && !data.is_empty() {
            prop_assert!(s + data.len() as u64 <= len);
            prop_assert_eq!(&data[..], &shard[s as usize..s as usize + data.len()]);
        }
        if bytes == real_bytes && shift == 0 && to == from + (e - s) as usize {
            // The real outboard: the real bytes verify, changed ones never do.
            prop_assert_eq!(accepted, data == shard[from..to]);
        }
    }
}

// ------------------------------------------------------------------------------- manifests

/// A path made of 1 to 3 components from a small alphabet, so that nesting conflicts occur.
fn path() -> impl Strategy<Value = String> {
    let component = "[a-c]{1,2}|\\.x|[a-z0-9_.-]{1,12}".prop_map(|c| {
        if c == "." || c == ".." {
            "dot".to_owned()
        } else {
            c
        }
    });
    prop::collection::vec(component, 1..4).prop_map(|c| c.join("/"))
}

/// Valid manifests of random layout and files (shard CIDs are random: the manifest is not
/// checked against shard bytes).
fn manifest() -> impl Strategy<Value = Manifest> {
    let layout = (1u8..=8, 1u8..=4, MIN_STRIPE_SIZE..=(1 << 20))
        .prop_map(|(k, m, s)| Layout::new(k, m, s).expect("in range"));
    let files = prop::collection::btree_map(path(), (any::<u64>(), any::<u64>()), 0..5);
    let salt = prop::option::of(any::<[u8; SALT_LEN]>());
    let publisher = prop::option::of(prop::collection::vec(any::<u8>(), 1..=MAX_PUBLISHER_LEN));
    (layout, files, salt, publisher).prop_map(|(layout, files, salt, publisher)| {
        let mut out: Vec<FileEntry> = Vec::new();
        for (path, (size, seed)) in files {
            // Nothing may be both a file and a directory: drop what conflicts.
            let conflicts = |other: &str| {
                path.starts_with(&format!("{other}/")) || other.starts_with(&format!("{path}/"))
            };
            if out.iter().any(|f| conflicts(&f.path)) {
                continue;
            }
            let size = size % (3 * layout.stripe_size() + 1);
            let stripes = (0..layout.stripe_count(size))
                .map(|s| {
                    (0..layout.total())
                        .map(|i| {
                            shard_cid(&blake3::hash(
                                &[seed.to_le_bytes(), [s as u8, i as u8, 0, 0, 0, 0, 0, 0]]
                                    .concat(),
                            ))
                        })
                        .collect()
                })
                .collect();
            out.push(FileEntry {
                path,
                size,
                blake3: noise(32, seed),
                stripes,
            });
        }
        let m = Manifest::new(&layout, out).expect("valid by construction");
        // Puts through a cluster salt their manifests and name their publisher (format
        // version 3; version 2 has the salt alone).
        match (salt, publisher) {
            (Some(s), Some(p)) => m.published(s, p).expect("a valid publisher"),
            (Some(s), None) => m.salted(s),
            (None, _) => m,
        }
    })
}

/// What `Manifest::decode` promises of what it returns, checked independently, and that it
/// decoded `bytes` exactly: they are its canonical encoding, so their CID is its root.
fn check_manifest(bytes: &[u8], m: &Manifest) -> Result<(), TestCaseError> {
    prop_assert!(bytes.len() <= MAX_MANIFEST_LEN);
    match m.version {
        MANIFEST_VERSION_UNSALTED => {
            prop_assert!(m.salt.is_none());
            prop_assert!(m.publisher.is_none());
        }
        MANIFEST_VERSION_SALTED => {
            prop_assert_eq!(m.salt.as_ref().map(Vec::len), Some(SALT_LEN));
            prop_assert!(m.publisher.is_none());
        }
        v => {
            prop_assert_eq!(v, MANIFEST_VERSION);
            prop_assert_eq!(m.salt.as_ref().map(Vec::len), Some(SALT_LEN));
            let p = m.publisher.as_ref().map_or(0, Vec::len);
            prop_assert!((1..=MAX_PUBLISHER_LEN).contains(&p));
        }
    }
    prop_assert_eq!(m.codec.as_str(), CODEC_RS_GF8);
    prop_assert_eq!(m.group_size as usize, GROUP_LEN);
    let layout = m.layout().expect("a decoded manifest has a valid layout");
    prop_assert!(layout.k() >= 1 && layout.m() >= 1 && layout.total() <= MAX_SHARDS);
    prop_assert!((MIN_STRIPE_SIZE..=MAX_STRIPE_SIZE).contains(&layout.stripe_size()));
    for (i, f) in m.files.iter().enumerate() {
        prop_assert!(!f.path.is_empty() && f.path.len() <= MAX_PATH_LEN);
        prop_assert!(
            f.path
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != "..")
        );
        prop_assert!(!f.path.contains('\\') && !f.path.contains('\0'));
        if i > 0 {
            prop_assert!(m.files[i - 1].path < f.path);
        }
        for other in &m.files {
            let dir = format!("{}/", other.path);
            prop_assert!(
                !f.path.starts_with(&dir),
                "{} is under the file {}",
                f.path,
                other.path
            );
        }
        prop_assert_eq!(f.blake3.len(), 32);
        let _ = f.hash();
        prop_assert_eq!(
            f.stripes.len() as u64,
            f.size.div_ceil(layout.stripe_size())
        );
        for s in &f.stripes {
            prop_assert_eq!(s.len(), layout.total());
            for c in s {
                prop_assert!(shard_hash(c).is_ok());
            }
        }
        prop_assert_eq!(m.file(&f.path), Some(f));
        // The read path's geometry holds for every file size a manifest can carry.
        let at = f.size / 2;
        for p in layout.pieces(f.size, at, at.saturating_add(3 * layout.stripe_size())) {
            prop_assert!(p.shard < layout.k() && p.len > 0);
        }
    }
    let _ = m.total_size();
    prop_assert_eq!(
        m.shard_cids().count(),
        m.files
            .iter()
            .map(|f| f.stripes.len() * layout.total())
            .sum::<usize>()
    );
    let (again, cid) = m.encode_with_cid().expect("a decoded manifest encodes");
    prop_assert_eq!(&again[..], bytes);
    prop_assert_eq!(cid, manifest_cid(bytes));
    Ok(())
}

/// Tags CBOR data items start with (maps, arrays, strings, uints, tag 42), to build
/// manifest-shaped noise.
const CBOR_HEADS: [u8; 12] = [
    0xa7, 0xa4, 0x81, 0x82, 0x83, 0x61, 0x64, 0x58, 0xd8, 0x2a, 0x01, 0x19,
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(2048)))]

    /// Random bytes and CBOR-shaped noise: an error, or (never in practice) a valid manifest.
    #[test]
    fn fuzz_manifest_random(
        junk in prop::collection::vec(any::<u8>(), 0..600),
        shaped in prop::collection::vec(prop_oneof![prop::sample::select(&CBOR_HEADS[..]), any::<u8>()], 0..600),
    ) {
        for bytes in [&junk, &shaped] {
            if let Ok(m) = Manifest::decode(bytes) {
                check_manifest(bytes, &m)?;
            }
        }
    }

    /// Valid manifests decode to themselves and keep their CID; changed, they give an error
    /// or a manifest whose encoding is exactly the changed bytes.
    #[test]
    fn fuzz_manifest_mutated(
        m in manifest(),
        edits in edits(8, 16),
        cut in prop::option::of(any::<Index>()),
    ) {
        let (bytes, root) = m.encode_with_cid().expect("encodes");
        let back = Manifest::decode(&bytes).expect("a valid manifest decodes");
        prop_assert_eq!(&back, &m);
        check_manifest(&bytes, &back)?;
        prop_assert_eq!(back.encode_with_cid().expect("encodes").1, root);
        let changed = mutate(&bytes, &edits, cut);
        match Manifest::decode(&changed) {
            Ok(d) => {
                check_manifest(&changed, &d)?;
                prop_assert_eq!(d == m, changed == bytes);
            }
            Err(e) => prop_assert!(changed != bytes, "{e}"),
        }
    }
}

/// The size limit is checked before anything is decoded.
#[test]
fn fuzz_manifest_over_the_limit_is_refused() {
    let big = vec![0u8; MAX_MANIFEST_LEN + 1];
    assert!(matches!(
        Manifest::decode(&big),
        Err(ManifestError::TooLarge { len }) if len == MAX_MANIFEST_LEN + 1
    ));
}
