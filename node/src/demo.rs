//! `cairn demo`: the main job on a local default.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use cairn_node::client::{Client, PutOptions, mib_per_sec};
use cairn_node::config::NodeConfig;
use cairn_node::daemon::Node;

pub async fn run(size: u64, dir: Option<PathBuf>, progress: bool) -> Result<()> {
    let tmp;
    let work = match dir {
        Some(d) => d,
        None => {
            tmp = tempfile::tempdir().context("creating a work directory")?;
            tmp.path().to_path_buf()
        }
    };
    let mut cfg = NodeConfig::default();
    cfg.node.data_dir = work.join("node");
    cfg.node.http_listen = "127.0.0.1:0".parse().expect("literal address");
    let node = Node::start(cfg).await?;
    let url = format!("http://{}", node.http_addr);
    eprintln!(
        "node listening on {url} (k=10, m=4, 64 MiB stripes), data in {}",
        work.display()
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

    node.shutdown();
    node.wait().await;
    println!("root {}", put.root);
    println!(
        "verified round trip of {} bytes: put {:.0} MiB/s, get {:.0} MiB/s",
        put.size,
        mib_per_sec(put.size, put_secs),
        mib_per_sec(got.total, get_secs)
    );
    Ok(())
}
