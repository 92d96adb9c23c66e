//! Repair after node loss. Every node, each round, surveys the stripes it holds a shard of
//! (one batched `Have` per live member, [`survey`]); for the stripes it coordinates
//! ([`policy::coordinator`]) that stayed below their threshold past the grace time, it
//! rebuilds the missing shards from any `k` verified ones, checks them against their CIDs,
//! and places each on a member holding no shard of the stripe (push, then commit under the
//! checkpoint's manifest: the new holder pins its share and announces it, so readers find
//! it). Repair traffic is paced to a configured rate. The decisions are [`policy`]'s, pure.

pub mod policy;
pub mod sim;
pub mod survey;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_erasure::{Cid, Coder, Manifest, encode_stripe};
use cairn_storage::{Backend, ReadError};
use libp2p::PeerId;
use thiserror::Error;
use tracing::{info, warn};

use crate::cluster::Cluster;
use crate::metrics::{RepairMetrics, ResultLabels};
use crate::net::placement::{member_order, stripe_key};
use crate::net::transfer::TransferError;
use crate::pipeline::GetError;
use crate::worker::{Step, Worker};
use policy::{
    RepairPolicy, StripeHealth, Tracker, Verdict, candidates, coordinator, is_coordinator,
};

/// Stripes surveyed per round at most (the next round goes on from there): bounds a round's
/// memory and the size of its queries whatever the node holds.
pub const STRIPES_PER_ROUND: usize = 4096;
/// The shortest time between two rounds.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Test-only fault switch (environment): a path. The first time this node has placed one
/// rebuilt shard of a stripe that misses several, it writes the stripe (`<root> <file>
/// <stripe>`) to that path and stalls for [`FAULT_STALL`] before the rest, so a test can kill
/// a coordinator in the middle of a repair. Exists only with the `fault-injection` feature.
#[cfg(feature = "fault-injection")]
pub const FAULT_REPAIR_STALL_ENV: &str = "CAIRN_FAULT_REPAIR_STALL";
/// How long the stall lasts.
#[cfg(feature = "fault-injection")]
pub const FAULT_STALL: Duration = Duration::from_secs(15);

/// The fault switch's stall, once per process.
#[cfg(feature = "fault-injection")]
async fn fault_stall_mid_stripe(h: &Held) {
    static STALLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let Ok(path) = std::env::var(FAULT_REPAIR_STALL_ENV) else {
        return;
    };
    if STALLED.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    warn!(root = %h.root, file = h.file, stripe = h.stripe, "fault injection: repair stalls mid-stripe");
    let line = format!("{} {} {}\n", h.root, h.file, h.stripe);
    if let Err(e) = std::fs::write(&path, line) {
        warn!(path, error = %e, "fault injection: cannot write the stall marker");
    }
    tokio::time::sleep(FAULT_STALL).await;
}

/// A repair round failed (the job backs off and tries again).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RoundError {
    #[error("listing the checkpoints held here: {0}")]
    List(#[source] ReadError),
    #[error("repair worker thread failed: {0}")]
    Thread(String),
}

/// Repairing one stripe failed (it stays in the backlog for the next round).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StripeRepairError {
    #[error("invalid manifest of {root}: {reason}")]
    Manifest { root: Cid, reason: String },
    #[error(transparent)]
    Rebuild(#[from] GetError),
    #[error("the rebuilt stripe does not match its shard cids")]
    Mismatch,
    #[error("reading the manifest: {0}")]
    Read(#[source] ReadError),
    #[error("no member holding no shard of the stripe took shard {shard} ({tried} tried)")]
    NoTarget { shard: usize, tried: usize },
    #[error("repair thread failed: {0}")]
    Thread(String),
}

/// A stripe: its checkpoint root, file index and stripe index.
type StripeId = (Cid, usize, u64);

/// A stripe this node holds a shard of.
struct Held {
    root: Cid,
    name: String,
    manifest: Arc<Manifest>,
    file: usize,
    stripe: u64,
}

impl Held {
    fn cids(&self) -> &[Cid] {
        &self.manifest.files[self.file].stripes
            [usize::try_from(self.stripe).expect("stripe index fits")]
    }

    fn id(&self) -> StripeId {
        (self.root, self.file, self.stripe)
    }
}

/// What the last round found.
#[derive(Debug, Default, Clone, Copy)]
struct Round {
    surveyed: usize,
    coordinated: usize,
    backlog: usize,
    lost: usize,
    repaired: usize,
    unreachable: usize,
}

/// The repair job.
pub struct Repairer<B: Backend> {
    cluster: Cluster<B>,
    policy: RepairPolicy,
    interval: Duration,
    /// Repair bytes (fetched and pushed) per second at most.
    rate: u64,
    metrics: RepairMetrics,
    tracker: Tracker<StripeId>,
    /// The origin of the policy's clock.
    origin: Instant,
    next_round: Option<Instant>,
    /// Where the next round's stripes start in the list of those held here.
    cursor: usize,
    /// When the traffic paced so far is done.
    paced_until: Instant,
    rounds: u64,
    last: Round,
}

impl<B: Backend> Repairer<B> {
    pub fn new(
        cluster: Cluster<B>,
        policy: RepairPolicy,
        interval: Duration,
        mib_per_s: u64,
        metrics: RepairMetrics,
    ) -> Self {
        let now = Instant::now();
        Self {
            cluster,
            policy,
            interval: interval.max(MIN_INTERVAL),
            rate: mib_per_s.saturating_mul(1 << 20).max(1),
            metrics,
            tracker: Tracker::default(),
            origin: now,
            next_round: None,
            cursor: 0,
            paced_until: now,
            rounds: 0,
            last: Round::default(),
        }
    }

    /// Wait for `bytes` of repair traffic's turn at the configured rate.
    async fn pace(&mut self, bytes: u64) {
        let now = Instant::now();
        let start = self.paced_until.max(now);
        self.paced_until = start + Duration::from_secs_f64(bytes as f64 / self.rate as f64);
        tokio::time::sleep_until(start.into()).await;
    }

    /// The stripes this node holds a shard of, at most [`STRIPES_PER_ROUND`] from the
    /// cursor on (wrapping), and the roots pinned here.
    async fn held(&mut self) -> Result<(Vec<Held>, BTreeSet<Cid>), RoundError> {
        let store = self.cluster.store.clone();
        let cursor = self.cursor;
        let (held, roots, next) = tokio::task::spawn_blocking(move || {
            let mut all = Vec::new();
            let mut roots = BTreeSet::new();
            for info in store.list().map_err(RoundError::List)? {
                roots.insert(info.root);
                let manifest = match store.manifest(&info.root) {
                    Ok(m) => Arc::new(m),
                    Err(e) => {
                        warn!(root = %info.root, error = %e, "cannot read a manifest to repair");
                        continue;
                    }
                };
                for (f, file) in manifest.files.iter().enumerate() {
                    for (s, cids) in file.stripes.iter().enumerate() {
                        if cids.iter().any(|c| store.has_shard(c).unwrap_or(false)) {
                            all.push(Held {
                                root: info.root,
                                name: info.name.clone(),
                                manifest: Arc::clone(&manifest),
                                file: f,
                                stripe: s as u64,
                            });
                        }
                    }
                }
            }
            let n = all.len();
            let start = if cursor >= n { 0 } else { cursor };
            let take = n.min(STRIPES_PER_ROUND);
            all.rotate_left(start);
            let mut picked = all;
            picked.truncate(take);
            let next = if n == 0 { 0 } else { (start + take) % n };
            Ok::<_, RoundError>((picked, roots, next))
        })
        .await
        .map_err(|e| RoundError::Thread(e.to_string()))??;
        self.cursor = next;
        Ok((held, roots))
    }

    /// Rebuild a stripe's `missing` shards and place each on a member holding none of the
    /// stripe. Returns how many were placed.
    async fn repair_stripe(
        &mut self,
        h: &Held,
        health: &StripeHealth,
        live: &[PeerId],
        missing: &[usize],
    ) -> Result<usize, StripeRepairError> {
        let m = &h.manifest;
        let layout = m.layout().map_err(|e| StripeRepairError::Manifest {
            root: h.root,
            reason: e.to_string(),
        })?;
        let file = m.files[h.file].clone();
        let cids = h.cids().to_vec();
        let shard_len = layout.shard_len(layout.stripe_len(file.size, h.stripe));
        let k = layout.k() as u64;
        self.pace(shard_len * k).await;
        let data = self
            .cluster
            .stripe_data(layout, m.salt.clone(), file, h.stripe)
            .await?;
        self.metrics.fetched_bytes.inc_by(shard_len * k);
        let enc = tokio::task::spawn_blocking(move || {
            encode_stripe(&Coder::new(&layout), &layout, data, Vec::new())
        })
        .await
        .map_err(|e| StripeRepairError::Thread(e.to_string()))?;
        if enc.cids() != cids {
            return Err(StripeRepairError::Mismatch);
        }
        let store = self.cluster.store.clone();
        let root = h.root;
        let manifest_bytes = tokio::task::spawn_blocking(move || store.manifest_bytes(&root))
            .await
            .map_err(|e| StripeRepairError::Thread(e.to_string()))?
            .map_err(StripeRepairError::Read)?;
        let key = stripe_key(m.salt.as_deref(), &cids);
        let ordered = member_order(&self.cluster.membership, live, &key);
        let me = self.cluster.net.peer_id();
        let mut taken = health.holder_set();
        taken.insert(me);
        let mut placed = 0;
        let mut failure = None;
        for &i in missing {
            let shard = enc.shard(i);
            let targets: Vec<PeerId> = candidates(&ordered, &taken).collect();
            let mut done = false;
            for p in &targets {
                self.pace(shard.len() as u64).await;
                match self
                    .place(*p, &cids[i], shard, &h.name, &manifest_bytes)
                    .await
                {
                    Ok(()) => {
                        info!(root = %h.root, file = h.file, stripe = h.stripe, shard = i, to = %p, "shard repaired");
                        taken.insert(*p);
                        placed += 1;
                        self.metrics.pushed_bytes.inc_by(shard.len() as u64);
                        self.metrics
                            .shards
                            .get_or_create(&ResultLabels { result: "ok" })
                            .inc();
                        #[cfg(feature = "fault-injection")]
                        if missing.len() > 1 && placed == 1 {
                            fault_stall_mid_stripe(h).await;
                        }
                        done = true;
                        break;
                    }
                    Err(e) => {
                        warn!(root = %h.root, stripe = h.stripe, shard = i, to = %p, error = %e, "repair push failed; trying the next member");
                    }
                }
            }
            if !done {
                self.metrics
                    .shards
                    .get_or_create(&ResultLabels { result: "failed" })
                    .inc();
                failure = Some(StripeRepairError::NoTarget {
                    shard: i,
                    tried: targets.len(),
                });
            } else if !is_coordinator(&key, taken.iter().copied(), me) {
                // The node just given a shard outranks this one: from its next round it is
                // the coordinator (every holder's survey says so) and repairs the rest. Going
                // on would make two coordinators place the same shards.
                info!(root = %h.root, file = h.file, stripe = h.stripe, placed, "a new holder is now the stripe's coordinator; it repairs the rest");
                break;
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(placed),
        }
    }

    /// Push one rebuilt shard to `peer` and have it pin the checkpoint with it.
    async fn place(
        &self,
        peer: PeerId,
        cid: &Cid,
        data: &[u8],
        name: &str,
        manifest: &[u8],
    ) -> Result<(), TransferError> {
        let t = &self.cluster.transfers;
        let upload = crate::cluster::new_upload_id(&self.cluster.net.peer_id());
        t.push_shard(peer, upload, cid, data).await?;
        if let Err(e) = t
            .commit(peer, upload, name, manifest, std::iter::once(cid))
            .await
        {
            let _ = t.abort(peer, upload).await;
            return Err(e);
        }
        Ok(())
    }
}

impl<B: Backend> Worker for Repairer<B> {
    type Error = RoundError;

    fn name(&self) -> &'static str {
        "repair"
    }

    async fn step(&mut self) -> Result<Step, RoundError> {
        let now = Instant::now();
        if let Some(at) = self.next_round
            && now < at
        {
            return Ok(Step::Idle(at - now));
        }
        self.next_round = Some(now + self.interval);
        let (held, roots) = self.held().await?;
        self.tracker.retain(|(root, _, _)| roots.contains(root));
        let stripes: Vec<&[Cid]> = held.iter().map(Held::cids).collect();
        let found = survey::survey(&self.cluster, &stripes).await;
        let live: Vec<PeerId> = found
            .asked
            .iter()
            .copied()
            .filter(|p| !found.unreachable.contains(p))
            .collect();
        let me = self.cluster.net.peer_id();
        if !live.iter().any(|p| *p != me) {
            // Alone (starting, or cut off): every stripe would look lost and this node its
            // coordinator. Judge nothing until other members answer.
            self.last = Round {
                surveyed: held.len(),
                unreachable: found.unreachable.len(),
                ..Round::default()
            };
            return Ok(Step::Idle(self.interval));
        }
        let mut round = Round {
            surveyed: held.len(),
            unreachable: found.unreachable.len(),
            ..Round::default()
        };
        for (h, health) in held.iter().zip(&found.stripes) {
            let key = stripe_key(h.manifest.salt.as_deref(), h.cids());
            let id = h.id();
            if coordinator(&key, health.holder_set()) != Some(me) {
                self.tracker.forget(&id);
                continue;
            }
            round.coordinated += 1;
            let k = usize::from(h.manifest.k);
            let at = self.origin.elapsed();
            match self.tracker.judge(&self.policy, &id, k, health, at) {
                Verdict::Healthy => {}
                Verdict::Waiting { .. } => round.backlog += 1,
                Verdict::Lost => round.lost += 1,
                Verdict::Repair { missing } => {
                    match self.repair_stripe(h, health, &live, &missing).await {
                        Ok(n) => {
                            round.repaired += n;
                            self.tracker.forget(&id);
                        }
                        Err(e) => {
                            warn!(root = %h.root, file = h.file, stripe = h.stripe, error = %e, "stripe repair failed; trying again next round");
                            round.backlog += 1;
                        }
                    }
                }
            }
        }
        self.rounds += 1;
        self.last = round;
        self.metrics.rounds.inc();
        self.metrics.stripes_checked.inc_by(round.surveyed as u64);
        self.metrics.backlog.set(round.backlog as i64);
        self.metrics.lost.set(round.lost as i64);
        let wait = self.next_round.map_or(self.interval, |at| {
            at.saturating_duration_since(Instant::now())
        });
        Ok(Step::Idle(wait))
    }

    fn progress(&self) -> String {
        let r = self.last;
        format!(
            "round {}: {} stripes surveyed, {} coordinated here, {} shards repaired, {} in \
             backlog, {} lost, {} members unreachable",
            self.rounds, r.surveyed, r.coordinated, r.repaired, r.backlog, r.lost, r.unreachable
        )
    }
}
