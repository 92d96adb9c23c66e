//! Gas of proofs of storage, measured on a real anvil: per proven sample and per node-epoch,
//! for 1, 10 and 100 deals and for deals of 64 MiB to 64 GiB, under anvil's default rules
//! (with the EIP-7623 calldata floor) and under `--hardfork cancun` (without it).
//!
//! Run: `cargo bench -p cairn-node --bench gas` (also in `ops/bench.sh`).

use alloy::node_bindings::Anvil;
use alloy::primitives::{Address, B256, FixedBytes, U256};
use cairn_node::chain::{CairnStorage, Chain, DeployArgs, ProofChain, provider};
use cairn_proofs::tree::{CHUNK_LEAVES, CHUNK_SIZE, chunk_root};
use cairn_proofs::{Proof, UpperTree, encode_blob, prove};

/// The deployment default, which meets the detection target.
const SAMPLES: u8 = cairn_node::chain::DEFAULT_SAMPLES;
/// Epochs a day at the default epoch length (12-second blocks).
const EPOCHS_PER_DAY: f64 = 86_400.0 / (12.0 * cairn_node::chain::DEFAULT_EPOCH_BLOCKS as f64);
/// Long enough for a case's acceptances to land in one epoch (a node's draw changes only
/// while no proof of it is open).
const EPOCH: u64 = 240;
const EPOCHS_MEASURED: u64 = 3;
const GIB: u64 = 1 << 30;

/// A deal's data: one random 64 KiB chunk repeated (the gas of a proof depends on the tree's
/// depth, not on the bytes, and the leaves stay non-zero like real data).
struct Data {
    chunk: Vec<u8>,
    tree: UpperTree,
}

fn data(bytes: u64) -> Data {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let chunk: Vec<u8> = (0..CHUNK_SIZE)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let root = chunk_root(&chunk);
    let tree = UpperTree::new(vec![root; (bytes / CHUNK_SIZE as u64) as usize]).expect("data");
    Data { chunk, tree }
}

struct Row {
    deals: usize,
    bytes_per_deal: u64,
    gas_per_epoch: f64,
    samples: f64,
    calldata: f64,
}

fn anvil_bin() -> std::path::PathBuf {
    cairn_node::chain::anvil_path().expect("anvil (./ops/install.sh installs it)")
}

async fn measure(hardfork: Option<&str>, cases: &[(usize, u64)]) -> Vec<Row> {
    let mut anvil = Anvil::at(anvil_bin()).arg("--accounts").arg("12");
    if let Some(h) = hardfork {
        anvil = anvil.arg("--hardfork").arg(h);
    }
    let tracing = std::env::var_os("CAIRN_GAS_TRACE").is_some();
    if tracing {
        anvil = anvil.arg("--steps-tracing");
    }
    let anvil = anvil
        .try_spawn()
        .expect("anvil (./ops/install.sh installs it)");
    let key = |i: usize| alloy::hex::encode(anvil.keys()[i].to_bytes());
    let eth = U256::from(10u64).pow(U256::from(18u64));
    let (p, _) = provider(&anvil.endpoint(), &key(0)).expect("provider");
    let contract = Chain::deploy(
        &p,
        DeployArgs {
            min_stake: eth,
            epoch_blocks: EPOCH,
            proof_window: 120,
            unbonding_epochs: 1,
            slash_amount: eth / U256::from(10u64),
            reward_bps: 5000,
            samples: SAMPLES,
            min_escrow: U256::from(1000u64),
            proposal_epochs: 30,
        },
    )
    .await
    .expect("deploy");
    let client = Chain::connect(&anvil.endpoint(), &contract.to_string(), &key(0)).expect("client");
    let k = client.contract();
    let root = B256::repeat_byte(7);
    client
        .send(
            "publish",
            k.publish(root, Address::ZERO, B256::ZERO, B256::ZERO),
        )
        .await
        .expect("publish");
    let mut rows = Vec::new();
    for (n, &(deals, bytes)) in cases.iter().enumerate() {
        // A fresh node per case, holding `deals` deals of `bytes` each.
        let node =
            Chain::connect(&anvil.endpoint(), &contract.to_string(), &key(1 + n)).expect("node");
        let nk = node.contract();
        let peer = B256::with_last_byte(1 + n as u8);
        node.send("register", nk.register(peer).value(eth))
            .await
            .expect("register");
        let d = data(bytes);
        let c = d.tree.commitment();
        let price = alloy::primitives::Uint::<88, 2>::from(1000u64);
        let mut ids = Vec::with_capacity(deals);
        for _ in 0..deals {
            let r = client
                .send(
                    "proposeDeal",
                    k.proposeDeal(
                        node.me(),
                        client.me(),
                        root,
                        FixedBytes(c.root),
                        c.leaf_count,
                        100,
                        price,
                    )
                    .value(U256::from(100_000u64)),
                )
                .await
                .expect("propose");
            let id = r.inner.logs()[0]
                .log_decode::<CairnStorage::DealProposed>()
                .expect("event")
                .inner
                .data
                .id;
            ids.push(id);
        }
        let params = node.params().await.expect("params");
        mine_to(
            &node,
            params.epoch_start(params.epoch_of(node.block_number().await.expect("block")) + 1),
        )
        .await;
        for id in ids {
            node.send("acceptDeal", nk.acceptDeal(id))
                .await
                .expect("accept");
        }
        let (mut gas, mut samples, mut calldata) = (0u64, 0usize, 0usize);
        // One epoch before measuring: the first proof of a node creates its proven-epochs
        // bitmap word (17k gas more, once per 256 epochs).
        let warm = params.epoch_of(node.block_number().await.expect("block")) + 1;
        let first = warm + 1;
        for epoch in warm..first + EPOCHS_MEASURED {
            // Into the epoch's window: its first block's hash is the seed.
            mine_to(&node, params.epoch_start(epoch) + 1).await;
            let mut proofs: Vec<Proof> = Vec::new();
            for j in 0..SAMPLES {
                let ch = nk
                    .challenge(node.me(), epoch, U256::from(j))
                    .call()
                    .await
                    .expect("challenge");
                if ch.dealId.is_zero() {
                    continue;
                }
                debug_assert!(ch.leaf / CHUNK_LEAVES < d.tree.chunks());
                proofs.push(prove(&d.tree, ch.leaf, &d.chunk).expect("prove"));
            }
            let blob = encode_blob(&proofs);
            if epoch == warm {
                node.submit_proofs(epoch, blob).await.expect("proof");
                continue;
            }
            calldata += blob.len();
            samples += proofs.len();
            gas += if tracing && epoch == first + 1 && n == 0 {
                trace(&node, nk.submitProofs(epoch, blob.into())).await
            } else {
                node.submit_proofs(epoch, blob).await.expect("proof")
            };
        }
        rows.push(Row {
            deals,
            bytes_per_deal: bytes,
            gas_per_epoch: gas as f64 / EPOCHS_MEASURED as f64,
            samples: samples as f64 / EPOCHS_MEASURED as f64,
            calldata: calldata as f64 / samples.max(1) as f64,
        });
    }
    rows
}

/// Mine until block `target` is the latest.
async fn mine_to(node: &Chain, target: u64) {
    use alloy::providers::ext::AnvilApi;
    let now = node.block_number().await.expect("block");
    if target > now {
        node.provider()
            .anvil_mine(Some(target - now), None)
            .await
            .expect("mine");
    }
}

/// Send one proof transaction and print where its gas went, by opcode (CAIRN_GAS_TRACE=1);
/// returns its gas.
async fn trace(
    node: &Chain,
    b: alloy::contract::SolCallBuilder<
        &alloy::providers::DynProvider,
        CairnStorage::submitProofsCall,
    >,
) -> u64 {
    use alloy::providers::Provider;
    let r = node.send("submitProofs", b).await.expect("proof");
    let t: serde_json::Value = node
        .provider()
        .raw_request(
            "debug_traceTransaction".into(),
            (r.transaction_hash, serde_json::json!({"disableMemory": true, "disableStack": true, "disableStorage": true})),
        )
        .await
        .expect("trace");
    let mut by_op: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for l in t["structLogs"].as_array().into_iter().flatten() {
        let op = l["op"].as_str().unwrap_or("?").to_owned();
        let cost = l["gasCost"].as_u64().unwrap_or(0);
        let e = by_op.entry(op).or_default();
        e.0 += 1;
        e.1 += cost;
    }
    let mut v: Vec<_> = by_op.into_iter().collect();
    v.sort_by_key(|(_, (_, g))| std::cmp::Reverse(*g));
    println!(
        "trace: gas used {} (execution {}), top opcodes:",
        r.gas_used, t["gas"]
    );
    for (op, (n, g)) in v.iter().take(12) {
        println!("  {op:<14} x{n:<6} {g}");
    }
    r.gas_used
}

fn print(title: &str, rows: &[Row]) {
    println!("\n{title}");
    println!(
        "{:>6} {:>14} {:>16} {:>14} {:>9} {:>16} {:>18}",
        "deals",
        "bytes/deal",
        "gas/node-epoch",
        "gas/node-day",
        "samples",
        "gas/sample",
        "blob bytes/sample"
    );
    for r in rows {
        println!(
            "{:>6} {:>14} {:>16.0} {:>14.0} {:>9.1} {:>16.0} {:>18.0}",
            r.deals,
            human(r.bytes_per_deal),
            r.gas_per_epoch,
            r.gas_per_epoch * EPOCHS_PER_DAY,
            r.samples,
            r.gas_per_epoch / r.samples.max(1.0),
            r.calldata
        );
    }
}

fn human(b: u64) -> String {
    if b >= GIB {
        format!("{} GiB", b / GIB)
    } else {
        format!("{} MiB", b >> 20)
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let by_deals = [(1, GIB), (10, GIB), (100, GIB)];
    let by_size = [(10, 64 << 20), (10, GIB), (10, 64 * GIB)];
    println!(
        "Proof gas on anvil: {SAMPLES} samples per node-epoch ({EPOCHS_PER_DAY} epochs a day), \
         128-byte leaves, 16-byte nodes, mean of {EPOCHS_MEASURED} epochs after a first one"
    );
    for (name, fork) in [
        ("anvil default rules (EIP-7623 calldata floor)", None),
        ("--hardfork cancun", Some("cancun")),
    ] {
        let a = measure(fork, &by_deals).await;
        print(&format!("{name}: by number of deals"), &a);
        let b = measure(fork, &by_size).await;
        print(&format!("{name}: by bytes per deal"), &b);
        if fork.is_none() {
            let worst = a
                .iter()
                .chain(&b)
                .map(|r| r.gas_per_epoch / r.samples.max(1.0))
                .fold(0.0, f64::max);
            println!(
                "target: <= 30000 gas per proven sample under the default rules: worst {worst:.0} ({})",
                if worst <= 30_000.0 { "met" } else { "MISSED" }
            );
        }
    }
}
