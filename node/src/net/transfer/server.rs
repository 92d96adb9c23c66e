//! The server side of the shard protocol, run by every node. Anyone may read (fetch shards
//! and manifests) within per-peer limits; only members may push shards, and only the peer
//! that opened an upload may commit or abort it.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_erasure::{Cid, Manifest};
use cairn_storage::{
    Backend, CommitError, PutError, ReadError, Store, record_charge, shard_charge,
};
use libp2p::futures::{AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::budget::{Budget, Refusal, StreamSlot};
use super::delete::{DeleteError, delete_for};
use super::sessions::{SessionError, SessionLimits, Sessions};
use super::{REQUEST_TIMEOUT, TransferError, TransferStats, lock, read_exact};
use super::{announcements, read_frame, write_all};
use crate::chain::Chain;
use crate::net::membership::Membership;
use crate::net::swarm::{Network, SHARD_PROTOCOL};
use crate::net::wire::{self, Request, Response, ShardHeader, Status, UploadId};
use crate::pipeline::now_unix;

/// How long a peer may take to send a request's frame after opening the stream.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes of a `GetShard` answer read from the store and sent at a time (whole 16 KiB groups).
const SERVE_CHUNK: u64 = 1 << 20;
/// Streams refused at once (each gets a short `Busy` answer); beyond that they are dropped.
const MAX_REFUSING: usize = 64;
/// How long a refusal may take to write.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);

/// Test-only fault switch (environment): serve shard bytes with one byte flipped, after
/// they were verified locally — a lying peer. Exists only with the `fault-injection` feature.
#[cfg(feature = "fault-injection")]
pub const FAULT_CORRUPT_SERVED_ENV: &str = "CAIRN_FAULT_CORRUPT_SERVED";

/// What the server lets each peer hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Charged bytes of uncommitted shards one gateway may hold here.
    pub peer_pending_bytes: u64,
    /// Uploads one gateway may have open here.
    pub max_sessions_per_peer: usize,
    /// Idle time after which a gateway's upload is dropped with its shards.
    pub upload_idle: std::time::Duration,
}

/// The server side: answers shard streams from peers.
pub struct ShardServer<B: Backend> {
    store: Store<B>,
    net: Network,
    membership: Membership,
    sessions: Mutex<Sessions<B>>,
    budget: Budget,
    stats: Arc<TransferStats>,
    /// This node's chain account, when it has one: a delete must not drop data under a
    /// running deal it accepted.
    chain: Option<Chain>,
    #[cfg(feature = "fault-injection")]
    corrupt_served: bool,
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

fn commit_status(e: &CommitError) -> Status {
    match e {
        CommitError::StoreFull { .. } => Status::StoreFull,
        CommitError::MissingShard(_) | CommitError::Unlisted(_) => Status::BadRequest,
        CommitError::Deleted(_) => Status::Forbidden,
        _ => Status::Internal,
    }
}

/// Drop upload sessions off the async threads: dropping one garbage-collects the shards only
/// it stored (store I/O).
fn drop_off_thread<T: Send + 'static>(v: Vec<T>) {
    if !v.is_empty() {
        tokio::task::spawn_blocking(move || drop(v));
    }
}

fn hex(upload: &UploadId) -> String {
    upload.iter().map(|b| format!("{b:02x}")).collect()
}

/// A refused request: the answer, and the reason counted in metrics.
struct Refused(&'static str, Response);

impl<B: Backend> ShardServer<B> {
    pub fn new(
        store: Store<B>,
        net: Network,
        membership: Membership,
        limits: ServerLimits,
        stats: Arc<TransferStats>,
        chain: Option<Chain>,
    ) -> Arc<Self> {
        #[cfg(feature = "fault-injection")]
        let corrupt_served = std::env::var(FAULT_CORRUPT_SERVED_ENV).is_ok_and(|v| v == "1");
        #[cfg(feature = "fault-injection")]
        if corrupt_served {
            warn!("fault injection on: this node serves corrupted shard bytes");
        }
        Arc::new(Self {
            store,
            net,
            membership,
            sessions: Mutex::new(Sessions::new(SessionLimits {
                peer_pending_bytes: limits.peer_pending_bytes,
                max_sessions_per_peer: limits.max_sessions_per_peer,
                idle: limits.upload_idle,
            })),
            budget: Budget::new(),
            stats,
            chain,
            #[cfg(feature = "fault-injection")]
            corrupt_served,
        })
    }

    /// Accept and answer shard streams until `cancel` fires (idle uploads are expired by the
    /// node's `upload_sweep` job, [`super::UploadSweeper`]).
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut incoming = match self.net.streams().accept(SHARD_PROTOCOL) {
            Ok(i) => i,
            Err(e) => {
                warn!(error = %e, "cannot accept shard streams");
                return;
            }
        };
        let mut tasks = JoinSet::new();
        let mut refusing = JoinSet::new();
        loop {
            tokio::select! {
                // Incoming streams first: libp2p-stream holds one waiting stream per
                // protocol and drops the next while this loop is busy elsewhere.
                biased;
                next = incoming.next() => {
                    let Some((peer, stream)) = next else { break };
                    match self.budget.admit(peer) {
                        Ok(slot) => {
                            let me = Arc::clone(&self);
                            tasks.spawn(async move { me.serve(peer, stream, slot).await });
                        }
                        Err(why) => {
                            self.stats.metrics.refuse("stream_limit");
                            let message = match why {
                                Refusal::Peer => "too many streams from this peer",
                                Refusal::Global => "too many streams; try again",
                            };
                            debug!(%peer, message, "stream refused");
                            if refusing.len() < MAX_REFUSING {
                                refusing.spawn(refuse(stream, Response::error(Status::Busy, message)));
                            }
                        }
                    }
                }
                () = cancel.cancelled() => break,
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Err(e) = done { warn!(error = %e, "shard stream task failed"); }
                }
                Some(_) = refusing.join_next(), if !refusing.is_empty() => {}
            }
        }
        tasks.shutdown().await;
        refusing.shutdown().await;
    }

    /// The store shards are served from.
    pub fn store(&self) -> &Store<B> {
        &self.store
    }

    /// Drop the uploads idle for longer than `upload_idle` and their shards; how many.
    pub(super) fn expire(&self) -> usize {
        let expired = lock(&self.sessions).expire(Instant::now());
        let n = expired.len();
        if n > 0 {
            warn!(expired = n, "dropping idle uploads and their shards");
            drop_off_thread(expired);
        }
        n
    }

    async fn serve(&self, peer: PeerId, mut stream: Stream, slot: StreamSlot) {
        let m = &self.stats.metrics;
        m.active_streams.inc();
        let started = Instant::now();
        let mut op = None;
        let result = tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.answer(peer, &mut stream, &slot, &mut op),
        )
        .await;
        m.active_streams.dec();
        let response = match result {
            Ok(Ok(None)) => None,
            Ok(Ok(Some(r))) => Some(r),
            Ok(Err(Refused(reason, r))) => {
                m.refuse(reason);
                Some(r)
            }
            Err(_) => Some(Response::error(Status::Busy, "request timed out")),
        };
        if let Some(op) = op {
            let ok = response.as_ref().is_none_or(|r| r.status == Status::Ok);
            m.record(op, ok, started.elapsed().as_secs_f64());
        }
        drop(slot);
        let Some(response) = response else { return };
        if response.status != Status::Ok {
            debug!(%peer, status = ?response.status, message = %response.message(), "shard request refused");
        }
        let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
            let _ = stream.write_all(&response.encode()).await;
            let _ = stream.close().await;
        })
        .await;
    }

    fn member(&self, peer: &PeerId) -> Result<(), Refused> {
        if self.membership.is_member(peer) {
            return Ok(());
        }
        Err(Refused(
            "not_member",
            Response::error(
                Status::Forbidden,
                &format!(
                    "{peer} is not a member of this network ({} membership): it may read, not store",
                    self.membership.mode().as_str()
                ),
            ),
        ))
    }

    /// Answer one request. `Ok(None)`: the answer was written already.
    async fn answer(
        &self,
        peer: PeerId,
        s: &mut Stream,
        slot: &StreamSlot,
        op: &mut Option<&'static str>,
    ) -> Result<Option<Response>, Refused> {
        let bad = |e: TransferError| {
            Refused(
                "bad_request",
                Response::error(Status::BadRequest, &e.to_string()),
            )
        };
        let (kind, body) = tokio::time::timeout(HEADER_TIMEOUT, read_frame(s, peer))
            .await
            .map_err(|_| {
                Refused(
                    "header_timeout",
                    Response::error(
                        Status::BadRequest,
                        &format!("no request within {} s", HEADER_TIMEOUT.as_secs()),
                    ),
                )
            })?
            .map_err(bad)?;
        let req = Request::decode(kind, &body).map_err(|e| {
            Refused(
                "bad_request",
                Response::error(Status::BadRequest, &e.to_string()),
            )
        })?;
        *op = match req {
            Request::PutShard { .. } => Some("receive"),
            Request::GetShard { .. } => Some("serve"),
            _ => None,
        };
        match req {
            Request::PutShard { upload, cid, len } => {
                self.put_shard(peer, s, slot, upload, cid, len).await
            }
            Request::GetShard { cid, start, end } => {
                self.get_shard(peer, s, slot, cid, start, end).await
            }
            Request::Commit {
                upload,
                name,
                manifest_len,
                shards,
                digest,
            } => {
                self.commit(peer, s, slot, upload, name, manifest_len, (shards, digest))
                    .await
            }
            Request::Abort { upload } => {
                self.member(&peer)?;
                let session = lock(&self.sessions).take(peer, upload);
                match session {
                    Some(session) => {
                        drop_off_thread(vec![session]);
                        Ok(Some(Response::ok(Vec::new())))
                    }
                    None => Err(unknown_upload(&upload)),
                }
            }
            Request::Have { cids } => {
                let store = self.store.clone();
                let held = tokio::task::spawn_blocking(move || {
                    cids.iter()
                        .map(|c| store.shard_present(c))
                        .collect::<Result<Vec<bool>, _>>()
                })
                .await
                .map_err(|e| internal(&e.to_string()))?
                .map_err(|e| internal(&e.to_string()))?;
                Ok(Some(Response::ok(wire::encode_have(&held))))
            }
            Request::Delete { root } => {
                match delete_for(&self.store, self.chain.as_ref(), peer, root).await {
                    Ok(freed) => {
                        info!(%peer, %root, freed, "checkpoint deleted by its publisher");
                        Ok(Some(Response::ok((freed as u64).to_le_bytes().to_vec())))
                    }
                    Err(e) => {
                        let (reason, status) = match &e {
                            DeleteError::NotPinned(_) => ("bad_request", Status::NotFound),
                            DeleteError::NoPublisher { .. } | DeleteError::NotPublisher { .. } => {
                                ("not_publisher", Status::Forbidden)
                            }
                            DeleteError::DealRunning { .. } => ("deal_running", Status::Forbidden),
                            _ => ("internal", Status::Internal),
                        };
                        Err(Refused(reason, Response::error(status, &e.to_string())))
                    }
                }
            }
            Request::GetManifest { root } => {
                let store = self.store.clone();
                let bytes = tokio::task::spawn_blocking(move || store.manifest_bytes(&root))
                    .await
                    .map_err(|e| internal(&e.to_string()))?
                    .map_err(|e| {
                        Refused(
                            "bad_request",
                            Response::error(read_status(&e), &e.to_string()),
                        )
                    })?;
                let _held = slot
                    .bytes(bytes.len() as u64)
                    .await
                    .ok_or_else(shutting_down)?;
                let len = u32::try_from(bytes.len()).expect("manifests are <= 64 MiB");
                let mut out = Response::ok(len.to_le_bytes().to_vec()).encode();
                out.extend_from_slice(&bytes);
                write_all(s, &out, peer).await.map_err(bad)?;
                let _ = s.close().await;
                Ok(None)
            }
        }
    }

    async fn put_shard(
        &self,
        peer: PeerId,
        s: &mut Stream,
        slot: &StreamSlot,
        upload: UploadId,
        cid: Cid,
        len: u64,
    ) -> Result<Option<Response>, Refused> {
        self.member(&peer)?;
        // Charged as the store will charge it (an outboard is 32 bytes per 16 KiB group).
        let charge = shard_charge(len, cairn_erasure::verify::group_count(len) * 32);
        let put = lock(&self.sessions)
            .reserve(peer, upload, charge, Instant::now(), &self.store)
            .map_err(|e| {
                let status = match e {
                    SessionError::OverQuota { .. } | SessionError::TooManySessions { .. } => {
                        Status::OverQuota
                    }
                };
                Refused("quota", Response::error(status, &e.to_string()))
            })?;
        let release = |this: &Self| lock(&this.sessions).release(peer, upload, charge);
        let Some(_held) = slot.bytes(len).await else {
            release(self);
            return Err(shutting_down());
        };
        let mut data = vec![0u8; usize::try_from(len).expect("limited by the decoder")];
        if let Err(e) = read_exact(s, &mut data, peer).await {
            release(self);
            return Err(Refused(
                "bad_request",
                Response::error(Status::BadRequest, &e.to_string()),
            ));
        }
        self.stats.metrics.bytes("in", len);
        let stored =
            tokio::task::spawn_blocking(move || lock(&put).put_shard_verified(&cid, &data)).await;
        match stored {
            Ok(Ok(())) => {
                lock(&self.sessions).stored(peer, upload, cid, Instant::now());
                Ok(Some(Response::ok(Vec::new())))
            }
            Ok(Err(e)) => {
                release(self);
                Ok(Some(Response::error(put_status(&e), &e.to_string())))
            }
            Err(e) => {
                release(self);
                Err(internal(&e.to_string()))
            }
        }
    }

    async fn get_shard(
        &self,
        peer: PeerId,
        s: &mut Stream,
        slot: &StreamSlot,
        cid: Cid,
        start: u64,
        end: u64,
    ) -> Result<Option<Response>, Refused> {
        let refused = |e: ReadError| {
            Refused(
                "bad_request",
                Response::error(read_status(&e), &e.to_string()),
            )
        };
        let store = self.store.clone();
        let ob = tokio::task::spawn_blocking(move || store.shard_outboard(&cid))
            .await
            .map_err(|e| internal(&e.to_string()))?
            .map_err(refused)?;
        let end = if end == u64::MAX { ob.len() } else { end };
        let (a, b) = ob.aligned(start, end).map_err(|_| {
            refused(ReadError::Range {
                cid: cid.to_string(),
                start,
                end,
                len: ob.len(),
            })
        })?;
        let header = ShardHeader {
            shard_len: ob.len(),
            outboard: ob.to_bytes(),
            start: a,
            end: b,
        };
        let head = Response::ok(header.encode()).encode();
        let io = |e: TransferError| {
            Refused(
                "bad_request",
                Response::error(Status::Internal, &e.to_string()),
            )
        };
        write_all(s, &head, peer).await.map_err(io)?;
        let mut sent = head.len() as u64;
        // Stream the range in verified chunks: memory per stream is one chunk, whatever the
        // peer asked for and however slowly it reads.
        let mut at = a;
        while at < b {
            let to = (at + SERVE_CHUNK).min(b);
            let _held = slot.bytes(to - at).await.ok_or_else(shutting_down)?;
            let store = self.store.clone();
            let read = tokio::task::spawn_blocking(move || store.read_groups(&cid, at, to))
                .await
                .map_err(|e| internal(&e.to_string()))?;
            let (_, _, data) = match read {
                Ok(r) => r,
                Err(e) => {
                    // The header is out: the peer sees a short answer and verifies nothing
                    // wrong was sent (no unverified byte ever is).
                    warn!(%cid, %peer, error = %e, "shard became unreadable while serving it");
                    return Ok(None);
                }
            };
            #[cfg(feature = "fault-injection")]
            let data = {
                let mut data = data;
                if self.corrupt_served && at == a && !data.is_empty() {
                    data[0] ^= 0x5a;
                }
                data
            };
            write_all(s, &data, peer).await.map_err(io)?;
            sent += data.len() as u64;
            at = to;
        }
        let _ = s.close().await;
        self.stats.metrics.bytes("out", sent);
        Ok(None)
    }

    #[allow(clippy::too_many_arguments)]
    async fn commit(
        &self,
        peer: PeerId,
        s: &mut Stream,
        slot: &StreamSlot,
        upload: UploadId,
        name: String,
        manifest_len: u32,
        (shards, digest): (u32, [u8; 32]),
    ) -> Result<Option<Response>, Refused> {
        self.member(&peer)?;
        let session = {
            let mut sessions = lock(&self.sessions);
            // The manifest is stored too: it counts against the peer's quota before a byte
            // of it is read (a manifest may be 64 MiB).
            let charge = record_charge(u64::from(manifest_len));
            let Some(session) = sessions.take(peer, upload) else {
                return Err(unknown_upload(&upload));
            };
            if let Err(e) = sessions.fits(&peer, charge.saturating_add(session.charged())) {
                sessions.restore(peer, upload, session);
                return Err(Refused(
                    "quota",
                    Response::error(Status::OverQuota, &e.to_string()),
                ));
            }
            session
        };
        let named = (shards as usize, digest);
        let held = (
            session.received.len(),
            wire::shards_digest(&session.received),
        );
        if named != held {
            let message = format!(
                "commit names {} shards (digest {}), but this node's upload {} from {peer} \
                 holds {}: refusing to pin a share it does not have",
                shards,
                &hex32(&digest)[..16],
                hex(&upload),
                session.received.len()
            );
            lock(&self.sessions).restore(peer, upload, session);
            return Err(Refused(
                "commit_mismatch",
                Response::error(Status::BadRequest, &message),
            ));
        }
        let bytes = {
            let Some(_held) = slot.bytes(u64::from(manifest_len)).await else {
                lock(&self.sessions).restore(peer, upload, session);
                return Err(shutting_down());
            };
            let mut bytes = vec![0u8; manifest_len as usize];
            if let Err(e) = read_exact(s, &mut bytes, peer).await {
                lock(&self.sessions).restore(peer, upload, session);
                return Err(Refused(
                    "bad_request",
                    Response::error(Status::BadRequest, &e.to_string()),
                ));
            }
            bytes
        };
        let put = match Arc::try_unwrap(session.put) {
            Ok(m) => m
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            // A shard of this upload is still being stored: the gateway commits only after
            // every push was acknowledged, so this is a confused or hostile peer. The session
            // is dropped with its shards once that write ends.
            Err(_) => return Ok(Some(Response::error(Status::Busy, "upload still writing"))),
        };
        let received: BTreeSet<Cid> = session.received;
        let store = self.store.clone();
        let pinned = tokio::task::spawn_blocking(move || {
            let manifest =
                Manifest::decode(&bytes).map_err(|e| (Status::BadRequest, e.to_string()))?;
            // Every shard named must still be here, intact in the index and on disk.
            for cid in &received {
                match store.shard_present(cid) {
                    Ok(true) => {}
                    Ok(false) => {
                        return Err((
                            Status::Internal,
                            format!("shard {cid} of this upload is no longer held"),
                        ));
                    }
                    Err(e) => return Err((Status::Internal, e.to_string())),
                }
            }
            let root = put
                .commit_received(&manifest, &name, now_unix())
                .map_err(|e| (commit_status(&e), e.to_string()))?;
            announcements(&store, &manifest, root).map_err(|e| (Status::Internal, e.to_string()))
        })
        .await
        .map_err(|e| internal(&e.to_string()))?;
        match pinned {
            Ok(keys) => {
                for cid in keys {
                    self.net.provide(&cid.to_bytes()).await;
                }
                Ok(Some(Response::ok(Vec::new())))
            }
            Err((status, message)) => Ok(Some(Response::error(status, &message))),
        }
    }
}

fn hex32(d: &[u8; 32]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn unknown_upload(upload: &UploadId) -> Refused {
    Refused(
        "unknown_upload",
        Response::error(
            Status::UnknownUpload,
            &format!("no upload {} from this peer is open here", hex(upload)),
        ),
    )
}

fn internal(message: &str) -> Refused {
    Refused("bad_request", Response::error(Status::Internal, message))
}

fn shutting_down() -> Refused {
    Refused(
        "bad_request",
        Response::error(Status::Busy, "shutting down"),
    )
}

/// Answer a stream that was not admitted, briefly.
async fn refuse(mut stream: Stream, response: Response) {
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
        let _ = stream.write_all(&response.encode()).await;
        let _ = stream.close().await;
    })
    .await;
}
