//! Networking: node identity, membership, the libp2p swarm (Kademlia over QUIC), shard
//! placement, and the shard transfer protocol.

pub mod membership;
pub mod placement;
pub mod put_plan;
pub mod swarm;
pub mod transfer;
pub mod wire;

pub use membership::{Membership, peer_word};
pub use swarm::{NetConfig, NetError, Network, load_identity};
pub use transfer::{
    ServerLimits, ShardServer, TransferError, TransferStats, Transfers, UploadSweeper,
};
