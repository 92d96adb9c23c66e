//! Shard transfer over QUIC streams (`/cairn/shard/1`, one request per stream): the client
//! calls a gateway makes, and the server every node runs. Everything received is verified
//! against its CID before it is used or stored; a peer whose bytes do not verify is cut off.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::pipeline::now_unix;

use cairn_erasure::{Cid, Manifest, Outboard, manifest_cid, shard_hash};
use cairn_storage::{Backend, CommitError, PutError, PutSession, ReadError, Store};
use libp2p::futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream};
use thiserror::Error;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::swarm::{Network, SHARD_PROTOCOL};
use super::wire::{self, HEADER_LEN, Request, Response, ShardHeader, Status, UploadId, WireError};
use crate::metrics::TransferMetrics;

/// Longest a single request may take end to end (a 256 MiB shard at ~10 MiB/s fits).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// An upload session with no activity for this long is dropped with its shards.
pub const UPLOAD_IDLE: Duration = Duration::from_secs(120);
/// Memory the server may hold for inbound shards at once, in MiB.
const INBOUND_BUDGET_MIB: u32 = 512;
/// Streams served at once; more wait.
const MAX_STREAMS: usize = 256;

/// A transfer with a peer failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TransferError {
    #[error("cannot open a stream to {peer}: {reason}")]
    Open { peer: PeerId, reason: String },
    #[error("i/o with {peer}: {source}")]
    Io {
        peer: PeerId,
        #[source]
        source: std::io::Error,
    },
    #[error("{peer} sent a malformed message: {source}")]
    Wire {
        peer: PeerId,
        #[source]
        source: WireError,
    },
    #[error("{peer} answered {status:?}: {message}")]
    Remote {
        peer: PeerId,
        status: Status,
        message: String,
    },
    #[error("{peer} sent bytes that do not match {cid}: {reason}")]
    Verify {
        peer: PeerId,
        cid: String,
        reason: String,
    },
    #[error("{peer} did not answer within {0:?}", REQUEST_TIMEOUT)]
    Timeout { peer: PeerId },
}

impl TransferError {
    /// The peer answered that it does not have what was asked.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            TransferError::Remote {
                status: Status::NotFound,
                ..
            }
        )
    }
}

/// What this node's transfers moved: the component's Prometheus metrics, and bytes received
/// per peer (for `cairn get`'s per-source figures).
#[derive(Debug)]
pub struct TransferStats {
    pub metrics: TransferMetrics,
    /// Shard bytes received from each peer (one entry per peer ever read from).
    pub per_peer_in: Mutex<HashMap<PeerId, u64>>,
}

impl TransferStats {
    pub fn new(metrics: TransferMetrics) -> Self {
        Self {
            metrics,
            per_peer_in: Mutex::new(HashMap::new()),
        }
    }

    /// Bytes received from each peer so far.
    pub fn sources(&self) -> Vec<(PeerId, u64)> {
        let mut v: Vec<_> = lock(&self.per_peer_in)
            .iter()
            .map(|(p, n)| (*p, *n))
            .collect();
        v.sort();
        v
    }
}

/// Client side of the protocol.
#[derive(Clone)]
pub struct Transfers {
    net: Network,
    stats: Arc<TransferStats>,
}

async fn read_frame(stream: &mut Stream, peer: PeerId) -> Result<(u8, Vec<u8>), TransferError> {
    let mut h = [0u8; HEADER_LEN];
    read_exact(stream, &mut h, peer).await?;
    let (kind, len) =
        wire::decode_header(&h).map_err(|source| TransferError::Wire { peer, source })?;
    let mut body = vec![0u8; len as usize];
    read_exact(stream, &mut body, peer).await?;
    Ok((kind, body))
}

async fn read_exact(
    stream: &mut Stream,
    buf: &mut [u8],
    peer: PeerId,
) -> Result<(), TransferError> {
    stream
        .read_exact(buf)
        .await
        .map_err(|source| TransferError::Io { peer, source })
}

async fn write_all(stream: &mut Stream, buf: &[u8], peer: PeerId) -> Result<(), TransferError> {
    stream
        .write_all(buf)
        .await
        .map_err(|source| TransferError::Io { peer, source })
}

/// Read a response; an error status becomes [`TransferError::Remote`].
async fn read_response(stream: &mut Stream, peer: PeerId) -> Result<Vec<u8>, TransferError> {
    let (kind, body) = read_frame(stream, peer).await?;
    let r = Response::decode(kind, body).map_err(|source| TransferError::Wire { peer, source })?;
    if r.status != Status::Ok {
        return Err(TransferError::Remote {
            peer,
            status: r.status,
            message: r.message(),
        });
    }
    Ok(r.body)
}

impl Transfers {
    pub fn new(net: Network, stats: Arc<TransferStats>) -> Self {
        Self { net, stats }
    }

    pub fn stats(&self) -> &TransferStats {
        &self.stats
    }

    async fn open(&self, peer: PeerId) -> Result<Stream, TransferError> {
        self.net
            .streams()
            .open_stream(peer, SHARD_PROTOCOL)
            .await
            .map_err(|e| TransferError::Open {
                peer,
                reason: e.to_string(),
            })
    }

    async fn timed<T>(
        peer: PeerId,
        f: impl Future<Output = Result<T, TransferError>>,
    ) -> Result<T, TransferError> {
        tokio::time::timeout(REQUEST_TIMEOUT, f)
            .await
            .unwrap_or(Err(TransferError::Timeout { peer }))
    }

    /// Send a request followed by its bulk bytes; returns once the peer answered `Ok`.
    async fn send_with_bytes(
        &self,
        peer: PeerId,
        req: Request,
        bytes: &[u8],
    ) -> Result<(), TransferError> {
        Self::timed(peer, async {
            let mut s = self.open(peer).await?;
            write_all(&mut s, &req.encode(), peer).await?;
            write_all(&mut s, bytes, peer).await?;
            s.flush()
                .await
                .map_err(|source| TransferError::Io { peer, source })?;
            self.stats.metrics.bytes("out", bytes.len() as u64);
            read_response(&mut s, peer).await?;
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
        let result = Self::timed(peer, async {
            let mut s = self.open(peer).await?;
            write_all(
                &mut s,
                &Request::GetShard {
                    cid: *cid,
                    start,
                    end,
                }
                .encode(),
                peer,
            )
            .await?;
            let body = read_response(&mut s, peer).await?;
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

    /// Pin an upload's shards on a peer under the manifest.
    pub async fn commit(
        &self,
        peer: PeerId,
        upload: UploadId,
        name: &str,
        manifest: &[u8],
    ) -> Result<(), TransferError> {
        let req = Request::Commit {
            upload,
            name: name.to_owned(),
            manifest_len: u32::try_from(manifest.len()).expect("manifests are <= 64 MiB"),
        };
        self.send_with_bytes(peer, req, manifest).await
    }

    /// Drop an upload's shards on a peer (best effort: they expire anyway).
    pub async fn abort(&self, peer: PeerId, upload: UploadId) {
        let _ = Self::timed(peer, async {
            let mut s = self.open(peer).await?;
            write_all(&mut s, &Request::Abort { upload }.encode(), peer).await?;
            read_response(&mut s, peer).await?;
            Ok(())
        })
        .await;
    }

    /// Fetch a checkpoint's manifest, verified against its root CID.
    pub async fn fetch_manifest(&self, peer: PeerId, root: &Cid) -> Result<Vec<u8>, TransferError> {
        Self::timed(peer, async {
            let mut s = self.open(peer).await?;
            write_all(&mut s, &Request::GetManifest { root: *root }.encode(), peer).await?;
            let body = read_response(&mut s, peer).await?;
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

/// An upload a gateway is pushing to this node.
struct Session<B: Backend> {
    put: Arc<Mutex<PutSession<B>>>,
    last: Instant,
}

/// Drop upload sessions off the async threads: dropping one garbage-collects the shards only
/// it stored (store I/O).
fn drop_sessions<B: Backend>(sessions: Vec<Session<B>>) {
    if !sessions.is_empty() {
        tokio::task::spawn_blocking(move || drop(sessions));
    }
}

/// What a node announces after pinning its share of `root`: the root and every shard of the
/// manifest it holds, each once.
pub(crate) fn announcements<B: Backend>(
    store: &Store<B>,
    manifest: &Manifest,
    root: Cid,
) -> Result<Vec<Cid>, cairn_storage::BackendError> {
    let mut keys = vec![root];
    let distinct: std::collections::BTreeSet<&Cid> = manifest.shard_cids().collect();
    for cid in distinct {
        if store.has_shard(cid)? {
            keys.push(*cid);
        }
    }
    Ok(keys)
}

/// Test-only fault switch (environment): serve shard bytes with one byte flipped, after
/// they were verified locally — a lying peer.
pub const FAULT_CORRUPT_SERVED_ENV: &str = "CAIRN_FAULT_CORRUPT_SERVED";

/// The server side: answers shard streams from peers.
pub struct ShardServer<B: Backend> {
    store: Store<B>,
    net: Network,
    sessions: Mutex<HashMap<UploadId, Session<B>>>,
    inbound: Semaphore,
    stats: Arc<TransferStats>,
    corrupt_served: bool,
}

/// Lock a mutex whose data stays consistent even if a holder panicked (counters, maps of
/// sessions): a poisoned lock is taken over.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn put_status(e: &PutError) -> Status {
    match e {
        PutError::StoreFull { .. } => Status::StoreFull,
        PutError::Verify { .. } => Status::Corrupt,
        _ => Status::Internal,
    }
}

fn read_status(e: &ReadError) -> Status {
    match e {
        ReadError::NotFound(_) => Status::NotFound,
        ReadError::Corrupt { .. } => Status::Corrupt,
        ReadError::Range { .. } => Status::BadRequest,
        _ => Status::Internal,
    }
}

impl<B: Backend> ShardServer<B> {
    pub fn new(store: Store<B>, net: Network, stats: Arc<TransferStats>) -> Arc<Self> {
        let corrupt_served = std::env::var(FAULT_CORRUPT_SERVED_ENV).is_ok_and(|v| v == "1");
        if corrupt_served {
            warn!("fault injection on: this node serves corrupted shard bytes");
        }
        Arc::new(Self {
            store,
            net,
            sessions: Mutex::new(HashMap::new()),
            inbound: Semaphore::new(INBOUND_BUDGET_MIB as usize),
            stats,
            corrupt_served,
        })
    }

    /// Accept and answer shard streams until `cancel` fires; also expires idle uploads.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut incoming = match self.net.streams().accept(SHARD_PROTOCOL) {
            Ok(i) => i,
            Err(e) => {
                warn!(error = %e, "cannot accept shard streams");
                return;
            }
        };
        let mut tasks = JoinSet::new();
        let mut sweep = tokio::time::interval(Duration::from_secs(10));
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = sweep.tick() => self.expire(),
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Err(e) = done { warn!(error = %e, "shard stream task failed"); }
                }
                next = incoming.next(), if tasks.len() < MAX_STREAMS => {
                    let Some((peer, stream)) = next else { break };
                    let me = Arc::clone(&self);
                    tasks.spawn(async move { me.serve(peer, stream).await });
                }
            }
        }
        tasks.shutdown().await;
    }

    fn expire(&self) {
        let expired: Vec<Session<B>> = {
            let mut s = lock(&self.sessions);
            let idle: Vec<UploadId> = s
                .iter()
                .filter(|(_, v)| v.last.elapsed() >= UPLOAD_IDLE)
                .map(|(k, _)| *k)
                .collect();
            idle.iter().filter_map(|k| s.remove(k)).collect()
        };
        if !expired.is_empty() {
            warn!(
                expired = expired.len(),
                "dropping idle uploads and their shards"
            );
            drop_sessions(expired);
        }
    }

    async fn serve(&self, peer: PeerId, mut stream: Stream) {
        let m = &self.stats.metrics;
        m.active_streams.inc();
        let started = Instant::now();
        let mut op = None;
        let result =
            tokio::time::timeout(REQUEST_TIMEOUT, self.answer(peer, &mut stream, &mut op)).await;
        m.active_streams.dec();
        let response = match result {
            Ok(Ok(None)) => None,
            Ok(Ok(Some(r))) => Some(r),
            Ok(Err(r)) => Some(r),
            Err(_) => Some(Response::error(Status::Busy, "request timed out")),
        };
        if let Some(op) = op {
            let ok = response.as_ref().is_none_or(|r| r.status == Status::Ok);
            m.record(op, ok, started.elapsed().as_secs_f64());
        }
        let Some(response) = response else { return };
        if response.status != Status::Ok {
            debug!(%peer, status = ?response.status, message = %response.message(), "shard request refused");
        }
        let _ = stream.write_all(&response.encode()).await;
        let _ = stream.close().await;
    }

    /// Answer one request. `Ok(None)`: the answer was written already.
    async fn answer(
        &self,
        peer: PeerId,
        s: &mut Stream,
        op: &mut Option<&'static str>,
    ) -> Result<Option<Response>, Response> {
        let bad = |e: TransferError| Response::error(Status::BadRequest, &e.to_string());
        let (kind, body) = read_frame(s, peer).await.map_err(bad)?;
        let req = Request::decode(kind, &body)
            .map_err(|e| Response::error(Status::BadRequest, &e.to_string()))?;
        *op = match req {
            Request::PutShard { .. } => Some("receive"),
            Request::GetShard { .. } => Some("serve"),
            _ => None,
        };
        match req {
            Request::PutShard { upload, cid, len } => {
                let mib = u32::try_from(len.div_ceil(1 << 20).max(1)).unwrap_or(u32::MAX);
                let _permit = self
                    .inbound
                    .acquire_many(mib.min(INBOUND_BUDGET_MIB))
                    .await
                    .map_err(|_| Response::error(Status::Busy, "shutting down"))?;
                let mut data = vec![0u8; usize::try_from(len).expect("limited by the decoder")];
                read_exact(s, &mut data, peer).await.map_err(bad)?;
                self.stats.metrics.bytes("in", len);
                let put = {
                    let mut sessions = lock(&self.sessions);
                    let entry = sessions.entry(upload).or_insert_with(|| Session {
                        put: Arc::new(Mutex::new(self.store.begin_put())),
                        last: Instant::now(),
                    });
                    entry.last = Instant::now();
                    Arc::clone(&entry.put)
                };
                tokio::task::spawn_blocking(move || lock(&put).put_shard_verified(&cid, &data))
                    .await
                    .map_err(|e| Response::error(Status::Internal, &e.to_string()))?
                    .map_err(|e| Response::error(put_status(&e), &e.to_string()))?;
                Ok(Some(Response::ok(Vec::new())))
            }
            Request::GetShard { cid, start, end } => {
                let store = self.store.clone();
                let (ob, a, mut data) = tokio::task::spawn_blocking(move || {
                    let end = match end {
                        u64::MAX => store.shard_len(&cid)?,
                        e => e,
                    };
                    store.read_groups(&cid, start, end)
                })
                .await
                .map_err(|e| Response::error(Status::Internal, &e.to_string()))?
                .map_err(|e| Response::error(read_status(&e), &e.to_string()))?;
                if self.corrupt_served && !data.is_empty() {
                    data[0] ^= 0x5a;
                }
                let header = ShardHeader {
                    shard_len: ob.len(),
                    outboard: ob.to_bytes(),
                    start: a,
                    end: a + data.len() as u64,
                };
                let head = Response::ok(header.encode()).encode();
                write_all(s, &head, peer).await.map_err(bad)?;
                write_all(s, &data, peer).await.map_err(bad)?;
                let _ = s.close().await;
                self.stats
                    .metrics
                    .bytes("out", (head.len() + data.len()) as u64);
                Ok(None)
            }
            Request::Commit {
                upload,
                name,
                manifest_len,
            } => {
                let mut bytes = vec![0u8; manifest_len as usize];
                read_exact(s, &mut bytes, peer).await.map_err(bad)?;
                let manifest = Manifest::decode(&bytes)
                    .map_err(|e| Response::error(Status::BadRequest, &e.to_string()))?;
                let put = match lock(&self.sessions).remove(&upload) {
                    // A shard of this upload is still being stored: the gateway commits only
                    // after every push was acknowledged, so this is a confused or hostile peer.
                    Some(s) => Arc::into_inner(s.put)
                        .ok_or_else(|| Response::error(Status::Busy, "upload still writing"))?
                        .into_inner()
                        .unwrap_or_else(std::sync::PoisonError::into_inner),
                    None => self.store.begin_put(),
                };
                let store = self.store.clone();
                let held = tokio::task::spawn_blocking(move || {
                    let root = put.commit_partial(&manifest, &name, now_unix())?;
                    announcements(&store, &manifest, root).map_err(CommitError::from)
                })
                .await
                .map_err(|e| Response::error(Status::Internal, &e.to_string()))?
                .map_err(|e| Response::error(Status::Internal, &e.to_string()))?;
                for cid in held {
                    self.net.provide(&cid.to_bytes()).await;
                }
                Ok(Some(Response::ok(Vec::new())))
            }
            Request::Abort { upload } => {
                let session = lock(&self.sessions).remove(&upload);
                drop_sessions(session.into_iter().collect());
                Ok(Some(Response::ok(Vec::new())))
            }
            Request::GetManifest { root } => {
                let store = self.store.clone();
                let bytes = tokio::task::spawn_blocking(move || store.manifest_bytes(&root))
                    .await
                    .map_err(|e| Response::error(Status::Internal, &e.to_string()))?
                    .map_err(|e| Response::error(read_status(&e), &e.to_string()))?;
                let len = u32::try_from(bytes.len()).expect("manifests are <= 64 MiB");
                let mut out = Response::ok(len.to_le_bytes().to_vec()).encode();
                out.extend_from_slice(&bytes);
                write_all(s, &out, peer).await.map_err(bad)?;
                let _ = s.close().await;
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::swarm::NetConfig;
    use cairn_storage::MemBackend;
    use libp2p::identity::Keypair;

    fn metrics() -> crate::metrics::Metrics {
        crate::metrics::Metrics::new::<MemBackend>(None)
    }

    fn stats() -> Arc<TransferStats> {
        Arc::new(TransferStats::new(metrics().transfers))
    }

    /// Two real swarms on loopback: `a` runs a shard server over an in-memory store.
    async fn pair(cancel: &CancellationToken) -> (Store<MemBackend>, Network, Transfers, PeerId) {
        let listen: libp2p::Multiaddr = "/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("addr");
        let (a, _) = Network::start(
            Keypair::generate_ed25519(),
            NetConfig {
                account: None,
                listen: listen.clone(),
                bootstrap: Vec::new(),
            },
            metrics().swarm,
            cancel.clone(),
        )
        .expect("a");
        let a_addr = loop {
            if let Some(x) = a.listen_addrs().await.into_iter().next() {
                break x;
            }
            tokio::task::yield_now().await;
        };
        let store = Store::open(MemBackend::new(), 1 << 30).expect("store");
        let server = ShardServer::new(store.clone(), a.clone(), stats());
        tokio::spawn(server.run(cancel.clone()));
        let (b, _) = Network::start(
            Keypair::generate_ed25519(),
            NetConfig {
                listen,
                bootstrap: vec![a_addr],
                account: None,
            },
            metrics().swarm,
            cancel.clone(),
        )
        .expect("b");
        // Wait (polling the condition) until b's bootstrap dial to a is up.
        while b.connected().await == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let t = Transfers::new(b.clone(), stats());
        (store, b, t, a.peer_id())
    }

    /// Send raw bytes on a fresh stream, half-close, and read the answer frame.
    async fn raw(b: &Network, peer: PeerId, bytes: &[u8]) -> Result<Response, TransferError> {
        let mut s = b
            .streams()
            .open_stream(peer, SHARD_PROTOCOL)
            .await
            .map_err(|e| TransferError::Open {
                peer,
                reason: e.to_string(),
            })?;
        write_all(&mut s, bytes, peer).await?;
        let _ = s.close().await;
        let (kind, body) = read_frame(&mut s, peer).await?;
        Response::decode(kind, body).map_err(|source| TransferError::Wire { peer, source })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn malformed_requests_get_errors_and_the_server_keeps_serving() {
        let cancel = CancellationToken::new();
        let (store, b, t, a) = pair(&cancel).await;
        let data = vec![42u8; 100_000];
        let cid = cairn_erasure::shard_cid(&blake3::hash(&data));
        let up = [9u8; 16];

        // Unknown version, oversized body, unknown kind, truncated body, trailing garbage.
        let mut bad_version = Request::Abort { upload: up }.encode();
        bad_version[0] = 99;
        let mut huge = vec![wire::VERSION, 1];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        let mut unknown = Request::Abort { upload: up }.encode();
        unknown[1] = 200;
        let full = Request::GetShard {
            cid,
            start: 0,
            end: 10,
        }
        .encode();
        let mut truncated = full[..full.len() - 3].to_vec();
        truncated[2..6].copy_from_slice(&((full.len() - HEADER_LEN) as u32).to_le_bytes());
        for (what, frame) in [
            ("version", bad_version),
            ("huge body", huge),
            ("unknown kind", unknown),
        ] {
            let r = raw(&b, a, &frame).await.expect("an answer");
            assert_eq!(r.status, Status::BadRequest, "{what}: {}", r.message());
        }
        // A truncated frame is answered with an error or the stream is cut; never a panic.
        if let Ok(r) = raw(&b, a, &truncated).await {
            assert_ne!(r.status, Status::Ok);
        }
        // A shard longer than the limit is refused before anything is allocated.
        let over = Request::PutShard {
            upload: up,
            cid,
            len: wire::MAX_SHARD_LEN + 1,
        }
        .encode();
        assert_eq!(
            raw(&b, a, &over).await.expect("answer").status,
            Status::BadRequest
        );
        // A shard that ends early is not stored.
        let mut short = Request::PutShard {
            upload: up,
            cid,
            len: data.len() as u64,
        }
        .encode();
        short.extend_from_slice(&data[..1000]);
        let _ = raw(&b, a, &short).await;
        assert!(!store.has_shard(&cid).expect("index"));
        // Bytes that do not match the CID are refused as corrupt.
        let mut wrong = data.clone();
        wrong[5] ^= 1;
        let e = t.push_shard(a, up, &cid, &wrong).await.expect_err("lie");
        assert!(
            matches!(
                e,
                TransferError::Remote {
                    status: Status::Corrupt,
                    ..
                }
            ),
            "{e}"
        );
        assert!(!store.has_shard(&cid).expect("index"));
        // And the server still works: a real push and a verified ranged read.
        t.push_shard(a, up, &cid, &data).await.expect("push");
        assert!(store.has_shard(&cid).expect("index"));
        let got = t.fetch_range(a, &cid, 20_000, 20_100).await.expect("range");
        assert_eq!(got, data[20_000..20_100]);
        let missing = cairn_erasure::shard_cid(&blake3::hash(b"nothing"));
        assert!(
            t.fetch_range(a, &missing, 0, 1)
                .await
                .expect_err("absent")
                .is_not_found()
        );
        cancel.cancel();
    }
}
