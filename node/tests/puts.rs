//! Puts that shrug off failures: a node hung (SIGSTOP) for a whole put costs the put about
//! one hedge, not a timeout per stripe; every stripe still lands on k + m distinct live nodes.

mod common;

use std::collections::BTreeSet;
use std::time::Instant;

use common::{NodeProc, assert_same_tree, manifest_of, ok};

const ERASURE: &str = "[erasure]\nk = 4\nm = 2\nstripe_size = 4194304\n";

/// Whether `node` holds the shard intact (a hung node is never asked).
fn holds(node: &NodeProc, cid: &str) -> bool {
    node.json(&format!("/v1/shards/{cid}"))["status"] == "ok"
}

#[test]
fn a_put_with_a_hung_node_lands_on_live_nodes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("model");
    // 48 MiB of tensors: 12 stripes of 4 MiB.
    cairn_node::sample::write_sample(&src, 48 << 20, 5).expect("sample");
    let mut nodes = common::cluster(tmp.path(), 8, ERASURE, |_| Vec::new());
    let (gateway, hung) = (0, 5);
    nodes[hung].signal("STOP");
    let t = Instant::now();
    let root = ok(nodes[gateway].cli(&["put", src.to_str().expect("utf-8")]));
    eprintln!(
        "put with one node hung took {:.2}s",
        t.elapsed().as_secs_f64()
    );

    // Every stripe's k + m shards sit on k + m distinct nodes, none of them the hung one.
    let m = manifest_of(&nodes[gateway], &root);
    let live: Vec<usize> = (0..nodes.len()).filter(|i| *i != hung).collect();
    for f in &m.files {
        for (s, stripe) in f.stripes.iter().enumerate() {
            let mut on = BTreeSet::new();
            for cid in stripe {
                let cid = cid.to_string();
                let at: Vec<usize> = live
                    .iter()
                    .copied()
                    .filter(|&i| holds(&nodes[i], &cid))
                    .collect();
                assert!(
                    !at.is_empty(),
                    "{} stripe {s}: shard {cid} is on no live node",
                    f.path
                );
                on.extend(at);
            }
            assert!(
                on.len() >= stripe.len(),
                "{} stripe {s}: {} shards on {} nodes",
                f.path,
                stripe.len(),
                on.len()
            );
        }
    }

    // Byte-identical after the hung node resumes, through another gateway; and after it dies.
    nodes[hung].signal("CONT");
    let out = tmp.path().join("out");
    ok(nodes[2].cli(&["get", &root, "-o", out.to_str().expect("utf-8")]));
    assert_same_tree(&src, &out);
    nodes[hung].kill9();
    let out2 = tmp.path().join("out2");
    ok(nodes[3].cli(&["get", &root, "-o", out2.to_str().expect("utf-8")]));
    assert_same_tree(&src, &out2);
}

/// A counter of `node`'s metrics (0 when it has not been counted yet).
fn counter(node: &NodeProc, name: &str) -> u64 {
    let out = std::process::Command::new("curl")
        .args(["-sS", &format!("{}/metrics", node.url)])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.split(' ').next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Bytes of the tar stream the client sends for `files` (short paths: one header each).
fn tar_len(dir: &std::path::Path) -> u64 {
    cairn_node::client::walk(dir)
        .expect("walk")
        .iter()
        .map(|(_, _, size)| 512 + size.div_ceil(512) * 512)
        .sum::<u64>()
        + 1024
}

#[test]
fn a_cut_off_put_resumes_where_it_stopped() {
    const STRIPE: u64 = 4 << 20;
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("model");
    // 40 MiB of tensors and a few small files: about 11 stripes of 4 MiB.
    cairn_node::sample::write_sample(&src, 40 << 20, 11).expect("sample");
    let body = tar_len(&src);
    let mut nodes = common::cluster(tmp.path(), 8, ERASURE, |_| Vec::new());
    // Node 0 has no bootstrap peer: a restarted gateway must be another node.
    let gw = 1;
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos() as u64
        | 1;
    eprintln!("cut points from seed {seed}");
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut received, mut cuts) = (0u64, 0u64);
    let mut at = 0u64;
    for round in 0..3 {
        // The client is killed once the gateway has read a random amount more of the body
        // (at least two stripes, so that each cut leaves placed stripes behind).
        at = (at + 2 * STRIPE + next() % (2 * STRIPE)).min(body - 2 * STRIPE);
        let mut client = std::process::Command::new(common::BIN)
            .args([
                "--node",
                &nodes[gw].url,
                "--quiet",
                "put",
                src.to_str().expect("utf-8"),
            ])
            .env("RUST_LOG", "warn")
            .env("CAIRN_API_TOKEN", nodes[gw].token())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn put");
        let deadline = Instant::now() + std::time::Duration::from_secs(120);
        while received + counter(&nodes[gw], "cairn_put_body_bytes_total") < at {
            assert!(Instant::now() < deadline, "the put never reached byte {at}");
            assert!(
                client.try_wait().expect("wait").is_none(),
                "the put ended before byte {at} of {body}"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        client.kill().expect("kill the client");
        client.wait().expect("reap");
        cuts += 1;
        eprintln!("round {round}: client killed near body byte {at}");
        if round == 0 {
            // The gateway restarts once between runs: what it placed must survive that.
            received += counter(&nodes[gw], "cairn_put_body_bytes_total");
            let restarted = nodes.remove(gw).restart();
            nodes.insert(gw, restarted);
            nodes[gw].wait_status(60, |s| s["peers"].as_u64().unwrap_or(0) >= 7);
        }
    }
    let out = nodes[gw].cli(&["put", src.to_str().expect("utf-8")]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let root = ok(out);
    // The last cut may come after the gateway had the whole body: then the put was done.
    assert!(
        stderr.contains("resuming at stripe")
            || stderr.contains("already stored by an earlier run"),
        "neither a resume nor an earlier run said: {stderr}"
    );
    received += counter(&nodes[gw], "cairn_put_body_bytes_total");
    let again = received - body;
    eprintln!(
        "{cuts} cuts: {received} body bytes received for a {body}-byte body, {again} sent again \
         ({:.2} stripes per cut)",
        again as f64 / cuts as f64 / STRIPE as f64
    );
    // Each cut loses at most the stripe the gateway was reading, and the HTTP chunk in hand.
    assert!(
        again <= cuts * (STRIPE + (1 << 20)),
        "{again} bytes sent again over {cuts} cuts"
    );
    assert!(counter(&nodes[gw], "cairn_puts_resumed_total") >= 1);

    // The root is the one an uninterrupted put with the same salt makes.
    let m = manifest_of(&nodes[gw], &root);
    let layout = cairn_erasure::Layout::new(4, 2, STRIPE).expect("layout");
    let mut tar = tar::Builder::new(Vec::new());
    tar.mode(tar::HeaderMode::Deterministic);
    for (abs, rel, _) in cairn_node::client::walk(&src).expect("walk") {
        tar.append_path_with_name(&abs, &rel).expect("append");
    }
    let whole = cairn_node::pipeline::encode(
        layout,
        cairn_node::pipeline::Upload::Tar(&tar.into_inner().expect("tar")[..]),
        Default::default(),
        &|_| {},
        &mut |_, _| Ok(()),
    )
    .expect("encode")
    .published(
        m.salt().expect("salt").try_into().expect("salt length"),
        m.publisher().expect("publisher").to_vec(),
    )
    .expect("publish");
    let (_, expected) = whole.encode_with_cid().expect("cid");
    assert_eq!(
        root,
        expected.to_string(),
        "a resumed put gives another root"
    );

    // Byte-identical through another gateway.
    let out = tmp.path().join("out");
    ok(nodes[3].cli(&["get", &root, "-o", out.to_str().expect("utf-8")]));
    assert_same_tree(&src, &out);

    // The same command once more: the put is done, its answer comes without a byte sent.
    let before = counter(&nodes[gw], "cairn_put_body_bytes_total");
    let out = nodes[gw].cli(&["put", src.to_str().expect("utf-8")]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(ok(out), root);
    assert!(
        stderr.contains("already stored by an earlier run"),
        "{stderr}"
    );
    assert_eq!(counter(&nodes[gw], "cairn_put_body_bytes_total"), before);
}
