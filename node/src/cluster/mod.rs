//! The gateway: puts that spread each stripe's shards over distinct nodes, and gets that
//! pull them back from many nodes at once, verified, rebuilding from parity when a node is
//! slow, gone or lying.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
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
use crate::net::transfer::Transfers;
use crate::net::transfer::{announcements, lock};
use crate::net::wire::UploadId;
use crate::pipeline::{
    self, GetError, IngestError, StripeMark, Upload, check_rebuilt, encode_then, now_unix,
};
use resume::PlacedStripe;

mod delete;
mod locate;
mod place;
mod read;
pub mod resume;

pub use delete::{DELETE_RETRY_FOR, DeleteReport, DeleteRetry, NetworkDeleteError, NodeAnswer};
pub use locate::Holders;

/// Commits tried with a node's possibly landed hedge losers named (the second after a wait,
/// for a write still under way).
const COMMIT_ATTEMPTS_WITH_MAYBES: usize = 2;
/// The wait before that second try.
const COMMIT_RETRY_WAIT: Duration = Duration::from_secs(1);
/// Failed spot checks listed in a put's error (the rest are counted).
const FAILURES_LISTED: usize = 4;

/// A put that can be cut off and resumed: its key, what it is, and what an earlier run of it
/// placed.
pub struct Resumable {
    pub key: resume::UploadKey,
    pub params: resume::PutParams,
    pub from: Option<resume::Resumed>,
}

/// What a put through the cluster does besides placing shards.
#[derive(Default)]
pub struct PutWith<'a> {
    /// Compute each storing node's deal commitment (a chain is configured).
    pub planner: Option<&'a mut DealPlanner>,
    /// Record progress so that a cut-off run can be resumed.
    pub resumable: Option<Resumable>,
}

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

/// Record a placed stripe of a resumable put, now (a failure fails the put).
fn record_stripe<B: Backend>(
    store: &Store<B>,
    key: &resume::UploadKey,
    placed: &PlacedStripe,
    mark: &StripeMark,
    deal_roots: Option<&[Vec<cairn_proofs::tree::Node>]>,
) -> Result<(), IngestError> {
    resume::record(store, key, placed, mark, deal_roots, now_unix())
        .map_err(|e| IngestError::Progress(e.to_string()))
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
        with: PutWith<'_>,
    ) -> Result<(Cid, Manifest, HashMap<PeerId, Commitment>), IngestError> {
        let PutWith {
            mut planner,
            mut resumable,
        } = with;
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
        let mut session = self.store.begin_put();
        // The shards placed on each other node: its commit names them, and they are
        // spot-checked before the put reports success.
        let mut participants: HashMap<PeerId, BTreeMap<Cid, u64>> = HashMap::new();
        let mut holders: HashMap<Cid, Vec<PeerId>> = HashMap::new();
        // Shards whose push was cancelled when its hedge won, by node: they may have landed.
        let mut maybes: HashMap<PeerId, BTreeMap<Cid, u64>> = HashMap::new();
        let mut stripe_no = 0u64;
        let mut resume_from = pipeline::Resume::default();
        let (upload_id, salt) = match resumable.as_mut().and_then(|r| r.from.take()) {
            Some(from) => {
                // What the interrupted run placed is taken as placed: its nodes hold it in
                // the same upload, and this node's own shards are kept by its records.
                for p in &from.placements {
                    let note =
                        |i: usize, peer: PeerId, into: &mut HashMap<PeerId, BTreeMap<Cid, u64>>| {
                            if peer != me {
                                into.entry(peer).or_default().insert(p.cids[i], p.shard_len);
                            }
                        };
                    for (i, peer) in p.placed.iter().enumerate() {
                        if *peer == me {
                            session.claim(&p.cids[i]).map_err(|e| {
                                IngestError::Placement(format!("cannot claim a kept shard: {e}"))
                            })?;
                        }
                        note(i, *peer, &mut participants);
                        holders.entry(p.cids[i]).or_default().push(*peer);
                    }
                    for (i, peer) in &p.extra {
                        note(*i, *peer, &mut participants);
                        holders.entry(p.cids[*i]).or_default().push(*peer);
                    }
                    for (i, peer) in &p.maybe {
                        note(*i, *peer, &mut maybes);
                    }
                }
                if let Some(pl) = planner.as_deref_mut() {
                    for (cid, roots) in from.deal_roots {
                        pl.add_roots(cid, roots);
                    }
                }
                stripe_no = from.stripes;
                resume_from = from.resume;
                let salt: [u8; cairn_erasure::manifest::SALT_LEN] =
                    from.salt.try_into().map_err(|_| {
                        IngestError::Placement("the interrupted upload's salt is malformed".into())
                    })?;
                info!(
                    stripes = stripe_no,
                    body_offset = resume_from.body_offset,
                    "resuming an interrupted put"
                );
                (from.upload_id, salt)
            }
            None => {
                let (id, salt) = (new_upload_id(&me), new_salt());
                if let Some(r) = &resumable {
                    resume::begin(&self.store, &r.key, &r.params, &salt, &id, now_unix())
                        .map_err(|e| IngestError::Progress(e.to_string()))?;
                }
                (id, salt)
            }
        };
        let mut put_plan = crate::net::put_plan::PutPlanner::default();
        let planning = planner.is_some();
        // The deal trees are hashed on a third thread, from the stripe's bytes still in memory,
        // while the next stripe is placed: they never hold a push up.
        let store = &self.store;
        let key = resumable.as_ref().map(|r| r.key);
        let mut hash_stage = planner.as_deref_mut().map(|p| {
            move |enc: &EncodedStripe, mark: &StripeMark, placed: Option<PlacedStripe>| {
                for (i, meta) in enc.shards.iter().enumerate() {
                    p.add_shard(&meta.cid, enc.shard(i));
                }
                if let (Some(placed), Some(key)) = (placed, &key) {
                    let roots: Vec<_> = placed.cids.iter().map(|c| p.roots(c).to_vec()).collect();
                    record_stripe(store, key, &placed, mark, Some(&roots))?;
                }
                Ok(())
            }
        });
        let result = encode_then(
            layout,
            upload,
            resume_from,
            progress,
            &mut |enc: &EncodedStripe, mark: &StripeMark| {
                let placed = rt.block_on(self.place_stripe(
                    &mut put_plan,
                    &members,
                    &salt,
                    upload_id,
                    enc,
                    stripe_no,
                ))?;
                let this_stripe = stripe_no;
                stripe_no += 1;
                let place::Placed {
                    placed,
                    extra,
                    maybe,
                } = placed;
                for (i, peer) in &maybe {
                    maybes
                        .entry(*peer)
                        .or_default()
                        .insert(enc.shards[*i].cid, enc.shard(*i).len() as u64);
                }
                if planning {
                    for (i, peer) in placed
                        .iter()
                        .enumerate()
                        .chain(extra.iter().map(|(i, p)| (*i, p)))
                    {
                        holders.entry(enc.shards[i].cid).or_default().push(*peer);
                    }
                }
                // A second copy is committed where it landed: the node holds it, and its commit
                // must name exactly what it received.
                for (i, peer) in &extra {
                    participants
                        .entry(*peer)
                        .or_default()
                        .insert(enc.shards[*i].cid, enc.shard(*i).len() as u64);
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
                session.put_stripe(&local)?;
                let Some(r) = &resumable else {
                    return Ok(None);
                };
                let stripe = PlacedStripe {
                    stripe: this_stripe,
                    cids: enc.cids(),
                    placed,
                    extra,
                    maybe,
                    kept: local.iter().map(|(m, _)| m.cid).collect(),
                };
                if planning {
                    // Recorded with its deal roots once the stage after has them.
                    return Ok(Some(stripe));
                }
                record_stripe(&self.store, &r.key, &stripe, mark, None)?;
                Ok(None)
            },
            hash_stage
                .as_mut()
                .map(|f| f as crate::pipeline::After<'_, Option<PlacedStripe>>),
        );
        let abort_on = |peers: Vec<PeerId>| {
            rt.block_on(async {
                let mut f: FuturesUnordered<_> = peers
                    .into_iter()
                    .map(|p| async move { (p, self.transfers.abort(p, upload_id).await) })
                    .collect();
                while let Some((peer, r)) = f.next().await {
                    if let Err(e) = r {
                        debug!(%peer, error = %e, "abort not confirmed; the upload expires there");
                    }
                }
            });
        };
        let manifest = match result.and_then(|m| {
            m.published(salt, self.net.peer_id().to_bytes())
                .map_err(IngestError::Manifest)
        }) {
            Ok(m) => m,
            Err(e) => {
                if let (Some(r), IngestError::Body(_) | IngestError::Placement(_)) =
                    (&resumable, &e)
                {
                    // The client went away, or a stripe found no node: what was placed stays
                    // for a later run of the same put (the nodes keep it until the upload
                    // idles out there).
                    info!(key = %resume::key_hex(&r.key), stripes = stripe_no, "put cut off; its placed stripes are kept for resuming");
                    return Err(e);
                }
                self.forget(resumable.as_ref());
                abort_on(participants.keys().copied().collect());
                return Err(e);
            }
        };
        let (bytes, _) = manifest.encode_with_cid().map_err(IngestError::Manifest)?;
        let results: Vec<(PeerId, Result<bool, String>)> = rt.block_on(async {
            let mut f: FuturesUnordered<_> = participants
                .iter()
                .map(|(p, placed)| {
                    let (bytes, maybes) = (&bytes, &maybes);
                    async move {
                        let r = self
                            .transfers
                            .commit(*p, upload_id, name, bytes, placed.keys())
                            .await;
                        // A push cancelled when its hedge won may have landed after all (or be
                        // landing): then the node's share names it too.
                        if r.is_err()
                            && let Some(more) = maybes.get(p)
                        {
                            let both: BTreeSet<Cid> =
                                placed.keys().chain(more.keys()).copied().collect();
                            for attempt in 0..COMMIT_ATTEMPTS_WITH_MAYBES {
                                if attempt > 0 {
                                    tokio::time::sleep(COMMIT_RETRY_WAIT).await;
                                }
                                let again = self
                                    .transfers
                                    .commit(*p, upload_id, name, bytes, both.iter())
                                    .await;
                                if again.is_ok() {
                                    return (*p, Ok(true));
                                }
                            }
                        }
                        (*p, r.map(|()| false).map_err(|e| e.to_string()))
                    }
                })
                .collect();
            let mut results = Vec::new();
            while let Some(r) = f.next().await {
                results.push(r);
            }
            results
        });
        let mut failures = Vec::new();
        for (peer, r) in results {
            match r {
                Ok(false) => {}
                Ok(true) => {
                    // The node holds those copies too: its spot checks and deal cover them.
                    for (cid, len) in maybes.remove(&peer).unwrap_or_default() {
                        participants.entry(peer).or_default().insert(cid, len);
                        if planner.is_some() {
                            holders.entry(cid).or_default().push(peer);
                        }
                    }
                }
                Err(e) => failures.push(e),
            }
        }
        // Copies of cancelled pushes that no commit named: the node may hold one in the upload
        // (or get it late), pinned by nothing. The upload is dropped there at once rather than
        // at its idle expiry (a committed upload is gone already: the abort finds nothing).
        // Not waited for: such a node is often the hung one, and must not hold the answer.
        if !maybes.is_empty() {
            let transfers = self.transfers.clone();
            let peers: Vec<PeerId> = maybes.keys().copied().collect();
            rt.spawn(async move {
                let mut f: FuturesUnordered<_> = peers
                    .into_iter()
                    .map(|p| {
                        let t = &transfers;
                        async move { (p, t.abort(p, upload_id).await) }
                    })
                    .collect();
                while let Some((peer, r)) = f.next().await {
                    if let Err(e) = r {
                        debug!(%peer, error = %e, "abort not confirmed; the upload expires there");
                    }
                }
            });
        }
        if !failures.is_empty() {
            self.forget(resumable.as_ref());
            abort_on(participants.keys().copied().collect());
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
            self.forget(resumable.as_ref());
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
        // Pinned: the interrupted runs' records (and their hold on this node's shards) go;
        // what was stored stays under the key, for a client that went away meanwhile.
        if let Some(r) = &resumable {
            let stripes: u64 = manifest.files.iter().map(|f| f.stripes.len() as u64).sum();
            let done = resume::Done {
                root: root.to_string(),
                files: manifest.files.len(),
                size: manifest.total_size(),
                stripes,
                shards: stripes * layout.total() as u64,
            };
            if let Err(e) = resume::complete(&self.store, &r.key, &r.params, done, now_unix()) {
                warn!(error = %e, "cannot record a finished put under its key");
            }
        }
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

    /// Drop a resumable put's records (it committed, or cannot be resumed).
    fn forget(&self, resumable: Option<&Resumable>) {
        if let Some(r) = resumable
            && let Err(e) = resume::forget(&self.store, &r.key)
        {
            warn!(error = %e, "cannot drop an upload's resume records; they expire later");
        }
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

pub(crate) fn new_upload_id(me: &PeerId) -> UploadId {
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
