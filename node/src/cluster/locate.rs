//! Who holds which shard, asked in batches: one `Have` request per member for every shard
//! of interest (not one per shard), a few members at a time, each within a deadline. A member
//! that does not answer counts as holding nothing (unreachable). Repair's survey and a
//! read that cannot find enough shards through their placement or provider records use it.

use super::*;

/// Members asked at once.
const ASKED_AT_ONCE: usize = 8;

/// What members said they hold.
#[derive(Debug, Clone, Default)]
pub struct Holders {
    /// Per shard CID, the members that hold it (sorted).
    pub by_cid: HashMap<Cid, Vec<PeerId>>,
    /// Members that did not answer within the deadline (sorted).
    pub unreachable: Vec<PeerId>,
}

impl Holders {
    /// The members holding `cid`.
    pub fn of(&self, cid: &Cid) -> &[PeerId] {
        self.by_cid.get(cid).map(Vec::as_slice).unwrap_or_default()
    }
}

impl<B: Backend> Cluster<B> {
    /// Ask each of `peers` (this node's own store when it is among them) which of `cids` it
    /// holds, each within `deadline`.
    pub async fn who_holds(&self, peers: &[PeerId], cids: &[Cid], deadline: Duration) -> Holders {
        let me = self.net.peer_id();
        let mut answers = libp2p::futures::stream::iter(peers.iter().copied())
            .map(|peer| async move {
                let held = if peer == me {
                    let store = self.store.clone();
                    let cids = cids.to_vec();
                    tokio::task::spawn_blocking(move || {
                        cids.iter()
                            .map(|c| store.shard_present(c).unwrap_or(false))
                            .collect::<Vec<bool>>()
                    })
                    .await
                    .map_err(|e| e.to_string())
                } else {
                    match tokio::time::timeout(deadline, self.transfers.have(peer, cids)).await {
                        Ok(Ok(h)) => Ok(h),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err(format!("no answer within {deadline:?}")),
                    }
                };
                (peer, held)
            })
            .buffer_unordered(ASKED_AT_ONCE);
        let mut out = Holders::default();
        while let Some((peer, held)) = answers.next().await {
            match held {
                Ok(held) => {
                    for (cid, h) in cids.iter().zip(held) {
                        if h {
                            out.by_cid.entry(*cid).or_default().push(peer);
                        }
                    }
                }
                Err(e) => {
                    debug!(%peer, error = %e, "member did not say what it holds");
                    out.unreachable.push(peer);
                }
            }
        }
        drop(answers);
        for h in out.by_cid.values_mut() {
            h.sort();
        }
        out.unreachable.sort();
        out
    }
}
