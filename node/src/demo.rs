//! `cairn demo`: the main job on a local default.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use cairn_node::client::{Client, PutOptions, mib_per_sec};

pub async fn run(size: u64, dir: Option<PathBuf>, progress: bool) -> Result<()> {
    let tmp;
    let work = match dir {
        Some(d) => d,
        None => {
            tmp = tempfile::tempdir().context("creating a work directory")?;
            tmp.path().to_path_buf()
        }
    };
    const NODES: usize = 8;
    const EPOCH_BLOCKS: u64 = 4;
    let net_dir = work.join("devnet");
    let net = crate::devnet::up(&net_dir, NODES, 4, 2, 16 << 20, None, Some(EPOCH_BLOCKS)).await?;
    // Stop the devnet however this ends.
    struct Down(PathBuf);
    impl Drop for Down {
        fn drop(&mut self) {
            if let Err(e) = crate::devnet::down(&self.0) {
                eprintln!("stopping the devnet: {e:#}");
            }
        }
    }
    let _down = Down(net_dir.clone());
    let url = net.nodes[0].http.clone();
    let reader_url = net.nodes[NODES / 2].http.clone();
    eprintln!(
        "devnet of {NODES} nodes up (k=4, m=2, 16 MiB stripes, every stripe on 6 distinct nodes) \
         with a local chain ({}, {EPOCH_BLOCKS}-second epochs), data in {}",
        net.chain.as_ref().map_or("none", |c| c.rpc.as_str()),
        net_dir.display()
    );

    let src = work.join("sample-model");
    let bytes = tokio::task::spawn_blocking({
        let src = src.clone();
        move || cairn_node::sample::write_sample(&src, size, 0x5eed)
    })
    .await??;
    eprintln!("sample checkpoint: {bytes} bytes in {}", src.display());

    let mut client = Client::new(&url);
    client.progress = progress;
    client.token = Some(crate::devnet::token(&net.nodes[0])?);
    let t = Instant::now();
    let put = client.put(&src, &PutOptions::default()).await?;
    let put_secs = t.elapsed();
    eprintln!(
        "put: {} files, {} stripes, {} shards, {:.0} MiB/s",
        put.files,
        put.stripes,
        put.shards,
        mib_per_sec(put.size, put_secs)
    );

    if let Some(c) = &put.chain {
        eprintln!(
            "chain: provenance {}, {} storage deals proposed{}",
            if c.error.is_some() {
                "not recorded"
            } else if c.published {
                "recorded"
            } else {
                "recorded before"
            },
            c.deals.len(),
            c.error
                .as_deref()
                .map(|e| format!(" (error: {e})"))
                .unwrap_or_default()
        );
    }

    // Read it back through another node: shards come from all over the network.
    let mut client = Client::new(&reader_url);
    client.progress = progress;
    let out = work.join("fetched");
    let t = Instant::now();
    let got = client.get(&put.root, &out).await?;
    let get_secs = t.elapsed();
    eprintln!(
        "get: {} files verified, {:.0} MiB/s",
        got.files,
        mib_per_sec(got.total, get_secs)
    );

    // Independent check: byte-identical to the source.
    for (abs, rel, _) in cairn_node::client::walk(&src)? {
        let a = tokio::fs::read(&abs).await?;
        let b = tokio::fs::read(out.join(&rel)).await?;
        ensure!(a == b, "{rel} differs after the round trip");
    }
    // And a range read of the weights.
    let mut range = Vec::new();
    client
        .read(
            &put.root,
            "model.safetensors",
            Some((1000, 1_000_999)),
            &mut range,
        )
        .await?;
    let whole = tokio::fs::read(src.join("model.safetensors")).await?;
    ensure!(range == whole[1000..1_001_000], "range read differs");

    // The storing nodes accept their deals and prove them: wait for proven epochs.
    if let Some(chain) = &net.chain {
        let proven = wait_for_proofs(&net, chain.epoch_blocks).await?;
        eprintln!("proofs of storage: {proven} node-epochs proven on chain so far");
    }

    println!("root {}", put.root);
    println!(
        "verified round trip of {} bytes: put {:.0} MiB/s, get {:.0} MiB/s",
        put.size,
        mib_per_sec(put.size, put_secs),
        mib_per_sec(got.total, get_secs)
    );
    Ok(())
}

/// Wait (at most a minute) until every node holding a deal has proven an epoch; returns the
/// node-epochs proven (read from each node's metrics).
async fn wait_for_proofs(net: &crate::devnet::Devnet, epoch_blocks: u64) -> Result<u64> {
    let deadline = Instant::now() + std::time::Duration::from_secs(60.max(epoch_blocks * 6));
    loop {
        let mut proven = 0;
        let mut waiting = 0;
        for n in &net.nodes {
            let text = reqwest::get(format!("{}/metrics", n.http))
                .await?
                .text()
                .await?;
            let value = |name: &str| {
                text.lines()
                    .find_map(|l| {
                        l.strip_prefix(name)
                            .and_then(|v| v.trim().parse::<f64>().ok())
                    })
                    .unwrap_or(0.0) as u64
            };
            let (deals, epochs) = (
                value("cairn_proof_deals "),
                value("cairn_proof_epochs_proven_total "),
            );
            proven += epochs;
            if deals > 0 && epochs == 0 {
                waiting += 1;
            }
        }
        if waiting == 0 && proven > 0 {
            return Ok(proven);
        }
        ensure!(
            Instant::now() < deadline,
            "{waiting} storing nodes proved nothing within a minute"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}
