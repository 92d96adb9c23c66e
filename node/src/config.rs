//! Node configuration: one TOML file, every field documented, every default named.
//! `node/cairn.example.toml` is the reference; a test keeps it in sync with [`NodeConfig`].

use std::net::SocketAddr;
use std::path::PathBuf;

use cairn_erasure::Layout;
use cairn_erasure::layout::{DEFAULT_K, DEFAULT_M, DEFAULT_STRIPE_SIZE};
use serde::{Deserialize, Serialize};

/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = ".cairn/node";
/// Default HTTP listen address (loopback only: the API has no authentication yet).
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:7070";
/// Default capacity: 100 GiB.
pub const DEFAULT_CAPACITY_BYTES: u64 = 100 << 30;
/// Default peer-to-peer listen address: QUIC on UDP 7071, all interfaces (peers are
/// authenticated by their node identity).
pub const DEFAULT_P2P_LISTEN: &str = "/ip4/0.0.0.0/udp/7071/quic-v1";
/// Default limit on concurrent uploads (each holds about 1.5 stripes of memory).
pub const DEFAULT_MAX_CONCURRENT_PUTS: usize = 2;
/// Default charged bytes of uncommitted shards one gateway may hold on this node: 32 GiB.
pub const DEFAULT_PEER_PENDING_BYTES: u64 = 32 << 30;
/// Default uploads one gateway may have open on this node at once.
pub const DEFAULT_MAX_UPLOADS_PER_PEER: usize = 8;
/// Default time a share pushed by another gateway may stay without a deal (with a chain).
pub const DEFAULT_UNPAID_GRACE_SECS: u64 = 24 * 3600;
/// Scrub rate: 32 MiB/s re-reads 1 TiB in about 9 hours, a small share of a disk's time.
pub const DEFAULT_SCRUB_MIB_PER_S: u64 = 32;
/// A scrub pass starts every 30 days (Garage: 25-35 days).
pub const DEFAULT_SCRUB_INTERVAL_SECS: u64 = 30 * 24 * 3600;
/// The publisher asks the nodes that missed its network-wide delete again every 5 minutes.
pub const DEFAULT_DELETE_RETRY_SECS: u64 = 300;
/// Default of `storage.upload_idle_secs`: an hour to come back to a cut-off put.
pub const DEFAULT_UPLOAD_IDLE_SECS: u64 = 3600;
/// Repair traffic at most 16 MiB/s per node (fetches to rebuild and pushes of rebuilt shards).
pub const DEFAULT_REPAIR_MIB_PER_S: u64 = 16;
/// A repair round (a survey of the stripes held here) every 10 minutes.
pub const DEFAULT_REPAIR_INTERVAL_SECS: u64 = 600;
/// A stripe is repaired after it stayed below its threshold for an hour: a node restarting or
/// briefly offline costs no repair traffic.
pub const DEFAULT_REPAIR_GRACE_SECS: u64 = 3600;
/// A stripe two shards short is repaired without waiting out the grace: two holders out at
/// once is rarely a restart, and the durability simulator shows the hour waited is what
/// decides whether (10,4) keeps 11 nines (ARCHITECTURE.md, "Durability, simulated").
pub const DEFAULT_REPAIR_URGENT_MISSING: u8 = 2;
/// Environment variable that overrides `node.api_token`.
pub const API_TOKEN_ENV: &str = "CAIRN_API_TOKEN";

/// Where shard bytes are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ValueMode {
    /// One file per shard, RocksDB as the index (default, measured faster: ARCHITECTURE.md).
    #[default]
    Files,
    /// Shard bytes inside RocksDB with BlobDB.
    Blobdb,
}

/// `[node]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSection {
    /// Directory holding the store (created if missing).
    pub data_dir: PathBuf,
    /// Address of the HTTP API. Port 0 picks a free port (printed at start).
    pub http_listen: SocketAddr,
    /// Bearer token that writes (put, delete, manifest import) must present. Empty: a token
    /// is generated at first start into `<data_dir>/api.token` (mode 0600). The environment
    /// variable CAIRN_API_TOKEN overrides both.
    pub api_token: String,
    /// Host names (without port) requests may name besides localhost, 127.0.0.1, ::1 and the
    /// listen address; any other Host is refused with 403 (DNS rebinding).
    pub allowed_hosts: Vec<String>,
}

/// `[storage]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    /// Most bytes this node stores, counting shards in whole 4 KiB blocks with their
    /// outboards, checkpoint manifests, and 512 bytes per entry. Uploads beyond it fail with
    /// "store full" (HTTP 507).
    pub capacity_bytes: u64,
    /// Where shard bytes live: "files" or "blobdb".
    pub value_mode: ValueMode,
    /// Uploads processed at the same time; more wait their turn (bounds memory).
    pub max_concurrent_puts: usize,
    /// Charged bytes of uncommitted shards one gateway may hold here (its share of the puts
    /// it has in progress); pushes beyond it are refused.
    pub peer_pending_bytes: u64,
    /// Uploads one gateway may have open here at once.
    pub max_uploads_per_peer: usize,
    /// With a chain: seconds a share another gateway pushed here is kept without a deal this
    /// node was offered or accepted; then it is freed (unless kept through this node's API).
    pub unpaid_grace_secs: u64,
    /// Rate at which the scrubber re-reads and verifies the shards held here, in MiB/s
    /// (0: never scrub). A shard found corrupt or missing is rebuilt from its stripe.
    pub scrub_mib_per_s: u64,
    /// Seconds between the starts of two scrub passes over every shard.
    pub scrub_interval_secs: u64,
    /// Seconds between two attempts of a publisher to reach the nodes that missed its
    /// `cairn rm --network` (down, or refusing while a deal ran); it keeps asking for 30 days.
    pub delete_retry_secs: u64,
    /// Seconds an interrupted upload is kept for a later run of the same put to go on from
    /// (its placed stripes here as a gateway, and another gateway's upload session here as a
    /// storing node, which idles out after as long without a push).
    pub upload_idle_secs: u64,
}

/// `[erasure]`: defaults for uploads that do not choose their own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ErasureSection {
    /// Data shards per stripe (1..=63).
    pub k: u8,
    /// Parity shards per stripe (k + m <= 64): any m shards of a stripe may be lost.
    pub m: u8,
    /// Stripe size in bytes (4 KiB ..= 1 GiB). A put holds about 1.5 stripes in memory.
    pub stripe_size: u64,
}

/// `[network]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkSection {
    /// libp2p multiaddr for the Kademlia DHT and shard transfer (QUIC). Port 0 picks one.
    pub listen: String,
    /// Multiaddrs of nodes to join through (any member of the network will do).
    pub bootstrap: Vec<String>,
    /// Allow several shards of one stripe on the same node when fewer nodes than k + m are
    /// reachable (losing that node then loses several shards at once).
    pub allow_colocation: bool,
    /// Without a chain: the peer ids of the network's members (nodes that may be placed on,
    /// push shards and serve reads). With a chain, membership comes from the contract's
    /// registry and this must be empty.
    pub members: Vec<String>,
    /// Every peer is a member. For local development only: any stranger can then store,
    /// be placed on and serve reads.
    pub open_membership: bool,
}

impl Default for NetworkSection {
    fn default() -> Self {
        Self {
            listen: DEFAULT_P2P_LISTEN.into(),
            bootstrap: Vec::new(),
            allow_colocation: false,
            members: Vec::new(),
            open_membership: false,
        }
    }
}

/// Default stake a node registers with: 1 ETH (in gwei).
pub const DEFAULT_STAKE_GWEI: u64 = 1_000_000_000;
/// Default length of the deals `cairn put` makes.
pub const DEFAULT_DEAL_EPOCHS: u32 = 1000;
/// Default price per epoch each storing node is paid: 1000 gwei.
pub const DEFAULT_DEAL_PRICE_GWEI: u64 = 1000;
/// Default chain polling interval.
pub const DEFAULT_CHAIN_POLL_MS: u64 = 500;
/// Finished, unpaid epochs of a running deal that make it worth a settlement.
pub const DEFAULT_SETTLE_EVERY_EPOCHS: u64 = 24;
/// Epochs a proposal waits for its node before the gateway takes its escrow back.
pub const DEFAULT_CANCEL_PROPOSALS_AFTER_EPOCHS: u64 = 24;
/// Gwei owed that make a withdrawal worth its gas: 0.01 ETH.
pub const DEFAULT_WITHDRAW_MIN_GWEI: u64 = 10_000_000;

/// `[chain]`: proofs of storage and provenance on the CairnStorage contract. Off while
/// `rpc_url` is empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChainSection {
    /// JSON-RPC endpoint, e.g. "http://127.0.0.1:8545". Empty: no chain.
    pub rpc_url: String,
    /// Address of the deployed contract (`cairn deploy` prints it).
    pub contract: String,
    /// Hex private key of this node's account (stakes, proves, reports missed epochs, and pays
    /// for the deals and provenance of checkpoints put through this node). The environment
    /// variable CAIRN_CHAIN_KEY overrides it; prefer that outside a devnet.
    pub key: String,
    /// Stake, in gwei, this node registers with at start if it is not registered (0: never).
    pub stake_gwei: u64,
    /// Epochs each deal made by a put through this node lasts.
    pub deal_epochs: u32,
    /// Price per epoch, in gwei, a deal pays each storing node.
    pub deal_price_gwei: u64,
    /// How often the prover and watcher poll the chain, in milliseconds.
    pub poll_ms: u64,
    /// Settle a running deal's payment once this many of its epochs are finished and unpaid,
    /// and an ended deal's rest at once (0: never settle; anyone may, by hand).
    pub settle_every_epochs: u64,
    /// Cancel a deal this node proposed as a gateway when no node accepted it within this
    /// many epochs; its escrow is credited back (0: never).
    pub cancel_proposals_after_epochs: u64,
    /// Withdraw what the contract owes this node once it reaches this many gwei (0: never).
    pub withdraw_min_gwei: u64,
}

impl Default for ChainSection {
    fn default() -> Self {
        Self {
            rpc_url: String::new(),
            contract: String::new(),
            key: String::new(),
            stake_gwei: DEFAULT_STAKE_GWEI,
            deal_epochs: DEFAULT_DEAL_EPOCHS,
            deal_price_gwei: DEFAULT_DEAL_PRICE_GWEI,
            poll_ms: DEFAULT_CHAIN_POLL_MS,
            settle_every_epochs: DEFAULT_SETTLE_EVERY_EPOCHS,
            cancel_proposals_after_epochs: DEFAULT_CANCEL_PROPOSALS_AFTER_EPOCHS,
            withdraw_min_gwei: DEFAULT_WITHDRAW_MIN_GWEI,
        }
    }
}

impl ChainSection {
    pub fn enabled(&self) -> bool {
        !self.rpc_url.is_empty()
    }

    /// The private key: CAIRN_CHAIN_KEY if set, else `key`.
    pub fn key(&self) -> String {
        std::env::var(crate::chain::KEY_ENV).unwrap_or_else(|_| self.key.clone())
    }
}

/// `[repair]`: rebuilding the shards of stripes whose holders are gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RepairSection {
    /// Repair traffic (shards fetched to rebuild a stripe, rebuilt shards pushed) in MiB/s
    /// at most (0: never repair).
    pub mib_per_s: u64,
    /// Seconds between two repair rounds (each surveys the stripes this node holds a shard
    /// of, one batched query per live member).
    pub interval_secs: u64,
    /// Seconds a stripe must stay below its threshold before it is repaired.
    pub grace_secs: u64,
    /// Repair a stripe when fewer than this many of its shards are intact and reachable,
    /// clamped to k + 1 ..= k + m (0: k + m, repair any loss that outlasts the grace).
    pub threshold: u8,
    /// Repair a stripe missing this many shards or more at once, without the grace (0:
    /// always wait out the grace).
    pub urgent_missing: u8,
}

impl Default for RepairSection {
    fn default() -> Self {
        Self {
            mib_per_s: DEFAULT_REPAIR_MIB_PER_S,
            interval_secs: DEFAULT_REPAIR_INTERVAL_SECS,
            grace_secs: DEFAULT_REPAIR_GRACE_SECS,
            threshold: 0,
            urgent_missing: DEFAULT_REPAIR_URGENT_MISSING,
        }
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    pub node: NodeSection,
    pub storage: StorageSection,
    pub erasure: ErasureSection,
    pub network: NetworkSection,
    pub chain: ChainSection,
    pub repair: RepairSection,
}

impl Default for NodeSection {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            http_listen: DEFAULT_HTTP_LISTEN
                .parse()
                .expect("default listen address parses"),
            api_token: String::new(),
            allowed_hosts: Vec::new(),
        }
    }
}

impl Default for StorageSection {
    fn default() -> Self {
        Self {
            capacity_bytes: DEFAULT_CAPACITY_BYTES,
            value_mode: ValueMode::Files,
            max_concurrent_puts: DEFAULT_MAX_CONCURRENT_PUTS,
            peer_pending_bytes: DEFAULT_PEER_PENDING_BYTES,
            max_uploads_per_peer: DEFAULT_MAX_UPLOADS_PER_PEER,
            unpaid_grace_secs: DEFAULT_UNPAID_GRACE_SECS,
            scrub_mib_per_s: DEFAULT_SCRUB_MIB_PER_S,
            scrub_interval_secs: DEFAULT_SCRUB_INTERVAL_SECS,
            delete_retry_secs: DEFAULT_DELETE_RETRY_SECS,
            upload_idle_secs: DEFAULT_UPLOAD_IDLE_SECS,
        }
    }
}

impl Default for ErasureSection {
    fn default() -> Self {
        Self {
            k: DEFAULT_K,
            m: DEFAULT_M,
            stripe_size: DEFAULT_STRIPE_SIZE,
        }
    }
}

impl ErasureSection {
    pub fn layout(&self) -> Result<Layout, cairn_erasure::ParamsError> {
        Layout::new(self.k, self.m, self.stripe_size)
    }
}

impl NodeSection {
    /// The API token from CAIRN_API_TOKEN, else `api_token` (empty: use the generated one).
    pub fn configured_token(&self) -> String {
        std::env::var(API_TOKEN_ENV).unwrap_or_else(|_| self.api_token.clone())
    }
}

impl NodeConfig {
    /// Parse and validate a TOML document.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let cfg: NodeConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        cfg.erasure.layout().map_err(|e| e.to_string())?;
        for a in std::iter::once(&cfg.network.listen).chain(&cfg.network.bootstrap) {
            a.parse::<libp2p::Multiaddr>()
                .map_err(|e| format!("network: invalid multiaddr {a:?}: {e}"))?;
        }
        if cfg.chain.enabled() && (cfg.chain.contract.is_empty() || cfg.chain.poll_ms == 0) {
            return Err(
                "chain: rpc_url is set, so contract and a positive poll_ms are needed".into(),
            );
        }
        if cfg.storage.max_concurrent_puts == 0 {
            return Err("storage.max_concurrent_puts must be at least 1".into());
        }
        if cfg.storage.max_uploads_per_peer == 0 {
            return Err("storage.max_uploads_per_peer must be at least 1".into());
        }
        for m in &cfg.network.members {
            m.parse::<libp2p::PeerId>()
                .map_err(|e| format!("network.members: invalid peer id {m:?}: {e}"))?;
        }
        if cfg.chain.enabled() && (!cfg.network.members.is_empty() || cfg.network.open_membership) {
            return Err(
                "network: with a chain, membership comes from the contract's registry; \
                 leave network.members empty and open_membership false"
                    .into(),
            );
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../cairn.example.toml");

    fn keys(v: &toml::Value, prefix: &str, out: &mut Vec<String>) {
        if let toml::Value::Table(t) = v {
            for (k, v) in t {
                let name = format!("{prefix}{k}");
                keys(v, &format!("{name}."), out);
                out.push(name);
            }
        }
    }

    #[test]
    fn example_config_is_the_defaults_and_lists_every_field() {
        let parsed = NodeConfig::from_toml(EXAMPLE).expect("example parses");
        assert_eq!(
            parsed,
            NodeConfig::default(),
            "example values drifted from defaults"
        );
        let mut want = Vec::new();
        keys(
            &toml::Value::try_from(NodeConfig::default()).expect("serializes"),
            "",
            &mut want,
        );
        let mut have = Vec::new();
        keys(&toml::from_str(EXAMPLE).expect("toml"), "", &mut have);
        want.sort();
        have.sort();
        assert_eq!(have, want, "example must spell out every field");
        // Every field carries a comment line above it.
        for line in EXAMPLE.lines().filter(|l| l.contains(" = ")) {
            let idx = EXAMPLE.find(line).expect("line present");
            let before = EXAMPLE[..idx].trim_end().lines().last().unwrap_or("");
            assert!(before.starts_with('#'), "undocumented field: {line}");
        }
    }

    #[test]
    fn rejects_unknown_and_invalid() {
        assert!(NodeConfig::from_toml("[node]\nnope = 1").is_err());
        assert!(NodeConfig::from_toml("[erasure]\nk = 0").is_err());
        assert!(NodeConfig::from_toml("[erasure]\nk = 60\nm = 10").is_err());
        assert!(NodeConfig::from_toml("[storage]\nmax_concurrent_puts = 0").is_err());
        assert!(NodeConfig::from_toml("[network]\nlisten = \"udp:7071\"").is_err());
        assert!(NodeConfig::from_toml("[network]\nbootstrap = [\"nope\"]").is_err());
        assert!(NodeConfig::from_toml("[network]\nmembers = [\"not-a-peer\"]").is_err());
        assert!(
            NodeConfig::from_toml(
                "[network]\nopen_membership = true\n[chain]\nrpc_url = \"http://x\"\ncontract = \"0x1\""
            )
            .is_err(),
            "a chain decides membership alone"
        );
        assert_eq!(
            NodeConfig::from_toml("").expect("empty is defaults"),
            NodeConfig::default()
        );
    }
}
