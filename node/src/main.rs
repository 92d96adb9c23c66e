//! The `cairn` binary.

mod cli;
mod demo;
mod devnet;

use std::time::Instant;

use anyhow::{Context, Result, bail};
use cairn_node::client::{Client, PutOptions, mib_per_sec};
use cairn_node::config::NodeConfig;
use cairn_node::daemon::Node;
use clap::Parser;
use cli::{Cli, Command, DevnetCommand, NodeCommand};

fn load_config(path: Option<&std::path::Path>) -> Result<NodeConfig> {
    Ok(match path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            NodeConfig::from_toml(&text)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("in {}", path.display()))?
        }
        None => NodeConfig::default(),
    })
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    init_tracing();
    let mut client = Client::new(&cli.node);
    client.progress = !cli.quiet;
    if let Some(t) = cli.token {
        client.token = Some(t);
    }
    match cli.command {
        Command::Node {
            command: NodeCommand::Jobs,
        } => {
            let jobs = client.json("/v1/jobs").await?;
            for j in jobs.as_array().into_iter().flatten() {
                println!(
                    "{:<14} {:<12} {:>8} steps {:>4} errors  {}",
                    j["name"].as_str().unwrap_or("?"),
                    j["state"].as_str().unwrap_or("?"),
                    j["steps"],
                    j["errors"],
                    j["progress"].as_str().unwrap_or("")
                );
                if let Some(e) = j["last_error"].as_str() {
                    println!("{:<14} last error: {e}", "");
                }
            }
        }
        Command::Node {
            command: NodeCommand::Id { config },
        } => {
            let cfg = load_config(config.as_deref())?;
            let key = cairn_node::net::load_identity(&cfg.node.data_dir.join("identity.key"))?;
            println!("{}", key.public().to_peer_id());
        }
        Command::Node {
            command: NodeCommand::Run { config },
        } => {
            let cfg = load_config(config.as_deref())?;
            let node = Node::start(cfg).await?;
            // Tests and scripts wait for this line (the port is chosen at start with port 0).
            println!("cairn node listening on http://{}", node.http_addr);
            let cancel = node.cancel_token();
            tokio::spawn(async move {
                shutdown_signal().await;
                tracing::info!("shutting down");
                cancel.cancel();
            });
            node.wait().await;
        }
        Command::Put {
            path,
            name,
            k,
            m,
            stripe_size,
            parent,
            parent_publisher,
        } => {
            let t = Instant::now();
            let opts = PutOptions {
                tag: name.clone(),
                name,
                k,
                m,
                stripe_size,
                parent,
                parent_publisher,
            };
            let a = client.put(&path, &opts).await?;
            eprintln!(
                "stored {} files, {} bytes, {} stripes, {} shards in {:.2}s ({:.0} MiB/s)",
                a.files,
                a.size,
                a.stripes,
                a.shards,
                t.elapsed().as_secs_f64(),
                mib_per_sec(a.size, t.elapsed())
            );
            if let Some(c) = &a.chain {
                eprintln!(
                    "chain: {}{}, {} deals proposed{}{}",
                    if c.error.is_some() {
                        "failed"
                    } else if c.published {
                        "provenance recorded"
                    } else {
                        "provenance recorded before"
                    },
                    c.name_revision
                        .map(|r| format!(", name revision {r}"))
                        .unwrap_or_default(),
                    c.deals.len(),
                    c.skipped
                        .iter()
                        .map(|s| format!("\n  no deal: {s}"))
                        .collect::<String>(),
                    c.error
                        .as_deref()
                        .map(|e| format!("\n  error: {e}"))
                        .unwrap_or_default()
                );
            }
            if let Some(t) = &a.tag {
                eprintln!("name {t} now points at this root");
            }
            println!("{}", a.root);
        }
        Command::Tag { name, cid } => {
            let a = client.tag(&name, &cid).await?;
            println!("{} -> {}", a.name, a.root);
        }
        Command::Names { name } => {
            for n in client.names(name.as_deref()).await? {
                println!("{}  {}  set {}", n.name, n.root, n.set);
                for r in &n.history {
                    println!("  earlier {}  set {}", r.root, r.set);
                }
            }
        }
        Command::Wallet => print!("{}", client.wallet().await?.render()),
        Command::Log { target, publisher } => {
            if target.contains('/') {
                anyhow::ensure!(
                    publisher.is_none(),
                    "a name belongs to its org's owner: --publisher goes with a root CID"
                );
                let log = client.chain_name(&target).await?;
                println!(
                    "{} (owned by {}, {} revisions)",
                    log.name, log.publisher, log.total
                );
                for r in &log.revisions {
                    println!("revision {}  {}", r.revision, r.record.root);
                    print_record(&r.record, 1);
                }
            } else {
                let records = client.lineage(&target, publisher.as_deref()).await?;
                for (i, r) in records.iter().enumerate() {
                    let what = if r.parent.is_none() {
                        "base"
                    } else if i == 0 {
                        "checkpoint"
                    } else {
                        "parent"
                    };
                    println!("{:<indent$}{} ({what})", "", r.root, indent = i * 2);
                    print_record(r, i);
                }
            }
        }
        Command::Deploy {
            rpc_url,
            min_stake_gwei,
            epoch_blocks,
            proof_window,
            unbonding_epochs,
            slash_gwei,
            reward_bps,
            samples,
            min_escrow_gwei,
            proposal_epochs,
        } => {
            let key = std::env::var(cairn_node::chain::KEY_ENV).with_context(|| {
                format!(
                    "set {} to the deployer's private key",
                    cairn_node::chain::KEY_ENV
                )
            })?;
            let (provider, _) = cairn_node::chain::provider(&rpc_url, &key)?;
            let gwei = cairn_node::chain::gwei_to_wei;
            let address = cairn_node::chain::Chain::deploy(
                &provider,
                cairn_node::chain::DeployArgs {
                    min_stake: gwei(min_stake_gwei),
                    epoch_blocks,
                    proof_window,
                    unbonding_epochs,
                    slash_amount: gwei(slash_gwei),
                    reward_bps,
                    samples,
                    min_escrow: gwei(min_escrow_gwei),
                    proposal_epochs,
                },
            )
            .await?;
            println!("{address}");
        }
        Command::Get {
            cid,
            output,
            file,
            range,
            tensor,
        } => {
            let t = Instant::now();
            if !tensor.is_empty() {
                get_tensors(&client, &cid, file.as_deref(), &tensor, output.as_deref()).await?;
                return Ok(());
            }
            match file {
                Some(file) => {
                    let range = range
                        .as_deref()
                        .map(cli::parse_range)
                        .transpose()
                        .map_err(anyhow::Error::msg)?;
                    let n = match output {
                        Some(path) => {
                            let mut f = tokio::fs::File::create(&path)
                                .await
                                .with_context(|| format!("creating {}", path.display()))?;
                            client.read(&cid, &file, range, &mut f).await?
                        }
                        None => {
                            client
                                .read(&cid, &file, range, &mut tokio::io::stdout())
                                .await?
                        }
                    };
                    eprintln!("read {n} bytes in {:.2}s", t.elapsed().as_secs_f64());
                }
                None => {
                    let out = output.unwrap_or_else(|| std::path::PathBuf::from(&cid));
                    let s = client.get(&cid, &out).await?;
                    eprintln!(
                        "{} files ({} already present), {} bytes verified into {} in {:.2}s ({:.0} MiB/s)",
                        s.files,
                        s.skipped_files,
                        s.total,
                        out.display(),
                        t.elapsed().as_secs_f64(),
                        mib_per_sec(s.transferred, t.elapsed())
                    );
                    for (peer, bytes) in &s.sources {
                        eprintln!(
                            "  from {peer}: {bytes} bytes, {:.0} MiB/s",
                            mib_per_sec(*bytes, t.elapsed())
                        );
                    }
                }
            }
        }
        Command::Ls => {
            let list = client.json("/v1/checkpoints").await?;
            for c in list.as_array().into_iter().flatten() {
                println!(
                    "{}  {:>14}  {:>5} files  {}",
                    c["root"].as_str().unwrap_or("?"),
                    c["size"],
                    c["files"],
                    c["name"].as_str().unwrap_or("")
                );
            }
        }
        Command::Stat {
            cid, network: true, ..
        } => {
            let v = client
                .json(&format!("/v1/checkpoints/{cid}/stat?network=true"))
                .await?;
            let unreachable = v["unreachable"].as_array().map_or(0, Vec::len);
            println!(
                "{cid}: {}, {} stripes, at least {} of {} shards intact per stripe \
                 ({} members asked, {unreachable} unreachable)",
                v["health"].as_str().unwrap_or("?"),
                v["stripes"],
                v["min_intact"],
                v["k"].as_u64().unwrap_or(0) + v["m"].as_u64().unwrap_or(0),
                v["members_asked"],
            );
            for s in v["stripe_health"].as_array().into_iter().flatten() {
                if s["state"] != "healthy" {
                    let missing: Vec<usize> = s["holders"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .enumerate()
                        .filter(|(_, h)| h.as_array().is_none_or(Vec::is_empty))
                        .map(|(i, _)| i)
                        .collect();
                    println!(
                        "  {} stripe {}: {}, {} of {} intact, missing shards {missing:?}",
                        s["path"].as_str().unwrap_or("?"),
                        s["stripe"],
                        s["state"].as_str().unwrap_or("?"),
                        s["intact"],
                        s["total"]
                    );
                }
            }
            if v["health"] == "unrecoverable" {
                bail!("checkpoint {cid} has stripes that cannot be reconstructed");
            }
        }
        Command::Stat { cid, verify, .. } => {
            let v = client
                .json(&format!("/v1/checkpoints/{cid}/stat?verify={verify}"))
                .await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            if v["health"] == "unrecoverable" {
                bail!("checkpoint {cid} has stripes that cannot be reconstructed");
            }
        }
        Command::Rm {
            cid,
            network,
            force,
        } => {
            let v = client.rm(&cid, network, force).await?;
            if network {
                let nodes = v["nodes"].as_object().cloned().unwrap_or_default();
                let count = |r: &str| nodes.values().filter(|a| a["result"] == r).count();
                println!(
                    "deleted {cid} from the network: {} shards freed on {} nodes ({} held none); \
                     deals terminated {}, cancelled {}, {} wei refunded",
                    v["freed_shards"],
                    count("freed"),
                    count("not_held"),
                    v["deals_terminated"].as_array().map_or(0, Vec::len),
                    v["deals_cancelled"].as_array().map_or(0, Vec::len),
                    v["refunded_wei"].as_str().unwrap_or("0")
                );
                for (peer, a) in &nodes {
                    if let Some(why) = a["reason"].as_str() {
                        eprintln!("  {peer}: {} ({why})", a["result"].as_str().unwrap_or("?"));
                    }
                }
                if count("refused") + count("unreachable") > 0 {
                    let days = v["retried_for_secs"].as_u64().unwrap_or(0) / 86_400;
                    bail!(
                        "some nodes may still hold {cid}: see above (the node asks them again \
                         for {days} days; `cairn node jobs` shows delete_retry)"
                    );
                }
            } else {
                println!("unpinned {cid}, freed {} shards", v["freed_shards"]);
            }
        }
        Command::Sample { dir, size } => {
            let n = cairn_node::sample::write_sample(&dir, size, 0x5eed)?;
            println!("wrote {n} bytes into {}", dir.display());
        }
        Command::Devnet { command } => match command {
            DevnetCommand::Up {
                dir,
                nodes,
                k,
                m,
                stripe_size,
                prometheus,
                no_chain,
                epoch_blocks,
            } => {
                if nodes < usize::from(k) + usize::from(m) {
                    bail!(
                        "{nodes} nodes cannot hold k + m = {} shards of a stripe on distinct nodes",
                        u16::from(k) + u16::from(m)
                    );
                }
                let net = devnet::up(
                    &dir,
                    nodes,
                    k,
                    m,
                    stripe_size,
                    prometheus,
                    (!no_chain).then_some(epoch_blocks),
                )
                .await?;
                for (i, n) in net.nodes.iter().enumerate() {
                    println!("node-{i} {} {}", n.http, n.p2p);
                }
                if let Some(p) = &net.prometheus {
                    println!("prometheus {}", p.url);
                }
                if let Some(c) = &net.chain {
                    println!("chain {} contract {}", c.rpc, c.contract);
                }
                eprintln!(
                    "devnet of {nodes} nodes up in {} (k={k}, m={m}); use --node {} or `cairn devnet down --dir {}`",
                    dir.display(),
                    net.nodes[0].http,
                    dir.display()
                );
                if dir != std::path::Path::new(cli::DEVNET_DIR) {
                    eprintln!(
                        "writes need each node's API token: run the CLI with CAIRN_DEVNET_DIR={} \
                         (or --token from <node dir>/data/api.token)",
                        dir.display()
                    );
                }
            }
            DevnetCommand::Down { dir } => {
                let n = devnet::down(&dir)?;
                eprintln!("stopped {n} nodes");
            }
            DevnetCommand::Status { dir } => devnet::print_status(&dir).await?,
        },
        Command::Demo { size, dir } => demo::run(size, dir, !cli.quiet).await?,
    }
    Ok(())
}

/// `cairn get --tensor`: one tensor to a file or stdout, several into a folder.
async fn get_tensors(
    client: &Client,
    cid: &str,
    file: Option<&str>,
    names: &[String],
    output: Option<&std::path::Path>,
) -> Result<()> {
    let t = Instant::now();
    if names.len() > 1 {
        let Some(dir) = output else {
            bail!("several --tensor need --output, a folder to write one file per tensor into");
        };
        tokio::fs::create_dir_all(dir)
            .await
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    for name in names {
        let f = client.tensor_file(cid, file, name).await?;
        let read = match output {
            Some(out) => {
                let path = if names.len() > 1 {
                    out.join(name.replace('/', "_"))
                } else {
                    out.to_path_buf()
                };
                let mut w = tokio::fs::File::create(&path)
                    .await
                    .with_context(|| format!("creating {}", path.display()))?;
                client.read_tensor(cid, &f, name, &mut w).await?
            }
            None => {
                client
                    .read_tensor(cid, &f, name, &mut tokio::io::stdout())
                    .await?
            }
        };
        eprintln!(
            "{name} ({} {:?}, from {}): {} bytes",
            read.dtype, read.shape, read.file, read.bytes
        );
    }
    eprintln!(
        "read {} tensors in {:.2}s",
        names.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// The publisher, block and metadata of a provenance record, indented by `depth`.
fn print_record(r: &cairn_node::api::LineageEntry, depth: usize) {
    println!(
        "{:<indent$}  published by {} in block {}, metadata {}",
        "",
        r.publisher,
        r.block,
        r.meta_hash,
        indent = depth * 2
    );
    if let (Some(p), Some(by)) = (&r.parent, &r.parent_publisher) {
        println!(
            "{:<indent$}  parent {p} as recorded by {by}",
            "",
            indent = depth * 2
        );
    }
}
