//! Harness for end-to-end tests: real `cairn` processes on loopback with real RocksDB stores.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_cairn");

/// Environment key of a node's harness settings: its log (stderr) goes to this file.
pub const STDERR_TO: &str = "CAIRN_TEST_STDERR";

/// A node process. Killed when dropped.
pub struct NodeProc {
    pub child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    config: PathBuf,
    env: Vec<(String, String)>,
}

impl NodeProc {
    /// Start a node whose data lives in `dir`, with extra TOML appended to its config.
    pub fn start(dir: &Path, extra: &str) -> NodeProc {
        let data_dir = dir.join("node");
        let config = dir.join("node.toml");
        std::fs::write(
            &config,
            format!(
                "[node]\ndata_dir = {:?}\nhttp_listen = \"127.0.0.1:0\"\n{extra}\n{}",
                data_dir.display().to_string(),
                if extra.contains("[network]") {
                    ""
                } else {
                    "[network]\nlisten = \"/ip4/127.0.0.1/udp/0/quic-v1\"\n"
                }
            ),
        )
        .expect("write config");
        Self::spawn(config, data_dir, Vec::new())
    }

    /// Start a node of a cluster: it joins through `bootstrap` (p2p multiaddrs), with extra
    /// TOML and environment; `members` are the network's members (peer ids).
    pub fn start_member(
        dir: &Path,
        bootstrap: &[String],
        extra: &str,
        env: &[(&str, &str)],
        members: &[String],
    ) -> NodeProc {
        let data_dir = dir.join("node");
        let config = dir.join("node.toml");
        std::fs::create_dir_all(dir).expect("node dir");
        let peers: Vec<String> = bootstrap.iter().map(|b| format!("{b:?}")).collect();
        let members: Vec<String> = members.iter().map(|m| format!("{m:?}")).collect();
        std::fs::write(
            &config,
            format!(
                "[node]\ndata_dir = {:?}\nhttp_listen = \"127.0.0.1:0\"\n{extra}\n\
                 [network]\nlisten = \"/ip4/127.0.0.1/udp/0/quic-v1\"\nbootstrap = [{}]\n\
                 members = [{}]\n",
                data_dir.display().to_string(),
                peers.join(", "),
                members.join(", ")
            ),
        )
        .expect("write config");
        let env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Self::spawn(config, data_dir, env)
    }

    /// This node's p2p address with its peer id (waits until the swarm listens).
    pub fn p2p_addr(&self) -> String {
        let s = self.wait_status(30, |s| {
            s["p2p_listen"].as_array().is_some_and(|a| !a.is_empty())
        });
        format!(
            "{}/p2p/{}",
            s["p2p_listen"][0].as_str().expect("address"),
            s["peer_id"].as_str().expect("peer id")
        )
    }

    /// The node's API token (generated into its data directory at first start).
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("api.token"))
            .expect("the node wrote its api token")
            .trim()
            .to_owned()
    }

    /// `-H` and value for curl to send the node's token.
    pub fn auth(&self) -> [String; 2] {
        [
            "-H".to_owned(),
            format!("Authorization: Bearer {}", self.token()),
        ]
    }

    fn spawn(config: PathBuf, data_dir: PathBuf, env: Vec<(String, String)>) -> NodeProc {
        // The node's log goes to the test's stderr, or appends to the file `STDERR_TO` names.
        let stderr = match env.iter().find(|(k, _)| k == STDERR_TO) {
            Some((_, path)) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .expect("open the node's log file"),
            ),
            None => Stdio::inherit(),
        };
        let mut child = Command::new(BIN)
            .args(["node", "run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn cairn node");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read node stdout");
        let url = line
            .trim()
            .strip_prefix("cairn node listening on ")
            .unwrap_or_else(|| panic!("node did not start: {line:?}"))
            .to_owned();
        NodeProc {
            child,
            url,
            data_dir,
            config,
            env,
        }
    }

    /// Restart with the same config and data (the port may change). Node 0 of a [`cluster`]
    /// has no bootstrap peers, so restarted it stays alone: restart another node instead.
    pub fn restart(mut self) -> NodeProc {
        self.stop();
        let (config, data_dir) = (self.config.clone(), self.data_dir.clone());
        let env = std::mem::take(&mut self.env);
        Self::spawn(config, data_dir, env)
    }

    /// Restart with the same config and data and this environment instead of the old one.
    pub fn restart_with_env(mut self, env: &[(&str, &str)]) -> NodeProc {
        self.env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.restart()
    }

    /// SIGTERM and wait for exit.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }

    /// SIGKILL, no chance to clean up.
    /// Send a signal (`STOP` hangs the node: its sockets stay open, nothing answers; `CONT`
    /// resumes it).
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} failed");
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn store_dir(&self) -> PathBuf {
        self.data_dir.join("store")
    }

    /// Run the CLI against this node.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--node")
            .arg(&self.url)
            .arg("--quiet")
            .args(args)
            .env("RUST_LOG", "warn")
            .env("CAIRN_API_TOKEN", self.token())
            .output()
            .expect("run cairn cli")
    }

    /// GET a JSON document.
    pub fn json(&self, path: &str) -> serde_json::Value {
        let out = Command::new("curl")
            .args(["-sS", &format!("{}{path}", self.url)])
            .output()
            .expect("curl");
        serde_json::from_slice(&out.stdout).expect("json answer")
    }

    /// Wait until `pred` holds for the node's status (polled; fails after `secs`).
    pub fn wait_status(
        &self,
        secs: u64,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.json("/v1/status");
            if pred(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "status never matched: {s}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A checkpoint's manifest as `node` serves it (dag-cbor, decoded).
pub fn manifest_of(node: &NodeProc, root: &str) -> cairn_erasure::Manifest {
    let out = Command::new("curl")
        .args(["-sS", "-f", "-H", "accept: application/vnd.ipld.dag-cbor"])
        .arg(format!("{}/v1/checkpoints/{root}", node.url))
        .output()
        .expect("curl");
    assert!(out.status.success(), "manifest fetch failed");
    cairn_erasure::Manifest::decode(&out.stdout).expect("manifest decodes")
}

/// Successful CLI output's stdout, trimmed; panics with stderr otherwise.
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "command failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// Assert two folders hold the same files with the same bytes.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let fa = cairn_node::client::walk(a).expect("walk a");
    let fb = cairn_node::client::walk(b).expect("walk b");
    let names = |v: &Vec<(PathBuf, String, u64)>| v.iter().map(|f| f.1.clone()).collect::<Vec<_>>();
    assert_eq!(names(&fa), names(&fb), "file lists differ");
    for ((pa, rel, _), (pb, _, _)) in fa.iter().zip(&fb) {
        let (x, y) = (
            std::fs::read(pa).expect("read"),
            std::fs::read(pb).expect("read"),
        );
        assert!(x == y, "{rel} differs");
    }
}

/// Create the identity of the node whose directory is `dir` (laid out as
/// [`NodeProc::start_member`] does) before it starts; returns its peer id.
pub fn make_identity(dir: &Path) -> String {
    let key = cairn_node::net::load_identity(&dir.join("node").join("identity.key"))
        .expect("create identity");
    key.public().to_peer_id().to_string()
}

/// `n` member nodes, each joining through every node started before it, with extra TOML and
/// per-node environment; the members are exactly these nodes. Waits until every node sees
/// every other as a member.
pub fn cluster(
    dir: &Path,
    n: usize,
    extra: &str,
    env_of: impl Fn(usize) -> Vec<(&'static str, &'static str)>,
) -> Vec<NodeProc> {
    cluster_with(dir, n, extra, env_of, &[])
}

/// [`cluster`], with `more_members` (peer ids of scripted peers) also listed as members.
pub fn cluster_with(
    dir: &Path,
    n: usize,
    extra: &str,
    env_of: impl Fn(usize) -> Vec<(&'static str, &'static str)>,
    more_members: &[String],
) -> Vec<NodeProc> {
    let mut members: Vec<String> = (0..n)
        .map(|i| make_identity(&dir.join(format!("n{i}"))))
        .collect();
    members.extend(more_members.iter().cloned());
    let mut nodes: Vec<NodeProc> = Vec::new();
    let mut addrs = Vec::new();
    for i in 0..n {
        let node = NodeProc::start_member(
            &dir.join(format!("n{i}")),
            &addrs,
            extra,
            &env_of(i),
            &members,
        );
        addrs.push(node.p2p_addr());
        nodes.push(node);
    }
    for node in &nodes {
        node.wait_status(60, |s| {
            s["peers"].as_u64() >= Some(n as u64 - 1) && s["members"].as_u64() >= Some(n as u64 - 1)
        });
    }
    nodes
}

/// The byte span `(start, end)` within the file of tensor `name` of a safetensors `file`, as
/// `node`'s tensor listing gives it.
pub fn tensor_span(node: &NodeProc, root: &str, file: &str, name: &str) -> (u64, u64) {
    let listing = node.json(&format!("/v1/checkpoints/{root}/files/{file}/tensors"));
    let t = listing["tensors"]
        .as_array()
        .unwrap_or_else(|| panic!("no tensors in {listing}"))
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("tensor {name} is not listed: {listing}"));
    (
        t["start"].as_u64().expect("start"),
        t["end"].as_u64().expect("end"),
    )
}

/// Bytes this node has received from its peers.
pub fn net_bytes_in(node: &NodeProc) -> u64 {
    node.json("/v1/status")["net_bytes_in"]
        .as_u64()
        .expect("bytes in")
}

/// Asserts that a read of `start..end` of a file of `size` bytes, coded with `layout`, moved
/// at most 1.1x its bytes plus one 16 KiB verification group per shard it touched (alignment
/// to groups and the shards' outboards), and something at all. Returns the shards touched.
pub fn assert_tensor_bytes_moved(
    layout: &cairn_erasure::Layout,
    size: u64,
    (start, end): (u64, u64),
    moved: u64,
) -> usize {
    let touched: std::collections::BTreeSet<(u64, usize)> = layout
        .pieces(size, start, end)
        .iter()
        .map(|p| (p.stripe, p.shard))
        .collect();
    let len = end - start;
    let bound = len + len / 10 + cairn_erasure::GROUP_LEN as u64 * touched.len() as u64;
    eprintln!(
        "tensor of {len} bytes: {moved} bytes on the wire over {} shards ({:.3}x)",
        touched.len(),
        moved as f64 / len as f64
    );
    assert!(moved > 0, "the gateway fetched nothing from its peers");
    assert!(
        moved <= bound,
        "{moved} bytes moved for a tensor of {len} bytes over {} shards (bound {bound})",
        touched.len()
    );
    touched.len()
}
