//! Repair after node loss, on a real cluster: 50 node processes on loopback, a checkpoint
//! put with (4,2), nodes killed with SIGKILL; and a coordinator killed in the middle of a
//! repair. Which node holds which shard is read from the nodes' shard directories (the truth
//! the network-wide stat must match).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use cairn_erasure::{Cid, Manifest};
use common::{NodeProc, assert_same_tree, manifest_of, ok};

const NODES: usize = 50;
const K: usize = 4;
const M: usize = 2;
const STRIPE: u64 = 256 << 10;
/// Nodes killed at once, twice.
const KILLED: usize = 10;
/// How long the cluster may take to be whole again after a kill.
const REPAIR_WITHIN: Duration = Duration::from_secs(240);

/// The tests here run one at a time: each starts many node processes.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn config() -> String {
    format!(
        "[erasure]\nk = {K}\nm = {M}\nstripe_size = {STRIPE}\n\
         [repair]\nmib_per_s = 64\ninterval_secs = 2\ngrace_secs = 2\n"
    )
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The shard files a node's store holds (hex of the CID bytes).
fn shard_files(node: &NodeProc) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Ok(fans) = std::fs::read_dir(node.store_dir().join("shards")) else {
        return out;
    };
    for fan in fans.flatten() {
        for f in std::fs::read_dir(fan.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            out.insert(f.file_name().to_string_lossy().into_owned());
        }
    }
    out
}

/// Per stripe (in manifest order), the live nodes holding each shard.
fn truth(nodes: &[NodeProc], live: &[usize], m: &Manifest) -> Vec<Vec<Vec<usize>>> {
    let held: BTreeMap<usize, BTreeSet<String>> =
        live.iter().map(|&i| (i, shard_files(&nodes[i]))).collect();
    let who = |c: &Cid| -> Vec<usize> {
        let h = hex(&c.to_bytes());
        live.iter()
            .copied()
            .filter(|i| held[i].contains(&h))
            .collect()
    };
    m.files
        .iter()
        .flat_map(|f| f.stripes.iter())
        .map(|s| s.iter().map(who).collect())
        .collect()
}

/// Every stripe whole: each of its k + m shards on a live node, all on distinct nodes.
fn whole(t: &[Vec<Vec<usize>>]) -> bool {
    t.iter().all(|s| {
        let mut seen = BTreeSet::new();
        s.iter().all(|h| !h.is_empty()) && s.iter().flatten().all(|n| seen.insert(*n))
    })
}

/// Intact shards per stripe.
fn intact(t: &[Vec<Vec<usize>>]) -> Vec<usize> {
    t.iter()
        .map(|s| s.iter().filter(|h| !h.is_empty()).count())
        .collect()
}

/// The network-wide stat's intact count per stripe, asked of `node`.
fn reported(node: &NodeProc, root: &str) -> Vec<usize> {
    let v = node.json(&format!("/v1/checkpoints/{root}/stat?network=true"));
    v["stripe_health"]
        .as_array()
        .unwrap_or_else(|| panic!("no stripe_health in {v}"))
        .iter()
        .map(|s| s["intact"].as_u64().expect("intact") as usize)
        .collect()
}

/// The network-wide stat asked of node 0 agrees with the nodes' stores. Repair may be at work
/// (a stripe two shards short is repaired at once), and only adds shards: per stripe, the
/// count reported lies between what the stores held just before the question and just after.
fn stat_matches(nodes: &[NodeProc], live: &[usize], m: &Manifest, root: &str, when: &str) {
    let low = intact(&truth(nodes, live, m));
    let got = reported(&nodes[0], root);
    let high = intact(&truth(nodes, live, m));
    assert_eq!(got.len(), low.len(), "{when}: stripes reported");
    for (s, r) in got.iter().enumerate() {
        assert!(
            low[s] <= *r && *r <= high[s],
            "{when}: the network stat says stripe {s} has {r} intact shards; the stores held \
             {} before the question and {} after",
            low[s],
            high[s]
        );
    }
}

/// A small deterministic generator (the seed is printed, so a failure can be replayed).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn metric_sum(nodes: &[NodeProc], live: &[usize], name: &str) -> f64 {
    live.iter()
        .map(|&i| {
            let out = std::process::Command::new("curl")
                .args(["-sS", &format!("{}/metrics", nodes[i].url)])
                .output()
                .expect("curl");
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.starts_with(name) && !l.starts_with('#'))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        })
        .sum()
}

/// Wait until every stripe is whole on the live nodes; returns how long it took.
fn wait_whole(nodes: &[NodeProc], live: &[usize], m: &Manifest) -> Duration {
    let start = Instant::now();
    loop {
        let t = truth(nodes, live, m);
        if whole(&t) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < REPAIR_WITHIN,
            "not repaired within {REPAIR_WITHIN:?}: intact per stripe {:?}",
            intact(&t)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn get_matches(node: &NodeProc, root: &str, src: &Path, out: &Path) {
    ok(node.cli(&["get", root, "-o", out.to_str().expect("utf-8")]));
    assert_same_tree(src, out);
}

#[test]
fn lost_nodes_are_repaired_and_the_checkpoint_outlives_them() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("model");
    cairn_node::sample::write_sample(&src, 3 << 20, 11).expect("sample");
    let mut random = vec![0u8; (1 << 20) + 12345];
    cairn_node::sample::fill_random(&mut 99, &mut random);
    std::fs::write(src.join("extra.bin"), &random).expect("write");
    let mut nodes = common::cluster(tmp.path(), NODES, &config(), |_| Vec::new());
    let root = ok(nodes[0].cli(&["put", src.to_str().expect("utf-8")]));
    let m = manifest_of(&nodes[0], &root);
    let mut live: Vec<usize> = (0..NODES).collect();
    let before = truth(&nodes, &live, &m);
    assert!(whole(&before), "the put left stripes incomplete");
    assert_eq!(reported(&nodes[0], &root), intact(&before));
    let stripes = before.len();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
        | 1;
    println!("{stripes} stripes on {NODES} nodes; kill seed {seed}");
    let mut rng = Rng(seed);

    // First loss: KILLED random nodes (not the gateway), drawn again until no stripe loses
    // more than m shards: this part is about repair, not about a loss no code could undo.
    let holders_of = |t: &[Vec<Vec<usize>>], s: usize| -> BTreeSet<usize> {
        t[s].iter().flatten().copied().collect()
    };
    let first: Vec<usize> = (0..10_000)
        .map(|_| {
            let mut v: Vec<usize> = (1..NODES).collect();
            for i in 0..KILLED {
                let j = i + rng.below(v.len() - i);
                v.swap(i, j);
            }
            v.truncate(KILLED);
            v
        })
        .find(|v| {
            (0..stripes).all(|s| {
                holders_of(&before, s)
                    .iter()
                    .filter(|n| v.contains(n))
                    .count()
                    <= M
            })
        })
        .expect("a survivable set of nodes to kill");
    // Counted before the kill: a stripe two shards short is repaired at once, maybe before
    // the checks below are done.
    live.retain(|i| !first.contains(i));
    let pushed_before = metric_sum(&nodes, &live, "cairn_repair_pushed_bytes_total");
    for &i in &first {
        nodes[i].kill9();
    }
    // Shards whose every holder died (from the placement before, not from a look after the
    // kill, which repair may already be undoing).
    let missing: usize = before
        .iter()
        .flatten()
        .filter(|h| h.iter().all(|n| first.contains(n)))
        .count();
    assert!(missing > 0, "the killed nodes held nothing");
    stat_matches(&nodes, &live, &m, &root, "after the first kill");
    let took = wait_whole(&nodes, &live, &m);
    let after = truth(&nodes, &live, &m);
    assert_eq!(reported(&nodes[0], &root), intact(&after));
    let pushed = metric_sum(&nodes, &live, "cairn_repair_pushed_bytes_total") - pushed_before;
    let fetched = metric_sum(&nodes, &live, "cairn_repair_fetched_bytes_total");
    let shard_bytes: u64 = m
        .files
        .iter()
        .flat_map(|f| {
            (0..f.stripes.len() as u64).map(|s| {
                let l = m.layout().expect("layout");
                l.shard_len(l.stripe_len(f.size, s))
            })
        })
        .sum::<u64>()
        / stripes as u64;
    let minimum = missing as f64 * shard_bytes as f64;
    println!(
        "killed {KILLED}: {missing} shards lost; whole again after {:.1} s; repair pushed \
         {:.2}x the lost shards' bytes and fetched {:.0} bytes",
        took.as_secs_f64(),
        pushed / minimum,
        fetched
    );
    assert!(
        pushed >= minimum * 0.5,
        "repair pushed {pushed} bytes for {minimum}"
    );
    get_matches(&nodes[0], &root, &src, &tmp.path().join("out1"));

    // Second loss, fatal without repair: every stripe's original holders counted, some
    // stripe loses more than m of them; of today's holders no stripe loses more than m.
    let now = truth(&nodes, &live, &m);
    let second: Vec<usize> = (0..100_000)
        .map(|_| {
            let mut v: Vec<usize> = live.iter().copied().filter(|&i| i != 0).collect();
            for i in 0..KILLED {
                let j = i + rng.below(v.len() - i);
                v.swap(i, j);
            }
            v.truncate(KILLED);
            v
        })
        .find(|v| {
            let fatal_alone = (0..stripes).any(|s| {
                holders_of(&before, s)
                    .iter()
                    .filter(|n| v.contains(n) || first.contains(n))
                    .count()
                    > M
            });
            let survivable = (0..stripes)
                .all(|s| holders_of(&now, s).iter().filter(|n| v.contains(n)).count() <= M);
            fatal_alone && survivable
        })
        .expect("a second set of nodes, fatal without repair");
    for &i in &second {
        nodes[i].kill9();
    }
    live.retain(|i| !second.contains(i));
    stat_matches(&nodes, &live, &m, &root, "after the second kill");
    get_matches(&nodes[0], &root, &src, &tmp.path().join("out2"));
    let took = wait_whole(&nodes, &live, &m);
    println!(
        "killed {KILLED} more: whole again after {:.1} s",
        took.as_secs_f64()
    );
    get_matches(&nodes[0], &root, &src, &tmp.path().join("out3"));
}

/// The coordinator of a stripe that lost two shards places one rebuilt shard and stalls (the
/// fault switch says which stripe); it is killed there. Another holder takes over: the stripe
/// ends with every shard on exactly one live node, all distinct, none placed twice.
#[test]
fn a_coordinator_killed_mid_repair_is_replaced() {
    const NODES: usize = 12;
    const M3: usize = 3;
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("model");
    std::fs::create_dir_all(&src).expect("mkdir");
    let mut random = vec![0u8; (1 << 20) + 4321];
    cairn_node::sample::fill_random(&mut 5, &mut random);
    std::fs::write(src.join("weights.bin"), &random).expect("write");
    // m = 3: two holders killed, then the coordinator, leave every stripe k shards at least.
    let config = format!(
        "[erasure]\nk = {K}\nm = {M3}\nstripe_size = {STRIPE}\n\
         [repair]\nmib_per_s = 64\ninterval_secs = 2\ngrace_secs = 2\nurgent_missing = 2\n"
    );
    let marker = |i: usize| tmp.path().join(format!("stall-{i}"));
    let markers: Vec<&'static str> = (0..NODES)
        .map(|i| &*Box::leak(marker(i).display().to_string().into_boxed_str()))
        .collect();
    let mut nodes = common::cluster(tmp.path(), NODES, &config, |i| {
        vec![(cairn_node::repair::FAULT_REPAIR_STALL_ENV, markers[i])]
    });
    let root = ok(nodes[0].cli(&["put", src.to_str().expect("utf-8")]));
    let m = manifest_of(&nodes[0], &root);
    let mut live: Vec<usize> = (0..NODES).collect();
    let before = truth(&nodes, &live, &m);
    assert!(whole(&before), "the put left stripes incomplete");

    // Two holders of stripe 0 (not the gateway) die: it misses two shards, so its
    // coordinator repairs it at once, one shard after the other.
    let two: Vec<usize> = before[0]
        .iter()
        .flatten()
        .copied()
        .filter(|&n| n != 0)
        .take(2)
        .collect();
    for &i in &two {
        nodes[i].kill9();
    }
    live.retain(|i| !two.contains(i));

    // Wait for a coordinator to stall mid-stripe, then kill it there.
    let start = Instant::now();
    let (stalled, line) = loop {
        if let Some(found) = live
            .iter()
            .find_map(|&i| std::fs::read_to_string(marker(i)).ok().map(|l| (i, l)))
        {
            break found;
        }
        assert!(
            start.elapsed() < REPAIR_WITHIN,
            "no coordinator started a repair within {REPAIR_WITHIN:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields.len(), 3, "stall marker {line:?}");
    assert_eq!(fields[0], root, "stalled on another checkpoint");
    let file: usize = fields[1].parse().expect("file index");
    let stripe: usize = fields[2].parse().expect("stripe index");
    let flat = m.files[..file]
        .iter()
        .map(|f| f.stripes.len())
        .sum::<usize>()
        + stripe;
    let mid = truth(&nodes, &live, &m);
    let original: BTreeSet<usize> = before[flat].iter().flatten().copied().collect();
    let newcomers: BTreeSet<usize> = mid[flat]
        .iter()
        .flatten()
        .copied()
        .filter(|n| !original.contains(n))
        .collect();
    assert!(
        !whole(&mid[flat..=flat]) && !newcomers.is_empty(),
        "the coordinator was not in the middle of the repair: {:?}",
        mid[flat]
    );
    nodes[stalled].kill9();
    live.retain(|&i| i != stalled);
    println!(
        "coordinator n{stalled} killed after placing a shard of stripe {flat} on {newcomers:?}"
    );

    let took = wait_whole(&nodes, &live, &m);
    let after = truth(&nodes, &live, &m);
    for (i, holders) in after[flat].iter().enumerate() {
        let kept: Vec<usize> = before[flat][i]
            .iter()
            .copied()
            .filter(|n| live.contains(n))
            .collect();
        if kept.is_empty() {
            assert_eq!(
                holders.len(),
                1,
                "shard {i} of stripe {flat} was rebuilt onto {holders:?}: placed twice"
            );
        } else {
            assert_eq!(
                holders, &kept,
                "shard {i} of stripe {flat} was never lost, yet copied"
            );
        }
    }
    for n in &newcomers {
        assert!(
            after[flat].iter().flatten().any(|h| h == n),
            "the shard the killed coordinator placed on n{n} was lost"
        );
    }
    println!(
        "whole again {:.1} s after the coordinator died",
        took.as_secs_f64()
    );
    let reader = live.iter().copied().find(|&i| i != 0).expect("a live node");
    get_matches(&nodes[reader], &root, &src, &tmp.path().join("out"));
}
