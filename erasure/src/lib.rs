//! The Cairn checkpoint format, as pure functions: no I/O, no async, no clocks.
//!
//! - [`layout`]: how a file is cut into stripes and a stripe into `k` contiguous data shards.
//! - [`coder`]: Reed-Solomon coding of a stripe into `k + m` shards and back.
//! - [`verify`]: BLAKE3 verified streaming: a shard's hash tree cut at 16 KiB groups, so any
//!   range of a shard can be checked against its CID without reading the rest.
//! - [`ids`]: CIDv1 for shards (raw, BLAKE3) and manifests (DAG-CBOR, BLAKE3).
//! - [`manifest`]: the versioned, deterministic DAG-CBOR manifest whose CID is a checkpoint's root.
//! - [`stripe`]: the streaming encoder that turns file bytes into encoded stripes.
//!
//! The byte-level format is described in `FORMAT.md` next to this crate.

pub mod coder;
pub mod filehash;
pub mod ids;
pub mod layout;
pub mod manifest;
pub mod stripe;
pub mod verify;

pub use coder::{Coder, DecodeError};
pub use filehash::{FileHash, StripeHash, hash_stripe};
pub use ids::{
    CidError, cid_from_bytes, manifest_cid, parse_cid, parse_shard_cid, shard_cid, shard_hash,
};
pub use layout::{Layout, ParamsError, Piece};
pub use manifest::{FileEntry, Manifest, ManifestError};
pub use stripe::{Coded, EncodedStripe, ShardMeta, Stripe, encode_stripe};
pub use verify::{GROUP_LEN, Outboard, VerifyError};

/// Re-exported so dependants name the same CID type.
pub use cid::Cid;
