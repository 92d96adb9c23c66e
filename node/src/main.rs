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
        } => {
            let t = Instant::now();
            let opts = PutOptions {
                name,
                k,
                m,
                stripe_size,
                parent,
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
                    "chain: {}, {} deals proposed{}{}",
                    if c.error.is_some() {
                        "failed"
                    } else if c.published {
                        "provenance recorded"
                    } else {
                        "provenance recorded before"
                    },
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
            println!("{}", a.root);
        }
        Command::Log { cid } => {
            let records = client.lineage(&cid).await?;
            for (i, r) in records.iter().enumerate() {
                let what = if r.parent.is_none() {
                    "base"
                } else if i == 0 {
                    "checkpoint"
                } else {
                    "parent"
                };
                println!("{:<indent$}{} ({what})", "", r.root, indent = i * 2);
                println!(
                    "{:<indent$}  published by {} in block {}, metadata {}",
                    "",
                    r.publisher,
                    r.block,
                    r.meta_hash,
                    indent = i * 2
                );
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
        } => {
            let key = std::env::var(cairn_node::chain::KEY_ENV).with_context(|| {
                format!(
                    "set {} to the deployer's private key",
                    cairn_node::chain::KEY_ENV
                )
            })?;
            let (provider, _) = cairn_node::chain::provider(&rpc_url, &key)?;
            let gwei = |g: u64| {
                alloy::primitives::U256::from(g) * alloy::primitives::U256::from(1_000_000_000u64)
            };
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
        } => {
            let t = Instant::now();
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
        Command::Stat { cid, verify } => {
            let v = client
                .json(&format!("/v1/checkpoints/{cid}/stat?verify={verify}"))
                .await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            if v["health"] == "unrecoverable" {
                bail!("checkpoint {cid} has stripes that cannot be reconstructed");
            }
        }
        Command::Rm { cid } => {
            let v = client.rm(&cid).await?;
            println!("unpinned {cid}, freed {} shards", v["freed_shards"]);
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
