//! The shard transfer protocol spoken on `/cairn/shard/1` streams: one request per stream.
//!
//! Every message starts with a frame header `[version: u8][kind: u8][body len: u32 LE]` and a
//! body of at most [`MAX_BODY`] bytes; bulk bytes (a shard, a manifest) follow the body and
//! their length is declared in it and checked against its own limit before anything is
//! allocated. Integers are little-endian; a CID is `[len: u8][cid bytes]`; a string is
//! `[len: u16][utf-8]`. Decoding never panics, never allocates more than the limits allow, and
//! accepts one encoding per message (the `fuzz_` tests below feed it random, changed and
//! truncated frames).
//!
//! Requests (kind):
//! - 1 `PutShard {upload: [u8; 16], cid, len: u64}` + `len` shard bytes -> `Ok` once stored.
//! - 2 `GetShard {cid, start: u64, end: u64}` -> `Ok` + `ShardHeader` body + bytes `[a, b)`:
//!   the 16 KiB groups covering `[start, end)` (`end = u64::MAX`: to the end).
//! - 3 `Commit {upload, name, manifest len: u32, shards: u32, shards digest: [u8; 32]}` +
//!   manifest -> `Ok` once pinned. `shards` and the digest ([`shards_digest`]) name the
//!   distinct shards the gateway placed on this node; the node refuses a commit that does not
//!   match what its session from that gateway holds.
//! - 4 `Abort {upload}` -> `Ok`; the upload's shards are dropped.
//!
//! Uploads belong to the peer that opened them: `PutShard`, `Commit` and `Abort` of an upload
//! are answered only for the peer whose first `PutShard` created it.
//! - 5 `GetManifest {root}` -> `Ok` + `[len: u32]` body + manifest bytes.
//! - 6 `Have {count: u32, cids}` -> `Ok` + one bit per shard held ([`encode_have`]).
//! - 7 `Delete {root}` -> `Ok` + `[freed shards: u64]` once the node unpinned the checkpoint;
//!   `Forbidden` unless the sender is the publisher the manifest names (and no running deal
//!   this node accepted covers it); `NotFound` when the node does not pin it.
//!
//! Responses: kind 0 `Ok`, else an error kind with a utf-8 message as body.

use cairn_erasure::Cid;
use cairn_erasure::manifest::MAX_MANIFEST_LEN;
use thiserror::Error;

/// The protocol version this node speaks.
pub const VERSION: u8 = 2;
/// Largest frame body (headers, messages, outboards of shards up to [`MAX_SHARD_LEN`]).
pub const MAX_BODY: u32 = 1 << 20;
/// Largest shard accepted on the wire: a 256 MiB stripe memory cap with k = 1.
pub const MAX_SHARD_LEN: u64 = 256 << 20;
/// Frame header length.
pub const HEADER_LEN: usize = 6;

/// Most shards one `Have` request may ask about (its body stays well under [`MAX_BODY`]).
pub const MAX_HAVE: usize = 8192;

/// An upload's identifier, chosen at random by the gateway.
pub type UploadId = [u8; 16];

/// A request frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    PutShard {
        upload: UploadId,
        cid: Cid,
        len: u64,
    },
    GetShard {
        cid: Cid,
        start: u64,
        end: u64,
    },
    Commit {
        upload: UploadId,
        name: String,
        manifest_len: u32,
        /// Distinct shards placed on the receiving node.
        shards: u32,
        /// [`shards_digest`] of those shards.
        digest: [u8; 32],
    },
    Abort {
        upload: UploadId,
    },
    GetManifest {
        root: Cid,
    },
    /// Which of these shards the node holds (index entry and bytes present; not re-verified:
    /// that is the scrubber's job). Answered with one bit per shard, in order.
    Have {
        cids: Vec<Cid>,
    },
    /// The publisher asks the node to unpin a checkpoint (cluster-wide delete).
    Delete {
        root: Cid,
    },
}

/// Error kinds of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Status {
    Ok,
    NotFound,
    BadRequest,
    /// The bytes sent (or held) do not match their CID.
    Corrupt,
    StoreFull,
    UnknownUpload,
    Busy,
    Internal,
    /// The peer may not do this (not a member, or not the upload's owner).
    Forbidden,
    /// The peer is over one of its limits (pending bytes, sessions, streams).
    OverQuota,
}

impl Status {
    fn code(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::NotFound => 1,
            Status::BadRequest => 2,
            Status::Corrupt => 3,
            Status::StoreFull => 4,
            Status::UnknownUpload => 5,
            Status::Busy => 6,
            Status::Internal => 7,
            Status::Forbidden => 8,
            Status::OverQuota => 9,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            0 => Status::Ok,
            1 => Status::NotFound,
            2 => Status::BadRequest,
            3 => Status::Corrupt,
            4 => Status::StoreFull,
            5 => Status::UnknownUpload,
            6 => Status::Busy,
            7 => Status::Internal,
            8 => Status::Forbidden,
            9 => Status::OverQuota,
            _ => return None,
        })
    }
}

/// What precedes the bytes of a `GetShard` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardHeader {
    /// Length of the whole shard.
    pub shard_len: u64,
    /// The shard's outboard (`cairn_erasure::Outboard` bytes): verifies any group range.
    pub outboard: Vec<u8>,
    /// The byte range that follows, aligned to 16 KiB groups.
    pub start: u64,
    pub end: u64,
}

/// A frame that cannot be decoded.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    #[error("unsupported protocol version {0} (this node speaks {VERSION})")]
    Version(u8),
    #[error("unknown message kind {0}")]
    Kind(u8),
    #[error("frame body of {0} bytes is over the {MAX_BODY} byte limit")]
    BodyTooLong(u32),
    #[error("{what} of {len} bytes is over the {max} byte limit")]
    TooLong {
        what: &'static str,
        len: u64,
        max: u64,
    },
    #[error("truncated frame: {0}")]
    Truncated(&'static str),
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
    #[error("invalid cid: {0}")]
    Cid(String),
    #[error("invalid utf-8 in {0}")]
    Utf8(&'static str),
    #[error("invalid range {start}..{end}")]
    Range { start: u64, end: u64 },
}

/// Parse a frame header: returns the kind and body length.
pub fn decode_header(h: &[u8; HEADER_LEN]) -> Result<(u8, u32), WireError> {
    if h[0] != VERSION {
        return Err(WireError::Version(h[0]));
    }
    let len = u32::from_le_bytes([h[2], h[3], h[4], h[5]]);
    if len > MAX_BODY {
        return Err(WireError::BodyTooLong(len));
    }
    Ok((h[1], len))
}

fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.push(VERSION);
    out.push(kind);
    out.extend_from_slice(
        &u32::try_from(body.len())
            .expect("bodies are small")
            .to_le_bytes(),
    );
    out.extend_from_slice(body);
    out
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Truncated(what));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        let b = self.take(8, what)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    fn upload(&mut self) -> Result<UploadId, WireError> {
        Ok(self.take(16, "upload id")?.try_into().expect("16 bytes"))
    }
    fn digest(&mut self) -> Result<[u8; 32], WireError> {
        Ok(self.take(32, "digest")?.try_into().expect("32 bytes"))
    }
    fn cid(&mut self) -> Result<Cid, WireError> {
        let n = usize::from(self.u8("cid length")?);
        let b = self.take(n, "cid")?;
        cairn_erasure::cid_from_bytes(b).map_err(|e| WireError::Cid(e.to_string()))
    }
    fn string(&mut self, what: &'static str) -> Result<String, WireError> {
        let n = usize::from(self.u16(what)?);
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| WireError::Utf8(what))
    }
    fn done(self) -> Result<(), WireError> {
        match self.0.len() {
            0 => Ok(()),
            n => Err(WireError::Trailing(n)),
        }
    }
}

fn put_cid(out: &mut Vec<u8>, cid: &Cid) {
    let b = cid.to_bytes();
    out.push(u8::try_from(b.len()).expect("cids are short"));
    out.extend_from_slice(&b);
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    let mut n = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    out.extend_from_slice(&(n as u16).to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..n]);
}

impl Request {
    fn kind(&self) -> u8 {
        match self {
            Request::PutShard { .. } => 1,
            Request::GetShard { .. } => 2,
            Request::Commit { .. } => 3,
            Request::Abort { .. } => 4,
            Request::GetManifest { .. } => 5,
            Request::Have { .. } => 6,
            Request::Delete { .. } => 7,
        }
    }

    /// The whole frame (header and body).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(64);
        match self {
            Request::PutShard { upload, cid, len } => {
                b.extend_from_slice(upload);
                put_cid(&mut b, cid);
                b.extend_from_slice(&len.to_le_bytes());
            }
            Request::GetShard { cid, start, end } => {
                put_cid(&mut b, cid);
                b.extend_from_slice(&start.to_le_bytes());
                b.extend_from_slice(&end.to_le_bytes());
            }
            Request::Commit {
                upload,
                name,
                manifest_len,
                shards,
                digest,
            } => {
                b.extend_from_slice(upload);
                put_string(&mut b, name);
                b.extend_from_slice(&manifest_len.to_le_bytes());
                b.extend_from_slice(&shards.to_le_bytes());
                b.extend_from_slice(digest);
            }
            Request::Abort { upload } => b.extend_from_slice(upload),
            Request::GetManifest { root } | Request::Delete { root } => put_cid(&mut b, root),
            Request::Have { cids } => {
                b.extend_from_slice(
                    &u32::try_from(cids.len())
                        .expect("at most MAX_HAVE")
                        .to_le_bytes(),
                );
                for c in cids {
                    put_cid(&mut b, c);
                }
            }
        }
        frame(self.kind(), &b)
    }

    /// Decode a request body of the given kind, checking every declared length.
    pub fn decode(kind: u8, body: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader(body);
        let req = match kind {
            1 => {
                let upload = r.upload()?;
                let cid = r.cid()?;
                let len = r.u64("shard length")?;
                if len > MAX_SHARD_LEN {
                    return Err(WireError::TooLong {
                        what: "shard",
                        len,
                        max: MAX_SHARD_LEN,
                    });
                }
                Request::PutShard { upload, cid, len }
            }
            2 => {
                let cid = r.cid()?;
                let start = r.u64("range start")?;
                let end = r.u64("range end")?;
                if start > end {
                    return Err(WireError::Range { start, end });
                }
                Request::GetShard { cid, start, end }
            }
            3 => {
                let upload = r.upload()?;
                let name = r.string("name")?;
                let manifest_len = r.u32("manifest length")?;
                if manifest_len as usize > MAX_MANIFEST_LEN {
                    return Err(WireError::TooLong {
                        what: "manifest",
                        len: manifest_len.into(),
                        max: MAX_MANIFEST_LEN as u64,
                    });
                }
                let shards = r.u32("shard count")?;
                let digest = r.digest()?;
                Request::Commit {
                    upload,
                    name,
                    manifest_len,
                    shards,
                    digest,
                }
            }
            4 => Request::Abort {
                upload: r.upload()?,
            },
            5 => Request::GetManifest { root: r.cid()? },
            6 => {
                let n = r.u32("shard count")? as usize;
                if n > MAX_HAVE {
                    return Err(WireError::TooLong {
                        what: "shard list",
                        len: n as u64,
                        max: MAX_HAVE as u64,
                    });
                }
                let mut cids = Vec::with_capacity(n);
                for _ in 0..n {
                    cids.push(r.cid()?);
                }
                Request::Have { cids }
            }
            7 => Request::Delete { root: r.cid()? },
            k => return Err(WireError::Kind(k)),
        };
        r.done()?;
        Ok(req)
    }
}

/// Domain tag of [`shards_digest`].
const SHARDS_DIGEST_TAG: &[u8] = b"cairn-commit-shards-v1";

/// The digest a `Commit` names its shards by: BLAKE3 over a tag and the distinct shard CIDs'
/// bytes in sorted order (so gateway and node compute it the same way from their own sets).
pub fn shards_digest<'a>(shards: impl IntoIterator<Item = &'a Cid>) -> [u8; 32] {
    let mut v: Vec<Vec<u8>> = shards.into_iter().map(Cid::to_bytes).collect();
    v.sort();
    v.dedup();
    let mut h = blake3::Hasher::new();
    h.update(SHARDS_DIGEST_TAG);
    for b in &v {
        h.update(&(b.len() as u64).to_le_bytes());
        h.update(b);
    }
    *h.finalize().as_bytes()
}

/// A response frame: the status and its body (an error message, or the answer's header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: Status,
    pub body: Vec<u8>,
}

impl Response {
    pub fn ok(body: Vec<u8>) -> Self {
        Self {
            status: Status::Ok,
            body,
        }
    }

    pub fn error(status: Status, message: &str) -> Self {
        let mut n = message.len().min(1024);
        while !message.is_char_boundary(n) {
            n -= 1;
        }
        Self {
            status,
            body: message.as_bytes()[..n].to_vec(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        frame(self.status.code(), &self.body)
    }

    pub fn decode(kind: u8, body: Vec<u8>) -> Result<Self, WireError> {
        let status = Status::from_code(kind).ok_or(WireError::Kind(kind))?;
        Ok(Self { status, body })
    }

    /// The error message of a failed response.
    pub fn message(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl ShardHeader {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(28 + self.outboard.len());
        b.extend_from_slice(&self.shard_len.to_le_bytes());
        b.extend_from_slice(
            &u32::try_from(self.outboard.len())
                .expect("outboards fit a frame")
                .to_le_bytes(),
        );
        b.extend_from_slice(&self.outboard);
        b.extend_from_slice(&self.start.to_le_bytes());
        b.extend_from_slice(&self.end.to_le_bytes());
        b
    }

    pub fn decode(body: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader(body);
        let shard_len = r.u64("shard length")?;
        if shard_len > MAX_SHARD_LEN {
            return Err(WireError::TooLong {
                what: "shard",
                len: shard_len,
                max: MAX_SHARD_LEN,
            });
        }
        let n = r.u32("outboard length")? as usize;
        let outboard = r.take(n, "outboard")?.to_vec();
        let start = r.u64("range start")?;
        let end = r.u64("range end")?;
        if start > end || end > shard_len {
            return Err(WireError::Range { start, end });
        }
        r.done()?;
        Ok(Self {
            shard_len,
            outboard,
            start,
            end,
        })
    }
}

/// Body of a `Have` answer: bit `i` (of byte `i / 8`, least significant first) says whether
/// shard `i` of the request is held.
pub fn encode_have(held: &[bool]) -> Vec<u8> {
    let mut out = vec![0u8; held.len().div_ceil(8)];
    for (i, h) in held.iter().enumerate() {
        if *h {
            out[i / 8] |= 1 << (i % 8);
        }
    }
    out
}

/// Decode a `Have` answer to a request about `n` shards.
pub fn decode_have(body: &[u8], n: usize) -> Result<Vec<bool>, WireError> {
    if body.len() != n.div_ceil(8) {
        return Err(WireError::Truncated("have bitmap"));
    }
    if !n.is_multiple_of(8) && body[n / 8] >> (n % 8) != 0 {
        return Err(WireError::Trailing(1));
    }
    Ok((0..n).map(|i| body[i / 8] & (1 << (i % 8)) != 0).collect())
}

/// Body of a `GetManifest` answer: the manifest length.
pub fn decode_manifest_len(body: &[u8]) -> Result<u32, WireError> {
    let mut r = Reader(body);
    let n = r.u32("manifest length")?;
    r.done()?;
    if n as usize > MAX_MANIFEST_LEN {
        return Err(WireError::TooLong {
            what: "manifest",
            len: n.into(),
            max: MAX_MANIFEST_LEN as u64,
        });
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cid_of(seed: u8) -> Cid {
        cairn_erasure::shard_cid(&blake3::hash(&[seed]))
    }

    fn request() -> impl Strategy<Value = Request> {
        let up = any::<[u8; 16]>();
        prop_oneof![
            (up, any::<u8>(), 0..=MAX_SHARD_LEN).prop_map(|(upload, c, len)| Request::PutShard {
                upload,
                cid: cid_of(c),
                len
            }),
            (any::<u8>(), any::<u64>(), any::<u64>()).prop_map(|(c, a, b)| Request::GetShard {
                cid: cid_of(c),
                start: a.min(b),
                end: a.max(b)
            }),
            (
                up,
                ".{0,40}",
                0..=MAX_MANIFEST_LEN as u32,
                any::<u32>(),
                any::<[u8; 32]>()
            )
                .prop_map(|(upload, name, manifest_len, shards, digest)| {
                    Request::Commit {
                        upload,
                        name,
                        manifest_len,
                        shards,
                        digest,
                    }
                }),
            up.prop_map(|upload| Request::Abort { upload }),
            any::<u8>().prop_map(|c| Request::GetManifest { root: cid_of(c) }),
            any::<u8>().prop_map(|c| Request::Delete { root: cid_of(c) }),
            prop::collection::vec(any::<u8>(), 0..40).prop_map(|cs| Request::Have {
                cids: cs.into_iter().map(cid_of).collect()
            }),
        ]
    }

    /// Cases per fuzz test: `PROPTEST_CASES` when set (`ops/fuzz.sh`), else `ci`.
    fn cases(ci: u32) -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(ci)
    }

    fn split(frame: &[u8]) -> (u8, Vec<u8>) {
        let h: [u8; HEADER_LEN] = frame[..HEADER_LEN].try_into().expect("header");
        let (kind, len) = decode_header(&h).expect("header decodes");
        assert_eq!(len as usize, frame.len() - HEADER_LEN);
        (kind, frame[HEADER_LEN..].to_vec())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases(4096)))]

        #[test]
        fn have_answers_round_trip(held in prop::collection::vec(any::<bool>(), 0..100)) {
            let body = encode_have(&held);
            prop_assert_eq!(decode_have(&body, held.len()), Ok(held.clone()));
            prop_assert!(decode_have(&body, held.len() + 8).is_err());
        }

        #[test]
        fn requests_round_trip(req in request()) {
            let (kind, body) = split(&req.encode());
            prop_assert_eq!(Request::decode(kind, &body), Ok(req));
        }

        #[test]
        fn fuzz_wire_truncated_requests_are_errors(req in request(), cut in any::<prop::sample::Index>()) {
            let (kind, body) = split(&req.encode());
            let at = cut.index(body.len().max(1)).min(body.len().saturating_sub(1));
            if !body.is_empty() {
                prop_assert!(Request::decode(kind, &body[..at]).is_err());
            }
        }

        #[test]
        fn fuzz_wire_random_bytes_never_panic(kind in any::<u8>(), body in prop::collection::vec(any::<u8>(), 0..300),
                                    header in any::<[u8; HEADER_LEN]>()) {
            let _ = Request::decode(kind, &body);
            let _ = ShardHeader::decode(&body);
            let _ = decode_manifest_len(&body);
            let _ = Response::decode(kind, body);
            if let Ok((_, len)) = decode_header(&header) {
                prop_assert!(len <= MAX_BODY);
            }
        }

        /// Valid frames with random bytes overwritten, length fields included, and cut short:
        /// decoding answers an error or a request whose declared lengths are within limits
        /// and whose encoding is exactly the frame's body.
        #[test]
        fn fuzz_wire_mutated_frames_never_panic_or_exceed_limits(
            req in request(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), any::<bool>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut f = req.encode();
            for (at, v, insert) in edits {
                if insert {
                    f.insert(at.index(f.len() + 1), v);
                } else {
                    let i = at.index(f.len());
                    f[i] = v;
                }
            }
            f.truncate(cut.index(f.len() + 1).max(HEADER_LEN.min(f.len())));
            if f.len() < HEADER_LEN {
                return Ok(());
            }
            let h: [u8; HEADER_LEN] = f[..HEADER_LEN].try_into().expect("header");
            let Ok((kind, len)) = decode_header(&h) else { return Ok(()) };
            prop_assert!(len <= MAX_BODY);
            let body = &f[HEADER_LEN..];
            if let Ok(r) = Request::decode(kind, body) {
                prop_assert_eq!(&r.encode()[HEADER_LEN..], body);
                match r {
                    Request::PutShard { len, .. } => prop_assert!(len <= MAX_SHARD_LEN),
                    Request::Commit { manifest_len, .. } => {
                        prop_assert!(manifest_len as usize <= MAX_MANIFEST_LEN)
                    }
                    Request::GetShard { start, end, .. } => prop_assert!(start <= end),
                    _ => {}
                }
            }
        }

        /// `GetShard` answer headers with bytes overwritten, inserted and cut: an error, or a
        /// header within the limits whose encoding is exactly the body.
        #[test]
        fn fuzz_wire_mutated_shard_headers(
            len in 0..=MAX_SHARD_LEN,
            ob in prop::collection::vec(any::<u8>(), 0..200),
            (a, b) in (any::<u64>(), any::<u64>()),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), any::<bool>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let (start, end) = ((a % (len + 1)).min(b % (len + 1)), (a % (len + 1)).max(b % (len + 1)));
            let mut body = ShardHeader { shard_len: len, outboard: ob, start, end }.encode();
            for (at, v, insert) in edits {
                if insert {
                    body.insert(at.index(body.len() + 1), v);
                } else {
                    let i = at.index(body.len());
                    body[i] = v;
                }
            }
            body.truncate(cut.index(body.len() + 1));
            if let Ok(h) = ShardHeader::decode(&body) {
                prop_assert!(h.shard_len <= MAX_SHARD_LEN);
                prop_assert!(h.start <= h.end && h.end <= h.shard_len);
                prop_assert!(h.outboard.len() < body.len());
                prop_assert_eq!(h.encode(), body);
            }
        }

        #[test]
        fn shard_headers_round_trip(len in 0..MAX_SHARD_LEN, ob in prop::collection::vec(any::<u8>(), 0..200),
                                    a in any::<u64>(), b in any::<u64>()) {
            let (start, end) = ((a % (len + 1)).min(b % (len + 1)), (a % (len + 1)).max(b % (len + 1)));
            let h = ShardHeader { shard_len: len, outboard: ob, start, end };
            prop_assert_eq!(ShardHeader::decode(&h.encode()), Ok(h));
        }
    }

    #[test]
    fn limits_and_versions_are_enforced() {
        let mut f = Request::Abort { upload: [0; 16] }.encode();
        f[0] = 9;
        let h: [u8; HEADER_LEN] = f[..HEADER_LEN].try_into().expect("header");
        assert_eq!(decode_header(&h), Err(WireError::Version(9)));
        let mut h = [VERSION, 1, 0, 0, 0, 0];
        h[2..].copy_from_slice(&(MAX_BODY + 1).to_le_bytes());
        assert_eq!(decode_header(&h), Err(WireError::BodyTooLong(MAX_BODY + 1)));
        let big = Request::PutShard {
            upload: [1; 16],
            cid: cid_of(1),
            len: MAX_SHARD_LEN + 1,
        };
        let (kind, body) = split(&big.encode());
        assert!(matches!(
            Request::decode(kind, &body),
            Err(WireError::TooLong { what: "shard", .. })
        ));
        assert_eq!(Request::decode(77, &[]), Err(WireError::Kind(77)));
        let (kind, mut body) = split(&Request::Abort { upload: [2; 16] }.encode());
        body.push(0);
        assert_eq!(Request::decode(kind, &body), Err(WireError::Trailing(1)));
        // A CID field holding a CID and more: the extra bytes would be ignored by the CID
        // parser, so that two frames would name one shard.
        let mut body = Vec::new();
        let cid = cid_of(3).to_bytes();
        body.push(u8::try_from(cid.len() + 1).expect("short"));
        body.extend_from_slice(&cid);
        body.push(0);
        assert!(matches!(Request::decode(5, &body), Err(WireError::Cid(_))));
        let r = Response::error(Status::Corrupt, "bad");
        let (kind, body) = split(&r.encode());
        assert_eq!(Response::decode(kind, body), Ok(r));
    }
}
