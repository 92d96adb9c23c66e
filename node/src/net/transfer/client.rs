//! The client side of the shard protocol: what a gateway (or a reader) asks of peers.

use std::sync::Arc;
use std::time::Instant;

use cairn_erasure::{Cid, Outboard, manifest_cid, shard_hash};
use libp2p::futures::AsyncWriteExt;
use libp2p::{PeerId, Stream};
use tracing::warn;

use super::{
    REQUEST_TIMEOUT, TransferError, TransferStats, lock, read_exact, read_response, write_all,
};
use crate::net::swarm::{Network, SHARD_PROTOCOL};
use crate::net::wire::{self, Request, ShardHeader, Status, UploadId};

/// Attempts of a request a peer dropped unanswered or refused as busy.
const RETRIES: usize = 4;
/// Wait before the first retry (doubled each time).
const RETRY_WAIT: std::time::Duration = std::time::Duration::from_millis(20);
/// A stream that fails to open sooner than this failed on a closing connection, not a dial.
const FAST_OPEN_FAILURE: std::time::Duration = std::time::Duration::from_millis(250);

/// Client side of the protocol.
#[derive(Clone)]
pub struct Transfers {
    net: Network,
    stats: Arc<TransferStats>,
}

impl Transfers {
    pub fn new(net: Network, stats: Arc<TransferStats>) -> Self {
        Self { net, stats }
    }

    pub fn stats(&self) -> &TransferStats {
        &self.stats
    }

    async fn open(&self, peer: PeerId) -> Result<Stream, TransferError> {
        let started = std::time::Instant::now();
        let mut opened = self.net.streams().open_stream(peer, SHARD_PROTOCOL).await;
        // A connection that closes as the stream opens on it (the peer replaced it, e.g.
        // after this node restarted) fails at once: once more, on the connection that is
        // left or a new one. A dial that failed slowly is not repeated.
        if let Err(libp2p_stream::OpenStreamError::Io(_)) = &opened
            && started.elapsed() < FAST_OPEN_FAILURE
        {
            tokio::time::sleep(RETRY_WAIT).await;
            opened = self.net.streams().open_stream(peer, SHARD_PROTOCOL).await;
        }
        opened.map_err(|e| TransferError::Open {
            peer,
            reason: e.to_string(),
        })
    }

    /// Run a request within [`REQUEST_TIMEOUT`], sending it again (a few times, backing
    /// off) while the peer drops the stream unanswered (a burst overflowed its inbound queue)
    /// or answers busy (it serves as many of our streams as it allows).
    async fn timed<T, F: Future<Output = Result<T, TransferError>>>(
        peer: PeerId,
        mut f: impl FnMut() -> F,
    ) -> Result<T, TransferError> {
        tokio::time::timeout(REQUEST_TIMEOUT, async {
            let mut wait = RETRY_WAIT;
            for _ in 1..RETRIES {
                match f().await {
                    Err(TransferError::Dropped { .. })
                    | Err(TransferError::Remote {
                        status: Status::Busy,
                        ..
                    }) => {
                        tokio::time::sleep(wait).await;
                        wait *= 2;
                    }
                    r => return r,
                }
            }
            f().await
        })
        .await
        .unwrap_or(Err(TransferError::Timeout { peer }))
    }

    /// Open a stream, send `req` and `bytes`, and read the answer's body (`Ok`) and the
    /// stream (for what follows the body).
    async fn request(
        &self,
        peer: PeerId,
        req: &Request,
        bytes: &[u8],
    ) -> Result<(Vec<u8>, Stream), TransferError> {
        let mut s = self.open(peer).await?;
        let sent = async {
            write_all(&mut s, &req.encode(), peer).await?;
            if !bytes.is_empty() {
                write_all(&mut s, bytes, peer).await?;
            }
            s.flush()
                .await
                .map_err(|source| TransferError::Io { peer, source })
        }
        .await;
        if let Err(e) = sent {
            // A peer that refuses a request answers before reading it and stops the stream
            // (its answer says why, the failed write does not); one that dropped the stream
            // unread answers nothing, and the request may be sent again.
            return match read_response(&mut s, peer).await {
                Err(answer @ (TransferError::Remote { .. } | TransferError::Dropped { .. })) => {
                    Err(answer)
                }
                _ => Err(e),
            };
        }
        self.stats.metrics.bytes("out", bytes.len() as u64);
        let body = read_response(&mut s, peer).await?;
        Ok((body, s))
    }

    /// Send a request followed by its bulk bytes; returns once the peer answered `Ok`.
    async fn send_with_bytes(
        &self,
        peer: PeerId,
        req: Request,
        bytes: &[u8],
    ) -> Result<(), TransferError> {
        Self::timed(peer, || async {
            self.request(peer, &req, bytes).await?;
            Ok(())
        })
        .await
    }

    /// Send one shard of an upload; returns once the peer verified and stored it.
    pub async fn push_shard(
        &self,
        peer: PeerId,
        upload: UploadId,
        cid: &Cid,
        data: &[u8],
    ) -> Result<(), TransferError> {
        let req = Request::PutShard {
            upload,
            cid: *cid,
            len: data.len() as u64,
        };
        let t = Instant::now();
        let r = self.send_with_bytes(peer, req, data).await;
        self.stats
            .metrics
            .record("push", r.is_ok(), t.elapsed().as_secs_f64());
        r
    }

    /// Fetch bytes `[start, end)` of a shard, verified against its CID.
    pub async fn fetch_range(
        &self,
        peer: PeerId,
        cid: &Cid,
        start: u64,
        end: u64,
    ) -> Result<Vec<u8>, TransferError> {
        let started = Instant::now();
        let result = Self::timed(peer, || async {
            let req = Request::GetShard {
                cid: *cid,
                start,
                end,
            };
            let (body, mut s) = self.request(peer, &req, &[]).await?;
            let h = ShardHeader::decode(&body)
                .map_err(|source| TransferError::Wire { peer, source })?;
            let bad = |reason: String| TransferError::Verify {
                peer,
                cid: cid.to_string(),
                reason,
            };
            let hash = shard_hash(cid).map_err(|e| bad(e.to_string()))?;
            let ob = Outboard::from_bytes(&h.outboard).map_err(|e| bad(e.to_string()))?;
            ob.check(&hash).map_err(|e| bad(e.to_string()))?;
            let end = end.min(ob.len());
            let (a, b) = ob.aligned(start, end).map_err(|e| bad(e.to_string()))?;
            if (h.start, h.end, h.shard_len) != (a, b, ob.len()) {
                return Err(bad(format!(
                    "answered range {}..{} of {} where {a}..{b} of {} was due",
                    h.start,
                    h.end,
                    h.shard_len,
                    ob.len()
                )));
            }
            let n = usize::try_from(b - a).expect("shards fit memory");
            let mut data = vec![0u8; n];
            read_exact(&mut s, &mut data, peer).await?;
            self.stats.metrics.bytes("in", (n + body.len()) as u64);
            *lock(&self.stats.per_peer_in).entry(peer).or_default() += (n + body.len()) as u64;
            ob.verify_groups(&hash, a, &data)
                .map_err(|e| bad(e.to_string()))?;
            data.truncate(usize::try_from(end - a).expect("within the buffer"));
            data.drain(..usize::try_from(start - a).expect("within the buffer"));
            Ok(data)
        })
        .await;
        self.stats
            .metrics
            .record("fetch", result.is_ok(), started.elapsed().as_secs_f64());
        if let Err(TransferError::Verify { .. } | TransferError::Wire { .. }) = &result {
            self.stats.metrics.bad_peer_answers.inc();
            warn!(%peer, error = %result.as_ref().err().map(ToString::to_string).unwrap_or_default(), "peer sent bad data; disconnecting it");
            self.net.disconnect(peer).await;
        }
        result
    }

    /// Pin an upload's shards on a peer under the manifest. `placed` are the shards this
    /// upload placed on the peer: the peer refuses the commit unless its session from this
    /// node holds exactly those.
    pub async fn commit(
        &self,
        peer: PeerId,
        upload: UploadId,
        name: &str,
        manifest: &[u8],
        placed: impl ExactSizeIterator<Item = &Cid> + Clone,
    ) -> Result<(), TransferError> {
        let req = Request::Commit {
            upload,
            name: name.to_owned(),
            manifest_len: u32::try_from(manifest.len()).expect("manifests are <= 64 MiB"),
            shards: u32::try_from(placed.len()).unwrap_or(u32::MAX),
            digest: wire::shards_digest(placed),
        };
        self.send_with_bytes(peer, req, manifest).await
    }

    /// Drop an upload's shards on a peer (they expire anyway if this fails).
    pub async fn abort(&self, peer: PeerId, upload: UploadId) -> Result<(), TransferError> {
        Self::timed(peer, || async {
            self.request(peer, &Request::Abort { upload }, &[]).await?;
            Ok(())
        })
        .await
    }

    /// Which of `cids` the peer holds (its own word: a holder that lies is caught when it is
    /// read from). Asked [`wire::MAX_HAVE`] at a time.
    pub async fn have(&self, peer: PeerId, cids: &[Cid]) -> Result<Vec<bool>, TransferError> {
        let mut held = Vec::with_capacity(cids.len());
        for batch in cids.chunks(wire::MAX_HAVE) {
            let req = Request::Have {
                cids: batch.to_vec(),
            };
            let body = Self::timed(peer, || async {
                let (body, _) = self.request(peer, &req, &[]).await?;
                Ok(body)
            })
            .await?;
            held.extend(
                wire::decode_have(&body, batch.len())
                    .map_err(|source| TransferError::Wire { peer, source })?,
            );
        }
        Ok(held)
    }

    /// Ask `peer` to unpin `root` (this node being its publisher); returns the shards it
    /// freed.
    pub async fn delete(&self, peer: PeerId, root: &Cid) -> Result<u64, TransferError> {
        let body = Self::timed(peer, || async {
            let (body, _) = self
                .request(peer, &Request::Delete { root: *root }, &[])
                .await?;
            Ok(body)
        })
        .await?;
        let freed: [u8; 8] = body
            .as_slice()
            .try_into()
            .map_err(|_| TransferError::Wire {
                peer,
                source: wire::WireError::Truncated("delete answer"),
            })?;
        Ok(u64::from_le_bytes(freed))
    }

    /// Fetch a checkpoint's manifest, verified against its root CID.
    pub async fn fetch_manifest(&self, peer: PeerId, root: &Cid) -> Result<Vec<u8>, TransferError> {
        Self::timed(peer, || async {
            let (body, mut s) = self
                .request(peer, &Request::GetManifest { root: *root }, &[])
                .await?;
            let n = wire::decode_manifest_len(&body)
                .map_err(|source| TransferError::Wire { peer, source })?;
            let mut bytes = vec![0u8; n as usize];
            read_exact(&mut s, &mut bytes, peer).await?;
            if manifest_cid(&bytes) != *root {
                return Err(TransferError::Verify {
                    peer,
                    cid: root.to_string(),
                    reason: "manifest bytes do not hash to the root".into(),
                });
            }
            Ok(bytes)
        })
        .await
    }
}
