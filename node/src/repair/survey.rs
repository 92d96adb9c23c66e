//! Who holds which shard of the stripes this node cares about: every live member asked once
//! for all of them (`Cluster::who_holds`, one batched `Have` per member).

use std::collections::BTreeSet;
use std::time::Duration;

use cairn_erasure::Cid;
use cairn_storage::Backend;
use libp2p::PeerId;

use super::policy::StripeHealth;
use crate::cluster::Cluster;

/// How long a member may take to answer (a dead node still in the routing table costs
/// this, once per survey).
const ANSWER_DEADLINE: Duration = Duration::from_secs(10);

/// What a survey found.
#[derive(Debug, Clone, Default)]
pub struct Survey {
    /// Per stripe asked about (in order), who holds each shard.
    pub stripes: Vec<StripeHealth>,
    /// Members asked, this node included.
    pub asked: Vec<PeerId>,
    /// Members that did not answer.
    pub unreachable: Vec<PeerId>,
}

/// Ask every live member (and this node's own store) which shards of `stripes` it holds.
pub async fn survey<B: Backend>(cluster: &Cluster<B>, stripes: &[&[Cid]]) -> Survey {
    let members = cluster.members().await;
    let wanted: Vec<Cid> = stripes
        .iter()
        .flat_map(|s| s.iter().copied())
        .collect::<BTreeSet<Cid>>()
        .into_iter()
        .collect();
    let found = cluster.who_holds(&members, &wanted, ANSWER_DEADLINE).await;
    Survey {
        stripes: stripes
            .iter()
            .map(|s| StripeHealth {
                holders: s.iter().map(|c| found.of(c).to_vec()).collect(),
            })
            .collect(),
        asked: members,
        unreachable: found.unreachable,
    }
}
