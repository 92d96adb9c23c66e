//! Hostile peers against real nodes: node processes on loopback (real swarms, real RocksDB)
//! with a scripted peer that sends any frame. Each test is an attack the node must shrug off:
//! hijacked sessions, strangers that store or serve, a peer that holds every stream it may
//! open, floods of tiny shards, huge manifests and provider records, participants that lie
//! about what they stored, and stripes whose parity does not match their data.

mod common;
#[path = "common/peer.rs"]
mod peer;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cairn_erasure::{Cid, FileEntry, Layout, Manifest};
use cairn_node::net::wire::Status;
use common::{NodeProc, ok};
use libp2p::PeerId;
use libp2p::identity::Keypair;
use peer::{Behaviour, ScriptedPeer};

const ERASURE: &str = "[erasure]\nk = 2\nm = 1\nstripe_size = 1048576\n";

/// The tests of this file run one at a time: each starts several node processes, and the
/// latency bound of the stream-hog test must not measure the other tests' load.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn peer_id(node: &NodeProc) -> PeerId {
    node.json("/v1/status")["peer_id"]
        .as_str()
        .expect("peer id")
        .parse()
        .expect("peer id parses")
}

fn status_u64(node: &NodeProc, key: &str) -> u64 {
    node.json("/v1/status")[key].as_u64().unwrap_or(0)
}

fn refused(node: &NodeProc, reason: &str) -> u64 {
    node.json("/v1/status")["shard_requests_refused"][reason]
        .as_u64()
        .unwrap_or(0)
}

fn shard_state(node: &NodeProc, cid: &Cid) -> String {
    node.json(&format!("/v1/shards/{cid}"))["status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn cid_of(data: &[u8]) -> Cid {
    cairn_erasure::shard_cid(&blake3::hash(data))
}

fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed * 2 + 1;
    let mut v = vec![0u8; len];
    cairn_node::sample::fill_random(&mut state, &mut v);
    v
}

/// A valid one-file manifest whose stripes are `stripes` (k + m CIDs each).
fn manifest(layout: &Layout, stripes: Vec<Vec<Cid>>) -> Vec<u8> {
    let size = layout.stripe_size() * stripes.len() as u64;
    let m = Manifest::new(
        layout,
        vec![FileEntry {
            path: "f.bin".into(),
            size,
            blake3: vec![7; 32],
            stripes,
        }],
    )
    .expect("manifest");
    m.encode().expect("encode")
}

/// Wait (polling) until `f` holds, failing after `secs`.
fn eventually(secs: u64, what: &str, f: impl Fn() -> Result<(), String>) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while let Err(now) = f() {
        assert!(Instant::now() < deadline, "never happened: {what} ({now})");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn check(ok: bool, now: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(now()) }
}

fn put_file(node: &NodeProc, dir: &Path, len: usize, seed: u64) -> (std::process::Output, Vec<u8>) {
    let data = bytes(len, seed);
    let f = dir.join(format!("in-{seed}.bin"));
    std::fs::write(&f, &data).expect("write");
    let out = node.cli(&["put", f.to_str().expect("utf-8")]);
    (out, data)
}

/// (a) Another peer's `Abort` and `Commit` of an upload are refused; the upload's owner
/// keeps its shard and commits it; a `Commit` without a session is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_belong_to_the_peer_that_opened_them() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let (owner_key, third_key) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let scripted = [
        owner_key.public().to_peer_id().to_string(),
        third_key.public().to_peer_id().to_string(),
    ];
    let nodes = common::cluster_with(tmp.path(), 2, ERASURE, |_| Vec::new(), &scripted);
    let addr = nodes[0].p2p_addr();
    let n0 = peer_id(&nodes[0]);
    let owner =
        ScriptedPeer::start(owner_key, std::slice::from_ref(&addr), Behaviour::Silent).await;
    let third = ScriptedPeer::start(third_key, &[addr], Behaviour::Silent).await;
    let layout = Layout::new(2, 1, 1 << 20).expect("layout");
    let shard = bytes(300_000, 1);
    let cid = cid_of(&shard);
    let upload = [0xab; 16];
    let a = owner.push(n0, upload, &shard).await;
    assert_eq!(a.status, Status::Ok, "{}", a.message);
    let m = manifest(&layout, vec![vec![cid, cid_of(b"b"), cid_of(b"c")]]);

    // A third member that learned the id can neither drop nor pin the owner's upload.
    let a = third.abort(n0, upload).await;
    assert_eq!(a.status, Status::UnknownUpload, "{}", a.message);
    let a = third.commit(n0, upload, &m, &[cid]).await;
    assert_eq!(a.status, Status::UnknownUpload, "{}", a.message);
    assert_eq!(
        shard_state(&nodes[0], &cid),
        "ok",
        "the owner's shard is kept"
    );
    // A commit naming shards the session does not hold is refused, and the session stays.
    let a = owner.commit(n0, upload, &m, &[cid, cid_of(b"b")]).await;
    assert_eq!(a.status, Status::BadRequest, "{}", a.message);
    assert!(a.message.contains("holds 1"), "{}", a.message);
    // A commit of an upload nobody opened is refused, not an empty pin answered Ok.
    let a = owner.commit(n0, [0xcd; 16], &m, &[]).await;
    assert_eq!(a.status, Status::UnknownUpload, "{}", a.message);
    assert!(
        nodes[0]
            .json("/v1/checkpoints")
            .as_array()
            .expect("list")
            .is_empty()
    );
    assert!(refused(&nodes[0], "unknown_upload") >= 3);
    assert!(refused(&nodes[0], "commit_mismatch") >= 1);

    let a = owner.commit(n0, upload, &m, &[cid]).await;
    assert_eq!(a.status, Status::Ok, "{}", a.message);
    let list = nodes[0].json("/v1/checkpoints");
    assert_eq!(list.as_array().expect("list").len(), 1, "{list}");
    let a = third.abort(n0, upload).await;
    assert_eq!(a.status, Status::UnknownUpload);
    assert_eq!(shard_state(&nodes[0], &cid), "ok");
}

/// (b) A peer that is not a member may read, but is never placed on, cannot push shards,
/// cannot announce provider records, and is never used as a source by a get. (d) Its flood
/// of 10,000 tiny shards and of provider records changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn strangers_may_read_but_not_store_serve_or_announce() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let mut nodes = common::cluster(tmp.path(), 4, ERASURE, |_| Vec::new());
    let addrs: Vec<String> = nodes.iter().map(NodeProc::p2p_addr).collect();
    let stranger =
        ScriptedPeer::start(Keypair::generate_ed25519(), &addrs, Behaviour::ServeGarbage).await;
    let ids: Vec<PeerId> = nodes.iter().map(peer_id).collect();
    // Every node knows the stranger (it dialed them all), as a peer but not as a member.
    for n in &nodes {
        n.wait_status(30, |s| s["peers"].as_u64() >= Some(4));
        assert_eq!(status_u64(n, "members"), 3);
    }
    let (out, data) = put_file(&nodes[0], tmp.path(), 6 << 20, 2);
    let root = ok(out);
    assert_eq!(
        stranger.seen.lock().expect("seen").pushes,
        0,
        "never placed on"
    );

    // Pushes from a stranger are refused, and nothing is stored or counted.
    let before: Vec<(u64, u64)> = nodes
        .iter()
        .map(|n| (status_u64(n, "used_bytes"), status_u64(n, "shards")))
        .collect();
    let big = bytes(200_000, 3);
    let a = stranger.push(ids[1], [1; 16], &big).await;
    assert_eq!(a.status, Status::Forbidden, "{}", a.message);
    assert!(a.message.contains("not a member"), "{}", a.message);
    assert_eq!(shard_state(&nodes[1], &cid_of(&big)), "missing");
    let mut tiny = libp2p::futures::stream::iter(0..10_000u32)
        .map(|i| {
            let s = &stranger;
            let t = ids[1];
            async move { s.push(t, [2; 16], &i.to_le_bytes()).await.status }
        })
        .buffer_unordered(16);
    use libp2p::futures::StreamExt;
    let (mut forbidden, mut stored) = (0, 0);
    while let Some(st) = tiny.next().await {
        match st {
            Status::Forbidden => forbidden += 1,
            Status::Ok => stored += 1,
            // Streams beyond the peer's share are refused (busy) or dropped unread.
            _ => {}
        }
    }
    drop(tiny);
    assert_eq!(stored, 0, "no tiny shard accepted");
    assert!(forbidden > 0, "refused as a stranger, not only as busy");
    // A provider flood: 10,000 keys and the checkpoint's own shards.
    let m = Manifest::decode(
        &Command::new("curl")
            .args(["-sS", "-f", "-H", "accept: application/vnd.ipld.dag-cbor"])
            .arg(format!("{}/v1/checkpoints/{root}", nodes[0].url))
            .output()
            .expect("curl")
            .stdout,
    )
    .expect("manifest");
    let remote_before: Vec<u64> = nodes
        .iter()
        .map(|n| status_u64(n, "remote_provider_records"))
        .collect();
    for cid in m.shard_cids() {
        stranger.net.provide(&cid.to_bytes()).await;
    }
    const FLOOD: u64 = 3_000;
    for i in 0..FLOOD {
        stranger.net.provide(&i.to_le_bytes()).await;
    }
    let shard_count = m.shard_cids().count() as u64;
    eventually(180, "every node refused the flood", || {
        let counts: Vec<u64> = nodes
            .iter()
            .map(|n| status_u64(n, "provider_records_refused"))
            .collect();
        check(counts.iter().all(|c| *c >= FLOOD + shard_count / 2), || {
            format!("refused so far: {counts:?}")
        })
    });
    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(status_u64(n, "remote_provider_records"), remote_before[i]);
        assert_eq!(
            (status_u64(n, "used_bytes"), status_u64(n, "shards")),
            before[i],
            "node {i}'s accounting is unchanged"
        );
    }
    assert!(
        refused(&nodes[1], "not_member") > forbidden,
        "the big push and every tiny one"
    );

    // The stranger may read what a node holds, verified.
    let held = m
        .shard_cids()
        .find(|c| shard_state(&nodes[1], c) == "ok")
        .copied()
        .expect("node 1 holds a shard");
    let got = stranger.get(ids[1], &held, 0, 1000).await.expect("a read");
    assert_eq!(got.len(), 1000);

    // A get that must look beyond the placement (a holder is gone) never asks the stranger,
    // though it claims to hold everything.
    nodes[3].kill9();
    let out_file = tmp.path().join("back.bin");
    ok(nodes[1].cli(&[
        "get",
        &root,
        "--file",
        "in-2.bin",
        "-o",
        out_file.to_str().expect("utf-8"),
    ]));
    assert!(
        std::fs::read(&out_file).expect("read") == data,
        "bytes match"
    );
    assert_eq!(
        stranger.seen.lock().expect("seen").reads,
        0,
        "never a source"
    );
}

/// (c) One peer holding every stream it may open does not delay another peer's `GetShard`
/// beyond a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_peer_holding_every_stream_does_not_stop_others() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let nodes = common::cluster(tmp.path(), 3, ERASURE, |_| Vec::new());
    let (out, _) = put_file(&nodes[0], tmp.path(), 2 << 20, 4);
    let root = ok(out);
    let n1 = peer_id(&nodes[1]);
    let addr = nodes[1].p2p_addr();
    let m: serde_json::Value = nodes[1].json(&format!("/v1/checkpoints/{root}"));
    let held: Cid = m["files"][0]["stripes"]
        .as_array()
        .expect("stripes")
        .iter()
        .flat_map(|s| s.as_array().expect("cids").iter())
        .map(|c| c.as_str().expect("cid").parse().expect("cid"))
        .find(|c| shard_state(&nodes[1], c) == "ok")
        .expect("node 1 holds a shard");
    let hog = ScriptedPeer::start(
        Keypair::generate_ed25519(),
        std::slice::from_ref(&addr),
        Behaviour::Silent,
    )
    .await;
    let reader = ScriptedPeer::start(Keypair::generate_ed25519(), &[addr], Behaviour::Silent).await;
    let mut held_streams = Vec::new();
    let mut opening = libp2p::futures::stream::iter(0..300)
        .map(|_| hog.open_idle(n1))
        .buffer_unordered(64);
    use libp2p::futures::StreamExt;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        match tokio::time::timeout(Duration::from_millis(500), opening.next()).await {
            Ok(Some(Some(s))) => held_streams.push(s),
            Ok(Some(None)) => {}
            Ok(None) => break,
            Err(_) => {}
        }
    }
    assert!(
        held_streams.len() >= 32,
        "the hog holds {} streams",
        held_streams.len()
    );
    assert!(
        refused(&nodes[1], "stream_limit") > 0,
        "streams beyond the peer's share are refused"
    );
    for _ in 0..5 {
        let t = Instant::now();
        let got = reader.get(n1, &held, 0, 64 << 10).await.expect("served");
        assert_eq!(got.len(), 64 << 10);
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "took {:?}",
            t.elapsed()
        );
    }
    drop(opening);
    drop(held_streams);
}

/// (d) A member's flood of tiny shards stops at its quota, and a 1 M-CID manifest is
/// refused before it is read; aborting gives every byte back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_flood_stops_at_its_quota() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let key = Keypair::generate_ed25519();
    let me = [key.public().to_peer_id().to_string()];
    let extra = format!("{ERASURE}[storage]\npeer_pending_bytes = 8388608\n");
    let nodes = common::cluster_with(tmp.path(), 2, &extra, |_| Vec::new(), &me);
    let target = peer_id(&nodes[0]);
    let flooder = ScriptedPeer::start(key, &[nodes[0].p2p_addr()], Behaviour::Silent).await;
    let (used, shards) = (
        status_u64(&nodes[0], "used_bytes"),
        status_u64(&nodes[0], "shards"),
    );
    let upload = [5; 16];
    let (mut okays, mut over) = (0u32, 0u32);
    for i in 0..10_000u32 {
        let a = flooder.push(target, upload, &i.to_le_bytes()).await;
        match a.status {
            Status::Ok => okays += 1,
            Status::OverQuota => {
                over += 1;
                assert!(a.message.contains("quota"), "{}", a.message);
            }
            s => panic!("unexpected answer {s:?}: {}", a.message),
        }
    }
    assert!(okays > 0 && over > 0, "accepted {okays}, refused {over}");
    assert!(
        u64::from(okays) * 4096 <= 8 << 20,
        "at most the quota is held"
    );
    // A manifest of 1 M CIDs for a session holding one shard: over the quota, refused.
    let layout = Layout::new(1, 1, 4096).expect("layout");
    let first = cid_of(&0u32.to_le_bytes());
    let stripes: Vec<Vec<Cid>> = (0..500_000u32)
        .map(|i| {
            if i == 0 {
                vec![first, cid_of(b"p")]
            } else {
                vec![
                    cid_of(&(2 * i).to_be_bytes()),
                    cid_of(&(2 * i + 1).to_be_bytes()),
                ]
            }
        })
        .collect();
    let huge = manifest(&layout, stripes);
    assert!(huge.len() > 30 << 20, "{} bytes", huge.len());
    let placed: BTreeSet<Cid> = (0..okays).map(|i| cid_of(&i.to_le_bytes())).collect();
    let placed: Vec<Cid> = placed.into_iter().collect();
    let a = flooder.commit(target, upload, &huge, &placed).await;
    assert_eq!(a.status, Status::OverQuota, "{}", a.message);
    assert!(
        nodes[0]
            .json("/v1/checkpoints")
            .as_array()
            .expect("list")
            .is_empty()
    );
    let a = flooder.abort(target, upload).await;
    assert_eq!(a.status, Status::Ok, "{}", a.message);
    eventually(30, "the aborted upload's shards are freed", || {
        let now = (
            status_u64(&nodes[0], "used_bytes"),
            status_u64(&nodes[0], "shards"),
        );
        check(now == (used, shards), || {
            format!("{now:?}, was {:?}", (used, shards))
        })
    });
}

/// (e) A put in which one participant acknowledges without storing, serves garbage or refuses
/// to commit fails loudly: never "stored" with a shard missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lying_participant_fails_the_put_loudly() {
    let _serial = ONE_AT_A_TIME.lock().await;
    for behaviour in [
        Behaviour::AckWithoutStoring,
        Behaviour::ServeGarbage,
        Behaviour::RefuseCommit,
    ] {
        let tmp = tempfile::tempdir().expect("tmp");
        let key = Keypair::generate_ed25519();
        let liar_id = key.public().to_peer_id();
        let nodes = common::cluster_with(
            tmp.path(),
            3,
            ERASURE,
            |_| Vec::new(),
            &[liar_id.to_string()],
        );
        let addrs: Vec<String> = nodes.iter().map(NodeProc::p2p_addr).collect();
        let liar = ScriptedPeer::start(key, &addrs, behaviour).await;
        nodes[0].wait_status(30, |s| s["members"].as_u64() == Some(3));
        let (out, _) = put_file(&nodes[0], tmp.path(), 8 << 20, 6);
        let pushes = liar.seen.lock().expect("seen").pushes;
        assert!(pushes > 0, "{behaviour:?}: the liar was placed on");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "{behaviour:?}: the put must fail, got {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            stderr.contains("placement_failed") && stderr.contains(&liar_id.to_string()),
            "{behaviour:?}: {stderr}"
        );
        assert!(
            nodes[0]
                .json("/v1/checkpoints")
                .as_array()
                .expect("list")
                .is_empty(),
            "{behaviour:?}: the gateway pinned nothing"
        );
    }
}

/// A stripe whose parity does not match its data (a hostile publisher) is refused by the
/// gateway's rebuild: the rebuilt data shard does not hash to its CID, and nothing is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inconsistent_parity_is_never_served() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let key = Keypair::generate_ed25519();
    let me = [key.public().to_peer_id().to_string()];
    let nodes = common::cluster_with(tmp.path(), 3, ERASURE, |_| Vec::new(), &me);
    let addrs: Vec<String> = nodes.iter().map(NodeProc::p2p_addr).collect();
    let publisher = ScriptedPeer::start(key, &addrs, Behaviour::Silent).await;
    // k = 2, m = 2, one 64 KiB stripe: data d0 d1 from one buffer, parity from another.
    let layout = Layout::new(2, 2, 64 << 10).expect("layout");
    let coder = cairn_erasure::Coder::new(&layout);
    let real = bytes(64 << 10, 8);
    let other = bytes(64 << 10, 9);
    assert_ne!(real, other);
    let enc_real = cairn_erasure::encode_stripe(&coder, &layout, real.clone(), Vec::new());
    let enc_other = cairn_erasure::encode_stripe(&coder, &layout, other.clone(), Vec::new());
    let d0 = enc_real.shard(0).to_vec();
    let d1 = enc_real.shard(1).to_vec();
    let p0 = enc_other.shard(2).to_vec();
    let p1 = enc_other.shard(3).to_vec();
    let cids = vec![cid_of(&d0), cid_of(&d1), cid_of(&p0), cid_of(&p1)];
    let m = manifest(&layout, vec![cids.clone()]);
    let root = cairn_erasure::manifest_cid(&m);
    // d0 is stored nowhere; d1, p0, p1 on the three nodes, each committed under the manifest.
    for (i, shard) in [d1, p0, p1].iter().enumerate() {
        let target = peer_id(&nodes[i]);
        let up = [i as u8 + 1; 16];
        let a = publisher.push(target, up, shard).await;
        assert_eq!(a.status, Status::Ok, "{}", a.message);
        let a = publisher.commit(target, up, &m, &[cid_of(shard)]).await;
        assert_eq!(a.status, Status::Ok, "{}", a.message);
    }
    let out = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}"])
        .arg(format!(
            "{}/v1/checkpoints/{root}/files/f.bin",
            nodes[0].url
        ))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("status line");
    assert_eq!(code, "500", "{text}");
    let v: serde_json::Value = serde_json::from_str(body).expect("a JSON error, no data");
    assert_eq!(v["error"]["code"], "unrecoverable", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("does not match its cid"),
        "{v}"
    );
}
