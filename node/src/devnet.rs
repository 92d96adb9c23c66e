//! `cairn devnet`: a local network of node processes on loopback, each with its own data
//! directory and ports, joined to each other. State lives in `<dir>/devnet.json`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use cairn_node::client::Client;
use serde::{Deserialize, Serialize};

/// How long a node may take to start, and the network to join up.
const START_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Serialize, Deserialize)]
pub struct DevnetNode {
    pub pid: u32,
    pub http: String,
    pub p2p: String,
    pub dir: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Devnet {
    pub nodes: Vec<DevnetNode>,
    /// A Prometheus scraping every node, when started with the devnet.
    #[serde(default)]
    pub prometheus: Option<DevnetProcess>,
    /// The local chain (anvil) with the contract, unless started with `--no-chain`.
    #[serde(default)]
    pub chain: Option<DevnetChain>,
}

/// The devnet's chain: anvil mining a block a second, the contract, and the dev accounts
/// (account 0 deployed the contract; node i uses account i + 1).
#[derive(Debug, Serialize, Deserialize)]
pub struct DevnetChain {
    pub pid: u32,
    pub rpc: String,
    pub contract: String,
    pub keys: Vec<String>,
    pub accounts: Vec<String>,
    pub epoch_blocks: u64,
}

/// Start anvil (one block a second, `accounts` funded dev accounts) and deploy the contract
/// with devnet parameters: epochs of `epoch_blocks` seconds.
async fn start_chain(dir: &Path, accounts: usize, epoch_blocks: u64) -> Result<DevnetChain> {
    use std::os::unix::process::CommandExt;
    if epoch_blocks < 3 {
        bail!(
            "an epoch needs at least 3 blocks (its first draws the challenges; proofs land in \
             the next ones, and the window is shorter than the epoch)"
        );
    }
    let log_path = dir.join("anvil.log");
    let log = std::fs::File::create(&log_path)?;
    let out = dir.join("anvil-accounts.json");
    let mut child = Command::new(cairn_node::chain::anvil_path()?)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--block-time",
            "1",
            "--accounts",
        ])
        .arg(accounts.to_string())
        .arg("--config-out")
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("starting anvil")?;
    let deadline = Instant::now() + START_TIMEOUT;
    let rpc = loop {
        if let Ok(text) = std::fs::read_to_string(&log_path)
            && let Some(addr) = text.lines().find_map(|l| l.strip_prefix("Listening on "))
            && out.exists()
        {
            break format!("http://{}", addr.trim());
        }
        if !matches!(child.try_wait(), Ok(None)) || Instant::now() > deadline {
            bail!(
                "anvil did not start:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let accts: serde_json::Value = serde_json::from_slice(&std::fs::read(&out)?)?;
    let list = |k: &str| -> Vec<String> {
        accts[k]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (keys, accounts) = (list("private_keys"), list("available_accounts"));
    let Some(deployer) = keys.first() else {
        bail!("anvil wrote no dev accounts to {}", out.display());
    };
    let (provider, _) = cairn_node::chain::provider(&rpc, deployer)?;
    let eth = alloy::primitives::U256::from(10u64).pow(alloy::primitives::U256::from(18u64));
    let contract = cairn_node::chain::Chain::deploy(
        &provider,
        cairn_node::chain::DeployArgs {
            // Half of what a node stakes by default (1 ETH): five missed epochs before a
            // node is out (below the minimum its proofs are refused until it tops up).
            min_stake: eth / alloy::primitives::U256::from(2u64),
            epoch_blocks,
            proof_window: epoch_blocks - 1,
            unbonding_epochs: 2,
            slash_amount: eth / alloy::primitives::U256::from(10u64),
            reward_bps: 5000,
            samples: 8,
            min_escrow: cairn_node::chain::gwei_to_wei(cairn_node::chain::DEFAULT_MIN_ESCROW_GWEI),
            proposal_epochs: cairn_node::chain::DEFAULT_PROPOSAL_EPOCHS,
        },
    )
    .await
    .context("deploying the contract")?;
    Ok(DevnetChain {
        pid: child.id(),
        rpc,
        contract: contract.to_string(),
        keys,
        accounts,
        epoch_blocks,
    })
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DevnetProcess {
    pub pid: u32,
    pub url: String,
}

/// The devnet's Prometheus config and alert rules (copied into the devnet directory; the
/// nodes are listed in `targets.json` next to them).
const PROMETHEUS_YML: &str = include_str!("../../ops/prometheus/prometheus.yml");
const ALERTS_YML: &str = include_str!("../../ops/prometheus/alerts.yml");

/// Write Prometheus' file-based service discovery for the devnet's nodes.
fn write_targets(dir: &Path, nodes: &[DevnetNode]) -> Result<()> {
    let targets: Vec<serde_json::Value> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            serde_json::json!({
                "targets": [n.http.trim_start_matches("http://")],
                "labels": {"node": format!("node-{i}")},
            })
        })
        .collect();
    std::fs::write(
        dir.join("targets.json"),
        serde_json::to_vec_pretty(&targets)?,
    )?;
    std::fs::write(dir.join("prometheus.yml"), PROMETHEUS_YML)?;
    std::fs::write(dir.join("alerts.yml"), ALERTS_YML)?;
    Ok(())
}

/// Start Prometheus (the Debian package's binary) on `port`, scraping the devnet.
fn start_prometheus(dir: &Path, port: u16) -> Result<DevnetProcess> {
    use std::os::unix::process::CommandExt;
    let log = std::fs::File::create(dir.join("prometheus.log"))?;
    let child = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("prometheus-data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("starting prometheus (install it with ./ops/install.sh)")?;
    Ok(DevnetProcess {
        pid: child.id(),
        url: format!("http://127.0.0.1:{port}"),
    })
}

fn state_file(dir: &Path) -> PathBuf {
    dir.join("devnet.json")
}

/// Read a running devnet's state.
pub fn load(dir: &Path) -> Result<Devnet> {
    let path = state_file(dir);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("no devnet in {} (run `cairn devnet up`)", dir.display()))?;
    serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))
}

/// Wait for the line a node prints once its HTTP API listens.
fn wait_http(log: &Path, child: &mut std::process::Child) -> Result<String> {
    let pid = child.id();
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(text) = std::fs::read_to_string(log)
            && let Some(url) = text
                .lines()
                .find_map(|l| l.strip_prefix("cairn node listening on "))
        {
            return Ok(url.trim().to_owned());
        }
        if !matches!(child.try_wait(), Ok(None)) || Instant::now() > deadline {
            bail!(
                "node {pid} did not start; its log is {}:\n{}",
                log.display(),
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn status(url: &str) -> Result<serde_json::Value> {
    Ok(Client::new(url).json("/v1/status").await?)
}

/// The API token of a devnet node (written into its data directory at its first start).
pub fn token(node: &DevnetNode) -> Result<String> {
    let path = node
        .dir
        .join("data")
        .join(cairn_node::api::auth::TOKEN_FILE);
    Ok(std::fs::read_to_string(&path)
        .with_context(|| format!("reading {}", path.display()))?
        .trim()
        .to_owned())
}

/// Start `n` nodes under `dir` with the given coding defaults; each node dials every node
/// started before it, so the network is fully joined when this returns.
pub async fn up(
    dir: &Path,
    n: usize,
    k: u8,
    m: u8,
    stripe_size: u64,
    prometheus_port: Option<u16>,
    chain_epoch_blocks: Option<u64>,
) -> Result<Devnet> {
    if state_file(dir).exists() {
        bail!(
            "a devnet already runs in {} (run `cairn devnet down --dir {}` first)",
            dir.display(),
            dir.display()
        );
    }
    if n == 0 {
        bail!("a devnet needs at least one node");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let exe = std::env::current_exe().context("locating the cairn binary")?;
    let chain = match chain_epoch_blocks {
        Some(e) => Some(start_chain(dir, n + 2, e).await?),
        None => None,
    };
    if let Some(c) = &chain {
        // Recorded now, so that `down` stops anvil even if a node fails to start.
        let partial = Devnet {
            nodes: Vec::new(),
            prometheus: None,
            chain: Some(DevnetChain {
                pid: c.pid,
                rpc: c.rpc.clone(),
                contract: c.contract.clone(),
                keys: Vec::new(),
                accounts: Vec::new(),
                epoch_blocks: c.epoch_blocks,
            }),
        };
        std::fs::write(state_file(dir), serde_json::to_string_pretty(&partial)?)?;
    }
    // Without a chain, membership is the list of the devnet's own peer ids: the identities
    // are made before any node starts, so every node's config can list them all.
    let mut members = Vec::new();
    if chain.is_none() {
        for i in 0..n {
            let key = cairn_node::net::load_identity(
                &dir.join(format!("node-{i}"))
                    .join("data")
                    .join("identity.key"),
            )?;
            members.push(format!("{:?}", key.public().to_peer_id().to_string()));
        }
    }
    let mut nodes: Vec<DevnetNode> = Vec::with_capacity(n);
    for i in 0..n {
        let node_dir = dir.join(format!("node-{i}"));
        std::fs::create_dir_all(&node_dir)?;
        let bootstrap: Vec<String> = nodes.iter().map(|n| format!("{:?}", n.p2p)).collect();
        let mut config = format!(
            "[node]\ndata_dir = {:?}\nhttp_listen = \"127.0.0.1:0\"\n\n\
             [erasure]\nk = {k}\nm = {m}\nstripe_size = {stripe_size}\n\n\
             [network]\nlisten = \"/ip4/127.0.0.1/udp/0/quic-v1\"\nbootstrap = [{}]\n\
             members = [{}]\n",
            node_dir.join("data").display().to_string(),
            bootstrap.join(", "),
            members.join(", ")
        );
        if let Some(c) = &chain {
            config.push_str(&format!(
                "\n[chain]\nrpc_url = {:?}\ncontract = {:?}\nkey = {:?}\npoll_ms = 250\nsettle_every_epochs = 4\nwithdraw_min_gwei = 1\n",
                c.rpc,
                c.contract,
                c.keys.get(i + 1).context("too few dev accounts")?
            ));
        }
        let config_path = node_dir.join("node.toml");
        std::fs::write(&config_path, config)?;
        let log_path = node_dir.join("node.log");
        let log = std::fs::File::create(&log_path)?;
        let mut child = {
            use std::os::unix::process::CommandExt;
            Command::new(&exe)
                .args(["node", "run", "--config"])
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .process_group(0)
                .spawn()
                .context("starting a node")?
        };
        let pid = child.id();
        let http = wait_http(&log_path, &mut child)?;
        let deadline = Instant::now() + START_TIMEOUT;
        let p2p = loop {
            let s = status(&http).await?;
            if let Some(a) = s["p2p_listen"].as_array().and_then(|a| a.first()) {
                let peer = s["peer_id"].as_str().unwrap_or_default();
                break format!("{}/p2p/{peer}", a.as_str().unwrap_or_default());
            }
            if Instant::now() > deadline {
                bail!("node {i} never reported its p2p address");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        nodes.push(DevnetNode {
            pid,
            http,
            p2p,
            dir: node_dir,
        });
    }
    write_targets(dir, &nodes)?;
    let prometheus = prometheus_port
        .map(|port| start_prometheus(dir, port))
        .transpose()?;
    let net = Devnet {
        nodes,
        prometheus,
        chain,
    };
    std::fs::write(state_file(dir), serde_json::to_string_pretty(&net)?)?;
    // Every node knows every other one, as a member.
    let deadline = Instant::now() + START_TIMEOUT;
    for node in &net.nodes {
        loop {
            let s = status(&node.http).await?;
            if s["peers"].as_u64().unwrap_or(0) as usize >= n - 1
                && s["members"].as_u64().unwrap_or(0) as usize >= n - 1
                && s["member"].as_bool() == Some(true)
            {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "node {} sees only {} of {} peers ({} as members; itself a member: {})",
                    node.http,
                    s["peers"],
                    n - 1,
                    s["members"],
                    s["member"]
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(net)
}

/// Stop every node and the devnet's Prometheus (SIGTERM, then SIGKILL after 10 s) and forget
/// the devnet.
pub fn down(dir: &Path) -> Result<usize> {
    let net = load(dir)?;
    let alive = |pid: u32| Path::new(&format!("/proc/{pid}")).exists();
    let pids: Vec<u32> = net
        .nodes
        .iter()
        .map(|n| n.pid)
        .chain(net.prometheus.as_ref().map(|p| p.pid))
        .chain(net.chain.as_ref().map(|c| c.pid))
        .collect();
    for &pid in &pids {
        if alive(pid) {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
    // Ten seconds to stop cleanly, then SIGKILL; either way `down` returns only once every
    // process is gone (a killed process may take a moment to exit).
    let deadline = Instant::now() + Duration::from_secs(10);
    for &pid in &pids {
        let mut killed = false;
        while alive(pid) && !is_zombie(pid) {
            if !killed && Instant::now() > deadline {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                killed = true;
            }
            ensure!(
                Instant::now() < deadline + Duration::from_secs(30),
                "process {pid} did not exit 30 s after SIGKILL; the devnet state is kept in {}",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    std::fs::remove_file(state_file(dir))?;
    Ok(net.nodes.len())
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// One line per node: address, peers, shards held.
pub async fn print_status(dir: &Path) -> Result<()> {
    let net = load(dir)?;
    for (i, n) in net.nodes.iter().enumerate() {
        match status(&n.http).await {
            Ok(s) => println!(
                "node-{i}  {}  pid {}  peers {}  shards {}  used {} bytes",
                n.http, n.pid, s["peers"], s["shards"], s["used_bytes"]
            ),
            Err(e) => println!("node-{i}  {}  pid {}  DOWN ({e})", n.http, n.pid),
        }
    }
    if let Some(p) = &net.prometheus {
        println!("prometheus  {}  pid {}", p.url, p.pid);
    }
    if let Some(c) = &net.chain {
        println!("chain  {}  contract {}  pid {}", c.rpc, c.contract, c.pid);
    }
    Ok(())
}
