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
