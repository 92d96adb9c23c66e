//! Networking: node identity, the libp2p swarm (Kademlia over QUIC), shard placement, and
//! the shard transfer protocol.

pub mod placement;
pub mod swarm;
pub mod transfer;
pub mod wire;

pub use swarm::{NetConfig, NetError, Network, load_identity};
pub use transfer::{ShardServer, TransferError, TransferStats, Transfers};
