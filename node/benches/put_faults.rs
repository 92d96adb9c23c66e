//! Puts against failures, in one run on one machine, printed as ratios to a healthy put:
//! the same amount of data put through one gateway of an 8-node devnet (no chain) with every
//! node up, with one node hung (SIGSTOP for the whole put), and with one node killed (still
//! in every routing table). Then the chain's share: the same put through an 8-node devnet with
//! its chain (deal trees hashed, `publishWithDeals` mined) against the healthy put without
//! one, at `CAIRN_BENCH_CHAIN_MIB` (default 1024: a publisher's checkpoints are large, and
//! the answer waits for one block of the devnet's 1 s). Each figure is the best of
//! `CAIRN_BENCH_RUNS` (default 2) puts of fresh data (no shard is ever already stored).
//! Targets: hung and killed within 1.3x, chain within 1.2x.
//!
//! `cargo bench -p cairn-node --bench put_faults`; `CAIRN_BENCH_MIB` (default 256) sets the
//! size of each fault put, `CAIRN_BENCH_DIR` the work directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cairn");

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn cli(devnet: &Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "error")
        .env("CAIRN_DEVNET_DIR", devnet)
        .stderr(Stdio::inherit())
        .output()
        .expect("run cairn");
    assert!(out.status.success(), "cairn {args:?} failed");
    String::from_utf8(out.stdout).expect("utf-8")
}

fn node_field(dir: &Path, i: usize, field: &str) -> String {
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("devnet.json")).expect("devnet state"))
            .expect("json");
    match &state["nodes"][i][field] {
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// How long the storing nodes may take to accept a put's deals.
const ACCEPT_WAIT: Duration = Duration::from_secs(300);

/// Deals the devnet's nodes accepted and run now (the sum of their `cairn_proof_deals`).
fn accepted(dir: &Path) -> u64 {
    let nodes = serde_json::from_slice::<serde_json::Value>(
        &std::fs::read(dir.join("devnet.json")).expect("devnet state"),
    )
    .expect("json")["nodes"]
        .as_array()
        .map_or(0, Vec::len);
    (0..nodes)
        .map(|i| {
            let out = Command::new("curl")
                .args(["-sf", &format!("{}/metrics", node_field(dir, i, "http"))])
                .output()
                .expect("run curl");
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("cairn_proof_deals "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .map_or(0, |v| v as u64)
        })
        .sum()
}

fn signal(pid: &str, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), pid])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} {pid} failed");
}

/// The devnet goes down with the bench, even when it fails; a hung node is resumed first.
struct Down {
    dir: PathBuf,
    hung: Option<String>,
}

impl Drop for Down {
    fn drop(&mut self) {
        if let Some(pid) = &self.hung {
            let _ = Command::new("kill").args(["-CONT", pid]).status();
        }
        let _ = Command::new(BIN)
            .args(["devnet", "down", "--dir"])
            .arg(&self.dir)
            .output();
    }
}

fn main() {
    let mib = env_u64("CAIRN_BENCH_MIB", 256);
    let runs = env_u64("CAIRN_BENCH_RUNS", 2).max(1);
    let work = match std::env::var("CAIRN_BENCH_DIR") {
        Ok(d) => tempfile::tempdir_in(d).expect("work dir"),
        Err(_) => tempfile::tempdir().expect("work dir"),
    };
    let dir = work.path().join("devnet");
    let d = dir.to_str().expect("utf-8");
    cli(
        &dir,
        &["devnet", "up", "--dir", d, "--nodes", "8", "--no-chain"],
    );
    let mut down = Down {
        dir: dir.clone(),
        hung: None,
    };
    let file = work.path().join("data.bin");
    let seed = std::cell::Cell::new(1u64);
    // A put of `mib` MiB of fresh data through node 0 of the devnet in `dir`; its seconds and
    // the put's answer.
    let put_to = |dir: &Path, mib: u64| -> (f64, String) {
        let mut data = vec![0u8; usize::try_from(mib << 20).expect("fits")];
        seed.set(seed.get() + 1);
        cairn_node::sample::fill_random(&mut seed.get(), &mut data);
        std::fs::write(&file, &data).expect("write");
        drop(data);
        let gateway = node_field(dir, 0, "http");
        let t = Instant::now();
        let out = Command::new(BIN)
            .args([
                "--node",
                &gateway,
                "--quiet",
                "put",
                file.to_str().expect("utf-8"),
            ])
            .env("RUST_LOG", "error")
            .env("CAIRN_DEVNET_DIR", dir)
            .output()
            .expect("run cairn");
        let secs = t.elapsed().as_secs_f64();
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "put failed: {said}");
        // The chain's line of the put's report, if any.
        let chain = said
            .lines()
            .skip_while(|l| !l.starts_with("chain:"))
            .collect::<Vec<_>>()
            .join("\n");
        (secs, chain)
    };
    let mut put = || put_to(&dir, mib).0;
    let best = |put: &mut dyn FnMut() -> f64| (0..runs).map(|_| put()).fold(f64::MAX, f64::min);
    let healthy = best(&mut put);
    let hung_pid = node_field(&dir, 7, "pid");
    signal(&hung_pid, "STOP");
    down.hung = Some(hung_pid.clone());
    let hung = best(&mut put);
    signal(&hung_pid, "CONT");
    down.hung = None;
    let killed_pid = node_field(&dir, 6, "pid");
    signal(&killed_pid, "KILL");
    let killed = best(&mut put);
    let rate = |s: f64| mib as f64 / s;
    println!(
        "put of {mib} MiB through one gateway of an 8-node devnet (k=4, m=2), best of {runs}:"
    );
    println!(
        "  all nodes up:   {healthy:.2} s ({:.0} MiB/s)",
        rate(healthy)
    );
    println!(
        "  one node hung:  {hung:.2} s ({:.0} MiB/s) = {:.2}x healthy (target <= 1.3x)",
        rate(hung),
        hung / healthy
    );
    println!(
        "  one node killed: {killed:.2} s ({:.0} MiB/s) = {:.2}x healthy (target <= 1.3x)",
        rate(killed),
        killed / healthy
    );
    drop(down);

    // The chain's share of a put: the same put, without a chain and with one.
    let chain_mib = env_u64("CAIRN_BENCH_CHAIN_MIB", 1024);
    let plain_dir = work.path().join("plain");
    let chain_dir = work.path().join("chained");
    let plain_net = || {
        cli(
            &plain_dir,
            &[
                "devnet",
                "up",
                "--dir",
                plain_dir.to_str().expect("utf-8"),
                "--nodes",
                "8",
                "--no-chain",
            ],
        );
        Down {
            dir: plain_dir.clone(),
            hung: None,
        }
    };
    let plain_down = plain_net();
    let plain = (0..runs)
        .map(|_| put_to(&plain_dir, chain_mib).0)
        .fold(f64::MAX, f64::min);
    drop(plain_down);
    cli(
        &chain_dir,
        &[
            "devnet",
            "up",
            "--dir",
            chain_dir.to_str().expect("utf-8"),
            "--nodes",
            "8",
        ],
    );
    let chain_down = Down {
        dir: chain_dir.clone(),
        hung: None,
    };
    let mut chained = f64::MAX;
    let mut report = String::new();
    let mut proposed = 0u64;
    for _ in 0..runs {
        let (secs, chain) = put_to(&chain_dir, chain_mib);
        chained = chained.min(secs);
        assert!(
            chain.starts_with("chain: provenance recorded") && !chain.contains("error"),
            "the chain part failed: {chain}"
        );
        // The storing nodes hash their shares to accept the deals after the put: the next
        // put is timed once they have, not while they compete with it for the cores.
        proposed += chain
            .split_whitespace()
            .skip_while(|w| *w != "recorded,")
            .nth(1)
            .and_then(|n| n.parse::<u64>().ok())
            .expect("the chain line counts the deals proposed");
        let waited = Instant::now();
        while accepted(&chain_dir) < proposed {
            assert!(
                waited.elapsed() < ACCEPT_WAIT,
                "the deals were not all accepted within {ACCEPT_WAIT:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        report = chain;
    }
    drop(chain_down);
    println!("put of {chain_mib} MiB through one gateway of an 8-node devnet, best of {runs}:");
    println!(
        "  without a chain: {plain:.2} s ({:.0} MiB/s)",
        chain_mib as f64 / plain
    );
    println!(
        "  with the chain:  {chained:.2} s ({:.0} MiB/s) = {:.2}x without (target <= 1.2x); \
         {report}",
        chain_mib as f64 / chained,
        chained / plain
    );
}
