//! Puts against failures, in one run on one machine, printed as ratios to a healthy put:
//! the same amount of data put through one gateway of an 8-node devnet (no chain) with every
//! node up, with one node hung (SIGSTOP for the whole put), and with one node killed (still
//! in every routing table). Each figure is the best of `CAIRN_BENCH_RUNS` (default 2) puts of
//! fresh data (no shard is ever already stored). Target: hung and killed within 1.3x.
//!
//! `cargo bench -p cairn-node --bench put_faults`; `CAIRN_BENCH_MIB` (default 256) sets the
//! size of each put, `CAIRN_BENCH_DIR` the work directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

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
    let gateway = node_field(&dir, 0, "http");
    let file = work.path().join("data.bin");
    let mut seed = 1u64;
    let mut put = || {
        let mut data = vec![0u8; usize::try_from(mib << 20).expect("fits")];
        seed += 1;
        cairn_node::sample::fill_random(&mut seed.clone(), &mut data);
        std::fs::write(&file, &data).expect("write");
        let t = Instant::now();
        cli(
            &dir,
            &[
                "--node",
                &gateway,
                "--quiet",
                "put",
                file.to_str().expect("utf-8"),
            ],
        );
        t.elapsed().as_secs_f64()
    };
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
}
