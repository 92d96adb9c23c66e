//! Cluster tests over the real binary: node processes on loopback joined by Kademlia over
//! QUIC, shards pushed to and pulled from distinct nodes, nodes killed with SIGKILL.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn_erasure::{Layout, Manifest};
use common::{NodeProc, assert_same_tree, manifest_of, ok};

const K: u8 = 4;
const M: u8 = 2;
const STRIPE: u64 = 8 << 20;

/// The tests here run one at a time: each starts up to eight nodes, and the lying-node test
/// needs its gateway to ask the liar within the read's piece deadline, which a machine loaded
/// by the other tests' clusters can miss (two cores in CI).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    // A failed test poisons the lock; the next one runs anyway.
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn erasure() -> String {
    format!("[erasure]\nk = {K}\nm = {M}\nstripe_size = {STRIPE}\n")
}

fn cluster(
    dir: &Path,
    n: usize,
    env_of: impl Fn(usize) -> Vec<(&'static str, &'static str)>,
) -> Vec<NodeProc> {
    common::cluster(dir, n, &erasure(), env_of)
}

/// For every shard CID of the manifest: the indexes of the nodes holding it intact.
fn holders(nodes: &[NodeProc], m: &Manifest) -> HashMap<String, Vec<usize>> {
    let mut out: HashMap<String, Vec<usize>> = HashMap::new();
    for cid in m.shard_cids() {
        let cid = cid.to_string();
        for (i, n) in nodes.iter().enumerate() {
            if n.json(&format!("/v1/shards/{cid}"))["status"] == "ok" {
                out.entry(cid.clone()).or_default().push(i);
            }
        }
    }
    out
}

/// A folder with 256 MiB of random bytes and a small model (safetensors + JSON).
fn checkpoint(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("ckpt");
    cairn_node::sample::write_sample(&src, 24 << 20, 7).expect("sample");
    let mut state = 0x1234_5678_9abc_def1u64;
    let mut buf = vec![0u8; 256 << 20];
    cairn_node::sample::fill_random(&mut state, &mut buf);
    std::fs::write(src.join("random.bin"), &buf).expect("write");
    src
}

fn net_bytes_in(node: &NodeProc) -> u64 {
    node.json("/v1/status")["net_bytes_in"]
        .as_u64()
        .expect("counter")
}

fn pseudo_random(n: u64) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    u64::from_le_bytes(
        blake3::hash(&t.to_le_bytes()).as_bytes()[..8]
            .try_into()
            .expect("8"),
    ) % n
}

/// Acceptance 1, 2 and 5: placement on distinct nodes, byte-identical gets through another
/// gateway, range reads that move little more than the span, m nodes killed during a get,
/// then m+1 holders of one stripe killed: a clear error, nothing wrong served.
#[test]
fn spread_over_distinct_nodes_and_survives_m_killed() {
    let _one = one_at_a_time();
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = checkpoint(tmp.path());
    let mut nodes = cluster(tmp.path(), 8, |_| Vec::new());
    let root = ok(nodes[0].cli(&["put", src.to_str().expect("utf-8")]));

    // Every stripe's k + m shards sit on k + m distinct nodes, each held exactly once.
    let m = manifest_of(&nodes[5], &root);
    let held = holders(&nodes, &m);
    for f in &m.files {
        for (s, stripe) in f.stripes.iter().enumerate() {
            let mut on = BTreeSet::new();
            for cid in stripe {
                let h = held
                    .get(&cid.to_string())
                    .unwrap_or_else(|| panic!("{cid} is held nowhere"));
                assert_eq!(h.len(), 1, "{cid} held by {h:?}");
                on.insert(h[0]);
            }
            assert_eq!(
                on.len(),
                stripe.len(),
                "stripe {s} of {} shares nodes: {on:?}",
                f.path
            );
        }
    }

    // A get through a node that did not take the upload is byte-identical.
    let gateway = 7;
    let out = tmp.path().join("out1");
    ok(nodes[gateway].cli(&["get", &root, "-o", out.to_str().expect("utf-8")]));
    assert_same_tree(&src, &out);

    // A range read moves the span, plus at most the 16 KiB groups around it and an outboard.
    let random = std::fs::read(src.join("random.bin")).expect("read");
    let layout = Layout::new(K, M, STRIPE).expect("layout");
    for (a, len) in [
        (3_000_001u64, 1_000_000u64),
        (70_000_000, 300_000),
        (100_000_000, 4_000_000),
    ] {
        let before = net_bytes_in(&nodes[gateway]);
        let part = tmp.path().join("range.bin");
        ok(nodes[gateway].cli(&[
            "get",
            &root,
            "--file",
            "random.bin",
            "--range",
            &format!("{a}-{}", a + len - 1),
            "-o",
            part.to_str().expect("utf-8"),
        ]));
        assert!(std::fs::read(&part).expect("read") == random[a as usize..(a + len) as usize]);
        let moved = net_bytes_in(&nodes[gateway]) - before;
        let touched = layout.pieces(random.len() as u64, a, a + len).len() as u64;
        let allowed = len + len / 10 + touched * 16 * 1024;
        assert!(
            moved <= allowed,
            "range of {len} bytes over {touched} shards moved {moved} bytes (allowed {allowed})"
        );
    }

    // Kill m nodes at random (never the gateway) while a get is running.
    let out2 = tmp.path().join("out2");
    let mut get = Command::new(common::BIN)
        .args(["--node", &nodes[gateway].url, "--quiet", "get", &root, "-o"])
        .arg(&out2)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start get");
    let part = out2.join("random.bin.cairn-part");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0) < 32 << 20 {
        assert!(Instant::now() < deadline, "get made no progress");
        assert!(
            matches!(get.try_wait(), Ok(None)),
            "get ended before the kill"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut dead = BTreeSet::new();
    while dead.len() < M as usize {
        let victim = pseudo_random(gateway as u64) as usize;
        if dead.insert(victim) {
            eprintln!("killing node {victim}");
            nodes[victim].kill9();
        }
    }
    let status = get.wait_with_output().expect("get");
    assert!(
        status.status.success(),
        "get failed after killing {dead:?}: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert_same_tree(&src, &out2);

    // Kill holders of one stripe until m + 1 of its shards are gone.
    let f = m.file("random.bin").expect("file");
    let (s, victims) = f
        .stripes
        .iter()
        .enumerate()
        .find_map(|(s, stripe)| {
            let on: Vec<usize> = stripe.iter().map(|c| held[&c.to_string()][0]).collect();
            let down = on.iter().filter(|i| dead.contains(i)).count();
            let more: Vec<usize> = on
                .iter()
                .copied()
                .filter(|i| *i != gateway && !dead.contains(i))
                .collect();
            (more.len() + down > M as usize).then(|| (s, more[..M as usize + 1 - down].to_vec()))
        })
        .expect("a stripe with enough holders to kill");
    for &v in &victims {
        eprintln!("killing node {v}, a holder of stripe {s}");
        nodes[v].kill9();
    }
    dead.extend(victims);
    // Every stripe now beyond repair (killing stripe s's holders may break others too).
    let broken: Vec<(String, usize)> = m
        .files
        .iter()
        .flat_map(|f| {
            f.stripes.iter().enumerate().filter_map(|(i, stripe)| {
                let gone = stripe
                    .iter()
                    .filter(|c| dead.contains(&held[&c.to_string()][0]))
                    .count();
                (gone > M as usize).then(|| (f.path.clone(), i))
            })
        })
        .collect();
    assert!(broken.contains(&("random.bin".to_owned(), s)));
    let out3 = tmp.path().join("out3");
    let failed = nodes[gateway].cli(&["get", &root, "-o", out3.to_str().expect("utf-8")]);
    assert!(
        !failed.status.success(),
        "get of a stripe beyond repair succeeded"
    );
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(
        broken
            .iter()
            .any(|(p, i)| err.contains(&format!("stripe {i} of {p:?}"))),
        "error does not name a broken stripe ({broken:?}): {err}"
    );
    // Nothing wrong was served: finished files are intact, unfinished ones are correct
    // prefixes, and no file with a broken stripe was put in place.
    for f in &m.files {
        let source = std::fs::read(src.join(&f.path)).expect("source");
        let done = out3.join(&f.path);
        if let Ok(bytes) = std::fs::read(&done) {
            assert!(
                bytes == source,
                "{} was put in place with wrong bytes",
                f.path
            );
            assert!(
                !broken.iter().any(|(p, _)| *p == f.path),
                "{} has a broken stripe but was finished",
                f.path
            );
        }
        let part = std::fs::read(out3.join(format!("{}.cairn-part", f.path))).unwrap_or_default();
        assert!(
            part == source[..part.len()],
            "{}: served bytes differ from the source",
            f.path
        );
    }
}

/// Acceptance 3 and 4: a restarted node keeps its identity and serves its shards again; a
/// node that serves corrupted bytes is caught by hash and skipped. (The node starts lying
/// after the put: a put whose participant serves garbage fails its checks, see `hostile.rs`.)
#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "the lying node needs a binary built with --features fault-injection"
)]
fn restarted_node_serves_again_and_a_lying_node_is_skipped() {
    let _one = one_at_a_time();
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("model");
    cairn_node::sample::write_sample(&src, 96 << 20, 3).expect("sample");
    let liar = 2;
    let mut nodes = cluster(tmp.path(), 7, |_| Vec::new());
    let root = ok(nodes[0].cli(&["put", src.to_str().expect("utf-8")]));
    let m = manifest_of(&nodes[0], &root);
    let held = holders(&nodes, &m);
    assert!(
        held.values().any(|h| h.contains(&liar)),
        "the lying node holds nothing"
    );
    let restart = |nodes: &mut Vec<NodeProc>, i: usize, env: &[(&str, &str)]| {
        let n = nodes.remove(i).restart_with_env(env);
        nodes.insert(i, n);
        for n in nodes.iter() {
            n.wait_status(60, |s| s["peers"].as_u64() == Some(6));
        }
    };
    restart(&mut nodes, liar, &[("CAIRN_FAULT_CORRUPT_SERVED", "1")]);

    // The liar's bytes fail verification at the gateway; the get still succeeds.
    let gateway = 6;
    let out = tmp.path().join("out1");
    ok(nodes[gateway].cli(&["get", &root, "-o", out.to_str().expect("utf-8")]));
    assert_same_tree(&src, &out);
    let bad = nodes[gateway].json("/v1/status")["bad_peer_answers"]
        .as_u64()
        .expect("counter");
    assert!(bad > 0, "no bad answer was detected");
    // The liar mends its ways (the rest of the test puts through the cluster again).
    restart(&mut nodes, liar, &[]);

    // Restart a holder that is neither the liar nor the gateway.
    let r = (1..gateway)
        .find(|i| *i != liar && held.values().any(|h| h.contains(i)))
        .expect("a holder");
    let id = nodes[r].json("/v1/status")["peer_id"].clone();
    let node = nodes.remove(r);
    let node = node.restart();
    assert_eq!(
        node.json("/v1/status")["peer_id"],
        id,
        "identity changed across restart"
    );
    nodes.insert(r, node);
    for n in &nodes {
        n.wait_status(60, |s| s["peers"].as_u64() == Some(6));
    }
    let sent_before = nodes[r].json("/v1/status")["net_bytes_out"]
        .as_u64()
        .expect("counter");
    let out2 = tmp.path().join("out2");
    ok(nodes[gateway].cli(&["get", &root, "-o", out2.to_str().expect("utf-8")]));
    assert_same_tree(&src, &out2);
    let sent = nodes[r].json("/v1/status")["net_bytes_out"]
        .as_u64()
        .expect("counter")
        - sent_before;
    assert!(sent > 0, "the restarted node served nothing");

    // A placement node that is down is replaced by the next closest live node: a put after
    // SIGKILL of one node still lands every stripe on k + m distinct live nodes.
    let dead = (0..nodes.len())
        .find(|i| *i != gateway && *i != liar && *i != r)
        .expect("a node to kill");
    nodes[dead].kill9();
    let more = tmp.path().join("more.bin");
    let mut bytes = vec![0u8; 40 << 20];
    cairn_node::sample::fill_random(&mut 77, &mut bytes);
    std::fs::write(&more, &bytes).expect("write");
    let root2 = ok(nodes[gateway].cli(&["put", more.to_str().expect("utf-8")]));
    let m2 = manifest_of(&nodes[gateway], &root2);
    let live: Vec<usize> = (0..nodes.len()).filter(|i| *i != dead).collect();
    for stripe in &m2.files[0].stripes {
        let mut on = BTreeSet::new();
        for cid in stripe {
            let h: Vec<usize> = live
                .iter()
                .copied()
                .filter(|i| nodes[*i].json(&format!("/v1/shards/{cid}"))["status"] == "ok")
                .collect();
            assert_eq!(h.len(), 1, "{cid} held by {h:?}");
            on.insert(h[0]);
        }
        assert_eq!(on.len(), stripe.len(), "shards share nodes: {on:?}");
    }
}

/// Fewer nodes than a stripe has shards: the put fails with a clear error naming the
/// minimum, and nothing is kept.
/// A stripe with one lying holder never fails while k intact shards are reachable: the same
/// file read many times in a row, through different gateways, always byte-identical.
#[test]
fn one_lying_holder_never_fails_a_read() {
    let _one = one_at_a_time();
    const READS: usize = 12;
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("weights.bin");
    let mut bytes = vec![0u8; 24 << 20];
    cairn_node::sample::fill_random(&mut 4242, &mut bytes);
    std::fs::write(&file, &bytes).expect("write");
    let mut nodes = cluster(tmp.path(), 7, |_| Vec::new());
    let root = ok(nodes[0].cli(&["put", file.to_str().expect("utf-8")]));
    // The liar: of nodes 1 and 2 (not gateways below), the one holding the most data shards
    // (reads ask for data shards; parity only serves rebuilds). Not node 0: it has no
    // bootstrap peers and its port changes on restart, so restarted it would stay alone.
    let m = manifest_of(&nodes[0], &root);
    let held = holders(&nodes, &m);
    let k = usize::from(K);
    let data_held = |n: usize| {
        m.files[0]
            .stripes
            .iter()
            .flat_map(|s| &s[..k])
            .filter(|c| held.get(&c.to_string()).is_some_and(|h| h.contains(&n)))
            .count()
    };
    let liar = (1..3).max_by_key(|&n| data_held(n)).expect("a node");
    assert!(data_held(liar) > 0, "nodes 1 and 2 hold no data shard");
    let n = nodes
        .remove(liar)
        .restart_with_env(&[("CAIRN_FAULT_CORRUPT_SERVED", "1")]);
    nodes.insert(liar, n);
    for n in &nodes {
        n.wait_status(60, |s| s["peers"].as_u64() == Some(6));
    }
    let gateways = [3usize, 4, 5, 6];
    for i in 0..READS {
        let gw = &nodes[gateways[i % gateways.len()]];
        let out = Command::new("curl")
            .args(["-sS", "-f"])
            .arg(format!(
                "{}/v1/checkpoints/{root}/files/weights.bin",
                gw.url
            ))
            .output()
            .expect("curl");
        assert!(
            out.status.success() && out.stdout == bytes,
            "read {i} through {}: {} bytes, {}",
            gw.url,
            out.stdout.len(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let bad: u64 = gateways
        .iter()
        .map(|&g| {
            nodes[g].json("/v1/status")["bad_peer_answers"]
                .as_u64()
                .unwrap_or(0)
        })
        .sum();
    assert!(bad > 0, "no gateway ever asked the liar");
}

#[test]
fn too_few_nodes_is_a_clear_error() {
    let _one = one_at_a_time();
    let tmp = tempfile::tempdir().expect("tempdir");
    let nodes = cluster(tmp.path(), 3, |_| Vec::new());
    let f = tmp.path().join("x.bin");
    std::fs::write(&f, vec![1u8; 100_000]).expect("write");
    let out = nodes[0].cli(&["put", f.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("too_few_nodes") && err.contains("start at least 6 nodes"),
        "{err}"
    );
    for n in &nodes {
        assert_eq!(n.json("/v1/status")["shards"], 0);
    }
}

/// `cairn rm --network` while a holder is down: the others drop the checkpoint at once; the
/// publisher asks the missing one again until it is back and drops it too; every node that
/// dropped it refuses to pin it again (a tombstone), so a holder that missed the delete
/// cannot spread it back.
#[test]
fn a_holder_down_during_a_delete_drops_the_checkpoint_when_back() {
    let _one = one_at_a_time();
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("model");
    std::fs::create_dir_all(&src).expect("mkdir");
    let mut random = vec![0u8; (3 << 20) + 777];
    cairn_node::sample::fill_random(&mut 31, &mut random);
    std::fs::write(src.join("weights.bin"), &random).expect("write");
    let config = "[storage]\ndelete_retry_secs = 1\n\
                  [erasure]\nk = 2\nm = 1\nstripe_size = 1048576\n";
    let mut nodes = common::cluster(tmp.path(), 5, config, |_| Vec::new());
    let root = ok(nodes[0].cli(&["put", src.to_str().expect("utf-8")]));
    let m = manifest_of(&nodes[0], &root);
    let manifest_bytes = Command::new("curl")
        .args(["-sS", "-f", "-H", "accept: application/vnd.ipld.dag-cbor"])
        .arg(format!("{}/v1/checkpoints/{root}", nodes[0].url))
        .output()
        .expect("curl")
        .stdout;
    let held = holders(&nodes, &m);
    let down = (1..nodes.len())
        .find(|i| held.values().any(|h| h.contains(i)))
        .expect("a holder other than the publisher");
    let down_id = nodes[down].json("/v1/status")["peer_id"]
        .as_str()
        .expect("peer id")
        .to_owned();
    nodes[down].kill9();

    // The delete reaches every live node; the one down is reported and will be asked again.
    let out = nodes[0].cli(&["rm", &root, "--network"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a delete that missed a node said it was complete"
    );
    assert!(
        err.contains(&down_id) && err.contains("asks them again"),
        "{err}"
    );
    let still = |i: usize, nodes: &[NodeProc]| -> usize {
        m.shard_cids()
            .filter(|c| nodes[i].json(&format!("/v1/shards/{c}"))["status"] == "ok")
            .count()
    };
    for i in (0..nodes.len()).filter(|&i| i != down) {
        assert_eq!(
            still(i, &nodes),
            0,
            "node {i} kept shards of the deleted checkpoint"
        );
    }
    let jobs = nodes[0].json("/v1/jobs");
    let retry = jobs
        .as_array()
        .expect("jobs")
        .iter()
        .find(|j| j["name"] == "delete_retry")
        .unwrap_or_else(|| panic!("no delete_retry job: {jobs}"))
        .clone();
    assert!(retry["progress"].is_string(), "{retry}");

    // Back with its data: the publisher's retry reaches it and it drops the checkpoint.
    let files = std::fs::read_dir(nodes[down].store_dir().join("shards"))
        .expect("shard dir")
        .flatten()
        .flat_map(|fan| {
            std::fs::read_dir(fan.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .count();
    assert!(files > 0, "the node lost its shards while down");
    let n = nodes.remove(down).restart();
    nodes.insert(down, n);
    let start = Instant::now();
    let retry_progress = || -> String {
        let jobs = nodes[0].json("/v1/jobs");
        jobs.as_array()
            .and_then(|a| a.iter().find(|j| j["name"] == "delete_retry"))
            .and_then(|j| j["progress"].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    while still(down, &nodes) > 0 || !retry_progress().starts_with("0 deletes waiting") {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the node that was down still holds the deleted checkpoint ({} shards; the \
             publisher's retry: {})",
            still(down, &nodes),
            retry_progress()
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // Nobody who dropped it pins it again: an import of its manifest is refused as deleted.
    for i in [down, 0] {
        let [h, auth] = nodes[i].auth();
        let out = Command::new("curl")
            .args(["-sS", "-X", "POST", &h, &auth, "--data-binary", "@-"])
            .arg(format!("{}/v1/manifests", nodes[i].url))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().expect("stdin").write_all(&manifest_bytes)?;
                c.wait_with_output()
            })
            .expect("curl");
        let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON answer");
        assert_eq!(answer["error"]["code"], "deleted", "node {i}: {answer}");
    }
}
