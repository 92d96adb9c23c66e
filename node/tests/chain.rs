//! Proofs of storage end to end: a devnet of node processes with a real anvil chain and the
//! real contract. Nodes accept the deals a put makes, prove every epoch, report each other's
//! missed epochs; a corrupt shard is never proven; lineage comes back from chain.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::rpc::types::{Filter, Log};
use alloy::sol_types::SolEvent;
use cairn_erasure::Manifest;
use cairn_node::chain::{CairnStorage, Chain, ProofChain, peer_word};

const BIN: &str = env!("CARGO_BIN_EXE_cairn");
const NODES: usize = 8;
const EPOCH_BLOCKS: u64 = 4;
/// The dev account after the nodes': a party that is no node (a squatter here).
const OUTSIDER: usize = NODES + 1;

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "command failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn cli(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run cairn")
}

/// Stops the devnet (nodes, anvil) however the test ends.
struct Devnet {
    dir: PathBuf,
    state: serde_json::Value,
}

impl Devnet {
    fn up(dir: &Path) -> Devnet {
        let d = dir.to_str().expect("utf-8 path");
        let out = cli(&[
            "devnet",
            "up",
            "--dir",
            d,
            "--nodes",
            "8",
            "--k",
            "4",
            "--m",
            "2",
            "--stripe-size",
            "4194304",
            "--epoch-blocks",
            "4",
        ]);
        let mut net = Devnet {
            dir: dir.to_owned(),
            state: serde_json::Value::Null,
        };
        ok(out);
        net.state = serde_json::from_slice(&std::fs::read(dir.join("devnet.json")).expect("state"))
            .expect("json");
        net
    }

    fn url(&self, i: usize) -> String {
        self.state["nodes"][i]["http"]
            .as_str()
            .expect("url")
            .to_owned()
    }

    fn pid(&self, i: usize) -> u32 {
        self.state["nodes"][i]["pid"].as_u64().expect("pid") as u32
    }

    fn account(&self, i: usize) -> Address {
        self.state["chain"]["accounts"][i + 1]
            .as_str()
            .expect("account")
            .parse()
            .expect("address")
    }

    /// A chain client with dev account `i`'s key (0: the deployer; node i uses i + 1).
    fn key_chain(&self, i: usize) -> Chain {
        let c = &self.state["chain"];
        Chain::connect(
            c["rpc"].as_str().expect("rpc"),
            c["contract"].as_str().expect("contract"),
            c["keys"][i].as_str().expect("key"),
        )
        .expect("chain client")
    }

    /// A chain client with the deployer's key (it only reads here).
    fn chain(&self) -> Chain {
        self.key_chain(0)
    }

    fn node_index(&self, account: Address) -> usize {
        (0..NODES)
            .find(|&i| self.account(i) == account)
            .expect("a devnet account")
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        if self.dir.join("devnet.json").exists() {
            let _ = cli(&[
                "devnet",
                "down",
                "--dir",
                self.dir.to_str().unwrap_or_default(),
            ]);
        }
    }
}

/// The command that puts through devnet node `i` (naming the root `name`): the CLI finds the
/// node's token through the devnet's state.
fn put_command(
    net: &Devnet,
    i: usize,
    path: &Path,
    parent: Option<&str>,
    name: Option<&str>,
) -> Command {
    let mut c = Command::new(BIN);
    c.args(["--node", &net.url(i), "put", path.to_str().expect("utf-8")]);
    if let Some(p) = parent {
        c.args(["--parent", p]);
    }
    if let Some(n) = name {
        c.args(["--name", n]);
    }
    c.env("CAIRN_DEVNET_DIR", &net.dir);
    c
}

/// Put through devnet node `i`; returns the root and what the CLI reported.
fn put(
    net: &Devnet,
    i: usize,
    path: &Path,
    parent: Option<&str>,
    name: Option<&str>,
) -> (String, String) {
    put_output(
        put_command(net, i, path, parent, name)
            .output()
            .expect("run cairn"),
    )
}

fn put_output(out: Output) -> (String, String) {
    let report = String::from_utf8_lossy(&out.stderr).into_owned();
    (ok(out).trim().to_owned(), report)
}

/// Waits until a `publishWithDeals` transaction is pending (mining is paused) and returns
/// it decoded, with its priority fee and fee cap: what a front-runner reads from the pool.
async fn pending_publish(chain: &Chain) -> (CairnStorage::publishWithDealsCall, u128, u128) {
    use alloy::sol_types::SolCall;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pool: serde_json::Value = chain
            .provider()
            .raw_request("txpool_content".into(), ())
            .await
            .expect("txpool_content");
        let txs = pool["pending"]
            .as_object()
            .into_iter()
            .flat_map(|by_sender| {
                by_sender
                    .values()
                    .filter_map(|n| n.as_object())
                    .flat_map(|n| n.values())
            });
        for tx in txs {
            let input = tx["input"].as_str().unwrap_or_default();
            let Ok(bytes) = alloy::hex::decode(input) else {
                continue;
            };
            if let Ok(call) = CairnStorage::publishWithDealsCall::abi_decode(&bytes) {
                let fee = |k: &str| {
                    u128::from_str_radix(tx[k].as_str().expect("fee").trim_start_matches("0x"), 16)
                        .expect("hex fee")
                };
                return (call, fee("maxPriorityFeePerGas"), fee("maxFeePerGas"));
            }
        }
        assert!(Instant::now() < deadline, "no publishWithDeals in the pool");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stops (0) or restarts (seconds per block) anvil's interval mining.
async fn interval_mining(chain: &Chain, seconds: u64) {
    let _: serde_json::Value = chain
        .provider()
        .raw_request("anvil_setIntervalMining".into(), (seconds,))
        .await
        .expect("anvil_setIntervalMining");
}

async fn manifest_of(url: &str, root: &str) -> Manifest {
    let bytes = reqwest::Client::new()
        .get(format!("{url}/v1/checkpoints/{root}"))
        .header("accept", "application/vnd.ipld.dag-cbor")
        .send()
        .await
        .expect("manifest")
        .bytes()
        .await
        .expect("body");
    Manifest::decode(&bytes).expect("manifest decodes")
}

async fn holds(url: &str, shard: &str) -> bool {
    let v: serde_json::Value = reqwest::get(format!("{url}/v1/shards/{shard}"))
        .await
        .expect("shard status")
        .json()
        .await
        .expect("json");
    v["status"] == "ok"
}

async fn metric(url: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from {url}/metrics"))
}

async fn logs<E: SolEvent>(chain: &Chain, from: u64) -> Vec<(Log, E)> {
    let filter = Filter::new()
        .address(*chain.contract().address())
        .event_signature(E::SIGNATURE_HASH)
        .from_block(from);
    chain
        .provider()
        .get_logs(&filter)
        .await
        .expect("logs")
        .into_iter()
        .map(|l| {
            let e = E::decode_log_data(l.data()).expect("event decodes");
            (l, e)
        })
        .collect()
}

async fn wait_block(chain: &Chain, block: u64) {
    let deadline = Instant::now()
        + Duration::from_secs(
            block.saturating_sub(chain.block_number().await.expect("block")) * 3 + 30,
        );
    while chain.block_number().await.expect("block") < block {
        assert!(
            Instant::now() < deadline,
            "the chain stopped before block {block}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The one devnet test (a devnet takes a while to start): acceptance points 1, 2, 3 and 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storing_nodes_prove_every_epoch_and_missed_epochs_are_slashed() {
    let tmp = tempfile::tempdir().expect("tmp");
    let net = Devnet::up(&tmp.path().join("devnet"));
    let chain = net.chain();
    let params = chain.params().await.expect("params");
    assert_eq!(params.epoch_blocks, EPOCH_BLOCKS);

    // Every node registered its libp2p identity: its peer id names its account, a member.
    let now = chain.block_number().await.expect("block");
    let changed = chain
        .registry_changes(params.genesis_block, now)
        .await
        .expect("registry changes");
    let mut peer_ids = Vec::new();
    for i in 0..NODES {
        let status: serde_json::Value = reqwest::get(format!("{}/v1/status", net.url(i)))
            .await
            .expect("status")
            .json()
            .await
            .expect("json");
        let id: libp2p::PeerId = status["peer_id"]
            .as_str()
            .expect("peer id")
            .parse()
            .expect("a peer id");
        peer_ids.push(id);
        let word = peer_word(&id);
        let m = chain
            .contract()
            .memberOfPeer(word)
            .call()
            .await
            .expect("memberOfPeer");
        assert_eq!((m.account, m.member), (net.account(i), true), "node {i}");
        assert_eq!(
            chain.member_entry(net.account(i)).await.expect("entry"),
            (word, true)
        );
        assert!(changed.contains(&net.account(i)), "node {i} registered");
    }

    // A base checkpoint (a real model folder), a fine-tune of it (one small file: one stripe,
    // one shard per storing node) and a fine-tune of that.
    let base_dir = tmp.path().join("base");
    cairn_node::sample::write_sample(&base_dir, 24 << 20, 11).expect("sample");
    let ft_file = tmp.path().join("ft1.safetensors");
    std::fs::write(
        &ft_file,
        (0..3_000_000u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .expect("ft1");
    let ft2_file = tmp.path().join("ft2.safetensors");
    std::fs::write(
        &ft2_file,
        (0..1_000_000u32)
            .map(|i| (i % 241) as u8)
            .collect::<Vec<_>>(),
    )
    .expect("ft2");
    let gateway = net.url(0);
    let first_block = chain.block_number().await.expect("block");
    // An outsider claims an org first; a put naming something under it still records the
    // checkpoint and makes its deals, without the name, and says so.
    let outsider = net.key_chain(OUTSIDER);
    let own_root = alloy::primitives::B256::repeat_byte(0x42);
    let ok_ = outsider.contract();
    outsider
        .send(
            "publish",
            ok_.publish(
                own_root,
                Address::ZERO,
                alloy::primitives::B256::ZERO,
                alloy::primitives::B256::ZERO,
            ),
        )
        .await
        .expect("the outsider's own record");
    outsider
        .send("setName", ok_.setName("cairn-taken/x".into(), own_root))
        .await
        .expect("the outsider claims the org");
    let (base, report) = put(&net, 0, &base_dir, None, Some("cairn-taken/base"));
    assert!(
        report.contains("chain: provenance recorded, ")
            && !report.contains("name revision")
            && report.contains("name \"cairn-taken/base\" not recorded on chain")
            && !report.contains("error"),
        "{report}"
    );
    // Squatting (issue 12): while the fine-tune's put waits to be mined, an outsider reads
    // its root from the pool (storing nodes have it from the manifest too) and records it
    // first, as a base of its own, paying more to be ordered first. The real put still
    // records its own provenance (with its parent), names it, and makes its deals.
    interval_mining(&chain, 0).await;
    let running = put_command(&net, 0, &ft_file, Some(&base), Some("cairn-test/tiny"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run cairn");
    let (seen, tip, cap) = pending_publish(&chain).await;
    let squat = outsider
        .contract()
        .publish(
            seen.p.root,
            Address::ZERO,
            alloy::primitives::B256::ZERO,
            alloy::primitives::B256::ZERO,
        )
        .max_priority_fee_per_gas(tip + 1_000_000_000)
        .max_fee_per_gas(cap + 2_000_000_000)
        .send()
        .await
        .expect("the outsider sends its record");
    interval_mining(&chain, 1).await;
    let squat = squat.get_receipt().await.expect("receipt");
    assert!(squat.status(), "the outsider's record is mined");
    let (ft1, report) = put_output(running.wait_with_output().expect("put"));
    assert_eq!(
        cairn_node::chain::root_word(&ft1.parse().expect("cid")),
        seen.p.root
    );
    let real = chain
        .record(net.account(0), seen.p.root)
        .await
        .expect("record")
        .expect("the gateway's record");
    let order: Vec<Address> = logs::<CairnStorage::Published>(&chain, first_block)
        .await
        .into_iter()
        .filter(|(_, e)| e.root == seen.p.root)
        .map(|(_, e)| e.publisher)
        .collect();
    assert_eq!(
        order,
        [net.account(OUTSIDER - 1), net.account(0)],
        "the outsider recorded the root first"
    );
    assert!(squat.block_number.expect("block") <= real.block);
    assert!(
        report.contains("chain: provenance recorded, name revision 1, ")
            && !report.contains(", 0 deals proposed")
            && !report.contains("error"),
        "{report}"
    );
    let (ft2, report) = put(&net, 0, &ft2_file, Some(&ft1), Some("cairn-test/tiny"));
    assert!(report.contains("name revision 2"), "{report}");

    // 5. The lineage of the newest fine-tune goes back to the base, every step the gateway's
    // own record; the outsider's record of ft1 is a base of its own, shown only when asked.
    let gateway_account = net.account(0).to_string();
    let log = ok(cli(&[
        "--node",
        &net.url(3),
        "log",
        &ft2,
        "--publisher",
        &gateway_account,
    ]));
    let order: Vec<&str> = log
        .lines()
        .filter(|l| {
            !l.trim_start().starts_with("published") && !l.trim_start().starts_with("parent")
        })
        .map(|l| l.split_whitespace().next().expect("root"))
        .collect();
    assert_eq!(
        order,
        [ft2.as_str(), ft1.as_str(), base.as_str()],
        "lineage:\n{log}"
    );
    assert!(log.contains("(base)"), "{log}");
    assert_eq!(
        log.matches(&format!("published by {gateway_account}"))
            .count(),
        3,
        "{log}"
    );
    let theirs = ok(cli(&[
        "--node",
        &gateway,
        "log",
        &ft1,
        "--publisher",
        &net.account(OUTSIDER - 1).to_string(),
    ]));
    assert_eq!(
        theirs.lines().next(),
        Some(format!("{ft1} (base)").as_str()),
        "{theirs}"
    );
    // The name's revisions, newest first, read from chain by any node.
    let names = ok(cli(&["--node", &net.url(5), "log", "cairn-test/tiny"]));
    let revisions: Vec<&str> = names
        .lines()
        .filter(|l| l.starts_with("revision"))
        .collect();
    assert_eq!(
        revisions,
        [format!("revision 2  {ft2}"), format!("revision 1  {ft1}")],
        "{names}"
    );
    assert!(
        names.starts_with(&format!(
            "cairn-test/tiny (owned by {gateway_account}, 2 revisions)"
        )),
        "{names}"
    );
    // A node that never named it serves it on its HF endpoint, resolved through the chain.
    let info: serde_json::Value =
        reqwest::get(format!("{}/hf/api/models/cairn-test/tiny", net.url(5)))
            .await
            .expect("hf info")
            .json()
            .await
            .expect("json");
    let ft2_cid: cairn_erasure::Cid = ft2.parse().expect("cid");
    assert_eq!(
        info["sha"].as_str(),
        Some(cairn_node::api::hf::paths::commit_id(&ft2_cid).as_str()),
        "{info}"
    );

    // Every storing node accepts its deals (it checks the commitment against its shards).
    let proposed = logs::<CairnStorage::DealProposed>(&chain, first_block).await;
    assert!(
        proposed.len() >= 3 * 6,
        "deals proposed: {}",
        proposed.len()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let deals = loop {
        let mut all = Vec::new();
        for (_, p) in &proposed {
            all.push(chain.deal(p.id.to::<u64>()).await.expect("deal"));
        }
        if all.iter().all(|d| d.state == 2) {
            break all;
        }
        assert!(
            Instant::now() < deadline,
            "deals not accepted: {:?}",
            all.iter().filter(|d| d.state != 2).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let storing: BTreeSet<Address> = deals.iter().map(|d| d.node).collect();
    assert!(
        storing.len() >= 6,
        "deals spread over {} nodes",
        storing.len()
    );

    // 1. Five epochs in which every storing node has running deals: each proves each one.
    let first = deals.iter().map(|d| d.start).max().expect("deals");
    let last = first + 4;
    wait_block(&chain, params.epoch_start(last + 1) + 1).await;
    let proven = logs::<CairnStorage::EpochProven>(&chain, first_block).await;
    let mut per_node: BTreeMap<Address, BTreeSet<u64>> = BTreeMap::new();
    for (_, e) in &proven {
        per_node.entry(e.node).or_default().insert(e.epoch);
    }
    for node in &storing {
        let epochs = per_node.get(node).cloned().unwrap_or_default();
        for e in first..=last {
            assert!(
                epochs.contains(&e),
                "node {} did not prove epoch {e}: proved {epochs:?}",
                net.node_index(*node)
            );
        }
    }
    let slashed_before = logs::<CairnStorage::Slashed>(&chain, first_block).await;
    assert!(
        slashed_before.is_empty(),
        "missed epochs while all nodes run: {slashed_before:?}"
    );

    // Issue 12, griefing: right after a storing node proves an epoch, 50 proposals name it
    // (anyone may propose; 40 match what it holds, 10 do not). It still proves the following
    // epochs: acceptances wait behind its proofs, and one pass over its shards serves every
    // proposal for the same checkpoint.
    let target = deals
        .iter()
        .find(|d| d.node == net.account(0))
        .unwrap_or(&deals[0])
        .clone();
    let flooded = net.node_index(target.node);
    let proven_epoch = loop {
        let epoch = params.epoch_of(chain.block_number().await.expect("block"));
        let proven = logs::<CairnStorage::EpochProven>(&chain, params.epoch_start(epoch)).await;
        if proven
            .iter()
            .any(|(_, p)| p.node == target.node && p.epoch == epoch)
        {
            break epoch;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Each proposal escrows the contract's minimum: a flood costs its sender.
    let flood_epochs = 1000u32;
    let per_epoch = params.min_escrow / U256::from(flood_epochs);
    let price = alloy::primitives::Uint::<88, 2>::from(per_epoch.to::<u128>());
    let mut pending = Vec::new();
    for i in 0..50 {
        let commitment = if i % 5 == 4 {
            [0x77; 16]
        } else {
            target.commitment
        };
        let call = chain
            .contract()
            .proposeDeal(
                target.node,
                net.account(0),
                target.checkpoint,
                alloy::primitives::FixedBytes(commitment),
                target.leaf_count,
                flood_epochs,
                price,
            )
            .value(per_epoch * U256::from(flood_epochs));
        pending.push(call.send().await.expect("propose"));
    }
    let mut flood = Vec::new();
    for p in pending {
        let receipt = p.get_receipt().await.expect("receipt");
        assert!(receipt.status(), "a proposal reverted");
        let proposed = receipt
            .decoded_log::<CairnStorage::DealProposed>()
            .expect("a DealProposed event");
        flood.push(proposed.data.id.to::<u64>());
    }
    wait_block(&chain, params.epoch_start(proven_epoch + 4) + 1).await;
    let proven = logs::<CairnStorage::EpochProven>(&chain, params.epoch_start(proven_epoch)).await;
    for e in proven_epoch + 1..=proven_epoch + 3 {
        assert!(
            proven
                .iter()
                .any(|(_, p)| p.node == target.node && p.epoch == e),
            "node {flooded} did not prove epoch {e} after the flood"
        );
    }
    let mut accepted = 0;
    for id in &flood {
        let d = chain.deal(*id).await.expect("deal");
        if d.state == 2 {
            assert_eq!(d.commitment, target.commitment, "deal {id} does not match");
            accepted += 1;
        }
    }
    assert!(accepted > 0, "none of the flood was taken up");

    // 3. Corrupt the ft1 shard of one storing node (not the gateway): it must not prove from
    // it, and the epoch gets reported.
    let ft1_manifest = manifest_of(&gateway, &ft1).await;
    let mut corrupt_at = None;
    for cid in ft1_manifest.shard_cids() {
        for i in (1..NODES).filter(|&i| i != flooded) {
            if holds(&net.url(i), &cid.to_string()).await {
                corrupt_at = Some((i, *cid));
            }
        }
    }
    let (bad, shard) = corrupt_at.expect("ft1 is stored outside the gateway");
    let file_name: String = shard
        .to_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let node_dir = PathBuf::from(net.state["nodes"][bad]["dir"].as_str().expect("dir"));
    let file = walk(&node_dir)
        .into_iter()
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy() == file_name)
        })
        .expect("the shard's file");
    let len = std::fs::metadata(&file).expect("meta").len() as usize;
    std::fs::write(&file, vec![0x5a; len]).expect("corrupt");

    // 2. Stop another storing node.
    let stopped = (1..NODES)
        .find(|&i| i != bad && i != flooded && storing.contains(&net.account(i)))
        .expect("another storing node");
    let stopped_account = net.account(stopped);
    // Balances are read at the block the slash logs are counted from, so that a slash mined
    // while they are read is not counted twice.
    let stop_block = chain.block_number().await.expect("block");
    let c = chain.contract();
    let stake_before = c
        .nodes(stopped_account)
        .call()
        .block(stop_block.into())
        .await
        .expect("stake")
        .stake;
    let owed_before: Vec<U256> = {
        let mut v = Vec::new();
        for i in 0..NODES {
            v.push(
                c.owed(net.account(i))
                    .call()
                    .block(stop_block.into())
                    .await
                    .expect("owed"),
            );
        }
        v
    };
    let _ = Command::new("kill")
        .args(["-KILL", &net.pid(stopped).to_string()])
        .status();
    let stop_epoch = params.epoch_of(stop_block);

    // The stopped node's first missed epoch is reported within two epochs; the corrupt node's
    // failing epoch too.
    let deadline = Instant::now() + Duration::from_secs(EPOCH_BLOCKS * 12 + 60);
    let (stopped_slash, bad_slash) = loop {
        let slashed = logs::<CairnStorage::Slashed>(&chain, stop_block).await;
        let of = |a: Address| slashed.iter().find(|(_, e)| e.node == a).cloned();
        if let (Some(s), Some(b)) = (of(stopped_account), of(net.account(bad))) {
            break (s, b);
        }
        assert!(Instant::now() < deadline, "no report yet: {slashed:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let missed = stopped_slash.1.epoch;
    assert!(
        missed >= stop_epoch,
        "slashed for epoch {missed}, stopped in {stop_epoch}"
    );
    assert!(
        !chain
            .is_proven(stopped_account, missed)
            .await
            .expect("proven")
    );
    let reported_in = stopped_slash.0.block_number.expect("mined");
    assert!(
        reported_in <= params.epoch_start(missed + 2),
        "epoch {missed} reported in block {reported_in}, after epoch {}",
        missed + 2
    );
    assert_ne!(stopped_slash.1.reporter, stopped_account);
    assert_eq!(stopped_slash.1.amount, params.slash_amount);

    // Stake down by the slash amount per reported epoch; reporters up by their rewards (and
    // the publisher, the deals' client, by the rest), read at one block.
    let at = chain.block_number().await.expect("block");
    let slashed = logs::<CairnStorage::Slashed>(&chain, stop_block).await;
    let slashed: Vec<_> = slashed
        .into_iter()
        .filter(|(l, _)| l.block_number.is_some_and(|b| b <= at))
        .collect();
    let node_at = c
        .nodes(stopped_account)
        .call()
        .block(at.into())
        .await
        .expect("node");
    let times = slashed
        .iter()
        .filter(|(_, e)| e.node == stopped_account)
        .count();
    assert_eq!(
        U256::from(stake_before - node_at.stake),
        params.slash_amount * U256::from(times)
    );
    let publisher = net.account(0);
    // The nodes settle and withdraw by themselves meanwhile: their settlements credit the
    // deals' nodes (and clients, for unproven epochs), their withdrawals take credit out.
    let within = |l: &Log| l.block_number.is_some_and(|b| b > stop_block && b <= at);
    let mut settled_credit: BTreeMap<Address, U256> = BTreeMap::new();
    for (l, e) in logs::<CairnStorage::DealSettled>(&chain, stop_block).await {
        if !within(&l) {
            continue;
        }
        let d = chain.deal(e.id.to()).await.expect("deal");
        *settled_credit.entry(d.node).or_default() += U256::from(e.paidEpochs) * d.price;
        *settled_credit.entry(d.client).or_default() += U256::from(e.refundedEpochs) * d.price;
    }
    let mut withdrawn_by: BTreeMap<Address, U256> = BTreeMap::new();
    for (l, e) in logs::<CairnStorage::Withdrawn>(&chain, stop_block).await {
        if within(&l) {
            *withdrawn_by.entry(e.account).or_default() += e.amount;
        }
    }
    for (i, before) in owed_before.iter().enumerate() {
        let a = net.account(i);
        let mut expected = settled_credit.get(&a).copied().unwrap_or_default();
        for (_, e) in &slashed {
            if e.reporter == a {
                expected += e.reward;
            }
            if publisher == a {
                expected += e.amount - e.reward;
            }
        }
        let owed = c.owed(a).call().block(at.into()).await.expect("owed");
        let out = withdrawn_by.get(&a).copied().unwrap_or_default();
        assert_eq!(owed + out - *before, expected, "node {i}'s credit");
    }
    let reporter = net.node_index(stopped_slash.1.reporter);
    // The reporter counts the report once its own receipt poll sees it mined, which may come
    // after the log is visible here.
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&net.url(reporter), "cairn_proof_missed_reported_total").await < 1.0 {
        assert!(
            Instant::now() < deadline,
            "node {reporter} never counted its mined report"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(metric(&net.url(reporter), "cairn_chain_balance_gwei").await > 0.0);

    // The chain's jobs run as the node's workers: listed with their rounds and progress, and
    // their rounds counted in the job metrics.
    let jobs: serde_json::Value = reqwest::get(format!("{}/v1/jobs", net.url(reporter)))
        .await
        .expect("jobs")
        .json()
        .await
        .expect("json");
    for name in ["prover", "watcher", "registry"] {
        let job = jobs
            .as_array()
            .expect("a list of jobs")
            .iter()
            .find(|j| j["name"] == name)
            .unwrap_or_else(|| panic!("job {name} not listed: {jobs}"));
        assert!(job["steps"].as_u64() > Some(5), "{job}");
        assert_ne!(job["state"], "stopped", "{job}");
        assert!(
            job["progress"].as_str().is_some_and(|p| !p.is_empty()),
            "{job}"
        );
        let steps = metric(
            &net.url(reporter),
            &format!("cairn_job_steps_total{{job=\"{name}\"}}"),
        )
        .await;
        assert!(steps > 5.0, "{name}: {steps} steps counted");
    }

    // The corrupt node never sent a proof that failed: it counted the corruption instead (it
    // may have been slashed for an earlier late epoch before it met the corruption).
    let bad_url = net.url(bad);
    let log_file = node_dir.join("node.log");
    let deadline = Instant::now() + Duration::from_secs(EPOCH_BLOCKS * 12 + 60);
    let log = loop {
        let log = std::fs::read_to_string(&log_file).expect("node log");
        if metric(&bad_url, "cairn_proof_corrupt_data_total").await >= 1.0
            && log.contains("no proof sent")
        {
            break log;
        }
        assert!(
            Instant::now() < deadline,
            "the node did not count and log the corruption:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // A refused send is counted whatever the reason (a late one too, on a loaded machine):
    // what must never happen is a proof the contract finds wrong.
    assert!(
        !log.contains("BadProof") && !log.contains("MalformedProof"),
        "the corrupt node sent a wrong proof:\n{log}"
    );
    assert!(
        !chain
            .is_proven(net.account(bad), bad_slash.1.epoch)
            .await
            .expect("proven")
    );

    // Reports without waste: after a few more missed epochs, not one report was mined and
    // reverted (seven watchers see each missed epoch; one reports it), and each node's count
    // of its reverted transactions agrees with the chain.
    let deadline = Instant::now() + Duration::from_secs(EPOCH_BLOCKS * 12 + 60);
    loop {
        let slashed = logs::<CairnStorage::Slashed>(&chain, stop_block).await;
        if slashed
            .iter()
            .filter(|(_, e)| e.node == stopped_account)
            .count()
            >= 3
        {
            break;
        }
        assert!(Instant::now() < deadline, "too few reports: {slashed:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let until = chain.block_number().await.expect("block");
    let mut reverted: BTreeMap<Address, Vec<[u8; 4]>> = BTreeMap::new();
    for b in stop_block..=until {
        let receipts = chain
            .provider()
            .get_block_receipts(b.into())
            .await
            .expect("receipts")
            .unwrap_or_default();
        for r in receipts.iter().filter(|r| !r.status()) {
            let tx = chain
                .provider()
                .get_transaction_by_hash(r.transaction_hash)
                .await
                .expect("tx")
                .expect("a mined tx");
            let input = alloy::consensus::Transaction::input(&tx);
            let selector: [u8; 4] = input[..4].try_into().expect("a call");
            reverted.entry(r.from).or_default().push(selector);
        }
    }
    // No transaction of any node reverted: reports, proofs, acceptances, settlements,
    // withdrawals (each is pre-flighted and sent only when it would go through).
    assert!(
        reverted.is_empty(),
        "transactions mined and reverted between blocks {stop_block} and {until}: {reverted:?}"
    );
    for i in (0..NODES).filter(|&i| i != stopped) {
        let counted = metric(&net.url(i), "cairn_chain_reverted_transactions_total").await;
        let on_chain = reverted.get(&net.account(i)).map_or(0, Vec::len);
        // The node's count may include transactions before `stop_block`, never fewer.
        assert!(
            counted >= on_chain as f64,
            "node {i} counted {counted} reverted transactions, the chain shows {on_chain}"
        );
    }

    // Money moves by itself: nobody here calls `settle` or `withdraw`, yet the nodes settled
    // their deals' proven epochs and withdrew what they were owed (none reverted: above).
    let settled = logs::<CairnStorage::DealSettled>(&chain, first_block).await;
    assert!(
        settled.iter().any(|(_, s)| s.paidEpochs > 0),
        "no deal settled: {settled:?}"
    );
    let withdrawn = logs::<CairnStorage::Withdrawn>(&chain, first_block).await;
    assert!(
        withdrawn.iter().any(|(_, w)| storing.contains(&w.account)),
        "no storing node withdrew: {withdrawn:?}"
    );
    assert!(metric(&net.url(flooded), "cairn_chain_settlements_total").await >= 1.0);

    // `cairn wallet` shows it: the node's deals (settled in part by now), its stake and
    // credits; the gateway's escrow as the client of every deal.
    let before = chain.deals_of(target.node).await.expect("deals").len();
    let out = ok(Command::new(BIN)
        .args(["--node", &net.url(flooded), "wallet"])
        .output()
        .expect("run cairn"));
    let w: cairn_node::chain::wallet::Wallet =
        reqwest::get(format!("{}/v1/wallet", net.url(flooded)))
            .await
            .expect("wallet")
            .json()
            .await
            .expect("json");
    let after = chain.deals_of(target.node).await.expect("deals").len();
    assert_eq!(w.account, target.node.to_string());
    assert!(w.registered && w.stake_wei != "0", "{w:?}");
    assert!(
        (before..=after).contains(&w.node_deals.len()),
        "{} deals shown, {before}..{after} on chain",
        w.node_deals.len()
    );
    assert!(w.node_deals.iter().all(|d| d.settled <= d.epochs));
    assert!(w.node_deals.iter().any(|d| d.settled > 0), "{w:?}");
    assert!(
        out.contains(&w.account) && out.contains("deals accepted"),
        "{out}"
    );
    let gw: cairn_node::chain::wallet::Wallet = reqwest::get(format!("{gateway}/v1/wallet"))
        .await
        .expect("wallet")
        .json()
        .await
        .expect("json");
    assert!(
        gw.client_deals_open >= 3 && gw.client_escrow_wei != "0",
        "{gw:?}"
    );

    // Cluster-wide delete of ft2, whose publisher is the gateway (node 0).
    let ft2_cid = cairn_erasure::parse_cid(&ft2).expect("cid");
    let ft2_word = cairn_node::chain::root_word(&ft2_cid);
    let ft2_deals: Vec<_> = deals
        .iter()
        .filter(|d| d.checkpoint == ft2_word)
        .cloned()
        .collect();
    let live = |i: usize| i != stopped;
    let holder = (1..NODES)
        .find(|&i| live(i) && i != bad && ft2_deals.iter().any(|d| d.node == net.account(i)))
        .expect("a live node under a deal on ft2");
    let rm = |node: usize, extra: &[&str]| {
        let url = net.url(node);
        let mut args = vec!["--node", url.as_str(), "rm", ft2.as_str()];
        args.extend_from_slice(extra);
        Command::new(BIN)
            .args(&args)
            .env("CAIRN_DEVNET_DIR", &net.dir)
            // Its per-node lines are read below: no backtrace of the final error among them.
            .env("RUST_BACKTRACE", "0")
            .output()
            .expect("run cairn")
    };
    // A holder refuses a local unpin of data under its running deal, and says why.
    let out = rm(holder, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a local unpin under a deal went through"
    );
    assert!(
        err.contains("deal_running") && err.contains("runs until epoch"),
        "{err}"
    );
    // Nobody but the publisher deletes it from the network.
    let out = rm(holder, &["--network"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a non-publisher deleted ft2");
    assert!(err.contains("not_publisher"), "{err}");
    let ft2_manifest = manifest_of(&gateway, &ft2).await;
    let mut kept = false;
    for cid in ft2_manifest.shard_cids() {
        kept |= holds(&net.url(holder), &cid.to_string()).await;
    }
    assert!(kept, "a refused unpin freed the holder's shards of ft2");
    // The publisher: its deals on ft2 end with a refund, every live holder frees its shards;
    // only the stopped node cannot answer.
    let delete_block = chain.block_number().await.expect("block");
    let out = rm(0, &["--network"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains(&format!("deleted {ft2} from the network")),
        "{stdout}\n{stderr}"
    );
    for line in stderr.lines().filter(|l| l.starts_with("  ")) {
        assert!(
            line.contains(&peer_ids[stopped].to_string()),
            "a live node did not delete ft2: {line}"
        );
    }
    for i in (0..NODES).filter(|&i| live(i)) {
        for cid in ft2_manifest.shard_cids() {
            assert!(
                !holds(&net.url(i), &cid.to_string()).await,
                "node {i} still holds shard {cid} of the deleted checkpoint"
            );
        }
    }
    let terminated = logs::<CairnStorage::DealTerminated>(&chain, delete_block).await;
    let now = params.epoch_of(chain.block_number().await.expect("block"));
    for d in &ft2_deals {
        let after = chain.deal(d.id).await.expect("deal");
        assert!(!after.runs_in(now), "deal {} still runs", d.id);
        let t = terminated
            .iter()
            .find(|(_, e)| e.id.to::<u64>() == d.id)
            .unwrap_or_else(|| panic!("deal {} was not terminated", d.id));
        assert!(t.1.refund > U256::ZERO, "deal {} refunded nothing", d.id);
    }
    // The holders prove on without the deleted data: none of them is slashed for it.
    wait_block(
        &chain,
        params.epoch_start(now + 2) + params.proof_window + 1,
    )
    .await;
    let slashed = logs::<CairnStorage::Slashed>(&chain, delete_block).await;
    for (_, e) in &slashed {
        let i = net.node_index(e.node);
        assert!(
            i == stopped || i == bad,
            "node {i} was slashed after the delete (epoch {})",
            e.epoch
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
