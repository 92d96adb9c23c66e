//! Scrubbing over a real cluster: a shard corrupted on disk and another deleted are found by
//! the scrubber, rebuilt from their stripes (verified) and written back; the job's status and
//! metrics show it.

mod common;

use std::time::{Duration, Instant};

use common::{manifest_of, ok};

const CONFIG: &str = "[erasure]\nk = 3\nm = 2\nstripe_size = 1048576\n\
                      [storage]\nscrub_mib_per_s = 1024\nscrub_interval_secs = 1\n";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn metric(node: &common::NodeProc, name: &str) -> f64 {
    let out = std::process::Command::new("curl")
        .args(["-sS", &format!("{}/metrics", node.url)])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

#[test]
fn the_scrubber_rebuilds_corrupt_and_missing_shards() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("weights.bin");
    let mut bytes = vec![0u8; 6 << 20];
    cairn_node::sample::fill_random(&mut 31, &mut bytes);
    std::fs::write(&file, &bytes).expect("write");
    let nodes = common::cluster(tmp.path(), 5, CONFIG, |_| Vec::new());
    let root = ok(nodes[0].cli(&["put", file.to_str().expect("utf-8")]));
    let m = manifest_of(&nodes[0], &root);

    // Two shards node 1 holds: one gets a flipped byte on disk, the other is deleted.
    let victim = &nodes[1];
    let held: Vec<_> = m
        .shard_cids()
        .filter(|c| victim.json(&format!("/v1/shards/{c}"))["status"] == "ok")
        .take(2)
        .collect();
    assert_eq!(held.len(), 2, "node 1 holds two shards");
    let path = |c: &cairn_erasure::Cid| {
        let b = c.to_bytes();
        victim
            .store_dir()
            .join("shards")
            .join(format!("{:02x}", b[b.len() - 1]))
            .join(hex(&b))
    };
    let corrupt = path(held[0]);
    let mut data = std::fs::read(&corrupt).expect("shard file");
    let mid = data.len() / 2;
    data[mid] ^= 0x5a;
    std::fs::write(&corrupt, &data).expect("corrupt the shard");
    std::fs::remove_file(path(held[1])).expect("delete the shard");
    for c in &held {
        assert_ne!(victim.json(&format!("/v1/shards/{c}"))["status"], "ok");
    }

    // The scrubber finds both and rebuilds them from the other holders.
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(victim, "cairn_scrub_repaired_total") < 2.0 {
        assert!(
            Instant::now() < deadline,
            "not repaired: {} found corrupt, {} missing, {} failed",
            metric(victim, "cairn_scrub_shards_total{result=\"corrupt\"}"),
            metric(victim, "cairn_scrub_shards_total{result=\"missing\"}"),
            metric(victim, "cairn_scrub_repair_failed_total")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for c in &held {
        assert_eq!(
            victim.json(&format!("/v1/shards/{c}"))["status"],
            "ok",
            "{c}"
        );
    }
    // A shard whose bytes are gone while its index entry stays reads as corrupt.
    let bad = metric(victim, "cairn_scrub_shards_total{result=\"corrupt\"}")
        + metric(victim, "cairn_scrub_shards_total{result=\"missing\"}");
    assert!(bad >= 2.0, "{bad} bad shards counted");
    assert!(metric(victim, "cairn_scrub_bytes_total") > 0.0);

    // The job is listed with its progress; the CLI shows it.
    let jobs = victim.json("/v1/jobs");
    let scrub = jobs
        .as_array()
        .expect("jobs")
        .iter()
        .find(|j| j["name"] == "scrub")
        .expect("the scrub job is listed");
    assert!(scrub["steps"].as_u64() > Some(0), "{scrub}");
    let shown = ok(victim.cli(&["node", "jobs"]));
    assert!(shown.contains("scrub"), "{shown}");

    // The data reads back byte-identical through the repaired node.
    let out = std::process::Command::new("curl")
        .args(["-sS", "-f"])
        .arg(format!(
            "{}/v1/checkpoints/{root}/files/weights.bin",
            victim.url
        ))
        .output()
        .expect("curl");
    assert!(out.status.success() && out.stdout == bytes);
}
