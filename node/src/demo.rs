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
    let net_dir = work.join("devnet");
    let net = crate::devnet::up(&net_dir, NODES, 4, 2, 16 << 20, None).await?;
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
        "devnet of {NODES} nodes up (k=4, m=2, 16 MiB stripes, every stripe on 6 distinct nodes), data in {}",
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

    println!("root {}", put.root);
    println!(
        "verified round trip of {} bytes: put {:.0} MiB/s, get {:.0} MiB/s",
        put.size,
        mib_per_sec(put.size, put_secs),
        mib_per_sec(got.total, get_secs)
    );
    Ok(())
}
