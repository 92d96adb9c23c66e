//! The gateway: puts that spread each stripe's shards over distinct nodes, and gets that
//! pull them back from many nodes at once, verified, rebuilding from parity when a node is
//! slow, gone or lying.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cairn_erasure::stripe::decode_stripe;
use cairn_erasure::{Cid, Coder, EncodedStripe, FileEntry, Layout, Manifest};
use cairn_proofs::Commitment;
use cairn_storage::{Backend, ReadError, Store};
use libp2p::PeerId;
use libp2p::futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::chain::deals::DealPlanner;
use crate::net::membership::Membership;
use crate::net::placement::{member_order, stripe_key};
use crate::net::swarm::Network;
use crate::net::transfer::{TransferError, Transfers};
use crate::net::transfer::{announcements, lock};
use crate::net::wire::UploadId;
use crate::pipeline::{GetError, IngestError, Upload, check_rebuilt, encode, now_unix};

/// How long one data piece may take before the gateway rebuilds its stripe from others.
const PIECE_DEADLINE: Duration = Duration::from_secs(5);
/// Random 16 KiB groups of each placed shard the gateway reads back, verified, from the node
/// that acknowledged it before a put reports success.
const SPOT_CHECKS_PER_SHARD: usize = 2;
/// Spot checks in flight at once (well under a node's per-peer stream limit).
const SPOT_CHECKS_IN_FLIGHT: usize = 16;
/// Failed spot checks listed in a put's error (the rest are counted).
const FAILURES_LISTED: usize = 4;
/// Pieces (data-shard ranges) fetched ahead of the one being sent.
const PIECES_AHEAD: usize = 16;

/// A node's view of the cluster, for gateway work.
pub struct Cluster<B: Backend> {
    pub net: Network,
    pub transfers: Transfers,
    pub store: Store<B>,
    pub allow_colocation: bool,
    /// Who may be placed on and read from.
    pub membership: Membership,
}

impl<B: Backend> Clone for Cluster<B> {
    fn clone(&self) -> Self {
        Self {
            net: self.net.clone(),
            transfers: self.transfers.clone(),
            store: self.store.clone(),
            allow_colocation: self.allow_colocation,
            membership: self.membership.clone(),
        }
    }
}

/// Where shard `i` of a stripe goes among `ordered` members.
fn holder(ordered: &[PeerId], i: usize) -> Option<PeerId> {
    if ordered.is_empty() {
        None
    } else {
        Some(ordered[i % ordered.len()])
    }
}

impl<B: Backend> Cluster<B> {
    /// Members known to this node (the members in its routing table, and itself if it is
    /// one). Nobody else is ever placed on or read from.
    pub async fn members(&self) -> Vec<PeerId> {
        let mut m = self.membership.filter(self.net.peers().await);
        m.push(self.net.peer_id());
        m.retain(|p| self.membership.is_member(p));
        m.sort();
        m.dedup();
        m
    }

    /// True when this node knows other members: puts are then spread over the cluster.
    pub async fn is_clustered(&self) -> bool {
        let me = self.net.peer_id();
        self.members().await.iter().any(|p| *p != me)
    }

    /// Store an upload across the cluster. Runs on a blocking thread (`rt` drives the
    /// network). The checkpoint is pinned on every node that took a shard, and here. With a
    /// `planner`, also returns each storing node's deal commitment.
    pub fn put<R: Read>(
        &self,
        rt: &tokio::runtime::Handle,
        layout: Layout,
        upload: Upload<R>,
        name: &str,
        progress: &dyn Fn(u64),
        mut planner: Option<&mut DealPlanner>,
    ) -> Result<(Cid, Manifest, HashMap<PeerId, Commitment>), IngestError> {
        let me = self.net.peer_id();
        if !self.membership.is_member(&me) {
            return Err(IngestError::NotMember(format!(
                "this node ({me}) is not a member of the network ({} membership), so no \
                 member would take its shards",
                self.membership.mode().as_str()
            )));
        }
        let members = rt.block_on(self.members());
        let needed = layout.total();
        if members.len() < needed && !self.allow_colocation {
            return Err(IngestError::TooFewNodes {
                live: members.len(),
                needed,
            });
        }
        let upload_id = new_upload_id(&self.net.peer_id());
        let salt = new_salt();
        let mut session = self.store.begin_put();
        // The shards placed on each other node: its commit names them, and they are
        // spot-checked before the put reports success.
        let mut participants: HashMap<PeerId, BTreeMap<Cid, u64>> = HashMap::new();
        let mut holders: HashMap<Cid, Vec<PeerId>> = HashMap::new();
        let mut stripe_no = 0u64;
        let result = encode(layout, upload, progress, &mut |enc: &EncodedStripe| {
            // The deal commitments' hashing runs beside the pushes, not after them.
            let plan = planner.as_deref_mut();
            let planning = plan.is_some();
            let placed = std::thread::scope(|s| {
                let hashing = plan.map(|p| {
                    s.spawn(move || {
                        for (i, meta) in enc.shards.iter().enumerate() {
                            p.add_shard(&meta.cid, enc.shard(i));
                        }
                    })
                });
                let placed =
                    rt.block_on(self.place_stripe(&members, &salt, upload_id, enc, stripe_no));
                if let Some(h) = hashing {
                    h.join().expect("chunk hashing does not panic");
                }
                placed
            })?;
            stripe_no += 1;
            if planning {
                for (i, peer) in placed.iter().enumerate() {
                    holders.entry(enc.shards[i].cid).or_default().push(*peer);
                }
            }
            let mut local = Vec::new();
            for (i, peer) in placed.iter().enumerate() {
                if *peer == me {
                    local.push((&enc.shards[i], enc.shard(i)));
                } else {
                    participants
                        .entry(*peer)
                        .or_default()
                        .insert(enc.shards[i].cid, enc.shard(i).len() as u64);
                }
            }
            Ok(session.put_stripe(&local)?)
        });
        let abort_all = |participants: &HashMap<PeerId, BTreeMap<Cid, u64>>| {
            rt.block_on(async {
                let mut f: FuturesUnordered<_> = participants
                    .keys()
                    .map(|p| async move { (*p, self.transfers.abort(*p, upload_id).await) })
                    .collect();
                while let Some((peer, r)) = f.next().await {
                    if let Err(e) = r {
                        debug!(%peer, error = %e, "abort not confirmed; the upload expires there");
                    }
                }
            });
        };
        let manifest = match result {
            Ok(m) => m.salted(salt),
            Err(e) => {
                abort_all(&participants);
                return Err(e);
            }
        };
        let (bytes, _) = manifest.encode_with_cid().map_err(IngestError::Manifest)?;
        let failures: Vec<String> = rt.block_on(async {
            let mut f: FuturesUnordered<_> = participants
                .iter()
                .map(|(p, placed)| async {
                    self.transfers
                        .commit(*p, upload_id, name, &bytes, placed.keys())
                        .await
                        .map_err(|e| e.to_string())
                })
                .collect();
            let mut failures = Vec::new();
            while let Some(r) = f.next().await {
                if let Err(e) = r {
                    failures.push(e);
                }
            }
            failures
        });
        if !failures.is_empty() {
            abort_all(&participants);
            return Err(IngestError::Placement(format!(
                "{} of {} nodes did not pin the checkpoint: {}",
                failures.len(),
                participants.len(),
                failures.join("; ")
            )));
        }
        // Every participant serves, verified, what it acknowledged: a node that said yes
        // without storing (or stores garbage) fails the put here, never after "success".
        let missing = rt.block_on(self.spot_check(&participants));
        if !missing.is_empty() {
            let more = missing.len().saturating_sub(FAILURES_LISTED);
            return Err(IngestError::Placement(format!(
                "{} checks of placed shards failed after commit (the checkpoint is not \
                 reported stored): {}{}",
                missing.len(),
                missing[..missing.len().min(FAILURES_LISTED)].join("; "),
                if more > 0 {
                    format!("; and {more} more")
                } else {
                    String::new()
                }
            )));
        }
        let root = session.commit_partial(&manifest, name, now_unix())?;
        // The checkpoint is pinned: a failure to list what to announce only costs lookups.
        let keys = announcements(&self.store, &manifest, root).unwrap_or_else(|e| {
            warn!(%root, error = %e, "cannot list held shards; announcing the root only");
            vec![root]
        });
        rt.block_on(async {
            for c in keys {
                self.net.provide(&c.to_bytes()).await;
            }
        });
        info!(%root, nodes = participants.len() + 1, "checkpoint placed on the cluster");
        let commitments = planner
            .map(|p| p.commitments(&manifest, &holders))
            .unwrap_or_default();
        Ok((root, manifest, commitments))
    }

    /// Push a stripe's remote shards to their placement nodes in parallel; a node that fails
    /// is replaced by the next closest one not holding a shard of this stripe. Returns the
    /// node each shard went to (this node's own shards are stored by the caller).
    async fn place_stripe(
        &self,
        members: &[PeerId],
        salt: &[u8],
        upload: UploadId,
        enc: &EncodedStripe,
        stripe_no: u64,
    ) -> Result<Vec<PeerId>, IngestError> {
        let cids = &enc.cids();
        let ordered = member_order(&self.membership, members, &stripe_key(Some(salt), cids));
        let total = cids.len();
        let me = self.net.peer_id();
        let mut placed: Vec<PeerId> = (0..total)
            .map(|i| holder(&ordered, i).expect("members include this node"))
            .collect();
        let mut spare = ordered.iter().skip(total).copied().collect::<Vec<_>>();
        let mut tried: Vec<Vec<String>> = vec![Vec::new(); total];
        let mut refused: Vec<HashSet<PeerId>> = vec![HashSet::new(); total];
        let mut pending: Vec<usize> = (0..total).filter(|&i| placed[i] != me).collect();
        while !pending.is_empty() {
            let mut f: FuturesUnordered<_> = pending
                .iter()
                .map(|&i| {
                    let peer = placed[i];
                    async move {
                        let r = self
                            .transfers
                            .push_shard(peer, upload, &cids[i], enc.shard(i))
                            .await;
                        (i, r)
                    }
                })
                .collect();
            let mut failed = Vec::new();
            while let Some((i, r)) = f.next().await {
                if let Err(e) = r {
                    warn!(stripe = stripe_no, shard = i, error = %e, "shard push failed; trying the next node");
                    tried[i].push(e.to_string());
                    refused[i].insert(placed[i]);
                    failed.push(i);
                }
            }
            drop(f);
            pending.clear();
            for i in failed {
                let next = if self.allow_colocation && spare.is_empty() {
                    // Any other member will do.
                    ordered.iter().find(|p| !refused[i].contains(p)).copied()
                } else if spare.is_empty() {
                    None
                } else {
                    Some(spare.remove(0))
                };
                match next {
                    Some(p) => {
                        placed[i] = p;
                        if p != me {
                            pending.push(i);
                        }
                    }
                    None => {
                        return Err(IngestError::Placement(format!(
                            "shard {i} of stripe {stripe_no}: no node left to take it ({})",
                            tried[i].join("; ")
                        )));
                    }
                }
            }
        }
        Ok(placed)
    }

    /// Read back random 16 KiB groups of every shard placed on each participant, verified
    /// against the shard's CID. Returns what failed (empty: every node holds its share).
    async fn spot_check(&self, participants: &HashMap<PeerId, BTreeMap<Cid, u64>>) -> Vec<String> {
        let nonce = new_salt();
        let checks: Vec<(PeerId, Cid, u64)> = participants
            .iter()
            .flat_map(|(p, cids)| cids.iter().map(move |(c, len)| (*p, *c, *len)))
            .filter(|(_, _, len)| *len > 0)
            .flat_map(|(p, c, len)| {
                (0..SPOT_CHECKS_PER_SHARD).map(move |j| (p, c, spot_offset(&nonce, &c, j, len)))
            })
            .collect();
        let mut failures = Vec::new();
        let mut f = libp2p::futures::stream::iter(checks)
            .map(|(peer, cid, at)| async move {
                let r = self.transfers.fetch_range(peer, &cid, at, at + 1).await;
                (peer, cid, r)
            })
            .buffer_unordered(SPOT_CHECKS_IN_FLIGHT);
        while let Some((peer, cid, r)) = f.next().await {
            if let Err(e) = r {
                warn!(%peer, %cid, error = %e, "a placed shard failed its check");
                failures.push(format!("{cid} on {peer}: {e}"));
            }
        }
        failures
    }

    /// The manifest of `root`: from the local store, or fetched (and verified) from a node
    /// that announced it, or from any member. Returns whether every shard is held here.
    pub async fn manifest(&self, root: &Cid) -> Result<(Manifest, bool), ReadError> {
        let store = self.store.clone();
        let r = *root;
        match tokio::task::spawn_blocking(move || store.manifest_entry(&r)).await {
            Ok(Err(ReadError::NotFound(_))) => {}
            Ok(other) => return other,
            Err(e) => return Err(ReadError::NotFound(format!("{root} ({e})"))),
        }
        let mut candidates = self
            .membership
            .filter(self.net.providers(&root.to_bytes()).await);
        for p in self.members().await {
            if !candidates.contains(&p) {
                candidates.push(p);
            }
        }
        candidates.retain(|p| *p != self.net.peer_id());
        for p in candidates {
            match self.transfers.fetch_manifest(p, root).await {
                Ok(bytes) => {
                    return Manifest::decode(&bytes).map(|m| (m, false)).map_err(|e| {
                        ReadError::Corrupt {
                            cid: root.to_string(),
                            reason: e.to_string(),
                        }
                    });
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => debug!(peer = %p, error = %e, "manifest fetch failed"),
            }
        }
        Err(ReadError::NotFound(root.to_string()))
    }

    /// Stream bytes `[start, end)` of `file`, in order, verified. Pieces are fetched from
    /// their holders several at a time; a piece whose holder fails or is slow is cut from
    /// its stripe rebuilt out of any k shards.
    pub fn read(
        &self,
        layout: Layout,
        salt: Option<Vec<u8>>,
        file: FileEntry,
        start: u64,
        end: u64,
    ) -> mpsc::Receiver<Result<Bytes, GetError>> {
        let (tx, rx) = mpsc::channel(4);
        let reader = Arc::new(Reader {
            cluster: self.clone(),
            layout,
            coder: Coder::new(&layout),
            salt,
            file,
            members: tokio::sync::OnceCell::new(),
            rebuilt: Mutex::new(HashMap::new()),
            suspect: Mutex::new(HashSet::new()),
        });
        tokio::spawn(async move {
            let pieces = reader.layout.pieces(reader.file.size, start, end);
            let mut out = libp2p::futures::stream::iter(pieces)
                .map(|p| {
                    let r = Arc::clone(&reader);
                    async move { r.piece(p).await }
                })
                .buffered(PIECES_AHEAD);
            while let Some(item) = out.next().await {
                let failed = item.is_err();
                if tx.send(item.map(Bytes::from)).await.is_err() || failed {
                    break;
                }
            }
        });
        rx
    }
}

/// A stripe rebuilt once and shared by the pieces that need it (error: `"<available>|<why>"`).
type RebuiltStripe = Arc<tokio::sync::OnceCell<Result<Arc<Vec<u8>>, String>>>;

/// Shard `i` of a stripe as fetched for a rebuild.
type Fetched = (usize, Result<Vec<u8>, String>);

struct Reader<B: Backend> {
    cluster: Cluster<B>,
    layout: Layout,
    coder: Coder,
    /// The checkpoint's placement salt (from its manifest).
    salt: Option<Vec<u8>>,
    file: FileEntry,
    members: tokio::sync::OnceCell<Vec<PeerId>>,
    /// Stripes rebuilt from parity, shared by their pieces.
    rebuilt: Mutex<HashMap<u64, RebuiltStripe>>,
    /// Nodes that failed during this read: their pieces go straight to a rebuild.
    suspect: Mutex<HashSet<PeerId>>,
}

impl<B: Backend> Reader<B> {
    async fn members(&self) -> &[PeerId] {
        self.members.get_or_init(|| self.cluster.members()).await
    }

    async fn ordered(&self, stripe: u64) -> Vec<PeerId> {
        let cids = &self.file.stripes[usize::try_from(stripe).expect("stripe index")];
        member_order(
            &self.cluster.membership,
            self.members().await,
            &stripe_key(self.salt.as_deref(), cids),
        )
    }

    async fn fetch(&self, peer: PeerId, cid: Cid, start: u64, end: u64) -> Result<Vec<u8>, String> {
        if peer == self.cluster.net.peer_id() {
            let store = self.cluster.store.clone();
            return tokio::task::spawn_blocking(move || {
                let end = if end == u64::MAX {
                    store.shard_len(&cid)?
                } else {
                    end
                };
                store.read_shard_range(&cid, start, end)
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string());
        }
        let r = self
            .cluster
            .transfers
            .fetch_range(peer, &cid, start, end)
            .await;
        if let Err(e) = &r
            && !e.is_not_found()
        {
            lock(&self.suspect).insert(peer);
        }
        r.map_err(|e: TransferError| e.to_string())
    }

    async fn piece(&self, p: cairn_erasure::Piece) -> Result<Vec<u8>, GetError> {
        let cids = &self.file.stripes[usize::try_from(p.stripe).expect("stripe index")];
        let ordered = self.ordered(p.stripe).await;
        if let Some(peer) = holder(&ordered, p.shard)
            && !lock(&self.suspect).contains(&peer)
        {
            let got = tokio::time::timeout(
                PIECE_DEADLINE,
                self.fetch(peer, cids[p.shard], p.offset, p.offset + p.len),
            )
            .await;
            match got {
                Ok(Ok(bytes)) => return Ok(bytes),
                Ok(Err(e)) => {
                    debug!(stripe = p.stripe, shard = p.shard, %peer, error = %e, "piece fetch failed; rebuilding the stripe");
                }
                Err(_) => {
                    lock(&self.suspect).insert(peer);
                    warn!(stripe = p.stripe, shard = p.shard, %peer, "piece fetch too slow; rebuilding the stripe");
                }
            }
        }
        let stripe = self.rebuild(p.stripe).await?;
        let stripe_len = self.layout.stripe_len(self.file.size, p.stripe);
        let shard_len = self.layout.shard_len(stripe_len);
        let lo = usize::try_from(p.shard as u64 * shard_len + p.offset).expect("in memory");
        let hi = lo + usize::try_from(p.len).expect("in memory");
        Ok(stripe[lo..hi].to_vec())
    }

    async fn rebuild(&self, stripe: u64) -> Result<Arc<Vec<u8>>, GetError> {
        let cell = {
            let mut map = lock(&self.rebuilt);
            // Keep the last few stripes only: reads move forward.
            if map.len() > 2 {
                let oldest = *map.keys().min().expect("non-empty");
                map.remove(&oldest);
            }
            Arc::clone(map.entry(stripe).or_default())
        };
        let result = cell
            .get_or_init(|| async { self.rebuild_now(stripe).await.map(Arc::new) })
            .await;
        result.clone().map_err(|detail| {
            let (available, detail) = detail.split_once('|').unwrap_or(("0", &detail));
            GetError::Unrecoverable {
                path: self.file.path.clone(),
                stripe,
                available: available.parse().unwrap_or(0),
                needed: self.layout.k(),
                total: self.layout.total(),
                detail: detail.to_owned(),
            }
        })
    }

    /// Fetch whole shards of a stripe from all holders at once and decode from the first k
    /// that verify. Errors come back as `"<available>|<detail>"`.
    async fn rebuild_now(&self, stripe: u64) -> Result<Vec<u8>, String> {
        let cids = &self.file.stripes[usize::try_from(stripe).expect("stripe index")];
        let ordered = self.ordered(stripe).await;
        let k = self.layout.k();
        let mut f: FuturesUnordered<_> = (0..cids.len())
            .map(|i| {
                let first = holder(&ordered, i);
                async move { (i, self.fetch_anywhere(first, cids[i]).await) }
            })
            .collect::<FuturesUnordered<_>>();
        let mut shards: Vec<Option<Vec<u8>>> = vec![None; cids.len()];
        let mut got = 0;
        let mut failures = Vec::new();
        while let Some((i, r)) = f.next().await as Option<Fetched> {
            match r {
                Ok(b) => {
                    shards[i] = Some(b);
                    got += 1;
                    if got == k {
                        break; // the slow tail is dropped (cancelled)
                    }
                }
                Err(e) => failures.push(format!("shard {i}: {e}")),
            }
        }
        drop(f);
        if got < k {
            return Err(format!("{got}|{}", failures.join("; ")));
        }
        let stripe_len = self.layout.stripe_len(self.file.size, stripe);
        let layout = self.layout;
        let coder = self.coder.clone();
        let cids = cids.clone();
        tokio::task::spawn_blocking(move || {
            // Data shards that were not fetched (and verified) come out of the decoder: they
            // are hashed against their CIDs before anything is served from them.
            let rebuilt: Vec<usize> = (0..layout.k()).filter(|&i| shards[i].is_none()).collect();
            let data = decode_stripe(&coder, &layout, stripe_len, shards)
                .map_err(|e| format!("{got}|{e}"))?;
            check_rebuilt(&layout, stripe_len, &data, &cids, &rebuilt).map_err(|i| {
                format!(
                    "{got}|data shard {i} rebuilt from parity does not match its cid: the \
                     stripe's parity is inconsistent with its data"
                )
            })?;
            Ok(data)
        })
        .await
        .map_err(|e| format!("{got}|{e}"))?
    }

    /// A whole shard from its placement node, else from nodes that announced it.
    async fn fetch_anywhere(&self, first: Option<PeerId>, cid: Cid) -> Result<Vec<u8>, String> {
        let mut errors = Vec::new();
        let mut tried = HashSet::new();
        if let Some(p) = first
            && !lock(&self.suspect).contains(&p)
        {
            tried.insert(p);
            match self.fetch(p, cid, 0, u64::MAX).await {
                Ok(b) => return Ok(b),
                Err(e) => errors.push(e),
            }
        }
        let providers = self.cluster.net.providers(&cid.to_bytes()).await;
        for p in self.cluster.membership.filter(providers) {
            if !tried.insert(p) || lock(&self.suspect).contains(&p) {
                continue;
            }
            match self.fetch(p, cid, 0, u64::MAX).await {
                Ok(b) => return Ok(b),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            errors.push("no reachable node holds it".into());
        }
        Err(errors.join("; "))
    }
}

/// A fresh random placement salt (also used as a nonce).
fn new_salt() -> [u8; cairn_erasure::manifest::SALT_LEN] {
    let mut salt = [0u8; cairn_erasure::manifest::SALT_LEN];
    if let Err(e) = getrandom::fill(&mut salt) {
        // Without OS randomness the salt is still unique per put, only predictable.
        warn!(error = %e, "no OS randomness for the placement salt; using a time-based one");
        salt.copy_from_slice(&new_upload_id(&PeerId::random()));
    }
    salt
}

/// Where the `j`-th spot check of a shard of `len` bytes reads (unpredictable to the node).
fn spot_offset(nonce: &[u8], cid: &Cid, j: usize, len: u64) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(nonce);
    h.update(&cid.to_bytes());
    h.update(&(j as u64).to_le_bytes());
    let x = u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().expect("8 bytes"));
    x % len.max(1)
}

fn new_upload_id(me: &PeerId) -> UploadId {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = blake3::Hasher::new();
    h.update(&me.to_bytes());
    h.update(
        &SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
            .to_le_bytes(),
    );
    h.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let mut id = [0u8; 16];
    id.copy_from_slice(&h.finalize().as_bytes()[..16]);
    id
}
