//! The checkpoint manifest: a deterministic DAG-CBOR document whose CID is the checkpoint root.

use cid::Cid;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ids::{self, manifest_cid};
use crate::layout::{Layout, ParamsError};
use crate::verify::GROUP_LEN;

/// Newest manifest format version: 3 carries a placement salt and its publisher's identity.
/// Version 2 (a salt, no publisher) and version 1 (neither) are still read; version 1 is what
/// a single node's own puts write (their root depends on content alone).
pub const MANIFEST_VERSION: u32 = 3;
/// The salted format without a publisher.
pub const MANIFEST_VERSION_SALTED: u32 = 2;
/// The unsalted format.
pub const MANIFEST_VERSION_UNSALTED: u32 = 1;
/// Largest publisher identity accepted, bytes (a libp2p peer id is 38 for ed25519).
pub const MAX_PUBLISHER_LEN: usize = 64;
/// Bytes of a placement salt.
pub const SALT_LEN: usize = 16;
/// Codec tag: Reed-Solomon over GF(2^8) with the Vandermonde-derived systematic matrix of
/// `reed-solomon-erasure` 6, contiguous data shards, zero padding.
pub const CODEC_RS_GF8: &str = "rs-gf8-v1";
/// Largest manifest accepted, encoded (bounds memory of a decoder fed hostile input).
pub const MAX_MANIFEST_LEN: usize = 64 * 1024 * 1024;
/// Largest path accepted, bytes.
pub const MAX_PATH_LEN: usize = 4096;

/// A manifest that cannot be used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ManifestError {
    #[error("manifest is {len} bytes, more than the {MAX_MANIFEST_LEN} allowed")]
    TooLarge { len: usize },
    #[error("manifest does not decode as dag-cbor: {0}")]
    Decode(String),
    #[error("manifest could not be encoded: {0}")]
    Encode(String),
    #[error("unsupported manifest version {0} (this build reads 1 to {MANIFEST_VERSION})")]
    Version(u32),
    #[error("unsupported codec {0:?} (this build reads {CODEC_RS_GF8:?})")]
    Codec(String),
    #[error("unsupported verification group size {0} (this build uses {GROUP_LEN})")]
    GroupSize(u32),
    #[error(transparent)]
    Params(#[from] ParamsError),
    #[error("invalid path {path:?}: {reason}")]
    Path { path: String, reason: &'static str },
    #[error("file {path:?}: {reason}")]
    File { path: String, reason: String },
}

/// One file of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative path with `/` separators.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// BLAKE3 of the whole file (32 bytes).
    #[serde(with = "serde_bytes")]
    pub blake3: Vec<u8>,
    /// Per stripe, the `k + m` shard CIDs (data first).
    pub stripes: Vec<Vec<Cid>>,
}

impl FileEntry {
    /// The file hash as a BLAKE3 value.
    pub fn hash(&self) -> blake3::Hash {
        let bytes: [u8; 32] = self
            .blake3
            .as_slice()
            .try_into()
            .expect("validated manifests hold 32-byte file hashes");
        blake3::Hash::from_bytes(bytes)
    }
}

/// A checkpoint: its files and how they are coded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version ([`MANIFEST_VERSION`]).
    pub version: u32,
    /// Erasure codec tag ([`CODEC_RS_GF8`]).
    pub codec: String,
    /// Data shards per stripe.
    pub k: u8,
    /// Parity shards per stripe.
    pub m: u8,
    /// Stripe size in bytes.
    pub stripe_size: u64,
    /// Verification group size in bytes ([`GROUP_LEN`]).
    pub group_size: u32,
    /// Files, sorted by path.
    pub files: Vec<FileEntry>,
    /// Placement salt (version 2, [`SALT_LEN`] bytes), chosen at random for each put through
    /// a cluster: part of every stripe's placement key, so a stripe's holders cannot be known
    /// (or node ids ground for them) before the put.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    pub salt: Option<Vec<u8>>,
    /// Who published the checkpoint (version 3): the identity (a libp2p peer id's bytes) of
    /// the gateway that put it. Part of the root, so no holder can claim another; only this
    /// identity may ask the network to delete the checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    pub publisher: Option<Vec<u8>>,
}

impl Manifest {
    /// A manifest for `files` coded with `layout`. Files are sorted by path, so the same
    /// checkpoint always has the same root CID.
    pub fn new(layout: &Layout, mut files: Vec<FileEntry>) -> Result<Self, ManifestError> {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let m = Manifest {
            version: MANIFEST_VERSION_UNSALTED,
            codec: CODEC_RS_GF8.to_owned(),
            k: u8::try_from(layout.k()).expect("k <= 64"),
            m: u8::try_from(layout.m()).expect("m <= 64"),
            stripe_size: layout.stripe_size(),
            group_size: GROUP_LEN as u32,
            files,
            salt: None,
            publisher: None,
        };
        m.validate()?;
        Ok(m)
    }

    /// This manifest with a placement salt (format version 2).
    pub fn salted(mut self, salt: [u8; SALT_LEN]) -> Self {
        self.version = MANIFEST_VERSION_SALTED;
        self.salt = Some(salt.to_vec());
        self.publisher = None;
        self
    }

    /// This manifest with a placement salt and its publisher's identity (format version 3).
    pub fn published(
        mut self,
        salt: [u8; SALT_LEN],
        publisher: Vec<u8>,
    ) -> Result<Self, ManifestError> {
        self.version = MANIFEST_VERSION;
        self.salt = Some(salt.to_vec());
        self.publisher = Some(publisher);
        self.validate()?;
        Ok(self)
    }

    /// The publisher's identity, if the manifest names one (version 3).
    pub fn publisher(&self) -> Option<&[u8]> {
        self.publisher.as_deref()
    }

    /// The placement salt, if any.
    pub fn salt(&self) -> Option<&[u8]> {
        self.salt.as_deref()
    }

    pub fn layout(&self) -> Result<Layout, ParamsError> {
        Layout::new(self.k, self.m, self.stripe_size)
    }

    /// Deterministic DAG-CBOR bytes.
    pub fn encode(&self) -> Result<Vec<u8>, ManifestError> {
        serde_ipld_dagcbor::to_vec(self).map_err(|e| ManifestError::Encode(e.to_string()))
    }

    /// Encoded bytes and their CID (the checkpoint root).
    pub fn encode_with_cid(&self) -> Result<(Vec<u8>, Cid), ManifestError> {
        let bytes = self.encode()?;
        let cid = manifest_cid(&bytes);
        Ok((bytes, cid))
    }

    /// Decode and validate untrusted bytes, which must be the manifest's canonical encoding.
    pub fn decode(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() > MAX_MANIFEST_LEN {
            return Err(ManifestError::TooLarge { len: bytes.len() });
        }
        let m: Manifest = serde_ipld_dagcbor::from_slice(bytes)
            .map_err(|e| ManifestError::Decode(e.to_string()))?;
        m.validate()?;
        // The decoder also takes encodings other than the canonical one (an unknown key, bytes
        // after a CID): refused, so that a root CID names the manifest its bytes decode to.
        if m.encode()? != bytes {
            return Err(ManifestError::Decode(
                "not the canonical encoding of a manifest".into(),
            ));
        }
        Ok(m)
    }

    /// Look a file up by path.
    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.files
            .binary_search_by(|f| f.path.as_str().cmp(path))
            .ok()
            .map(|i| &self.files[i])
    }

    /// Total bytes of all files.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Every shard CID, in manifest order (may repeat when content repeats).
    pub fn shard_cids(&self) -> impl Iterator<Item = &Cid> {
        self.files.iter().flat_map(|f| f.stripes.iter().flatten())
    }

    fn validate(&self) -> Result<(), ManifestError> {
        let salt_ok = self.salt.as_ref().is_some_and(|s| s.len() == SALT_LEN);
        let publisher_ok = self
            .publisher
            .as_ref()
            .is_some_and(|p| (1..=MAX_PUBLISHER_LEN).contains(&p.len()));
        let bad = |why: String| Err(ManifestError::Decode(why));
        match self.version {
            MANIFEST_VERSION_UNSALTED if self.salt.is_none() && self.publisher.is_none() => {}
            MANIFEST_VERSION_UNSALTED => {
                return bad(format!(
                    "version {MANIFEST_VERSION_UNSALTED} has no salt and no publisher"
                ));
            }
            MANIFEST_VERSION_SALTED if salt_ok && self.publisher.is_none() => {}
            MANIFEST_VERSION_SALTED => {
                return bad(format!(
                    "version {MANIFEST_VERSION_SALTED} has a {SALT_LEN}-byte salt and no publisher"
                ));
            }
            MANIFEST_VERSION if salt_ok && publisher_ok => {}
            MANIFEST_VERSION => {
                return bad(format!(
                    "version {MANIFEST_VERSION} needs a {SALT_LEN}-byte salt and a publisher of \
                     1 to {MAX_PUBLISHER_LEN} bytes"
                ));
            }
            v => return Err(ManifestError::Version(v)),
        }
        if self.codec != CODEC_RS_GF8 {
            return Err(ManifestError::Codec(self.codec.clone()));
        }
        if self.group_size as usize != GROUP_LEN {
            return Err(ManifestError::GroupSize(self.group_size));
        }
        let layout = self.layout()?;
        let paths: std::collections::BTreeSet<&str> =
            self.files.iter().map(|f| f.path.as_str()).collect();
        for (i, f) in self.files.iter().enumerate() {
            // No file may also be a directory of another (`a` and `a/b`).
            let mut dirs = f.path.match_indices('/').map(|(at, _)| &f.path[..at]);
            if let Some(dir) = dirs.find(|d| paths.contains(d)) {
                return Err(ManifestError::File {
                    path: dir.to_owned(),
                    reason: format!("is both a file and the directory of {:?}", f.path),
                });
            }
            validate_path(&f.path)?;
            if i > 0 && self.files[i - 1].path >= f.path {
                return Err(ManifestError::File {
                    path: f.path.clone(),
                    reason: "files are not sorted by path or a path repeats".into(),
                });
            }
            if f.blake3.len() != 32 {
                return Err(ManifestError::File {
                    path: f.path.clone(),
                    reason: format!("file hash is {} bytes, not 32", f.blake3.len()),
                });
            }
            let want = layout.stripe_count(f.size);
            if f.stripes.len() as u64 != want {
                return Err(ManifestError::File {
                    path: f.path.clone(),
                    reason: format!(
                        "{} stripes listed, {want} expected for {} bytes",
                        f.stripes.len(),
                        f.size
                    ),
                });
            }
            for (s, shards) in f.stripes.iter().enumerate() {
                if shards.len() != layout.total() {
                    return Err(ManifestError::File {
                        path: f.path.clone(),
                        reason: format!(
                            "stripe {s} lists {} shards, {} expected",
                            shards.len(),
                            layout.total()
                        ),
                    });
                }
                if let Some(bad) = shards.iter().find(|c| ids::shard_hash(c).is_err()) {
                    return Err(ManifestError::File {
                        path: f.path.clone(),
                        reason: format!("stripe {s} has a non-shard cid {bad}"),
                    });
                }
            }
        }
        Ok(())
    }
}

/// A path is relative, `/`-separated, without empty, `.` or `..` components, without `\` or NUL.
pub fn validate_path(path: &str) -> Result<(), ManifestError> {
    let bad = |reason| {
        Err(ManifestError::Path {
            path: path.chars().take(256).collect(),
            reason,
        })
    };
    if path.is_empty() {
        return bad("empty");
    }
    if path.len() > MAX_PATH_LEN {
        return bad("too long");
    }
    if path.contains('\\') || path.contains('\0') {
        return bad("contains a backslash or NUL");
    }
    if path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return bad("absolute, or has an empty, '.' or '..' component");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::shard_cid;

    fn sample() -> Manifest {
        let layout = Layout::new(2, 1, 4096).expect("valid");
        let c = shard_cid(&blake3::hash(b"s"));
        Manifest::new(
            &layout,
            vec![
                FileEntry {
                    path: "model.safetensors".into(),
                    size: 5000,
                    blake3: blake3::hash(b"a").as_bytes().to_vec(),
                    stripes: vec![vec![c; 3], vec![c; 3]],
                },
                FileEntry {
                    path: "config.json".into(),
                    size: 0,
                    blake3: blake3::hash(b"").as_bytes().to_vec(),
                    stripes: vec![],
                },
            ],
        )
        .expect("valid manifest")
    }

    #[test]
    fn round_trip_is_deterministic() {
        let m = sample();
        let (bytes, cid) = m.encode_with_cid().expect("encodes");
        let back = Manifest::decode(&bytes).expect("decodes");
        assert_eq!(back, m);
        let (again, cid2) = back.encode_with_cid().expect("encodes");
        assert_eq!(again, bytes);
        assert_eq!(cid, cid2);
        assert_eq!(m.files[0].path, "config.json", "sorted");
        assert!(m.file("model.safetensors").is_some());
        assert!(m.file("nope").is_none());
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            Manifest::decode(b""),
            Err(ManifestError::Decode(_))
        ));
        assert!(matches!(
            Manifest::decode(&[0xff; 40]),
            Err(ManifestError::Decode(_))
        ));
        let mut m = sample();
        m.version = 9;
        let bytes = serde_ipld_dagcbor::to_vec(&m).expect("encodes");
        assert!(matches!(
            Manifest::decode(&bytes),
            Err(ManifestError::Version(9))
        ));
        let mut m = sample();
        m.files[1].stripes.pop();
        let bytes = serde_ipld_dagcbor::to_vec(&m).expect("encodes");
        assert!(matches!(
            Manifest::decode(&bytes),
            Err(ManifestError::File { .. })
        ));
        let mut m = sample();
        m.files[0].path = "../etc/passwd".into();
        let bytes = serde_ipld_dagcbor::to_vec(&m).expect("encodes");
        assert!(matches!(
            Manifest::decode(&bytes),
            Err(ManifestError::Path { .. })
        ));
    }

    proptest::proptest! {
        /// Hostile bytes never panic the decoder; flipping any byte of a valid manifest either
        /// fails cleanly or yields a manifest that re-encodes to the same bytes.
        #[test]
        fn decoder_never_panics(junk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512), at: usize, bit in 0u8..8) {
            let _ = Manifest::decode(&junk);
            let mut bytes = sample().encode().expect("encodes");
            let i = at % bytes.len();
            bytes[i] ^= 1 << bit;
            if let Ok(m) = Manifest::decode(&bytes) {
                proptest::prop_assert_eq!(m.encode().expect("encodes"), bytes);
            }
        }
    }

    /// Only the canonical encoding decodes: bytes after a CID or an unknown key would give a
    /// manifest whose CID is not the CID of the bytes it came from.
    #[test]
    fn non_canonical_encodings_are_rejected() {
        let bytes = sample().encode().expect("encodes");
        // Tag 42 is `d8 2a`, then the CID as a byte string `58 25` of 37 bytes (`00` + CID).
        let at = bytes
            .windows(4)
            .position(|w| w == [0xd8, 0x2a, 0x58, 0x25])
            .expect("a cid");
        let mut longer = bytes[..at + 3].to_vec();
        longer.push(0x26);
        longer.extend_from_slice(&bytes[at + 4..at + 4 + 37]);
        longer.push(0x00);
        longer.extend_from_slice(&bytes[at + 4 + 37..]);
        assert!(matches!(
            Manifest::decode(&longer),
            Err(ManifestError::Decode(_))
        ));
        // An unknown key, in its place in the key order.
        #[derive(Serialize)]
        struct WithExtra<'a> {
            version: u32,
            codec: &'a str,
            k: u8,
            m: u8,
            x: u8,
            stripe_size: u64,
            group_size: u32,
            files: &'a [FileEntry],
        }
        let m = sample();
        let extra = serde_ipld_dagcbor::to_vec(&WithExtra {
            version: m.version,
            codec: &m.codec,
            k: m.k,
            m: m.m,
            x: 0,
            stripe_size: m.stripe_size,
            group_size: m.group_size,
            files: &m.files,
        })
        .expect("encodes");
        assert!(matches!(
            Manifest::decode(&extra),
            Err(ManifestError::Decode(_))
        ));
        // Trailing bytes after the map.
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(Manifest::decode(&trailing).is_err());
        Manifest::decode(&bytes).expect("the canonical encoding decodes");
    }

    #[test]
    fn file_and_directory_of_the_same_name_is_rejected() {
        let layout = Layout::new(2, 1, 4096).expect("valid");
        let f = |p: &str| FileEntry {
            path: p.into(),
            size: 0,
            blake3: blake3::hash(b"").as_bytes().to_vec(),
            stripes: vec![],
        };
        // `-` sorts between `a` and `a/`: the conflict is not between neighbours.
        let err = Manifest::new(&layout, vec![f("a"), f("a-b"), f("a/c")]).expect_err("conflict");
        assert!(matches!(err, ManifestError::File { .. }), "{err}");
        Manifest::new(&layout, vec![f("a-b"), f("a/c"), f("ab")]).expect("no conflict");
    }

    #[test]
    fn path_rules() {
        for ok in ["a", "a/b.json", "tokenizer/vocab.txt", "..a", "a..b"] {
            validate_path(ok).expect(ok);
        }
        for bad in ["", "/a", "a/", "a//b", "./a", "a/../b", "..", "a\\b", "a\0"] {
            assert!(validate_path(bad).is_err(), "{bad:?}");
        }
    }
}
