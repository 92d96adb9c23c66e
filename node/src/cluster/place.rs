//! Placing a stripe's shards on their nodes, and reading placed shards back before a put
//! reports success.

use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::*;
use crate::net::put_plan::{Assignment, PutPlanner};

/// Where a stripe's shards went.
pub(super) struct Placed {
    /// The node holding each shard (this node for the ones it keeps).
    pub placed: Vec<PeerId>,
    /// Second copies (shard index, node): a hedged push and its original both landed.
    pub extra: Vec<(usize, PeerId)>,
    /// Pushes cancelled because their hedge won (shard index, node): the node may still
    /// have stored the shard (its bytes had all arrived), so its commit may need to name it.
    pub maybe: Vec<(usize, PeerId)>,
}

/// Random 16 KiB groups of each placed shard the gateway reads back, verified, from the node
/// that acknowledged it before a put reports success.
const SPOT_CHECKS_PER_SHARD: usize = 2;
/// Spot checks in flight at once (well under a node's per-peer stream limit).
const SPOT_CHECKS_IN_FLIGHT: usize = 16;

impl<B: Backend> Cluster<B> {
    /// Push a stripe's remote shards to their nodes in parallel, as `plan` assigns them (a
    /// node this upload saw fail or lag is skipped for a while). A node that fails is
    /// replaced by the next spare not holding a shard of this stripe; a push that runs late
    /// is hedged to the next spare, the first acknowledgement wins and the other push is
    /// cancelled. Returns where each shard went (this node's own shards are stored by the
    /// caller), and the rare second copies that landed before their cancellation.
    pub(super) async fn place_stripe(
        &self,
        plan: &mut PutPlanner,
        members: &[PeerId],
        salt: &[u8],
        upload: UploadId,
        enc: &EncodedStripe,
        stripe_no: u64,
    ) -> Result<Placed, IngestError> {
        let cids = &enc.cids();
        let ordered = member_order(&self.membership, members, &stripe_key(Some(salt), cids));
        let total = cids.len();
        let me = self.net.peer_id();
        let natural: Vec<PeerId> = (0..total)
            .map(|i| holder(&ordered, i).expect("members include this node"))
            .collect();
        let spares: Vec<PeerId> = ordered.iter().skip(total).copied().collect();
        let Assignment {
            mut placed,
            mut spare,
        } = plan.assign(&natural, &spares, &me, Instant::now());
        let stops: Vec<CancellationToken> = (0..total).map(|_| CancellationToken::new()).collect();
        let push = |i: usize, peer: PeerId| {
            let stop = stops[i].clone();
            let started = Instant::now();
            async move {
                let r = tokio::select! {
                    r = self.transfers.push_shard(peer, upload, &cids[i], enc.shard(i)) => Some(r),
                    () = stop.cancelled() => None,
                };
                (i, peer, started, r)
            }
        };
        let mut f = FuturesUnordered::new();
        let mut done = vec![false; total];
        let mut flying = vec![0usize; total];
        let mut since: Vec<Option<Instant>> = vec![None; total];
        let mut hedged = vec![false; total];
        let mut tried: Vec<Vec<PeerId>> = vec![Vec::new(); total];
        let mut errors: Vec<Vec<String>> = vec![Vec::new(); total];
        let mut failed: Vec<Vec<PeerId>> = vec![Vec::new(); total];
        let mut took: Vec<Duration> = Vec::new();
        let mut extra = Vec::new();
        for i in 0..total {
            if placed[i] == me {
                done[i] = true;
            } else {
                f.push(push(i, placed[i]));
                flying[i] = 1;
                since[i] = Some(Instant::now());
                tried[i].push(placed[i]);
            }
        }
        let remote = flying.iter().filter(|n| **n > 0).count();
        while done.iter().any(|d| !d) {
            // The next moment a push becomes late (only one hedge per shard, while spares last).
            let deadline = (0..total)
                .filter(|&i| !done[i] && !hedged[i] && flying[i] == 1 && !spare.is_empty())
                .filter_map(|i| {
                    let after = plan.hedge_after(enc.shard(i).len() as u64, &took, remote)?;
                    Some((since[i]? + after, i))
                })
                .min();
            let late = async {
                match deadline {
                    Some((at, _)) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            let next = tokio::select! {
                next = f.next() => next,
                () = late => {
                    let (_, i) = deadline.expect("a deadline fired");
                    hedged[i] = true;
                    let p = spare.remove(0);
                    debug!(stripe = stripe_no, shard = i, slow = %placed[i], to = %p, "shard push late; hedging");
                    tried[i].push(p);
                    if p == me {
                        done[i] = true;
                        placed[i] = me;
                        stops[i].cancel();
                    } else {
                        f.push(push(i, p));
                        flying[i] += 1;
                    }
                    continue;
                }
            };
            let Some((i, peer, started, r)) = next else {
                // Unreachable: a shard not done always has a push in flight or fails the put.
                return Err(IngestError::Placement(format!(
                    "stripe {stripe_no}: no push in flight for an unplaced shard"
                )));
            };
            flying[i] -= 1;
            match r {
                // Cancelled: its other copy won.
                None => {}
                Some(Ok(())) => {
                    plan.pushed(peer, enc.shard(i).len() as u64, started.elapsed());
                    if done[i] {
                        extra.push((i, peer));
                    } else {
                        done[i] = true;
                        placed[i] = peer;
                        took.push(started.elapsed());
                        stops[i].cancel();
                    }
                }
                Some(Err(e)) => {
                    warn!(stripe = stripe_no, shard = i, %peer, error = %e, "shard push failed; trying the next node");
                    plan.struck(peer, Instant::now());
                    errors[i].push(e.to_string());
                    failed[i].push(peer);
                    if done[i] || flying[i] > 0 {
                        continue;
                    }
                    let next = if self.allow_colocation && spare.is_empty() {
                        // Any other member will do.
                        ordered.iter().find(|p| !tried[i].contains(p)).copied()
                    } else if spare.is_empty() {
                        None
                    } else {
                        Some(spare.remove(0))
                    };
                    match next {
                        Some(p) if p == me => {
                            done[i] = true;
                            placed[i] = me;
                        }
                        Some(p) => {
                            tried[i].push(p);
                            placed[i] = p;
                            f.push(push(i, p));
                            flying[i] = 1;
                            since[i] = Some(Instant::now());
                        }
                        None => {
                            return Err(IngestError::Placement(format!(
                                "shard {i} of stripe {stripe_no}: no node left to take it ({})",
                                errors[i].join("; ")
                            )));
                        }
                    }
                }
            }
        }
        // A push that lost its hedge was late: the rest of the upload avoids its node for a
        // while (its push was cancelled, so it never failed on its own).
        let now = Instant::now();
        let mut maybe = Vec::new();
        for i in (0..total).filter(|&i| hedged[i]) {
            for p in &tried[i] {
                let landed = extra.iter().any(|(j, q)| *j == i && q == p);
                if *p != placed[i] && !landed && !failed[i].contains(p) {
                    plan.struck(*p, now);
                    maybe.push((i, *p));
                }
            }
        }
        Ok(Placed {
            placed,
            extra,
            maybe,
        })
    }

    /// Read back random 16 KiB groups of every shard placed on each participant, verified
    /// against the shard's CID. Returns what failed (empty: every node holds its share).
    pub(super) async fn spot_check(
        &self,
        participants: &HashMap<PeerId, BTreeMap<Cid, u64>>,
    ) -> Vec<String> {
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
