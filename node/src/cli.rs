//! Command-line interface (the only module that knows clap).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Cairn: verified, erasure-coded storage for model checkpoints.
#[derive(Debug, Parser)]
#[command(name = "cairn", version, about)]
pub struct Cli {
    /// URL of the node's HTTP API.
    #[arg(
        long,
        global = true,
        env = "CAIRN_NODE",
        default_value = "http://127.0.0.1:7070"
    )]
    pub node: String,
    /// Hide progress bars.
    #[arg(long, global = true)]
    pub quiet: bool,
    /// The node's API token for writes (put, rm). Default: found in the local devnet's or
    /// the default data directory's `api.token`.
    #[arg(long, global = true, env = "CAIRN_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run or manage a storage node.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// A local network of nodes for development and tests.
    Devnet {
        #[command(subcommand)]
        command: DevnetCommand,
    },
    /// Upload a file or a model folder; prints the root CID.
    Put {
        /// File or folder to upload.
        path: PathBuf,
        /// Name of the checkpoint (`model` or `org/model`): recorded with the pin and pointed
        /// at the new root in the node's name table, where the HF endpoint (`/hf`) serves it
        /// as a repository. Without it, the file or folder name is recorded with the pin only.
        #[arg(long)]
        name: Option<String>,
        /// Data shards per stripe (default: the node's).
        #[arg(long)]
        k: Option<u8>,
        /// Parity shards per stripe (default: the node's).
        #[arg(long)]
        m: Option<u8>,
        /// Stripe size in bytes (default: the node's).
        #[arg(long)]
        stripe_size: Option<u64>,
        /// Root CID of the checkpoint this one derives from (a fine-tune's base), recorded
        /// on chain with this one.
        #[arg(long)]
        parent: Option<String>,
        /// Whose record of --parent it derives from (an account, 0x...; default: the node's
        /// own, which publishes its puts).
        #[arg(long, requires = "parent")]
        parent_publisher: Option<String>,
    },
    /// Print provenance from chain: for a root CID, a publisher's record of it, its parent's,
    /// ... back to its base; for a name (`org/model`), its newest revisions (the roots it
    /// pointed at), newest first.
    Log {
        /// Root CID or `org/model`.
        target: String,
        /// Whose record of the CID to follow (default: the node's account).
        #[arg(long)]
        publisher: Option<String>,
    },
    /// Show the node's account on chain: balance, stake, credits owed, the deals it accepted
    /// and the escrow of the deals it proposed.
    Wallet,
    /// Deploy the CairnStorage contract to a chain. The RPC URL and the deployer's private
    /// key come from the environment (CAIRN_RPC_URL, CAIRN_CHAIN_KEY); prints the address.
    Deploy {
        #[arg(long, env = "CAIRN_RPC_URL")]
        rpc_url: String,
        /// Minimum stake of a node, in gwei. A node slashed below it is out until it tops up;
        /// the default is half of what a node stakes by default (`chain.stake_gwei`), so a
        /// node at the default stake survives 50 missed epochs at the default slash.
        #[arg(long, default_value_t = 500_000_000)]
        min_stake_gwei: u64,
        /// Blocks per epoch.
        #[arg(long, default_value_t = cairn_node::chain::DEFAULT_EPOCH_BLOCKS)]
        epoch_blocks: u64,
        /// Blocks after an epoch's first block in which its proofs are accepted (< epoch).
        #[arg(long, default_value_t = 120)]
        proof_window: u64,
        /// Epochs between a stake withdrawal request and the withdrawal.
        #[arg(long, default_value_t = 42)]
        unbonding_epochs: u64,
        /// Stake taken for one missed epoch, in gwei.
        #[arg(long, default_value_t = 10_000_000)]
        slash_gwei: u64,
        /// Share of a slash paid to the reporter, in basis points.
        #[arg(long, default_value_t = 5000)]
        reward_bps: u16,
        /// Leaves challenged per node and epoch (the default meets the detection target of
        /// proofs/PROOFS.md with the default epoch).
        #[arg(long, default_value_t = cairn_node::chain::DEFAULT_SAMPLES)]
        samples: u8,
        /// Least escrow a deal proposal carries, in gwei.
        #[arg(long, default_value_t = cairn_node::chain::DEFAULT_MIN_ESCROW_GWEI)]
        min_escrow_gwei: u64,
        /// Epochs a proposal may be accepted in; after that anyone may cancel it and its
        /// escrow returns to the client.
        #[arg(long, default_value_t = cairn_node::chain::DEFAULT_PROPOSAL_EPOCHS)]
        proposal_epochs: u64,
    },
    /// Download a checkpoint (verifying every file), one file, or a byte range of one file.
    Get {
        /// Root CID.
        cid: String,
        /// Output folder for a checkpoint, or output file with --file (default: stdout).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Read only this file of the checkpoint.
        #[arg(long)]
        file: Option<String>,
        /// Byte range of --file, inclusive: `a-b`, `a-` or `-n` (last n bytes).
        #[arg(long, requires = "file")]
        range: Option<String>,
        /// Read only this tensor of a safetensors file (of --file, else the checkpoint's
        /// file that has it); repeat for several (then --output is a folder, one file per
        /// tensor). Only the shard pieces the tensor covers are fetched.
        #[arg(long, conflicts_with = "range")]
        tensor: Vec<String>,
    },
    /// Point a name (`org/model`) of the node's name table at a root CID.
    Tag { name: String, cid: String },
    /// List the node's names, or one name with its history.
    Names { name: Option<String> },
    /// List pinned checkpoints.
    Ls,
    /// Show a checkpoint's stripes, shards and health.
    Stat {
        cid: String,
        /// Read and hash every shard instead of only checking presence.
        #[arg(long)]
        verify: bool,
        /// Ask every live member which shards it holds: per stripe, how many are intact and
        /// reachable (the full answer, with holders, is GET .../stat?network=true).
        #[arg(long, conflicts_with = "verify")]
        network: bool,
    },
    /// Unpin a checkpoint and free the shards nothing else uses; refused while a deal this
    /// node accepted still runs on it.
    Rm {
        cid: String,
        /// Delete it from every node of the network: this node must be its publisher; its
        /// deals on the checkpoint are ended first (unused escrow refunded).
        #[arg(long)]
        network: bool,
        /// Unpin here even under a running deal (its proofs then fail and are slashed).
        #[arg(long, conflicts_with = "network")]
        force: bool,
    },
    /// Write a synthetic model folder (safetensors + JSON files).
    Sample {
        dir: PathBuf,
        /// Bytes of tensor data.
        #[arg(long, default_value_t = 256 << 20)]
        size: u64,
    },
    /// The main job on a local default: start a node, put a sample checkpoint, get it back,
    /// verify it, print the CID and throughput.
    Demo {
        /// Bytes of tensor data in the sample checkpoint.
        #[arg(long, default_value_t = 512 << 20)]
        size: u64,
        /// Work directory (default: a fresh temporary one, removed afterwards).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DevnetCommand {
    /// Start N node processes on loopback, joined to each other.
    Up {
        /// Devnet directory (state, node data, logs).
        #[arg(long, default_value = DEVNET_DIR)]
        dir: PathBuf,
        /// Number of nodes (at least k + m).
        #[arg(long, default_value_t = 8)]
        nodes: usize,
        /// Data shards per stripe for the devnet's nodes.
        #[arg(long, default_value_t = 4)]
        k: u8,
        /// Parity shards per stripe for the devnet's nodes.
        #[arg(long, default_value_t = 2)]
        m: u8,
        /// Stripe size in bytes.
        #[arg(long, default_value_t = 16 << 20)]
        stripe_size: u64,
        /// Also start Prometheus (Debian package) on this port, scraping every node with the
        /// devnet's alert rules (`ops/prometheus/`).
        #[arg(long)]
        prometheus: Option<u16>,
        /// Start no local chain (no proofs, deals or provenance).
        #[arg(long)]
        no_chain: bool,
        /// Blocks (one per second) per epoch on the devnet chain (at least 3).
        #[arg(long, default_value_t = 4)]
        epoch_blocks: u64,
    },
    /// Stop every node of the devnet.
    Down {
        #[arg(long, default_value = DEVNET_DIR)]
        dir: PathBuf,
    },
    /// Show each node's address, peers and shards.
    Status {
        #[arg(long, default_value = DEVNET_DIR)]
        dir: PathBuf,
    },
}

/// Default devnet directory.
pub const DEVNET_DIR: &str = ".cairn/devnet";

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Run a node until interrupted.
    Run {
        /// Configuration file (see node/cairn.example.toml). Without it, the defaults.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Show the node's background jobs (scrubber, sweepers): state, progress, last error.
    Jobs,
    /// Print the node's peer id (what `network.members` lists), creating its identity in the
    /// data directory if it has none yet.
    Id {
        /// Configuration file (its `node.data_dir` is used). Without it, the defaults.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// Parse `a-b`, `a-` or `-n` into an inclusive range for a file of unknown size.
pub fn parse_range(text: &str) -> Result<(u64, u64), String> {
    let (a, b) = text
        .split_once('-')
        .ok_or_else(|| format!("range {text:?} must look like a-b, a- or -n"))?;
    let num = |s: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|_| format!("bad number {s:?} in range"))
    };
    match (a.trim().is_empty(), b.trim().is_empty()) {
        (false, false) => {
            let (a, b) = (num(a)?, num(b)?);
            if b < a {
                return Err(format!("range {text:?} ends before it starts"));
            }
            Ok((a, b))
        }
        (false, true) => Ok((num(a)?, u64::MAX)),
        _ => Err("suffix ranges (-n) are not supported by --range; use a-b".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("0-9"), Ok((0, 9)));
        assert_eq!(parse_range("5-"), Ok((5, u64::MAX)));
        assert!(parse_range("9-3").is_err());
        assert!(parse_range("x").is_err());
    }
}
