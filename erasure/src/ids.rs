//! Content identifiers: CIDv1 with a BLAKE3 multihash.
//!
//! Shards use the `raw` codec (0x55); manifests use `dag-cbor` (0x71).

use cid::Cid;
use cid::multihash::Multihash;
use thiserror::Error;

/// Multicodec code of `raw`.
pub const RAW: u64 = 0x55;
/// Multicodec code of `dag-cbor`.
pub const DAG_CBOR: u64 = 0x71;
/// Multihash code of BLAKE3 (32-byte digest).
pub const BLAKE3: u64 = 0x1e;

/// A CID that Cairn cannot use.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CidError {
    /// Not a CID at all.
    #[error("malformed cid {input:?}: {reason}")]
    Malformed { input: String, reason: String },
    /// A CID, but not one Cairn produces (wrong version, codec or hash).
    #[error(
        "unsupported cid {cid}: expected CIDv1 with a 32-byte blake3 multihash and codec {expected}"
    )]
    Unsupported { cid: String, expected: &'static str },
}

fn wrap(codec: u64, hash: &blake3::Hash) -> Cid {
    let mh =
        Multihash::<64>::wrap(BLAKE3, hash.as_bytes()).expect("32 bytes fit a 64-byte multihash");
    Cid::new_v1(codec, mh)
}

/// CID of a shard with this BLAKE3 hash.
pub fn shard_cid(hash: &blake3::Hash) -> Cid {
    wrap(RAW, hash)
}

/// CID of an encoded manifest.
pub fn manifest_cid(encoded: &[u8]) -> Cid {
    wrap(DAG_CBOR, &blake3::hash(encoded))
}

/// The root CID of a manifest whose BLAKE3 digest is `digest` (how the chain records roots).
pub fn manifest_cid_from_digest(digest: [u8; 32]) -> Cid {
    wrap(DAG_CBOR, &blake3::Hash::from_bytes(digest))
}

fn blake3_of(cid: &Cid) -> Option<blake3::Hash> {
    if cid.version() != cid::Version::V1 || cid.hash().code() != BLAKE3 {
        return None;
    }
    let digest: [u8; 32] = cid.hash().digest().try_into().ok()?;
    Some(blake3::Hash::from_bytes(digest))
}

/// The BLAKE3 hash inside a shard CID.
pub fn shard_hash(cid: &Cid) -> Result<blake3::Hash, CidError> {
    blake3_of(cid)
        .filter(|_| cid.codec() == RAW)
        .ok_or_else(|| CidError::Unsupported {
            cid: cid.to_string(),
            expected: "raw (0x55)",
        })
}

/// A CID from its binary form, which must be the whole of `bytes` (the `cid` crate's parser
/// stops at the end of the CID and ignores what follows: two byte strings would name one CID).
pub fn cid_from_bytes(bytes: &[u8]) -> Result<Cid, CidError> {
    let malformed = |reason: String| CidError::Malformed {
        input: bytes.iter().take(64).map(|b| format!("{b:02x}")).collect(),
        reason,
    };
    let cid = Cid::try_from(bytes).map_err(|e| malformed(e.to_string()))?;
    if cid.to_bytes() != bytes {
        return Err(malformed(
            "bytes after the cid, or not its canonical encoding".into(),
        ));
    }
    Ok(cid)
}

/// A CID from its text form, in any multibase. The `cid` crate's parser skips anything up to
/// an `/ipfs/` and ignores bytes after the CID; only the text of exactly one CID is accepted.
fn cid_from_text(input: &str) -> Result<Cid, CidError> {
    let malformed = |reason: String| CidError::Malformed {
        input: input.chars().take(128).collect(),
        reason,
    };
    let cid = Cid::try_from(input).map_err(|e| malformed(e.to_string()))?;
    // CIDv0 (bare base58, no multibase prefix) is never a Cairn CID: the callers refuse it.
    if cid.version() == cid::Version::V1
        && !cid::multibase::decode(input).is_ok_and(|(_, bytes)| bytes == cid.to_bytes())
    {
        return Err(malformed("not the text of exactly one cid".into()));
    }
    Ok(cid)
}

/// Parse a CID string and check it is a Cairn manifest (root) CID.
pub fn parse_cid(input: &str) -> Result<Cid, CidError> {
    let cid = cid_from_text(input)?;
    if cid.codec() != DAG_CBOR || blake3_of(&cid).is_none() {
        return Err(CidError::Unsupported {
            cid: cid.to_string(),
            expected: "dag-cbor (0x71)",
        });
    }
    Ok(cid)
}

/// Parse a CID string and check it is a Cairn shard CID (raw codec, BLAKE3).
pub fn parse_shard_cid(input: &str) -> Result<Cid, CidError> {
    let cid = cid_from_text(input)?;
    shard_hash(&cid)?;
    Ok(cid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_cid_round_trips_through_text() {
        let cid = manifest_cid(b"hello");
        let text = cid.to_string();
        assert!(text.starts_with('b'), "base32 multibase: {text}");
        assert_eq!(parse_cid(&text).expect("parses"), cid);
    }

    #[test]
    fn shard_cid_carries_hash() {
        let h = blake3::hash(b"x");
        assert_eq!(shard_hash(&shard_cid(&h)).expect("raw blake3"), h);
        assert!(shard_hash(&manifest_cid(b"x")).is_err());
    }

    #[test]
    fn rejects_garbage_and_foreign_cids() {
        for bad in ["", "hello", "bafy!!", "Qm123"] {
            assert!(
                matches!(parse_cid(bad), Err(CidError::Malformed { .. })),
                "{bad}"
            );
        }
        let shard = shard_cid(&blake3::hash(b"x")).to_string();
        assert!(matches!(
            parse_cid(&shard),
            Err(CidError::Unsupported { .. })
        ));
        assert!(parse_shard_cid(&shard).is_ok());
        let root = manifest_cid(b"x").to_string();
        assert!(matches!(
            parse_shard_cid(&root),
            Err(CidError::Unsupported { .. })
        ));
        assert!(matches!(
            parse_shard_cid("nope"),
            Err(CidError::Malformed { .. })
        ));
    }

    #[test]
    fn only_the_whole_of_one_cid_is_accepted() {
        let cid = shard_cid(&blake3::hash(b"x"));
        let bytes = cid.to_bytes();
        assert_eq!(cid_from_bytes(&bytes), Ok(cid));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            cid_from_bytes(&longer),
            Err(CidError::Malformed { .. })
        ));
        assert!(cid_from_bytes(&bytes[..bytes.len() - 1]).is_err());
        let text = cid.to_string();
        assert_eq!(parse_shard_cid(&text), Ok(cid));
        for bad in [
            cid::multibase::encode(cid::multibase::Base::Base32Lower, &longer),
            format!("junk/ipfs/{text}"),
            format!("/ipfs/{text}"),
        ] {
            assert!(
                matches!(parse_shard_cid(&bad), Err(CidError::Malformed { .. })),
                "{bad}"
            );
        }
        // Any multibase names the same CID.
        let b58 = cid
            .to_string_of_base(cid::multibase::Base::Base58Btc)
            .expect("v1 cids print in any base");
        assert_eq!(parse_shard_cid(&b58), Ok(cid));
    }
}
