//! The CairnStorage contract's rules, each against a real anvil: registry and unbonding,
//! peer-id binding and membership, registry reads, provenance, deals, challenges and proofs
//! (built by `cairn-proofs`), payment per proven epoch, missed-epoch slashing, every custom
//! error, reentrancy, and the accounting invariant after a random sequence of operations.

use alloy::node_bindings::{Anvil, AnvilInstance};
use alloy::primitives::{Address, B256, Bytes, FixedBytes, U256};
use alloy::providers::Provider;
use alloy::providers::ext::AnvilApi;
use alloy::sol_types::{SolCall, SolError};
use cairn_node::chain::{
    CairnStorage, Chain, ChainError, DeployArgs, ProofChain, peer_word, provenance, provider,
};
use cairn_proofs::tree::{CHUNK_LEAVES, CHUNK_SIZE, shard_chunk_roots};
use cairn_proofs::{Commitment, Proof, UpperTree, encode_blob, prove};

mod attacker {
    alloy::sol!(
        #[sol(rpc)]
        #[derive(Debug)]
        Attacker,
        "../proofs/artifacts/Attacker.json"
    );
}
use attacker::Attacker;

const EPOCH: u64 = 10;
const WINDOW: u64 = 5;
const UNBONDING: u64 = 2;
const SAMPLES: u8 = 4;
/// Least escrow of a proposal, in wei.
const MIN_ESCROW: u64 = 100;
const PROPOSAL_EPOCHS: u64 = 6;

fn eth(n: u64) -> U256 {
    U256::from(n) * U256::from(10u64).pow(U256::from(18u64))
}

fn slash() -> U256 {
    eth(1) / U256::from(10u64)
}

fn anvil_bin() -> std::path::PathBuf {
    cairn_node::chain::anvil_path().expect("anvil (./ops/install.sh installs it)")
}

/// A fresh chain (mining only when asked) with the contract deployed by account 0.
struct Env {
    anvil: AnvilInstance,
    contract: Address,
}

impl Env {
    async fn new() -> Env {
        Self::with(DeployArgs {
            min_stake: eth(1),
            epoch_blocks: EPOCH,
            proof_window: WINDOW,
            unbonding_epochs: UNBONDING,
            slash_amount: slash(),
            reward_bps: 2500,
            samples: SAMPLES,
            min_escrow: U256::from(MIN_ESCROW),
            proposal_epochs: PROPOSAL_EPOCHS,
        })
        .await
        .expect("deploy")
    }

    async fn with(args: DeployArgs) -> Result<Env, ChainError> {
        let anvil = Anvil::at(anvil_bin())
            .arg("--accounts")
            .arg("12")
            .try_spawn()
            .expect("anvil starts (./ops/install.sh installs it)");
        let (p, _) = provider(&anvil.endpoint(), &key_hex(&anvil, 0)).expect("provider");
        let contract = Chain::deploy(&p, args).await?;
        Ok(Env { anvil, contract })
    }

    /// Account `i`'s client.
    fn as_(&self, i: usize) -> Chain {
        Chain::connect(
            &self.anvil.endpoint(),
            &self.contract.to_string(),
            &key_hex(&self.anvil, i),
        )
        .expect("client")
    }

    fn addr(&self, i: usize) -> Address {
        self.anvil.addresses()[i]
    }

    async fn mine(&self, blocks: u64) {
        self.as_(0)
            .provider()
            .anvil_mine(Some(blocks), None)
            .await
            .expect("mine");
    }

    /// Mine until the next block is block `b` (a transaction sent now lands in it; its
    /// pre-flight call runs on block `b - 1`, so a boundary test puts both on one side).
    async fn mine_to(&self, b: u64) {
        let now = self.as_(0).block_number().await.expect("block");
        if b > now + 1 {
            self.mine(b - now - 1).await;
        }
    }

    async fn balance(&self, a: Address) -> U256 {
        self.as_(0)
            .provider()
            .get_balance(a)
            .await
            .expect("balance")
    }

    /// The invariant, checked against every account and deal (not only the running totals).
    async fn check_accounting(&self, accounts: &[Address]) {
        let c = self.as_(0);
        let k = c.contract();
        let held = self.balance(self.contract).await;
        let accounted = k.accounted().call().await.expect("accounted");
        assert_eq!(held, accounted, "balance != stakes + escrows + credits");
        let mut sum = U256::ZERO;
        for a in accounts {
            let n = k.nodes(*a).call().await.expect("node");
            sum += U256::from(n.stake) + n.unbonding + k.owed(*a).call().await.expect("owed");
        }
        let deals = k.dealCount().call().await.expect("count").to::<u64>();
        for id in 1..=deals {
            let d = k.deals(U256::from(id)).call().await.expect("deal");
            let price = U256::from(d.pricePerEpoch.to::<u128>());
            let escrow = match d.state {
                1 => price * U256::from(d.epochs),
                2 => price * U256::from(u64::from(d.epochs) - u64::from(d.settled)),
                _ => U256::ZERO,
            };
            sum += escrow;
        }
        assert_eq!(
            sum, held,
            "per-account sum differs from the contract's balance"
        );
    }
}

fn key_hex(anvil: &AnvilInstance, i: usize) -> String {
    alloy::hex::encode(anvil.keys()[i].to_bytes())
}

/// The contract refused with custom error `name`.
fn refused<T: std::fmt::Debug>(r: Result<T, ChainError>, name: &str) {
    match r {
        Err(e) if e.reason().is_some_and(|r| r.starts_with(name)) => {}
        other => panic!("expected {name}, got {other:?}"),
    }
}

async fn send<C: SolCall>(
    c: &Chain,
    b: alloy::contract::SolCallBuilder<&alloy::providers::DynProvider, C>,
) -> Result<alloy::rpc::types::TransactionReceipt, ChainError> {
    c.send("test", b).await
}

/// Data a node holds for a deal: `chunks` chunks of bytes derived from `seed`.
fn data(chunks: usize, seed: u8) -> Vec<u8> {
    (0..chunks * CHUNK_SIZE)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed))
        .collect()
}

fn tree_of(bytes: &[u8]) -> UpperTree {
    UpperTree::new(shard_chunk_roots(bytes)).expect("data")
}

fn word(n: u8) -> B256 {
    B256::repeat_byte(n)
}

/// Publish checkpoint `root` and propose a deal to `node` from `client`; returns the deal id.
async fn deal(
    env: &Env,
    client: usize,
    node: usize,
    root: B256,
    c: Commitment,
    epochs: u32,
) -> u64 {
    deal_priced(env, client, node, root, c, epochs, 1_000_000).await
}

/// [`deal`] at `price` wei per epoch.
async fn deal_priced(
    env: &Env,
    client: usize,
    node: usize,
    root: B256,
    c: Commitment,
    epochs: u32,
    price: u64,
) -> u64 {
    let cl = env.as_(client);
    let k = cl.contract();
    if k.records(env.addr(client), root)
        .call()
        .await
        .expect("record")
        .blockNumber
        == 0
    {
        send(&cl, k.publish(root, Address::ZERO, B256::ZERO, word(0xee)))
            .await
            .expect("publish");
    }
    let r = send(
        &cl,
        k.proposeDeal(
            env.addr(node),
            env.addr(client),
            root,
            FixedBytes(c.root),
            c.leaf_count,
            epochs,
            alloy::primitives::Uint::<88, 2>::from(price),
        )
        .value(U256::from(price) * U256::from(epochs)),
    )
    .await
    .expect("propose");
    r.inner
        .logs()
        .iter()
        .find_map(|l| l.log_decode::<CairnStorage::DealProposed>().ok())
        .expect("event")
        .inner
        .data
        .id
        .to()
}

/// Account `i`'s node identity as the contract knows it: the peer word of an ed25519 key
/// derived from `i` (distinct per account).
fn peer(i: usize) -> B256 {
    let key = libp2p::identity::Keypair::ed25519_from_bytes([i as u8 + 1; 32]).expect("key");
    peer_word(&key.public().to_peer_id())
}

async fn register(env: &Env, i: usize) {
    let c = env.as_(i);
    send(&c, c.contract().register(peer(i)).value(eth(2)))
        .await
        .expect("register");
}

/// Sample `j` of `node` in the current `epoch`, from the contract's view.
async fn challenge(c: &Chain, node: Address, epoch: u64, j: u8) -> Result<(u64, u64), ChainError> {
    let ch = c
        .contract()
        .challenge(node, epoch, U256::from(j))
        .call()
        .await
        .map_err(|e| cairn_node::chain::from_contract("challenge", e))?;
    Ok((ch.dealId.to::<u64>(), ch.leaf))
}

/// Build the blob for `node`'s challenges in `epoch`, from the deal data each deal id has.
async fn blob(
    env: &Env,
    node: usize,
    epoch: u64,
    held: &[(u64, &UpperTree, &[u8])],
) -> (Vec<u8>, usize) {
    let c = env.as_(0);
    let mut proofs: Vec<Proof> = Vec::new();
    for j in 0..SAMPLES {
        let ch = c
            .contract()
            .challenge(env.addr(node), epoch, U256::from(j))
            .call()
            .await
            .expect("challenge");
        let id = ch.dealId.to::<u64>();
        if id == 0 {
            continue;
        }
        let (_, tree, bytes) = held.iter().find(|h| h.0 == id).expect("held deal");
        let chunk = ch.leaf / CHUNK_LEAVES;
        let at = chunk as usize * CHUNK_SIZE;
        proofs.push(prove(tree, ch.leaf, &bytes[at..at + CHUNK_SIZE]).expect("prove"));
    }
    let n = proofs.len();
    (encode_blob(&proofs), n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constructor_rejects_bad_parameters() {
    let bad = DeployArgs {
        min_stake: eth(1),
        epoch_blocks: 4,
        proof_window: 4, // must be shorter than the epoch
        unbonding_epochs: 1,
        slash_amount: slash(),
        reward_bps: 100,
        samples: 1,
        min_escrow: U256::from(MIN_ESCROW),
        proposal_epochs: PROPOSAL_EPOCHS,
    };
    refused(Env::with(bad).await.map(|_| ()), "BadParameters");
    refused(
        Env::with(DeployArgs {
            proof_window: 1,
            reward_bps: 10_001,
            ..bad
        })
        .await
        .map(|_| ()),
        "BadParameters",
    );
    // A proof needs a block after the seed's: a window of one block could never be met.
    refused(
        Env::with(DeployArgs {
            epoch_blocks: 4,
            proof_window: 1,
            reward_bps: 100,
            ..bad
        })
        .await
        .map(|_| ()),
        "BadParameters",
    );
    // A proposal's expiry must fit the deal's 32-bit epoch fields.
    refused(
        Env::with(DeployArgs {
            epoch_blocks: 4,
            proof_window: 2,
            proposal_epochs: u64::from(u32::MAX) + 1,
            ..bad
        })
        .await
        .map(|_| ()),
        "BadParameters",
    );
    // Stake must stay slashable for at least one epoch after the last deal ends.
    refused(
        Env::with(DeployArgs {
            epoch_blocks: 4,
            proof_window: 2,
            unbonding_epochs: 0,
            ..bad
        })
        .await
        .map(|_| ()),
        "BadParameters",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_stake_unbonding_and_exit() {
    let env = Env::new().await;
    let n = env.as_(1);
    let k = n.contract();
    refused(
        send(&n, k.register(peer(1)).value(eth(1) - U256::from(1u64))).await,
        "StakeTooLow",
    );
    refused(send(&n, k.topUp().value(eth(1))).await, "NotRegistered");
    refused(send(&n, k.requestWithdrawal(eth(1))).await, "NotRegistered");
    refused(send(&n, k.exit()).await, "NotRegistered");
    register(&env, 1).await;
    refused(
        send(&n, k.register(peer(1)).value(eth(1))).await,
        "AlreadyRegistered",
    );
    send(&n, k.topUp().value(eth(1))).await.expect("top up");
    assert_eq!(n.balances(env.addr(1)).await.expect("stake").0, eth(3));
    refused(
        send(&n, k.requestWithdrawal(eth(4))).await,
        "InsufficientStake",
    );
    refused(
        send(&n, k.requestWithdrawal(U256::ZERO)).await,
        "InsufficientStake",
    );
    refused(send(&n, k.withdrawUnbonded()).await, "NothingToWithdraw");

    // Unbonding: requested in epoch e, available from epoch e + UNBONDING, not before.
    send(&n, k.requestWithdrawal(eth(1)))
        .await
        .expect("request");
    let requested_in = n.contract().currentEpoch().call().await.expect("epoch");
    refused(send(&n, k.withdrawUnbonded()).await, "StillUnbonding");
    let params = n.params().await.expect("params");
    env.mine_to(params.epoch_start(requested_in + UNBONDING) - 1)
        .await;
    refused(send(&n, k.withdrawUnbonded()).await, "StillUnbonding");
    env.mine_to(params.epoch_start(requested_in + UNBONDING) + 1)
        .await;
    let before = env.balance(env.addr(1)).await;
    let r = send(&n, k.withdrawUnbonded())
        .await
        .expect("withdraw after the delay");
    let fee = U256::from(r.gas_used) * U256::from(r.effective_gas_price);
    assert_eq!(env.balance(env.addr(1)).await + fee - before, eth(1));

    // A node with a running deal keeps the minimum stake and cannot exit until it ends.
    let bytes = data(1, 3);
    let tree = tree_of(&bytes);
    let id = deal(&env, 5, 1, word(1), tree.commitment(), 2).await;
    send(&n, k.acceptDeal(U256::from(id)))
        .await
        .expect("accept");
    refused(send(&n, k.requestWithdrawal(eth(2))).await, "StakeTooLow");
    send(&n, k.requestWithdrawal(eth(1)))
        .await
        .expect("down to the minimum");
    refused(send(&n, k.exit()).await, "HasActiveDeals");
    let d = n.deal(id).await.expect("deal");
    env.mine_to(params.epoch_start(d.start + d.epochs) - 1)
        .await;
    refused(send(&n, k.exit()).await, "HasActiveDeals");
    env.mine_to(params.epoch_start(d.start + d.epochs) + 1)
        .await;
    send(&n, k.exit()).await.expect("exit after the deal");
    let node = k.nodes(env.addr(1)).call().await.expect("node");
    assert!(!node.registered);
    assert_eq!(node.stake, 0);
    assert_eq!(node.unbonding, eth(2));
    refused(
        send(&n, k.acceptDeal(U256::from(id))).await,
        "DealNotProposed",
    );
    env.check_accounting(&env.anvil.addresses()[..8]).await;
}

/// The contract refused with custom error `name`, naming `value` (hex) among its arguments.
fn refused_naming<T: std::fmt::Debug>(r: Result<T, ChainError>, name: &str, value: &[u8]) {
    let needle = alloy::hex::encode(value);
    match r {
        Err(e)
            if e.reason()
                .is_some_and(|r| r.starts_with(name) && r.to_lowercase().contains(&needle)) => {}
        other => panic!("expected {name} naming {needle}, got {other:?}"),
    }
}

async fn member_of_peer(c: &Chain, p: B256) -> (Address, bool) {
    let m = c
        .contract()
        .memberOfPeer(p)
        .call()
        .await
        .expect("memberOfPeer");
    (m.account, m.member)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_binds_one_peer_word_to_one_account_for_good() {
    let env = Env::new().await;
    let (n1, n2) = (env.as_(1), env.as_(2));
    let (k1, k2) = (n1.contract(), n2.contract());
    refused(
        send(&n1, k1.register(B256::ZERO).value(eth(2))).await,
        "ZeroPeer",
    );
    assert_eq!(
        k1.peerOf(env.addr(1)).call().await.expect("peerOf"),
        B256::ZERO
    );
    assert_eq!(member_of_peer(&n1, peer(1)).await, (Address::ZERO, false));

    let r = send(&n1, k1.register(peer(1)).value(eth(2)))
        .await
        .expect("register");
    let ev = r
        .inner
        .logs()
        .iter()
        .find_map(|l| l.log_decode::<CairnStorage::NodeRegistered>().ok())
        .expect("NodeRegistered")
        .inner
        .data;
    assert_eq!((ev.node, ev.stake, ev.peer), (env.addr(1), eth(2), peer(1)));
    assert_eq!(
        k1.peerOf(env.addr(1)).call().await.expect("peerOf"),
        peer(1)
    );
    assert_eq!(
        k1.accountOfPeer(peer(1))
            .call()
            .await
            .expect("accountOfPeer"),
        env.addr(1)
    );
    assert!(k1.isMember(env.addr(1)).call().await.expect("isMember"));
    assert!(!k1.isMember(env.addr(2)).call().await.expect("isMember"));
    assert_eq!(member_of_peer(&n1, peer(1)).await, (env.addr(1), true));
    assert_eq!(member_of_peer(&n1, peer(2)).await, (Address::ZERO, false));

    // Another account cannot take the word; the bound account cannot register twice.
    refused_naming(
        send(&n2, k2.register(peer(1)).value(eth(2))).await,
        "PeerTaken",
        env.addr(1).as_slice(),
    );
    refused(
        send(&n1, k1.register(peer(2)).value(eth(2))).await,
        "AlreadyRegistered",
    );

    // After exit the binding stays: the account is no member, its word still taken, and it
    // comes back only with the same word.
    send(&n1, k1.exit()).await.expect("exit");
    assert!(!k1.isMember(env.addr(1)).call().await.expect("isMember"));
    assert_eq!(member_of_peer(&n1, peer(1)).await, (env.addr(1), false));
    assert_eq!(
        k1.peerOf(env.addr(1)).call().await.expect("peerOf"),
        peer(1)
    );
    refused_naming(
        send(&n1, k1.register(peer(2)).value(eth(2))).await,
        "PeerMismatch",
        peer(1).as_slice(),
    );
    refused_naming(
        send(&n2, k2.register(peer(1)).value(eth(2))).await,
        "PeerTaken",
        env.addr(1).as_slice(),
    );
    send(&n1, k1.register(peer(1)).value(eth(1)))
        .await
        .expect("re-register with the same word");
    assert_eq!(member_of_peer(&n1, peer(1)).await, (env.addr(1), true));
    // The refused attempts bound nothing: the other word is still free.
    send(&n2, k2.register(peer(2)).value(eth(1)))
        .await
        .expect("register another word");
    assert_eq!(member_of_peer(&n2, peer(2)).await, (env.addr(2), true));
    assert_eq!(
        k2.peerOf(env.addr(2)).call().await.expect("peerOf"),
        peer(2)
    );
    env.check_accounting(&env.anvil.addresses()[..4]).await;
}

/// `Chain::ensure_registered`: registers once, then checks the binding; an account bound to
/// another identity is a configuration error, registered or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_registered_checks_the_bound_peer_word() {
    let env = Env::new().await;
    let n = env.as_(1);
    assert!(
        n.ensure_registered(eth(1), peer(1))
            .await
            .expect("register")
    );
    assert!(!n.ensure_registered(eth(1), peer(1)).await.expect("again"));
    assert_eq!(
        n.member_entry(env.addr(1)).await.expect("entry"),
        (peer(1), true)
    );
    let other = |r: Result<bool, ChainError>| match r {
        Err(ChainError::Config(m)) => {
            assert!(m.contains(&peer(1).to_string()), "{m}");
            assert!(m.contains("not this node's identity"), "{m}");
        }
        r => panic!("expected a configuration error, got {r:?}"),
    };
    other(n.ensure_registered(eth(1), peer(2)).await);
    send(&n, n.contract().exit()).await.expect("exit");
    other(n.ensure_registered(eth(1), peer(2)).await);
    assert!(!n.is_registered(env.addr(1)).await.expect("registered"));
    assert!(n.ensure_registered(eth(1), peer(1)).await.expect("back"));
    assert!(n.is_registered(env.addr(1)).await.expect("registered"));
}

/// A member is registered with at least `minStake` bonded: a withdrawal request or a slash
/// below it ends membership, a top-up brings it back; `registry_changes` names the slashed
/// node (not the reporter or the client).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_follows_the_bonded_stake() {
    let env = Env::new().await;
    register(&env, 1).await;
    let n = env.as_(1);
    let k = n.contract();
    let a1 = env.addr(1);
    let member = || async move { k.isMember(a1).call().await.expect("isMember") };
    assert!(member().await);
    send(&n, k.requestWithdrawal(eth(1)))
        .await
        .expect("request");
    assert!(member().await, "exactly minStake bonded is enough");
    send(&n, k.requestWithdrawal(U256::from(1u64)))
        .await
        .expect("request");
    assert!(!member().await, "one wei below minStake");
    assert_eq!(member_of_peer(&n, peer(1)).await, (env.addr(1), false));
    assert_eq!(
        n.member_entry(env.addr(1)).await.expect("entry"),
        (peer(1), false)
    );
    send(&n, k.topUp().value(U256::from(1u64)))
        .await
        .expect("top up");
    assert!(member().await);

    // A missed epoch of an accepted deal: the slash takes the bonded stake below minStake.
    let tree = tree_of(&data(1, 5));
    let id = deal(&env, 5, 1, word(1), tree.commitment(), 2).await;
    send(&n, k.acceptDeal(U256::from(id)))
        .await
        .expect("accept");
    let d = n.deal(id).await.expect("deal");
    let params = n.params().await.expect("params");
    env.mine_to(params.epoch_start(d.start) + WINDOW + 2).await;
    let reporter = env.as_(7);
    let r = send(
        &reporter,
        reporter
            .contract()
            .reportMissed(env.addr(1), d.start, U256::from(id)),
    )
    .await
    .expect("report");
    assert!(!member().await, "slashed below minStake");
    assert!(n.is_registered(env.addr(1)).await.expect("registered"));
    assert_eq!(member_of_peer(&n, peer(1)).await, (env.addr(1), false));
    let b = r.block_number.expect("block");
    assert_eq!(
        n.registry_changes(b, b).await.expect("changes"),
        [env.addr(1)]
    );
    send(&n, k.topUp().value(slash())).await.expect("top up");
    assert!(member().await);
}

/// `registry_changes` names the accounts whose registry entry changed in a block range, in
/// the order of their first event, and only this contract's; `member_entry` reads them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_changes_name_the_accounts_touched_in_a_range() {
    let env = Env::new().await;
    let c = env.as_(0);
    let genesis = c.genesis_block().await.expect("genesis");
    assert_eq!(genesis, c.params().await.expect("params").genesis_block);
    let block_of = |r: alloy::rpc::types::TransactionReceipt| r.block_number.expect("block");
    let (n1, n2, n3) = (env.as_(1), env.as_(2), env.as_(3));
    let b1 = block_of(
        send(&n1, n1.contract().register(peer(1)).value(eth(2)))
            .await
            .expect("register 1"),
    );
    let b2 = block_of(
        send(&n2, n2.contract().register(peer(2)).value(eth(2)))
            .await
            .expect("register 2"),
    );
    let p4 = env.as_(4);
    let b3 = block_of(
        send(
            &p4,
            p4.contract()
                .publish(word(1), Address::ZERO, B256::ZERO, word(2)),
        )
        .await
        .expect("publish"),
    );
    let b4 = block_of(
        send(&n2, n2.contract().topUp().value(U256::from(1u64)))
            .await
            .expect("top up"),
    );
    let b5 = block_of(
        send(&n3, n3.contract().register(peer(3)).value(eth(1)))
            .await
            .expect("register 3"),
    );
    let b6 = block_of(
        send(&n1, n1.contract().requestWithdrawal(eth(1)))
            .await
            .expect("request"),
    );
    let b7 = block_of(send(&n3, n3.contract().exit()).await.expect("exit"));
    // Registry events of another deployment are not this contract's.
    let (p, _) = provider(&env.anvil.endpoint(), &key_hex(&env.anvil, 6)).expect("provider");
    let elsewhere = Chain::deploy(
        &p,
        DeployArgs {
            min_stake: eth(1),
            epoch_blocks: EPOCH,
            proof_window: WINDOW,
            unbonding_epochs: UNBONDING,
            slash_amount: slash(),
            reward_bps: 2500,
            samples: SAMPLES,
            min_escrow: U256::from(MIN_ESCROW),
            proposal_epochs: PROPOSAL_EPOCHS,
        },
    )
    .await
    .expect("deploy");
    let n6 = Chain::connect(
        &env.anvil.endpoint(),
        &elsewhere.to_string(),
        &key_hex(&env.anvil, 6),
    )
    .expect("client");
    let b8 = block_of(
        send(&n6, n6.contract().register(peer(6)).value(eth(1)))
            .await
            .expect("register elsewhere"),
    );
    assert_eq!(
        n6.registry_changes(b8, b8).await.expect("changes"),
        [env.addr(6)]
    );

    let (a1, a2, a3) = (env.addr(1), env.addr(2), env.addr(3));
    assert_eq!(
        c.registry_changes(genesis, b8).await.expect("changes"),
        [a1, a2, a3]
    );
    let none: [Address; 0] = [];
    assert_eq!(
        c.registry_changes(genesis, b1 - 1).await.expect("changes"),
        none
    );
    assert_eq!(c.registry_changes(b3, b3).await.expect("changes"), none);
    assert_eq!(c.registry_changes(b2, b2).await.expect("changes"), [a2]);
    assert_eq!(
        c.registry_changes(b4, b6).await.expect("changes"),
        [a2, a3, a1]
    );
    assert_eq!(c.registry_changes(b5, b7).await.expect("changes"), [a3, a1]);
    assert_eq!(c.registry_changes(b7, b8).await.expect("changes"), [a3]);

    // StakeWithdrawn names the account too (it changes no membership).
    let params = c.params().await.expect("params");
    let available = n3
        .contract()
        .nodes(a3)
        .call()
        .await
        .expect("node")
        .unbondingEpoch;
    env.mine_to(params.epoch_start(available) + 1).await;
    let b9 = block_of(
        send(&n3, n3.contract().withdrawUnbonded())
            .await
            .expect("withdraw"),
    );
    assert_eq!(c.registry_changes(b9, b9).await.expect("changes"), [a3]);

    assert_eq!(c.member_entry(a1).await.expect("entry"), (peer(1), true));
    assert_eq!(c.member_entry(a2).await.expect("entry"), (peer(2), true));
    assert_eq!(c.member_entry(a3).await.expect("entry"), (peer(3), false));
    assert_eq!(
        c.member_entry(env.addr(6)).await.expect("entry"),
        (B256::ZERO, false),
        "registered with another deployment only"
    );
}

/// What a put records: `root`, its parent (publisher, root) and a name ("" for none).
fn provenance(root: B256, parent: Option<(Address, B256)>, name: &str) -> CairnStorage::Provenance {
    let (parent_publisher, parent) = parent.unwrap_or_default();
    CairnStorage::Provenance {
        root,
        parentPublisher: parent_publisher,
        parent,
        metaHash: word(8),
        name: name.to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provenance_is_per_publisher_and_append_only_with_known_parents() {
    let env = Env::new().await;
    let p = env.as_(3);
    let k = p.contract();
    let me = env.addr(3);
    refused(
        send(
            &p,
            k.publish(B256::ZERO, Address::ZERO, B256::ZERO, word(1)),
        )
        .await,
        "ZeroRoot",
    );
    refused(
        send(&p, k.publish(word(2), me, word(9), word(1))).await,
        "UnknownParent",
    );
    send(&p, k.publish(word(1), Address::ZERO, B256::ZERO, word(7)))
        .await
        .expect("base");
    // A parent needs both its publisher and its root.
    refused(
        send(&p, k.publish(word(2), Address::ZERO, word(1), word(8))).await,
        "UnknownParent",
    );
    refused(
        send(&p, k.publish(word(2), me, B256::ZERO, word(8))).await,
        "UnknownParent",
    );
    send(&p, k.publish(word(2), me, word(1), word(8)))
        .await
        .expect("fine-tune");
    refused(
        send(&p, k.publish(word(2), me, word(1), word(8))).await,
        "AlreadyPublished",
    );

    // Squatting: another account records a root first (it saw the manifest), as a base of its
    // own. The real publisher's put still records its own provenance, with its parent, and
    // proposes its deals; each record names its own publisher and parent.
    register(&env, 1).await;
    let squatter = env.as_(4);
    send(
        &squatter,
        squatter
            .contract()
            .publish(word(5), Address::ZERO, B256::ZERO, word(0x66)),
    )
    .await
    .expect("the squatter records the root first");
    let price = alloy::primitives::Uint::<88, 2>::from(MIN_ESCROW);
    let put = k
        .publishWithDeals(
            provenance(word(5), Some((me, word(2))), ""),
            vec![env.addr(1)],
            vec![FixedBytes([3; 16])],
            vec![1],
            2,
            price,
        )
        .value(U256::from(2 * MIN_ESCROW));
    let r = send(&p, put).await.expect("the real put");
    let proposed = r
        .decoded_log::<CairnStorage::DealProposed>()
        .expect("a deal");
    assert_eq!((proposed.publisher, proposed.checkpoint), (me, word(5)));
    let lineage = p.lineage(me, word(5)).await.expect("lineage");
    let steps: Vec<_> = lineage.iter().map(|r| (r.publisher, r.root)).collect();
    assert_eq!(steps, [(me, word(5)), (me, word(2)), (me, word(1))]);
    assert_eq!(lineage[0].parent, Some((me, word(2))));
    assert_eq!(lineage[2].parent, None);
    let theirs = p.lineage(env.addr(4), word(5)).await.expect("lineage");
    assert_eq!(
        theirs.len(),
        1,
        "the squatter's record is a base of its own"
    );
    assert_eq!(
        (theirs[0].publisher, theirs[0].meta_hash),
        (env.addr(4), word(0x66))
    );
    assert!(
        p.record(env.addr(4), word(2))
            .await
            .expect("record")
            .is_none()
    );

    // A re-put by the same publisher only adds deals; its own record with another parent is
    // refused. Deals of anyone name whose record they store.
    let re = k.publishWithDeals(
        provenance(word(2), Some((me, word(1))), ""),
        vec![],
        vec![],
        vec![],
        1,
        price,
    );
    send(&p, re).await.expect("the publisher adds deals");
    let re = k.publishWithDeals(
        provenance(word(2), None, ""),
        vec![],
        vec![],
        vec![],
        1,
        price,
    );
    refused(send(&p, re).await, "AlreadyPublished");
    let sq = squatter.contract();
    refused(
        send(
            &squatter,
            sq.proposeDeal(
                env.addr(1),
                env.addr(4),
                word(2),
                FixedBytes([3; 16]),
                1,
                1,
                price,
            )
            .value(U256::from(MIN_ESCROW)),
        )
        .await,
        "UnknownCheckpoint",
    );
    send(
        &squatter,
        sq.proposeDeal(env.addr(1), me, word(2), FixedBytes([3; 16]), 1, 1, price)
            .value(U256::from(MIN_ESCROW)),
    )
    .await
    .expect("a deal for the publisher's record, by anyone");
    env.check_accounting(&env.anvil.addresses()[..8]).await;
}

/// Names: `org/model` belongs to the org's first namer, revisions in order, read by anyone;
/// the contract's rules and keys are the node's (`name_keys`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_point_at_a_history_of_the_org_owners_records() {
    let env = Env::new().await;
    let p = env.as_(3);
    let k = p.contract();
    let me = env.addr(3);
    for w in 1..=2 {
        send(&p, k.publish(word(w), Address::ZERO, B256::ZERO, word(0)))
            .await
            .expect("publish");
    }
    refused(
        send(&p, k.setName("org/model".into(), word(9))).await,
        "UnknownCheckpoint",
    );
    let too_long = format!("o/{}", "m".repeat(95));
    for bad in [
        "", "model", "/model", "org/", "org/a/b", "-org/m", "org./m", "org/m-", "org/.m",
        "org/a--b", "org/a..b", "org/a b", "org/é", &too_long,
    ] {
        assert!(
            provenance::name_keys(bad).is_err(),
            "{bad:?} is refused by the node too"
        );
        refused(send(&p, k.setName(bad.into(), word(1))).await, "BadName");
    }
    let longest = format!("o/{}", "m".repeat(94));
    send(&p, k.setName(longest.clone(), word(1)))
        .await
        .expect("96 bytes");

    // The first name under an org claims it; the event keys are the node's.
    let r = send(&p, k.setName("Org/Model".into(), word(1)))
        .await
        .expect("name");
    let (org, key) = provenance::name_keys("Org/Model").expect("valid");
    let claimed = r
        .decoded_log::<CairnStorage::OrgClaimed>()
        .expect("claimed");
    assert_eq!((claimed.org, claimed.owner), (org, me));
    let named = r.decoded_log::<CairnStorage::Named>().expect("named");
    assert_eq!(
        (named.name, named.root, named.revision, named.text.as_str()),
        (key, word(1), U256::from(1u64), "Org/Model")
    );
    // The same root again adds nothing; a put naming the next root adds revision 2.
    let r = send(&p, k.setName("org/model".into(), word(1)))
        .await
        .expect("same root");
    assert!(r.decoded_log::<CairnStorage::Named>().is_none());
    let price = alloy::primitives::Uint::<88, 2>::from(1u64);
    let r = send(
        &p,
        k.publishWithDeals(
            provenance(word(3), Some((me, word(1))), "org/MODEL"),
            vec![],
            vec![],
            vec![],
            1,
            price,
        ),
    )
    .await
    .expect("a put with a name");
    assert_eq!(
        r.decoded_log::<CairnStorage::Named>()
            .expect("named")
            .revision,
        U256::from(2u64)
    );
    send(&p, k.setName("org/other".into(), word(2)))
        .await
        .expect("another name of the org");

    // Another account can neither name under the org nor add a revision to its names.
    let other = env.as_(4);
    let ok = other.contract();
    send(
        &other,
        ok.publish(word(1), Address::ZERO, B256::ZERO, word(0)),
    )
    .await
    .expect("its own record");
    refused_naming(
        send(&other, ok.setName("ORG/model".into(), word(1))).await,
        "OrgTaken",
        me.as_slice(),
    );
    send(&other, ok.setName("other-org/model".into(), word(1)))
        .await
        .expect("its own org");

    // Anyone reads the history, in order, in pages.
    let h = other.name_history("org/model", 10).await.expect("history");
    assert_eq!(
        (h.publisher, h.revisions, h.first, h.roots.clone()),
        (Some(me), 2, 0, vec![word(1), word(3)])
    );
    let newest = other.name_history("org/model", 1).await.expect("history");
    assert_eq!((newest.first, newest.roots), (1, vec![word(3)]));
    let page = ok
        .nameHistory("org/model".into(), U256::from(1u64), U256::from(5u64))
        .call()
        .await
        .expect("page");
    assert_eq!(page.roots, vec![word(3)]);
    let none = other
        .name_history("nobody/model", 10)
        .await
        .expect("history");
    assert_eq!(none, provenance::NameHistory::default());
    let unnamed = other
        .name_history("org/unnamed", 10)
        .await
        .expect("history");
    assert_eq!((unnamed.publisher, unnamed.revisions), (Some(me), 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deals_need_a_published_checkpoint_payment_and_the_nodes_consent() {
    let env = Env::new().await;
    register(&env, 1).await;
    let cl = env.as_(5);
    let k = cl.contract();
    let tree = tree_of(&data(1, 1));
    let c = tree.commitment();
    let price = alloy::primitives::Uint::<88, 2>::from(1000u64);
    let propose = |node: Address, root: B256, leaves: u64, epochs: u32, value: u64| {
        k.proposeDeal(
            node,
            env.addr(5),
            root,
            FixedBytes(c.root),
            leaves,
            epochs,
            price,
        )
        .value(U256::from(value))
    };
    refused(
        send(&cl, propose(env.addr(2), word(1), c.leaf_count, 3, 3000)).await,
        "NotRegistered",
    );
    refused(
        send(&cl, propose(env.addr(1), word(1), c.leaf_count, 3, 3000)).await,
        "UnknownCheckpoint",
    );
    send(&cl, k.publish(word(1), Address::ZERO, B256::ZERO, word(0)))
        .await
        .expect("publish");
    refused(
        send(&cl, propose(env.addr(1), word(1), 0, 3, 3000)).await,
        "InvalidDeal",
    );
    refused(
        send(&cl, propose(env.addr(1), word(1), c.leaf_count, 0, 0)).await,
        "InvalidDeal",
    );
    refused(
        send(&cl, propose(env.addr(1), word(1), c.leaf_count, 3, 2999)).await,
        "WrongPayment",
    );
    let id = deal(&env, 5, 1, word(1), c, 3).await;
    refused(send(&cl, k.acceptDeal(U256::from(id))).await, "NotDealNode");
    let other = env.as_(6);
    refused(
        send(&other, other.contract().cancelDeal(U256::from(id))).await,
        "NotDealClient",
    );
    refused(
        send(&cl, k.cancelDeal(U256::from(999u64))).await,
        "UnknownDeal",
    );
    refused(
        send(&cl, k.settle(U256::from(id), 10)).await,
        "DealNotActive",
    );

    // Not accepted: no challenge falls on it and no missed epoch can be reported.
    env.mine(2 * EPOCH).await;
    let now = k.currentEpoch().call().await.expect("epoch");
    assert_eq!(
        challenge(&cl, env.addr(1), now, 0)
            .await
            .expect("challenge"),
        (0, 0)
    );
    refused(
        send(&cl, k.reportMissed(env.addr(1), now - 1, U256::from(id))).await,
        "DealNotActive",
    );
    // The client takes its escrow back; a cancelled deal cannot be accepted.
    send(&cl, k.cancelDeal(U256::from(id)))
        .await
        .expect("cancel");
    refused(
        send(&cl, k.cancelDeal(U256::from(id))).await,
        "DealNotProposed",
    );
    let node = env.as_(1);
    refused(
        send(&node, node.contract().acceptDeal(U256::from(id))).await,
        "DealNotProposed",
    );
    assert_eq!(
        k.owed(env.addr(5)).call().await.expect("owed"),
        U256::from(3_000_000u64)
    );
    env.check_accounting(&env.anvil.addresses()[..8]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_deal_refunds_the_epochs_it_no_longer_runs() {
    let env = Env::new().await;
    register(&env, 1).await;
    let c = tree_of(&data(1, 3)).commitment();
    let id = deal(&env, 5, 1, word(4), c, 5).await;
    let cl = env.as_(5);
    let k = cl.contract();
    // Only a running deal can be terminated, and only by its client.
    refused(
        send(&cl, k.terminateDeal(U256::from(id))).await,
        "DealNotActive",
    );
    let n = env.as_(1);
    send(&n, n.contract().acceptDeal(U256::from(id)))
        .await
        .expect("accept");
    refused(
        send(&n, n.contract().terminateDeal(U256::from(id))).await,
        "NotDealClient",
    );
    let params = n.params().await.expect("params");
    let start = n.deal(id).await.expect("deal").start;
    // Two epochs in: it keeps those two, the client gets three epochs' escrow back at once.
    env.mine_to(params.epoch_start(start + 2) + 1).await;
    let r = send(&cl, k.terminateDeal(U256::from(id)))
        .await
        .expect("terminate");
    let ev = r
        .inner
        .logs()
        .iter()
        .find_map(|l| l.log_decode::<CairnStorage::DealTerminated>().ok())
        .expect("event")
        .inner
        .data
        .clone();
    assert_eq!(ev.keptEpochs, 2);
    assert_eq!(ev.refund, U256::from(3_000_000u64));
    assert_eq!(
        k.owed(env.addr(5)).call().await.expect("owed"),
        U256::from(3_000_000u64)
    );
    let now = n.deal(id).await.expect("deal");
    assert_eq!(now.epochs, 2);
    assert!(!now.runs_in(start + 2));
    // Nothing from the current epoch on is challenged or can be reported missed: it is
    // drawn to the end of this epoch (samples on it are void), then never.
    for j in 0..SAMPLES {
        assert_eq!(
            challenge(&cl, env.addr(1), start + 2, j)
                .await
                .expect("challenge"),
            (0, 0)
        );
    }
    env.mine_to(params.epoch_start(start + 3) + 2).await;
    // Still in the node's draw tree, it is drawn again and again and never chosen: a tree
    // of nothing but ended deals proves nothing.
    refused(
        challenge(&cl, env.addr(1), start + 3, 0).await,
        "DrawExhausted",
    );
    // Pruned once the node's draw for the epoch is closed (here: its window is over), by
    // anyone; the tree is then empty.
    let weight = async || k.nodes(env.addr(1)).call().await.expect("node").drawWeight;
    assert_eq!(weight().await, u128::from(c.leaf_count));
    refused(
        send(&cl, k.prune(env.addr(1), vec![U256::from(1u64)])).await,
        "DrawOpen",
    );
    env.mine_to(params.epoch_start(start + 3) + WINDOW + 2)
        .await;
    send(
        &cl,
        k.prune(env.addr(1), vec![U256::from(1u64), U256::from(9u64)]),
    )
    .await
    .expect("prune");
    assert_eq!(weight().await, 0);
    assert_eq!(n.deal(id).await.expect("deal").draw_slot, 0);
    assert_eq!(
        challenge(&cl, env.addr(1), start + 3, 0)
            .await
            .expect("challenge"),
        (0, 0)
    );
    env.mine_to(params.epoch_start(start + 3) + WINDOW + 1)
        .await;
    refused(
        send(&cl, k.reportMissed(env.addr(1), start + 2, U256::from(id))).await,
        "DealNotActive",
    );
    refused(
        send(&cl, k.terminateDeal(U256::from(id))).await,
        "DealNotActive",
    );
    // The two kept epochs settle as usual (neither proven: refunded too).
    send(&cl, k.settle(U256::from(id), 10))
        .await
        .expect("settle");
    assert_eq!(k.totalEscrow().call().await.expect("escrow"), U256::ZERO);
    assert_eq!(
        k.owed(env.addr(5)).call().await.expect("owed"),
        U256::from(5_000_000u64)
    );
    env.check_accounting(&env.anvil.addresses()[..8]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_pay_per_proven_epoch_and_missed_epochs_are_slashed_once() {
    let env = Env::new().await;
    register(&env, 1).await;
    let (bytes_a, bytes_b) = (data(3, 1), data(1, 2));
    let (tree_a, tree_b) = (tree_of(&bytes_a), tree_of(&bytes_b));
    let a = deal(&env, 5, 1, word(1), tree_a.commitment(), 3).await;
    let b = deal(&env, 5, 1, word(2), tree_b.commitment(), 3).await;
    let n = env.as_(1);
    let k = n.contract();
    send(&n, k.acceptDeal(U256::from(a)))
        .await
        .expect("accept a");
    send(&n, k.acceptDeal(U256::from(b)))
        .await
        .expect("accept b");
    let params = n.params().await.expect("params");
    let start = n.deal(a).await.expect("deal").start;
    let held: [(u64, &UpperTree, &[u8]); 2] = [(a, &tree_a, &bytes_a), (b, &tree_b, &bytes_b)];

    // The Rust mirror of the challenge derivation matches the contract's.
    env.mine_to(params.epoch_start(start) + 2).await;
    let seed = n.epoch_seed(start).await.expect("seed");
    let ids = n.deals_of(env.addr(1)).await.expect("deals");
    assert_eq!(ids, vec![a, b]);
    let mut slots = Vec::new();
    for id in &ids {
        slots.push(n.deal(*id).await.expect("deal").slot_in_draw(start));
    }
    for j in 0..SAMPLES {
        let (id, leaf) = challenge(&n, env.addr(1), start, j)
            .await
            .expect("challenge");
        let d = cairn_proofs::challenge::draw(&seed, &env.addr(1).0.0, start, j, &slots)
            .expect("not exhausted")
            .expect("drawn");
        assert_eq!((id, leaf), (ids[d.index], d.leaf));
    }

    // Epoch `start`: proofs outside the window, short, wrong, then right, then again.
    refused(
        send(&n, k.submitProofs(start + 1, Bytes::new())).await,
        "OutsideProofWindow",
    );
    let (good, used) = blob(&env, 1, start, &held).await;
    assert!(used > 0);
    refused(
        send(
            &n,
            k.submitProofs(start, Bytes::from(good[..good.len() - 1].to_vec())),
        )
        .await,
        "MalformedProof",
    );
    let mut extra = good.clone();
    extra.push(0);
    refused(
        send(&n, k.submitProofs(start, Bytes::from(extra))).await,
        "MalformedProof",
    );
    let mut wrong = good.clone();
    wrong[3] ^= 1;
    refused(
        send(&n, k.submitProofs(start, Bytes::from(wrong))).await,
        "BadProof",
    );
    refused(
        send(&n, k.reportMissed(env.addr(1), start, U256::from(a))).await,
        "EpochNotOver",
    );
    let r = send(&n, k.submitProofs(start, Bytes::from(good.clone())))
        .await
        .expect("proof");
    assert!(r.gas_used > 21_000);
    refused(
        send(&n, k.submitProofs(start, Bytes::from(good))).await,
        "AlreadyProven",
    );

    // Epoch start+1: missed. Epoch start+2: proven.
    env.mine_to(params.epoch_start(start + 2) + 2).await;
    let (good, _) = blob(&env, 1, start + 2, &held).await;
    send(&n, k.submitProofs(start + 2, Bytes::from(good)))
        .await
        .expect("proof");
    let reporter = env.as_(7);
    let k7 = reporter.contract();
    refused(
        send(
            &reporter,
            k7.reportMissed(env.addr(1), start, U256::from(a)),
        )
        .await,
        "EpochWasProven",
    );
    refused(
        send(
            &reporter,
            k7.reportMissed(env.addr(2), start + 1, U256::from(a)),
        )
        .await,
        "NotDealNode",
    );
    refused(
        send(
            &reporter,
            k7.reportMissed(env.addr(1), start + 3, U256::from(a)),
        )
        .await,
        "DealNotActive",
    );
    let stake_before = n.balances(env.addr(1)).await.expect("stake").0;
    send(
        &reporter,
        k7.reportMissed(env.addr(1), start + 1, U256::from(b)),
    )
    .await
    .expect("report");
    refused(
        send(
            &reporter,
            k7.reportMissed(env.addr(1), start + 1, U256::from(a)),
        )
        .await,
        "AlreadySlashed",
    );
    assert_eq!(
        stake_before - n.balances(env.addr(1)).await.expect("stake").0,
        slash()
    );
    let reward = slash() * U256::from(2500u64) / U256::from(10_000u64);
    assert_eq!(k.owed(env.addr(7)).call().await.expect("owed"), reward);
    assert_eq!(
        k.owed(env.addr(5)).call().await.expect("owed"),
        slash() - reward
    );

    // Settle after the deals end: two proven epochs paid to the node, one refunded.
    env.mine_to(params.epoch_start(start + 3) + WINDOW + 1)
        .await;
    send(&reporter, k7.settle(U256::from(a), 1))
        .await
        .expect("settle one epoch");
    assert_eq!(
        k.deals(U256::from(a)).call().await.expect("deal").settled,
        1
    );
    send(&reporter, k7.settle(U256::from(a), 10))
        .await
        .expect("settle the rest");
    send(&reporter, k7.settle(U256::from(b), 10))
        .await
        .expect("settle b");
    assert_eq!(
        k.owed(env.addr(1)).call().await.expect("owed"),
        U256::from(2 * 2 * 1_000_000u64)
    );
    assert_eq!(
        k.owed(env.addr(5)).call().await.expect("owed"),
        slash() - reward + U256::from(2 * 1_000_000u64)
    );
    assert_eq!(k.totalEscrow().call().await.expect("escrow"), U256::ZERO);
    env.check_accounting(&env.anvil.addresses()[..8]).await;

    // Credits are paid out once.
    let before = env.balance(env.addr(7)).await;
    let r = send(&reporter, k7.withdraw()).await.expect("withdraw");
    let fee = U256::from(r.gas_used) * U256::from(r.effective_gas_price);
    assert_eq!(env.balance(env.addr(7)).await + fee - before, reward);
    refused(send(&reporter, k7.withdraw()).await, "NothingToWithdraw");
    env.check_accounting(&env.anvil.addresses()[..8]).await;
}

/// A proposal carries at least `minEscrow`, can be accepted for `proposalEpochs` epochs, and
/// then anyone may cancel it: the escrow goes back to its client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposals_carry_a_minimum_escrow_and_expire() {
    let env = Env::new().await;
    register(&env, 1).await;
    let cl = env.as_(5);
    let k = cl.contract();
    send(&cl, k.publish(word(1), Address::ZERO, B256::ZERO, word(0)))
        .await
        .expect("publish");
    let c = tree_of(&data(1, 1)).commitment();
    let propose = |epochs: u32, price: u64| {
        k.proposeDeal(
            env.addr(1),
            env.addr(5),
            word(1),
            FixedBytes(c.root),
            c.leaf_count,
            epochs,
            alloy::primitives::Uint::<88, 2>::from(price),
        )
        .value(U256::from(price * u64::from(epochs)))
    };
    let low = send(&cl, propose(3, MIN_ESCROW / 3)).await;
    assert!(format!("{low:?}").contains(&format!("minimum: {MIN_ESCROW}")));
    refused(low, "EscrowTooLow");
    let ids: Vec<u64> = {
        let mut v = Vec::new();
        for _ in 0..2 {
            let r = send(&cl, propose(1, MIN_ESCROW)).await.expect("propose");
            let e = r
                .decoded_log::<CairnStorage::DealProposed>()
                .expect("event");
            v.push(e.id.to());
        }
        v
    };
    let proposed = cl.deal(ids[0]).await.expect("deal").proposed_epoch;
    let params = cl.params().await.expect("params");
    assert_eq!(
        (params.min_escrow, params.proposal_epochs),
        (U256::from(MIN_ESCROW), PROPOSAL_EPOCHS)
    );
    let other = env.as_(6);
    let ko = other.contract();
    refused(
        send(&other, ko.cancelDeal(U256::from(ids[0]))).await,
        "NotDealClient",
    );
    // The last epoch it may be accepted in: the node takes the second one.
    let last = proposed + PROPOSAL_EPOCHS - 1;
    env.mine_to(params.epoch_start(last)).await;
    let n = env.as_(1);
    let d = cl.deal(ids[1]).await.expect("deal");
    assert!(!d.proposal_expired(last, params.proposal_epochs));
    send(&n, n.contract().acceptDeal(U256::from(ids[1])))
        .await
        .expect("accepted in time");
    env.mine_to(params.epoch_start(last + 1) + 1).await;
    let d = cl.deal(ids[0]).await.expect("deal");
    assert!(d.proposal_expired(last + 1, params.proposal_epochs));
    refused(
        send(&n, n.contract().acceptDeal(U256::from(ids[0]))).await,
        "ProposalExpired",
    );
    let owed = k.owed(env.addr(5)).call().await.expect("owed");
    send(&other, ko.cancelDeal(U256::from(ids[0])))
        .await
        .expect("anyone cancels an expired proposal");
    assert_eq!(
        k.owed(env.addr(5)).call().await.expect("owed") - owed,
        U256::from(MIN_ESCROW),
        "the escrow goes to the client"
    );
    assert_eq!(k.owed(env.addr(6)).call().await.expect("owed"), U256::ZERO);
    refused(
        send(&other, ko.cancelDeal(U256::from(ids[1]))).await,
        "DealNotProposed",
    );
    env.check_accounting(&env.anvil.addresses()[..8]).await;
}

/// A node slashed below `minStake` is out: its proofs are refused (its deals' epochs go back
/// to their clients at settlement) while its misses are still slashed, until it tops up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_below_the_minimum_stake_is_not_paid_until_it_tops_up() {
    let env = Env::new().await;
    register(&env, 1).await;
    let bytes = data(1, 3);
    let tree = tree_of(&bytes);
    let id = deal(&env, 5, 1, word(1), tree.commitment(), 6).await;
    let n = env.as_(1);
    let k = n.contract();
    send(&n, k.acceptDeal(U256::from(id)))
        .await
        .expect("accept");
    // Down to exactly the minimum (allowed while deals run), then one miss below it.
    send(&n, k.requestWithdrawal(eth(1)))
        .await
        .expect("withdrawal request");
    let params = n.params().await.expect("params");
    let start = n.deal(id).await.expect("deal").start;
    env.mine_to(params.epoch_start(start) + WINDOW + 2).await;
    let reporter = env.as_(7);
    let k7 = reporter.contract();
    send(
        &reporter,
        k7.reportMissed(env.addr(1), start, U256::from(id)),
    )
    .await
    .expect("report");
    let (stake, _, _) = n.balances(env.addr(1)).await.expect("stake");
    assert!(stake < params.min_stake);
    let held: [(u64, &UpperTree, &[u8]); 1] = [(id, &tree, &bytes)];
    env.mine_to(params.epoch_start(start + 1) + 2).await;
    let (good, _) = blob(&env, 1, start + 1, &held).await;
    let out = send(&n, k.submitProofs(start + 1, Bytes::from(good))).await;
    assert!(
        format!("{out:?}").contains(&format!("given: {stake}")),
        "{out:?}"
    );
    refused(out, "StakeTooLow");
    env.mine_to(params.epoch_start(start + 1) + WINDOW + 2)
        .await;
    send(
        &reporter,
        k7.reportMissed(env.addr(1), start + 1, U256::from(id)),
    )
    .await
    .expect("falling below the minimum is no way out of reports");
    assert!(n.is_slashed(env.addr(1), start + 1).await.expect("slashed"));
    // Topped up: proven again.
    send(&n, k.topUp().value(slash() * U256::from(2u64)))
        .await
        .expect("top up");
    env.mine_to(params.epoch_start(start + 2) + 2).await;
    let (good, _) = blob(&env, 1, start + 2, &held).await;
    send(&n, k.submitProofs(start + 2, Bytes::from(good)))
        .await
        .expect("proven again");
    assert!(n.is_proven(env.addr(1), start + 2).await.expect("proven"));
    env.check_accounting(&env.anvil.addresses()[..8]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_cannot_be_reentered_and_a_refused_payment_reverts() {
    let env = Env::new().await;
    let c = env.as_(2);
    let att = Attacker::deploy(c.provider().clone(), env.contract)
        .await
        .expect("attacker");
    let k = c.contract();
    send(&c, k.publish(word(1), Address::ZERO, B256::ZERO, word(0)))
        .await
        .expect("publish");
    register(&env, 1).await;
    let tree = tree_of(&data(1, 4));
    let cm = tree.commitment();
    let price = alloy::primitives::Uint::<88, 2>::from(500u64);
    // The attacker proposes a deal and cancels it: 1000 wei credited to it.
    let propose = CairnStorage::proposeDealCall {
        node: env.addr(1),
        publisher: env.addr(2),
        checkpoint: word(1),
        commitment: FixedBytes(cm.root),
        leafCount: cm.leaf_count,
        epochs: 2,
        pricePerEpoch: price,
    };
    send(
        &c,
        att.forward(Bytes::from(propose.abi_encode()))
            .value(U256::from(1000u64)),
    )
    .await
    .expect("propose");
    let id = k.dealCount().call().await.expect("count");
    let cancel = CairnStorage::cancelDealCall { id };
    send(&c, att.forward(Bytes::from(cancel.abi_encode())))
        .await
        .expect("cancel");
    let withdraw = Bytes::from(CairnStorage::withdrawCall {}.abi_encode());
    // Refusing the payment reverts the withdrawal: nothing is lost.
    send(&c, att.setMode(1)).await.expect("mode");
    refused(
        send(&c, att.forward(withdraw.clone())).await,
        "TransferFailed",
    );
    assert_eq!(
        k.owed(*att.address()).call().await.expect("owed"),
        U256::from(1000u64)
    );
    // Withdrawing again from inside the payment hits the lock; the first payment goes through.
    send(&c, att.setMode(2)).await.expect("mode");
    send(&c, att.forward(withdraw)).await.expect("withdraw");
    let err = att.reentryError().call().await.expect("error");
    assert_eq!(&err[..4], CairnStorage::Reentrancy::SELECTOR.as_slice());
    assert_eq!(
        att.received().call().await.expect("received"),
        U256::from(1000u64)
    );
    assert_eq!(
        k.owed(*att.address()).call().await.expect("owed"),
        U256::ZERO
    );
    env.check_accounting(&[*att.address(), env.addr(1), env.addr(2)])
        .await;
}

/// A seeded random sequence of every kind of operation (many of them refused): after each
/// one, the contract's balance equals the sum of stakes, escrows and credits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounting_holds_after_random_operations() {
    let env = Env::new().await;
    let accounts: Vec<Address> = env.anvil.addresses()[..8].to_vec();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let trees: Vec<(Vec<u8>, UpperTree)> = (0..3u8)
        .map(|s| {
            let b = data(1 + s as usize, s);
            let t = tree_of(&b);
            (b, t)
        })
        .collect();
    let mut deals: Vec<(u64, usize)> = Vec::new();
    let mut applied = 0;
    for step in 0..80 {
        let who = 1 + next(7) as usize;
        let c = env.as_(who);
        let k = c.contract();
        let r = match next(11) {
            0 => send(&c, k.register(peer(who)).value(eth(1 + next(2))))
                .await
                .map(|_| ()),
            1 => send(&c, k.topUp().value(U256::from(next(1000) + 1)))
                .await
                .map(|_| ()),
            2 => send(
                &c,
                k.requestWithdrawal(U256::from(next(3)) * eth(1) / U256::from(2u64)),
            )
            .await
            .map(|_| ()),
            3 => send(&c, k.withdrawUnbonded()).await.map(|_| ()),
            4 => {
                let root = word(1 + next(4) as u8);
                let _ = send(&c, k.publish(root, Address::ZERO, B256::ZERO, word(0))).await;
                let t = next(3) as usize;
                let node = 1 + next(7) as usize;
                let cm = trees[t].1.commitment();
                let epochs = 1 + next(3) as u32;
                let price = alloy::primitives::Uint::<88, 2>::from(100u64 + next(100));
                let value = U256::from(price.to::<u64>()) * U256::from(epochs);
                let r = send(
                    &c,
                    k.proposeDeal(
                        accounts[node],
                        accounts[who],
                        root,
                        FixedBytes(cm.root),
                        cm.leaf_count,
                        epochs,
                        price,
                    )
                    .value(value),
                )
                .await;
                if r.is_ok() {
                    deals.push((k.dealCount().call().await.expect("count").to(), t));
                }
                r.map(|_| ())
            }
            5 | 6 if !deals.is_empty() => {
                let (id, _) = deals[next(deals.len() as u64) as usize];
                let d = c.deal(id).await.expect("deal");
                let node = env.as_(accounts.iter().position(|a| *a == d.node).expect("node"));
                send(&node, node.contract().acceptDeal(U256::from(id)))
                    .await
                    .map(|_| ())
            }
            7 if !deals.is_empty() => {
                let (id, _) = deals[next(deals.len() as u64) as usize];
                send(&c, k.cancelDeal(U256::from(id))).await.map(|_| ())
            }
            8 if !deals.is_empty() => {
                let (id, _) = deals[next(deals.len() as u64) as usize];
                send(&c, k.settle(U256::from(id), 1 + next(3)))
                    .await
                    .map(|_| ())
            }
            9 if !deals.is_empty() => {
                let (id, _) = deals[next(deals.len() as u64) as usize];
                let d = c.deal(id).await.expect("deal");
                let e = d.start + next(d.epochs.max(1));
                send(&c, k.reportMissed(d.node, e, U256::from(id)))
                    .await
                    .map(|_| ())
            }
            10 => send(&c, k.withdraw()).await.map(|_| ()),
            _ => {
                env.mine(1 + next(2 * EPOCH)).await;
                Ok(())
            }
        };
        // Some epochs get proven, by nodes with deals running now.
        if step % 5 == 0 {
            let block = c.block_number().await.expect("block");
            let params = c.params().await.expect("params");
            let e = params.epoch_of(block + 1);
            if block > params.epoch_start(e) && block + 2 < params.epoch_start(e) + WINDOW {
                for (i, a) in accounts.iter().enumerate().skip(1) {
                    let mine: Vec<(u64, &UpperTree, &[u8])> = deals
                        .iter()
                        .map(|(id, t)| (*id, &trees[*t].1, trees[*t].0.as_slice()))
                        .collect();
                    let ours = c.deals_of(*a).await.expect("deals");
                    // Nothing to prove, or a draw of nothing but ended deals (none pruned).
                    if ours.is_empty() || challenge(&c, *a, e, 0).await.is_err() {
                        continue;
                    }
                    let (b, _) = blob(&env, i, e, &mine).await;
                    let n = env.as_(i);
                    let _ = send(&n, n.contract().submitProofs(e, Bytes::from(b))).await;
                }
            }
        }
        applied += usize::from(r.is_ok());
        env.check_accounting(&accounts).await;
    }
    assert!(applied > 20, "only {applied} operations went through");
}

/// Every custom error of the contract is provoked by a test above: this list names them, and
/// it must match the compiled ABI (a new error needs a test and an entry here).
#[test]
fn every_custom_error_is_tested() {
    const TESTED: &[&str] = &[
        "AlreadyProven",
        "AlreadyPublished",
        "AlreadyRegistered",
        "AlreadySlashed",
        "BadName",
        "BadParameters",
        "BadProof",
        "DealNotActive",
        "DealNotProposed",
        "DrawExhausted",
        "DrawOpen",
        "EpochNotOver",
        "EpochWasProven",
        "EscrowTooLow",
        "HasActiveDeals",
        "InsufficientStake",
        "InvalidDeal",
        "MalformedProof",
        "NotDealClient",
        "NotDealNode",
        "NotRegistered",
        "NothingToWithdraw",
        "OrgTaken",
        "OutsideProofWindow",
        "PeerMismatch",
        "PeerTaken",
        "ProposalExpired",
        "Reentrancy",
        "StakeTooLow",
        "StillUnbonding",
        "TransferFailed",
        "UnknownCheckpoint",
        "UnknownDeal",
        "UnknownParent",
        "WrongPayment",
        "ZeroPeer",
        "ZeroRoot",
    ];
    let source = include_str!("contract.rs");
    let abi: serde_json::Value =
        serde_json::from_str(include_str!("../../proofs/artifacts/CairnStorage.json"))
            .expect("artifact");
    let mut errors: Vec<&str> = abi["abi"]
        .as_array()
        .expect("abi")
        .iter()
        .filter(|e| e["type"] == "error")
        .filter_map(|e| e["name"].as_str())
        .collect();
    errors.sort_unstable();
    assert_eq!(errors, TESTED);
    for name in TESTED {
        // Once in the list above, at least once more where a test expects it.
        let provoked = source.matches(&format!("\"{name}\"")).count()
            + source.matches(&format!("{name}::SELECTOR")).count();
        assert!(provoked >= 2, "no test expects {name}");
    }
}

/// `cairn deploy` takes the RPC URL and the key from the environment and prints the address
/// of a contract with the parameters asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_command_uses_the_environment() {
    let anvil = Anvil::at(anvil_bin()).try_spawn().expect("anvil");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([
            "deploy",
            "--epoch-blocks",
            "20",
            "--proof-window",
            "7",
            "--samples",
            "5",
        ])
        .env("CAIRN_RPC_URL", anvil.endpoint())
        .env("CAIRN_CHAIN_KEY", key_hex(&anvil, 3))
        .output()
        .expect("run cairn deploy");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let address = String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    let c = Chain::connect(&anvil.endpoint(), &address, &key_hex(&anvil, 0)).expect("client");
    let p = c.params().await.expect("the contract answers");
    assert_eq!((p.epoch_blocks, p.proof_window, p.samples), (20, 7, 5));
    // Without a key: a clear error, nothing deployed.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["deploy"])
        .env("CAIRN_RPC_URL", anvil.endpoint())
        .env_remove("CAIRN_CHAIN_KEY")
        .output()
        .expect("run cairn deploy");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("CAIRN_CHAIN_KEY"));
    // Parameters the contract refuses: its error, decoded.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["deploy", "--epoch-blocks", "5", "--proof-window", "5"])
        .env("CAIRN_RPC_URL", anvil.endpoint())
        .env("CAIRN_CHAIN_KEY", key_hex(&anvil, 3))
        .output()
        .expect("run cairn deploy");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("BadParameters"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Money moves by itself (the node's payout job, on a real chain): a gateway's proposal that
/// no node accepts is cancelled once old enough, and the escrow it gets back is withdrawn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_cancels_proposals_nobody_accepted_and_withdraws_the_escrow() {
    let env = Env::new().await;
    register(&env, 1).await;
    let tree = tree_of(&data(1, 1));
    // 3 epochs at 1 gwei: more than the withdrawal minimum set below.
    let gwei = 1_000_000_000u64;
    let id = deal_priced(&env, 5, 1, word(9), tree.commitment(), 3, gwei).await;
    let gateway = env.as_(5);
    let params = gateway.params().await.expect("params");
    let mut payout = cairn_node::chain::payout::Payout::new(
        gateway.clone(),
        params,
        std::time::Duration::from_secs(1),
        cairn_node::metrics::ProofMetrics::default(),
    );
    payout.cancel_after = 2;
    payout.withdraw_min_gwei = 1;
    let from = gateway.block_number().await.expect("block");

    // Too young: followed, not cancelled.
    payout.round().await.expect("round");
    assert_eq!(gateway.deal(id).await.expect("deal").state, 1);
    assert_eq!(payout.open.len(), 1);

    // Two epochs later nobody accepted it: cancelled, its escrow credited and withdrawn.
    env.mine(2 * EPOCH).await;
    payout.round().await.expect("round");
    assert_eq!(gateway.deal(id).await.expect("deal").state, 3);
    assert_eq!((payout.cancelled, payout.withdrawn), (1, 1));
    assert!(payout.open.is_empty());
    assert_eq!(gateway.owed().await.expect("owed"), U256::ZERO);
    let filter = alloy::rpc::types::Filter::new()
        .address(env.contract)
        .event_signature(<CairnStorage::Withdrawn as alloy::sol_types::SolEvent>::SIGNATURE_HASH)
        .from_block(from);
    let withdrawn: Vec<U256> = gateway
        .provider()
        .get_logs(&filter)
        .await
        .expect("logs")
        .iter()
        .map(|l| {
            l.log_decode::<CairnStorage::Withdrawn>()
                .expect("event")
                .inner
                .data
                .amount
        })
        .collect();
    assert_eq!(
        withdrawn,
        [U256::from(3 * gwei)],
        "the whole escrow came back"
    );

    // Nothing left to do: a further round sends nothing.
    let block = gateway.block_number().await.expect("block");
    payout.round().await.expect("round");
    assert_eq!(gateway.block_number().await.expect("block"), block);
}

/// Samples follow the bytes: a node holding one client deal of 1 GiB and 1,000 one-leaf deals
/// of its own is sampled on the client deal at its share of the leaves (not 1 in 1,001), a big
/// deal of its own takes its share while it runs and none once it has ended, the draw does
/// not change while an epoch's proof is open, and every sample the contract draws is the one
/// the Rust mirror draws.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_follow_the_bytes_and_ended_deals_leave_the_draw() {
    const OWN: usize = 1000;
    const BATCH: usize = 200;
    let epoch_blocks = 20;
    let window = 10;
    let env = Env::with(DeployArgs {
        min_stake: eth(1),
        epoch_blocks,
        proof_window: window,
        unbonding_epochs: UNBONDING,
        slash_amount: slash(),
        reward_bps: 2500,
        samples: SAMPLES,
        min_escrow: U256::from(MIN_ESCROW),
        proposal_epochs: PROPOSAL_EPOCHS,
    })
    .await
    .expect("deploy");
    register(&env, 1).await;
    let n = env.as_(1);
    let k = n.contract();
    let client = deal(
        &env,
        5,
        1,
        word(1),
        Commitment {
            root: [1; 16],
            leaf_count: 1 << 23,
        },
        100,
    )
    .await;
    let big = deal(
        &env,
        1,
        1,
        word(2),
        Commitment {
            root: [2; 16],
            leaf_count: 1 << 30,
        },
        3,
    )
    .await;
    let price = alloy::primitives::Uint::<88, 2>::from(1u64);
    for _ in 0..OWN / BATCH {
        send(
            &n,
            k.publishWithDeals(
                provenance(word(2), None, ""),
                vec![env.addr(1); BATCH],
                vec![FixedBytes([3; 16]); BATCH],
                vec![1; BATCH],
                100,
                price,
            )
            .value(U256::from(BATCH * 100)),
        )
        .await
        .expect("own deals");
    }
    let late = deal(
        &env,
        5,
        1,
        word(1),
        Commitment {
            root: [4; 16],
            leaf_count: 1,
        },
        10,
    )
    .await;
    let count = k.dealCount().call().await.expect("count").to::<u64>();
    assert_eq!(count, 3 + OWN as u64);
    // Every acceptance in one block (so in one epoch), then checked: each was mined and none
    // reverted.
    let p = n.provider();
    p.anvil_set_auto_mine(false).await.expect("automine off");
    p.anvil_set_block_gas_limit(2_000_000_000)
        .await
        .expect("gas limit");
    let first = p.get_transaction_count(env.addr(1)).await.expect("nonce");
    let mut sent = Vec::new();
    for (i, id) in (1..=count).filter(|id| *id != late).enumerate() {
        let tx = k
            .acceptDeal(U256::from(id))
            .nonce(first + i as u64)
            .gas(1_000_000)
            .send()
            .await
            .expect("accept sent");
        sent.push(tx.tx_hash().to_owned());
    }
    p.evm_mine(None).await.expect("mine");
    p.anvil_set_auto_mine(true).await.expect("automine on");
    for tx in sent {
        let r = n
            .provider()
            .get_transaction_receipt(tx)
            .await
            .expect("receipt")
            .expect("mined");
        assert!(r.status(), "an acceptance reverted");
    }
    let params = n.params().await.expect("params");
    let mut infos = Vec::new();
    for id in n.deals_of(env.addr(1)).await.expect("deals") {
        infos.push(n.deal(id).await.expect("deal"));
    }
    let start = infos[0].start;
    assert!(
        infos.iter().all(|d| d.start == start),
        "every deal starts in the same epoch"
    );
    // While the epoch's proof is open the node's draw cannot change.
    env.mine_to(params.epoch_start(start) + 2).await;
    refused(send(&n, k.acceptDeal(U256::from(late))).await, "DrawOpen");
    let (mut client_hits, mut big_hits, mut samples) = ([0u32; 2], [0u32; 2], [0u32; 2]);
    for epoch in start..start + 24 {
        env.mine_to(params.epoch_start(epoch) + 2).await;
        let seed = n.epoch_seed(epoch).await.expect("seed");
        let slots: Vec<_> = infos.iter().map(|d| d.slot_in_draw(epoch)).collect();
        assert_eq!(
            k.nodes(env.addr(1)).call().await.expect("node").drawWeight,
            slots.iter().map(|s| u128::from(s.weight)).sum::<u128>()
        );
        let running = usize::from(epoch < start + 3);
        for j in 0..SAMPLES {
            let (id, leaf) = challenge(&n, env.addr(1), epoch, j)
                .await
                .expect("challenge");
            let d = cairn_proofs::challenge::draw(&seed, &env.addr(1).0.0, epoch, j, &slots)
                .expect("not exhausted")
                .expect("drawn");
            assert_eq!(
                (id, leaf),
                (infos[d.index].id, d.leaf),
                "epoch {epoch} sample {j}"
            );
            assert!(infos[d.index].runs_in(epoch), "an ended deal was drawn");
            samples[running] += 1;
            client_hits[running] += u32::from(id == client);
            big_hits[running] += u32::from(id == big);
        }
        if epoch == start + 2 {
            // The big deal's last epoch: once its window is over it is pruned.
            env.mine_to(params.epoch_start(epoch) + window + 2).await;
            send(
                &n,
                k.prune(env.addr(1), vec![U256::from(infos[1].draw_slot)]),
            )
            .await
            .expect("prune");
            infos[1] = n.deal(big).await.expect("deal");
            assert_eq!(infos[1].draw_slot, 0);
        }
    }
    // While the big deal runs it holds 99.2% of the leaves; once it has ended it is never
    // drawn and the client deal holds 99.99% (a draw over deals would give each 1 in 1,002).
    assert!(big_hits[1] >= samples[1] - 1, "{big_hits:?} of {samples:?}");
    assert_eq!(big_hits[0], 0);
    assert!(
        client_hits[0] >= samples[0] - 2,
        "{client_hits:?} of {samples:?}"
    );
}
