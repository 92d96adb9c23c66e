use std::collections::BTreeSet;
use std::sync::Mutex;

use alloy::primitives::{B256, U256};
use cairn_erasure::{Layout, Manifest, ShardMeta};
use cairn_storage::MemBackend;

use super::*;
use crate::chain::deals::held_data;
use crate::chain::{DEAL_ACTIVE, DEAL_PROPOSED, root_word};

/// A node holding one checkpoint; its deal covers every shard.
fn held() -> (Store<MemBackend>, HashMap<u64, HeldDeal>) {
    let store = Store::open(MemBackend::new(), 1 << 30).expect("store");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 31 % 253) as u8).collect();
    let upload = crate::pipeline::Upload::File {
        path: "w.bin".into(),
        reader: &data[..],
    };
    let layout = Layout::new(2, 1, 128 << 10).expect("layout");
    let (root, manifest) =
        crate::pipeline::ingest(&store, layout, upload, "w", &|_| {}).expect("ingest");
    let data = held_data(&store, &root, &manifest).expect("held");
    let c = data.commitment();
    let info = DealInfo {
        id: 7,
        node: Address::ZERO,
        client: Address::ZERO,
        start: 1,
        epochs: 10,
        commitment: c.root,
        leaf_count: c.leaf_count,
        checkpoint: root_word(&root),
        state: DEAL_ACTIVE,
        settled: 0,
        draw_epochs: 10,
        draw_slot: 1,
        proposed_epoch: 0,
        price: U256::from(1),
    };
    let deal = HeldDeal {
        info,
        data: Some(Arc::new(data)),
    };
    (store, HashMap::from([(7, deal)]))
}

#[test]
fn proofs_verify_and_changed_data_sends_nothing() {
    let (store, held) = held();
    let me = Address::repeat_byte(3);
    let w = [held[&7].info.slot_in_draw(4)];
    let proofs = build_epoch_proofs(&store, &held, &[7], &w, &[9; 32], &me, 4, 8).expect("proofs");
    assert_eq!(proofs.len(), 8);
    // Nothing in the draw, or drawn in an epoch the deal no longer runs in (its client
    // terminated it during the epoch): nothing to prove.
    let pruned = [Slot {
        weight: 0,
        drawn: false,
    }];
    let none = build_epoch_proofs(&store, &held, &[7], &pruned, &[9; 32], &me, 4, 8).expect("void");
    assert!(none.is_empty());
    let terminated = [Slot {
        weight: held[&7].info.leaf_count,
        drawn: true,
    }];
    let none =
        build_epoch_proofs(&store, &held, &[7], &terminated, &[9; 32], &me, 11, 8).expect("void");
    assert!(none.is_empty());
    // A deal id this node never took up fails the epoch instead of skipping it.
    assert!(matches!(
        build_epoch_proofs(&store, &held, &[8], &w, &[9; 32], &me, 4, 8),
        Err(ProveEpochError::NotHeld(8))
    ));
    // Flip one byte in every shard: every sample now reads data that fails its hash, and
    // no proof comes out.
    let pieces = held[&7].data.as_ref().expect("data").pieces.clone();
    for p in &pieces {
        assert!(store.backend().flip_blob_byte(&p.cid.to_bytes(), 0));
        for at in (16 << 10..p.len as usize).step_by(16 << 10) {
            store.backend().flip_blob_byte(&p.cid.to_bytes(), at);
        }
    }
    let err = build_epoch_proofs(&store, &held, &[7], &w, &[9; 32], &me, 4, 8)
        .expect_err("corrupt data proves nothing");
    assert!(
        matches!(err, ProveEpochError::Data { deal: 7, .. }),
        "{err}"
    );
}

/// Blocks per epoch of the test chain; proofs are taken up to 3 blocks after its start.
const EPOCH: u64 = 4;

/// A chain in memory that keeps the contract's rules the prover relies on: acceptance
/// starts a deal at the next epoch, every transaction takes a block, proofs are taken in the
/// window only and are checked against the commitments.
#[derive(Clone)]
struct TestChain(Arc<Mutex<ChainState>>);

struct ChainState {
    block: u64,
    deals: Vec<DealInfo>,
    /// Accepted deals, in order of acceptance.
    accepted: Vec<u64>,
    proven: BTreeSet<u64>,
}

const ME: Address = Address::repeat_byte(3);

impl TestChain {
    fn new() -> Self {
        Self(Arc::new(Mutex::new(ChainState {
            block: 1,
            deals: Vec::new(),
            accepted: Vec::new(),
            proven: BTreeSet::new(),
        })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ChainState> {
        self.0.lock().expect("test chain lock")
    }

    fn params() -> Params {
        Params {
            genesis_block: 0,
            epoch_blocks: EPOCH,
            proof_window: EPOCH - 1,
            samples: 8,
            slash_amount: U256::ZERO,
            reward_bps: 0,
            min_stake: U256::ZERO,
            min_escrow: U256::ZERO,
            proposal_epochs: 1_000,
        }
    }

    fn propose(&self, root: &Cid, c: cairn_proofs::Commitment) -> u64 {
        let mut s = self.state();
        let id = s.deals.len() as u64 + 1;
        s.deals.push(DealInfo {
            id,
            node: ME,
            client: Address::ZERO,
            start: 0,
            epochs: 1000,
            commitment: c.root,
            leaf_count: c.leaf_count,
            checkpoint: root_word(root),
            state: DEAL_PROPOSED,
            settled: 0,
            draw_epochs: 0,
            draw_slot: 0,
            proposed_epoch: 0,
            price: U256::from(1),
        });
        id
    }

    fn epoch(&self) -> u64 {
        Self::params().epoch_of(self.state().block)
    }
}

fn no_deal(id: u64) -> ChainError {
    ChainError::Config(format!("no deal {id}"))
}

impl ProofChain for TestChain {
    fn me(&self) -> Address {
        ME
    }
    async fn block_number(&self) -> Result<u64, ChainError> {
        Ok(self.state().block)
    }
    async fn balance(&self) -> Result<U256, ChainError> {
        Ok(U256::ZERO)
    }
    async fn params(&self) -> Result<Params, ChainError> {
        Ok(Self::params())
    }
    async fn epoch_seed(&self, epoch: u64) -> Result<[u8; 32], ChainError> {
        Ok(B256::left_padding_from(&epoch.to_be_bytes()).0)
    }
    async fn deal(&self, id: u64) -> Result<DealInfo, ChainError> {
        let s = self.state();
        let i = id.checked_sub(1).ok_or_else(|| no_deal(id))?;
        s.deals.get(i as usize).cloned().ok_or_else(|| no_deal(id))
    }
    async fn deal_count(&self) -> Result<u64, ChainError> {
        Ok(self.state().deals.len() as u64)
    }
    async fn deals_of(&self, _node: Address) -> Result<Vec<u64>, ChainError> {
        Ok(self.state().accepted.clone())
    }
    async fn is_proven(&self, _node: Address, epoch: u64) -> Result<bool, ChainError> {
        Ok(self.state().proven.contains(&epoch))
    }
    async fn is_slashed(&self, _node: Address, _epoch: u64) -> Result<bool, ChainError> {
        Ok(false)
    }
    async fn accept_deal(&self, id: u64) -> Result<u64, ChainError> {
        let mut s = self.state();
        let start = Self::params().epoch_of(s.block) + 1;
        let slot = s.accepted.len() as u64 + 1;
        let d = &mut s.deals[id as usize - 1];
        assert_eq!(d.state, DEAL_PROPOSED, "deal {id} accepted twice");
        d.state = DEAL_ACTIVE;
        d.start = start;
        d.draw_epochs = d.epochs;
        d.draw_slot = slot;
        s.accepted.push(id);
        s.block += 1;
        Ok(0)
    }
    async fn prune(&self, slots: Vec<u64>) -> Result<u64, ChainError> {
        let mut s = self.state();
        let next = Self::params().epoch_of(s.block) + 1;
        for slot in slots {
            let id = s.accepted[slot as usize - 1];
            let d = &mut s.deals[id as usize - 1];
            if d.prunable(next) {
                d.draw_slot = 0;
            }
        }
        s.block += 1;
        Ok(0)
    }
    async fn submit_proofs(&self, epoch: u64, blob: Vec<u8>) -> Result<u64, ChainError> {
        let mut s = self.state();
        let p = Self::params();
        assert!(
            epoch < p.epoch_of(s.block) + 1 && !p.is_over(epoch, s.block),
            "epoch {epoch} proven at block {}: outside its window",
            s.block
        );
        // The contract's check: a proof per sample on a running deal, each against its
        // deal's commitment.
        let slots: Vec<Slot> = s
            .accepted
            .iter()
            .map(|id| s.deals[*id as usize - 1].slot_in_draw(epoch))
            .collect();
        let seed = B256::left_padding_from(&epoch.to_be_bytes()).0;
        let challenges: Vec<cairn_proofs::Challenge> = (0..p.samples)
            .filter_map(|j| {
                let drawn =
                    draw(&seed, &ME.0.0, epoch, j, &slots).expect("the draw is not exhausted")?;
                let d = &s.deals[s.accepted[drawn.index] as usize - 1];
                d.runs_in(epoch).then_some(cairn_proofs::Challenge {
                    commitment: cairn_proofs::Commitment {
                        root: d.commitment,
                        leaf_count: d.leaf_count,
                    },
                    leaf: drawn.leaf,
                })
            })
            .collect();
        cairn_proofs::verify_blob(&blob, &challenges).expect("the proofs verify");
        s.proven.insert(epoch);
        s.block += 1;
        Ok(0)
    }
    async fn report_missed(&self, _: Address, _: u64, _: u64) -> Result<u64, ChainError> {
        unreachable!("the prover reports nobody")
    }
}

/// A checkpoint of 2+1 stripes of which this node holds shards 0 and 2 of each stripe; the
/// shards 1 are returned to be stored later.
fn partly_held(store: &Store<MemBackend>) -> (Cid, Manifest, Vec<(ShardMeta, Vec<u8>)>) {
    let layout = Layout::new(2, 1, 200_000).expect("layout");
    let data: Vec<u8> = (0..450_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut later = Vec::new();
    let mut session = store.begin_put();
    let upload = crate::pipeline::Upload::File {
        path: "w.bin".into(),
        reader: &data[..],
    };
    let manifest = crate::pipeline::encode(
        layout,
        upload,
        Default::default(),
        &|_| {},
        &mut |enc, _| {
            for (i, meta) in enc.shards.iter().enumerate() {
                if i == 1 {
                    later.push((meta.clone(), enc.shard(i).to_vec()));
                } else {
                    session.put_shard(meta, enc.shard(i))?;
                }
            }
            Ok(())
        },
    )
    .expect("encode");
    let root = session.commit_partial(&manifest, "w", 0).expect("commit");
    (root, manifest, later)
}

/// A node holding part of a checkpoint and a chain with one proposal for that part.
struct One {
    store: Store<MemBackend>,
    root: Cid,
    manifest: Manifest,
    /// The shards of the checkpoint the node does not hold.
    later: Vec<(ShardMeta, Vec<u8>)>,
    c: cairn_proofs::Commitment,
    chain: TestChain,
    id: u64,
}

fn one_proposal() -> One {
    let store = Store::open(MemBackend::new(), 1 << 30).expect("store");
    let (root, manifest, later) = partly_held(&store);
    let c = held_data(&store, &root, &manifest)
        .expect("held")
        .commitment();
    let chain = TestChain::new();
    let id = chain.propose(&root, c);
    One {
        store,
        root,
        manifest,
        later,
        c,
        chain,
        id,
    }
}

async fn prover(chain: &TestChain, store: &Store<MemBackend>) -> Prover<TestChain, MemBackend> {
    Prover::new(
        chain.clone(),
        store.clone(),
        ProofMetrics::default(),
        Duration::from_millis(1),
    )
    .await
    .expect("prover")
}

/// Rounds, one block apart, until the chain reaches `epoch`.
async fn run_to(p: &mut Prover<TestChain, MemBackend>, chain: &TestChain, epoch: u64) {
    while chain.epoch() < epoch {
        p.round().await.expect("round");
        chain.state().block += 1;
    }
}

#[tokio::test]
async fn a_flood_of_proposals_waits_behind_the_proofs_and_is_hashed_once() {
    let One {
        store,
        root,
        c,
        chain,
        ..
    } = one_proposal();
    let mut p = prover(&chain, &store).await;
    run_to(&mut p, &chain, 3).await;
    // Right after epoch e is proven, 50 proposals name this node: 40 for data it holds,
    // 10 whose commitment does not match.
    while !{
        let epoch = chain.epoch();
        chain.state().proven.contains(&epoch)
    } {
        p.round().await.expect("round");
        chain.state().block += 1;
    }
    let e = chain.epoch();
    let wrong = cairn_proofs::Commitment {
        root: [7; 16],
        leaf_count: c.leaf_count,
    };
    for i in 0..50 {
        chain.propose(&root, if i % 5 == 4 { wrong } else { c });
    }
    // Proofs first: every epoch from e on is proven while the proposals are taken up.
    while chain.state().accepted.len() < 41 {
        p.round().await.expect("round");
        chain.state().block += 1;
        assert!(chain.epoch() < e + 100, "proposals not taken up");
    }
    let last = chain.epoch() + 1;
    run_to(&mut p, &chain, last + 1).await;
    let proven = chain.state().proven.clone();
    for epoch in e..=last {
        assert!(
            proven.contains(&epoch),
            "epoch {epoch} not proven: {proven:?}"
        );
    }
    // Every matching proposal was accepted in the end, none of the others; the node's data
    // was read and hashed once for all of them.
    let s = chain.state();
    assert_eq!(s.accepted.len(), 41, "accepted: {:?}", s.accepted);
    assert!(
        s.accepted
            .iter()
            .all(|id| s.deals[*id as usize - 1].commitment == c.root)
    );
    assert_eq!(p.passes, 1);
}

#[tokio::test]
async fn an_accepted_deal_is_proven_as_agreed_after_more_shards_and_a_restart() {
    let One {
        store,
        root,
        manifest,
        later,
        c,
        chain,
        id,
    } = one_proposal();
    let mut p = prover(&chain, &store).await;
    run_to(&mut p, &chain, 4).await;
    assert_eq!(chain.state().accepted, [id]);
    // The shards this node did not hold arrive (a repair, another put of the same data):
    // what it holds of the checkpoint now has another tree.
    let mut session = store.begin_put();
    for (meta, bytes) in &later {
        session.put_shard(meta, bytes).expect("shard");
    }
    session.commit_partial(&manifest, "w", 0).expect("commit");
    let now = held_data(&store, &root, &manifest).expect("held");
    assert_ne!(now.commitment(), c);
    // Restarted, the node proves every following epoch from what it agreed to.
    drop(p);
    let mut p = prover(&chain, &store).await;
    let from = chain.epoch() + 1;
    run_to(&mut p, &chain, from + 4).await;
    let proven = chain.state().proven.clone();
    assert!(
        (from..from + 4).all(|e| proven.contains(&e)),
        "proven: {proven:?}"
    );
    assert_eq!(p.passes, 0, "the agreed data came from its record");
    // Without the record it could not: a node proving what it holds now proves nothing.
    drop(p);
    store.drop_accepted_deal(id).expect("drop");
    let mut p = prover(&chain, &store).await;
    let from = chain.epoch() + 1;
    run_to(&mut p, &chain, from + 2).await;
    let proven = chain.state().proven.clone();
    assert!(!proven.contains(&from), "proven: {proven:?}");
    assert_eq!(p.metrics.corrupt.get(), 1);
}

#[tokio::test]
async fn a_deal_record_goes_when_the_deal_ends() {
    let One {
        store, chain, id, ..
    } = one_proposal();
    chain.state().deals[0].epochs = 2;
    let mut p = prover(&chain, &store).await;
    run_to(&mut p, &chain, 2).await;
    assert!(store.accepted_deal(id).expect("read").is_some());
    let end = {
        let s = chain.state();
        s.deals[0].start + s.deals[0].epochs
    };
    run_to(&mut p, &chain, end + 1).await;
    assert!(store.accepted_deal(id).expect("read").is_none());
    assert!(p.held[&id].data.is_none());
    // Its last epoch proven, it leaves the draw tree.
    assert_eq!(chain.state().deals[0].draw_slot, 0);
}

#[tokio::test]
async fn an_expired_proposal_is_not_taken_up() {
    let One {
        store,
        root,
        c,
        chain,
        id,
        ..
    } = one_proposal();
    // Proposed in epoch 0; now is the first epoch it can no longer be accepted in, and a
    // second proposal of the same data was made in this epoch.
    let expiry = TestChain::params().proposal_epochs;
    chain.state().block = TestChain::params().epoch_start(expiry) + 1;
    let fresh = chain.propose(&root, c);
    chain.state().deals[fresh as usize - 1].proposed_epoch = expiry;
    assert!(
        chain
            .deal(id)
            .await
            .expect("deal")
            .proposal_expired(expiry, expiry)
    );
    let mut p = prover(&chain, &store).await;
    run_to(&mut p, &chain, expiry + 3).await;
    assert_eq!(chain.state().accepted, [fresh], "only the live proposal");
}
