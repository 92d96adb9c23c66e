//! The chain: the `CairnStorage` contract (proofs/contracts) through alloy, and the node's
//! tasks that use it. The prover and watcher talk to the chain through [`ProofChain`], so
//! their logic is testable without one; [`Chain`] is the real implementation.

pub mod deals;
pub mod ending;
pub mod payout;
pub mod provenance;
pub mod prover;
pub mod publish;
pub mod registry;
pub mod report;
pub mod unpaid;
pub mod wallet;
pub mod watcher;

use std::sync::Arc;
use std::time::Duration;

use alloy::contract::SolCallBuilder;
use alloy::network::EthereumWallet;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::{Filter, TransactionReceipt};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolEvent, SolEventInterface};
use cairn_erasure::Cid;
use thiserror::Error;

/// Bindings generated from the committed artifact (`proofs/artifacts/CairnStorage.json`).
#[allow(clippy::too_many_arguments)]
pub mod bindings {
    alloy::sol!(
        #[sol(rpc)]
        #[derive(Debug)]
        CairnStorage,
        "../proofs/artifacts/CairnStorage.json"
    );
}

pub use bindings::CairnStorage;
pub use bindings::CairnStorage::CairnStorageErrors as ContractError;

/// Environment variable that overrides `chain.key`.
pub const KEY_ENV: &str = "CAIRN_CHAIN_KEY";
/// How long a sent transaction may take to be mined.
pub const RECEIPT_TIMEOUT: Duration = Duration::from_secs(30);
/// Gas limit sent = estimate * GAS_PAD_PERCENT / 100 (+ a constant): a proof's gas depends on
/// the storage slots it touches, which can change between estimate and inclusion.
pub const GAS_PAD_PERCENT: u64 = 130;

/// A chain operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ChainError {
    #[error("invalid chain configuration: {0}")]
    Config(String),
    #[error("{call}: the contract refused: {reason}")]
    Reverted {
        call: &'static str,
        reason: String,
        /// Selector of the contract's custom error, when it was one.
        selector: Option<[u8; 4]>,
    },
    #[error("{call}: rpc failed: {reason}")]
    Rpc { call: &'static str, reason: String },
    #[error("{call}: no receipt within {} s", RECEIPT_TIMEOUT.as_secs())]
    Timeout { call: &'static str },
    #[error("{call}: mined in block {block} but failed")]
    Failed { call: &'static str, block: u64 },
}

impl ChainError {
    /// The contract's custom error, when it refused.
    pub fn reason(&self) -> Option<&str> {
        match self {
            ChainError::Reverted { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// Whether the contract refused with the custom error `E`.
    pub fn refused_with<E: alloy::sol_types::SolError>(&self) -> bool {
        matches!(self, ChainError::Reverted { selector: Some(s), .. } if *s == E::SELECTOR)
    }
}

/// A contract call's error, with the custom error decoded when there is one.
pub fn from_contract(call: &'static str, e: alloy::contract::Error) -> ChainError {
    if let Some(decoded) = e.as_decoded_interface_error::<ContractError>() {
        return ChainError::Reverted {
            call,
            reason: format!("{decoded:?}"),
            selector: Some(alloy::sol_types::SolInterface::selector(&decoded)),
        };
    }
    if let alloy::contract::Error::TransportError(t) = &e
        && let Some(payload) = t.as_error_resp()
        && payload.message.contains("revert")
    {
        return ChainError::Reverted {
            call,
            reason: payload.message.to_string(),
            selector: None,
        };
    }
    ChainError::Rpc {
        call,
        reason: e.to_string(),
    }
}

pub(crate) fn rpc(
    call: &'static str,
) -> impl FnOnce(alloy::transports::TransportError) -> ChainError {
    move |e| ChainError::Rpc {
        call,
        reason: e.to_string(),
    }
}

/// Where anvil is: $CAIRN_ANVIL, or the copy `ops/install.sh` puts under
/// `proofs/node_modules`, searched from the working directory and the binary's location up.
pub fn anvil_path() -> Result<std::path::PathBuf, ChainError> {
    if let Ok(p) = std::env::var("CAIRN_ANVIL") {
        return Ok(p.into());
    }
    let rel = std::path::Path::new("proofs/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
    let starts = [std::env::current_dir().ok(), std::env::current_exe().ok()];
    starts
        .iter()
        .flatten()
        .flat_map(|s| s.ancestors())
        .map(|d| d.join(rel))
        .find(|p| p.exists())
        .ok_or_else(|| {
            ChainError::Config(
                "anvil not found: run ./ops/install.sh (it installs it under proofs/node_modules) \
                 or set CAIRN_ANVIL"
                    .into(),
            )
        })
}

/// The 32 bytes a checkpoint's root CID is recorded as on chain (its BLAKE3 digest).
pub fn root_word(root: &Cid) -> B256 {
    let digest = root.hash().digest();
    let mut w = [0u8; 32];
    let n = digest.len().min(32);
    w[..n].copy_from_slice(&digest[..n]);
    B256::from(w)
}

/// The root CID a recorded word stands for (CIDv1, dag-cbor, BLAKE3).
pub fn word_root(word: &B256) -> Cid {
    cairn_erasure::ids::manifest_cid_from_digest(word.0)
}

/// The 32 bytes a node's libp2p identity is registered as on chain: keccak256 of
/// `PeerId::to_bytes()`. The contract binds it to the node's account one to one.
pub fn peer_word(peer: &libp2p::PeerId) -> B256 {
    B256::from(crate::net::peer_word(peer))
}

/// A deal as the contract holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DealInfo {
    pub id: u64,
    pub node: Address,
    pub client: Address,
    /// First proven epoch; 0 until accepted.
    pub start: u64,
    pub epochs: u64,
    pub commitment: [u8; 16],
    pub leaf_count: u64,
    pub checkpoint: B256,
    /// [`DEAL_PROPOSED`], [`DEAL_ACTIVE`] or [`DEAL_CANCELLED`].
    pub state: u8,
    /// Epochs of the deal paid for so far (`settle`).
    pub settled: u64,
    /// Epochs from `start` the deal is drawn from: `epochs`, or up to the epoch its client
    /// terminated it in.
    pub draw_epochs: u64,
    /// Its 1-based position in its node's draw tree (and deal list); 0 once pruned.
    pub draw_slot: u64,
    /// The epoch it was proposed in.
    pub proposed_epoch: u64,
    /// Wei per epoch.
    pub price: U256,
}

/// Least escrow of a proposal by default, in gwei (0.0001 ETH): a tenth of what a node's
/// default deal escrows (`chain.deal_epochs` * `chain.deal_price_gwei`). A proposal makes
/// the named node hash its share of the checkpoint once, so a flood costs its sender.
pub const DEFAULT_MIN_ESCROW_GWEI: u64 = 100_000;

/// Epochs a proposal may be accepted in by default: a day at the default epoch.
pub const DEFAULT_PROPOSAL_EPOCHS: u64 = 30;

/// Blocks per epoch of a deployment by default: 48 minutes at 12 s a block, 30 epochs a day.
pub const DEFAULT_EPOCH_BLOCKS: u64 = 240;

/// Samples per node and epoch of a deployment by default. The detection target: a node that
/// lost 1% of the leaves in its draw is caught (an epoch it cannot prove) within a day with
/// probability >= 99.9%. That needs 1 - 0.99^n >= 0.999, n >= 688 samples a day; at 30 epochs
/// a day, 23 per epoch (690: missed with probability 0.99^690 = 0.097%).
pub const DEFAULT_SAMPLES: u8 = 23;

/// The contract's `drawMode`: drawn in the epochs the deal runs, one more (terminated during
/// its last drawn epoch), or never (terminated before it started).
const DRAWN_ONE_MORE: u8 = 1;
const DRAWN_NEVER: u8 = 2;

/// Epochs from its start a deal of `epochs` epochs (as cut by a termination) is drawn from.
fn draw_epochs(epochs: u64, mode: u8) -> u64 {
    match mode {
        DRAWN_NEVER => 0,
        DRAWN_ONE_MORE => epochs + 1,
        _ => epochs,
    }
}

/// Wei per gwei.
const WEI_PER_GWEI: u64 = 1_000_000_000;

/// `gwei` in wei.
pub fn gwei_to_wei(gwei: u64) -> U256 {
    U256::from(gwei) * U256::from(WEI_PER_GWEI)
}

/// `wei` in whole gwei (saturating).
pub fn wei_to_gwei(wei: U256) -> u64 {
    u64::try_from(wei / U256::from(WEI_PER_GWEI)).unwrap_or(u64::MAX)
}

/// A deal's state on chain: proposed by a client, not yet accepted.
pub const DEAL_PROPOSED: u8 = 1;
/// Accepted by its node (it may have ended: see [`DealInfo::runs_in`]).
pub const DEAL_ACTIVE: u8 = 2;
/// Taken back by its client before acceptance.
pub const DEAL_CANCELLED: u8 = 3;

impl DealInfo {
    /// A proposal that can no longer be accepted in `epoch` (the contract's `_expired`).
    pub fn proposal_expired(&self, epoch: u64, proposal_epochs: u64) -> bool {
        self.state == DEAL_PROPOSED && epoch >= self.proposed_epoch.saturating_add(proposal_epochs)
    }

    /// Accepted and over by `epoch`: never challenged again.
    pub fn is_over(&self, epoch: u64) -> bool {
        self.state == DEAL_ACTIVE && self.start + self.epochs <= epoch
    }

    /// Escrow of the epochs not settled yet.
    pub fn unsettled_escrow(&self) -> U256 {
        U256::from(self.epochs.saturating_sub(self.settled)) * self.price
    }

    /// Drawn from in `epoch` (see `cairn_proofs::challenge`).
    pub fn in_draw(&self, epoch: u64) -> bool {
        self.state == DEAL_ACTIVE && epoch >= self.start && epoch < self.start + self.draw_epochs
    }

    /// Still in its node's draw tree but drawn in no epoch from `epoch` on: to be pruned.
    pub fn prunable(&self, epoch: u64) -> bool {
        self.state == DEAL_ACTIVE && self.draw_slot != 0 && self.start + self.draw_epochs <= epoch
    }

    /// Its weight in its node's draw tree and whether it is drawn in `epoch`.
    pub fn slot_in_draw(&self, epoch: u64) -> cairn_proofs::challenge::Slot {
        cairn_proofs::challenge::Slot {
            weight: if self.draw_slot != 0 {
                self.leaf_count
            } else {
                0
            },
            drawn: self.in_draw(epoch),
        }
    }

    pub fn runs_in(&self, epoch: u64) -> bool {
        self.state == DEAL_ACTIVE
            && self.start != 0
            && epoch >= self.start
            && epoch < self.start + self.epochs
    }
}

/// The contract's fixed parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    pub genesis_block: u64,
    pub epoch_blocks: u64,
    pub proof_window: u64,
    pub samples: u8,
    pub slash_amount: U256,
    pub reward_bps: u16,
    /// Least bonded stake of a member; below it a node's proofs are refused.
    pub min_stake: U256,
    /// Least escrow of a proposal.
    pub min_escrow: U256,
    /// Epochs a proposal may be accepted in, from the one it was made in.
    pub proposal_epochs: u64,
}

impl Params {
    pub fn epoch_of(&self, block: u64) -> u64 {
        block.saturating_sub(self.genesis_block) / self.epoch_blocks
    }
    pub fn epoch_start(&self, epoch: u64) -> u64 {
        self.genesis_block + epoch * self.epoch_blocks
    }
    /// True once proofs for `epoch` are no longer accepted at `block`.
    pub fn is_over(&self, epoch: u64, block: u64) -> bool {
        block > self.epoch_start(epoch) + self.proof_window
    }
}

/// What the prover and the watcher need from the chain.
#[allow(async_fn_in_trait)]
pub trait ProofChain {
    fn me(&self) -> Address;
    async fn block_number(&self) -> Result<u64, ChainError>;
    /// This node's account balance, in wei.
    async fn balance(&self) -> Result<U256, ChainError>;
    async fn params(&self) -> Result<Params, ChainError>;
    async fn epoch_seed(&self, epoch: u64) -> Result<[u8; 32], ChainError>;
    async fn deal(&self, id: u64) -> Result<DealInfo, ChainError>;
    async fn deal_count(&self) -> Result<u64, ChainError>;
    async fn deals_of(&self, node: Address) -> Result<Vec<u64>, ChainError>;
    async fn is_proven(&self, node: Address, epoch: u64) -> Result<bool, ChainError>;
    async fn is_slashed(&self, node: Address, epoch: u64) -> Result<bool, ChainError>;
    async fn accept_deal(&self, id: u64) -> Result<u64, ChainError>;
    /// Take this node's deals at `slots` (1-based) that are drawn no more out of its draw
    /// tree; returns the gas used.
    async fn prune(&self, slots: Vec<u64>) -> Result<u64, ChainError>;
    /// Submit an epoch's proofs; returns the gas used.
    async fn submit_proofs(&self, epoch: u64, blob: Vec<u8>) -> Result<u64, ChainError>;
    async fn report_missed(&self, node: Address, epoch: u64, deal: u64) -> Result<u64, ChainError>;
}

/// The contract through alloy, signing with this node's key.
#[derive(Clone)]
pub struct Chain {
    contract: CairnStorage::CairnStorageInstance<DynProvider>,
    provider: DynProvider,
    me: Address,
    /// Held from a transaction's nonce to its acceptance by the node: the prover, the
    /// watcher and the publisher share this account, and the provider reads the next nonce
    /// from the chain, so two sends at once would both take the same one.
    sending: Arc<tokio::sync::Mutex<()>>,
    /// Counts this account's transactions mined but reverted.
    reverted: prometheus_client::metrics::counter::Counter,
}

/// Parse a hex private key (with or without 0x).
pub fn parse_key(key: &str) -> Result<PrivateKeySigner, ChainError> {
    key.trim()
        .parse::<PrivateKeySigner>()
        .map_err(|e| ChainError::Config(format!("invalid private key: {e}")))
}

/// A provider that signs with `key`: nonces counted locally and gas estimated per call, with
/// none of the caching fillers (a reverted estimate must not consume a nonce).
pub fn provider(rpc_url: &str, key: &str) -> Result<(DynProvider, Address), ChainError> {
    let signer = parse_key(key)?;
    let me = signer.address();
    let url = rpc_url
        .parse()
        .map_err(|e| ChainError::Config(format!("invalid rpc url {rpc_url:?}: {e}")))?;
    let p = ProviderBuilder::new()
        .disable_recommended_fillers()
        .with_gas_estimation()
        .with_simple_nonce_management()
        .fetch_chain_id()
        .wallet(EthereumWallet::from(signer))
        .connect_http(url);
    Ok((p.erased(), me))
}

impl Chain {
    pub fn connect(rpc_url: &str, contract: &str, key: &str) -> Result<Self, ChainError> {
        let (provider, me) = provider(rpc_url, key)?;
        let address: Address = contract.parse().map_err(|e| {
            ChainError::Config(format!("invalid contract address {contract:?}: {e}"))
        })?;
        Ok(Self {
            contract: CairnStorage::new(address, provider.clone()),
            provider,
            me,
            sending: Arc::default(),
            reverted: Default::default(),
        })
    }

    /// Count this account's reverted transactions in `counter` (the node's metrics).
    pub fn count_reverted_in(
        mut self,
        counter: prometheus_client::metrics::counter::Counter,
    ) -> Self {
        self.reverted = counter;
        self
    }

    /// Deploy a new contract with `args`; returns its address.
    pub async fn deploy(provider: &DynProvider, args: DeployArgs) -> Result<Address, ChainError> {
        let c = CairnStorage::deploy(
            provider.clone(),
            args.min_stake,
            args.epoch_blocks,
            args.proof_window,
            args.unbonding_epochs,
            args.slash_amount,
            args.reward_bps,
            args.samples,
            args.min_escrow,
            args.proposal_epochs,
        )
        .await
        .map_err(|e| from_contract("deploy", e))?;
        Ok(*c.address())
    }

    pub fn contract(&self) -> &CairnStorage::CairnStorageInstance<DynProvider> {
        &self.contract
    }

    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// Pre-flight the call (a refusal comes back decoded, and costs nothing), then send it
    /// with padded gas and wait for the receipt with a timeout.
    pub async fn send<C: SolCall>(
        &self,
        call: &'static str,
        b: SolCallBuilder<&DynProvider, C>,
    ) -> Result<TransactionReceipt, ChainError> {
        b.call_raw().await.map_err(|e| from_contract(call, e))?;
        let gas = b.estimate_gas().await.map_err(|e| from_contract(call, e))?;
        let pending = {
            let _one_at_a_time = self.sending.lock().await;
            b.gas(gas * GAS_PAD_PERCENT / 100 + 20_000)
                .send()
                .await
                .map_err(|e| from_contract(call, e))?
        };
        let receipt = pending
            .with_timeout(Some(RECEIPT_TIMEOUT))
            .get_receipt()
            .await
            .map_err(|e| match e {
                alloy::providers::PendingTransactionError::TxWatcher(_) => {
                    ChainError::Timeout { call }
                }
                e => ChainError::Rpc {
                    call,
                    reason: e.to_string(),
                },
            })?;
        if !receipt.status() {
            self.reverted.inc();
            tracing::warn!(
                call,
                block = receipt.block_number.unwrap_or_default(),
                "a transaction of this node was mined but reverted"
            );
            return Err(ChainError::Failed {
                call,
                block: receipt.block_number.unwrap_or_default(),
            });
        }
        Ok(receipt)
    }

    /// Register with `stake` and the peer word `peer` (see [`peer_word`]) unless already
    /// registered; returns whether it registered now. An account bound on chain to another
    /// peer word (registered once with another node identity) is a configuration error,
    /// registered or not: the contract never rebinds it.
    pub async fn ensure_registered(&self, stake: U256, peer: B256) -> Result<bool, ChainError> {
        let bound = self
            .contract
            .peerOf(self.me)
            .call()
            .await
            .map_err(|e| from_contract("peerOf", e))?;
        if bound != B256::ZERO && bound != peer {
            return Err(ChainError::Config(format!(
                "account {} is bound to peer word {bound} on chain, not this node's identity \
                 (peer word {peer}): use the identity key it registered with, or another account",
                self.me
            )));
        }
        if self.is_registered(self.me).await? {
            return Ok(false);
        }
        self.send("register", self.contract.register(peer).value(stake))
            .await?;
        Ok(true)
    }

    /// The distinct accounts whose registry entry (registration, stake, peer binding) may
    /// have changed in blocks `from_block..=to_block`, in the order of their first event:
    /// those named by this contract's `NodeRegistered`, `StakeAdded`, `WithdrawalRequested`,
    /// `StakeWithdrawn`, `NodeExited` and `Slashed` logs (the slashed node, not the
    /// reporter). One `eth_getLogs`; a caller following the chain splits long ranges to what
    /// its RPC endpoint accepts. Read each account's state with [`Chain::member_entry`].
    pub async fn registry_changes(
        &self,
        from_block: u64,
        to_block: u64,
    ) -> Result<Vec<Address>, ChainError> {
        use CairnStorage::CairnStorageEvents as Ev;
        let filter = Filter::new()
            .address(*self.contract.address())
            .event_signature(vec![
                CairnStorage::NodeRegistered::SIGNATURE_HASH,
                CairnStorage::StakeAdded::SIGNATURE_HASH,
                CairnStorage::WithdrawalRequested::SIGNATURE_HASH,
                CairnStorage::StakeWithdrawn::SIGNATURE_HASH,
                CairnStorage::NodeExited::SIGNATURE_HASH,
                CairnStorage::Slashed::SIGNATURE_HASH,
            ])
            .from_block(from_block)
            .to_block(to_block);
        let logs = self
            .provider
            .get_logs(&filter)
            .await
            .map_err(rpc("eth_getLogs"))?;
        let mut seen = std::collections::HashSet::new();
        let mut accounts = Vec::new();
        for log in logs {
            let account = match Ev::decode_log(&log.inner) {
                Ok(ev) => match ev.data {
                    Ev::NodeRegistered(e) => e.node,
                    Ev::StakeAdded(e) => e.node,
                    Ev::WithdrawalRequested(e) => e.node,
                    Ev::StakeWithdrawn(e) => e.node,
                    Ev::NodeExited(e) => e.node,
                    Ev::Slashed(e) => e.node,
                    _ => continue,
                },
                Err(e) => {
                    return Err(ChainError::Rpc {
                        call: "eth_getLogs",
                        reason: format!("undecodable registry log: {e}"),
                    });
                }
            };
            if seen.insert(account) {
                accounts.push(account);
            }
        }
        Ok(accounts)
    }

    /// `account`'s registry entry as of the latest block: its peer word (zero if it never
    /// registered) and whether it is a member (registered, bonded stake >= minStake).
    /// Membership is read first: a peer word, once set, never changes, so a member is never
    /// reported with a zero word even if a block lands between the two reads.
    pub async fn member_entry(&self, account: Address) -> Result<(B256, bool), ChainError> {
        let member = self
            .contract
            .isMember(account)
            .call()
            .await
            .map_err(|e| from_contract("isMember", e))?;
        let peer = self
            .contract
            .peerOf(account)
            .call()
            .await
            .map_err(|e| from_contract("peerOf", e))?;
        Ok((peer, member))
    }

    /// The block the contract was deployed in (epoch 0 starts there): no registry event is
    /// older, so a reader of [`Chain::registry_changes`] can start from it.
    pub async fn genesis_block(&self) -> Result<u64, ChainError> {
        self.contract
            .genesisBlock()
            .call()
            .await
            .map_err(|e| from_contract("genesisBlock", e))
    }

    /// Whether `node` is registered.
    pub async fn is_registered(&self, node: Address) -> Result<bool, ChainError> {
        let n = self
            .contract
            .nodes(node)
            .call()
            .await
            .map_err(|e| from_contract("nodes", e))?;
        Ok(n.registered)
    }

    /// Wei staked (bonded, unbonding) and owed to `who`.
    pub async fn balances(&self, who: Address) -> Result<(U256, U256, U256), ChainError> {
        let n = self
            .contract
            .nodes(who)
            .call()
            .await
            .map_err(|e| from_contract("nodes", e))?;
        let owed = self
            .contract
            .owed(who)
            .call()
            .await
            .map_err(|e| from_contract("owed", e))?;
        Ok((U256::from(n.stake), n.unbonding, owed))
    }
}

/// Constructor arguments of the contract.
#[derive(Debug, Clone, Copy)]
pub struct DeployArgs {
    pub min_stake: U256,
    pub epoch_blocks: u64,
    pub proof_window: u64,
    pub unbonding_epochs: u64,
    pub slash_amount: U256,
    pub reward_bps: u16,
    pub samples: u8,
    /// Least escrow of a proposal, in wei.
    pub min_escrow: U256,
    /// Epochs a proposal may be accepted in.
    pub proposal_epochs: u64,
}

impl ProofChain for Chain {
    fn me(&self) -> Address {
        self.me
    }

    async fn block_number(&self) -> Result<u64, ChainError> {
        self.provider
            .get_block_number()
            .await
            .map_err(rpc("eth_blockNumber"))
    }

    async fn balance(&self) -> Result<U256, ChainError> {
        self.provider
            .get_balance(self.me)
            .await
            .map_err(rpc("eth_getBalance"))
    }

    async fn params(&self) -> Result<Params, ChainError> {
        let c = &self.contract;
        let e = |n| move |err| from_contract(n, err);
        Ok(Params {
            genesis_block: c.genesisBlock().call().await.map_err(e("genesisBlock"))?,
            epoch_blocks: c.epochBlocks().call().await.map_err(e("epochBlocks"))?,
            proof_window: c.proofWindow().call().await.map_err(e("proofWindow"))?,
            samples: c
                .samplesPerEpoch()
                .call()
                .await
                .map_err(e("samplesPerEpoch"))?,
            slash_amount: c.slashAmount().call().await.map_err(e("slashAmount"))?,
            reward_bps: c.rewardBps().call().await.map_err(e("rewardBps"))?,
            min_stake: c.minStake().call().await.map_err(e("minStake"))?,
            min_escrow: c.minEscrow().call().await.map_err(e("minEscrow"))?,
            proposal_epochs: c
                .proposalEpochs()
                .call()
                .await
                .map_err(e("proposalEpochs"))?,
        })
    }

    async fn epoch_seed(&self, epoch: u64) -> Result<[u8; 32], ChainError> {
        let s = self
            .contract
            .epochSeed(epoch)
            .call()
            .await
            .map_err(|e| from_contract("epochSeed", e))?;
        Ok(s.0)
    }

    async fn deal(&self, id: u64) -> Result<DealInfo, ChainError> {
        let d = self
            .contract
            .deals(U256::from(id))
            .call()
            .await
            .map_err(|e| from_contract("deals", e))?;
        Ok(DealInfo {
            id,
            node: d.node,
            client: d.client,
            start: d.start.to::<u64>(),
            epochs: u64::from(d.epochs),
            commitment: d.commitment.0,
            leaf_count: d.leafCount.to::<u64>(),
            checkpoint: d.checkpoint,
            state: d.state,
            settled: u64::from(d.settled),
            draw_epochs: draw_epochs(u64::from(d.epochs), d.drawMode),
            draw_slot: u64::from(d.drawSlot),
            proposed_epoch: u64::from(d.proposedEpoch),
            price: U256::from(d.pricePerEpoch.to::<u128>()),
        })
    }

    async fn deal_count(&self) -> Result<u64, ChainError> {
        let n = self
            .contract
            .dealCount()
            .call()
            .await
            .map_err(|e| from_contract("dealCount", e))?;
        Ok(n.saturating_to())
    }

    async fn deals_of(&self, node: Address) -> Result<Vec<u64>, ChainError> {
        let v = self
            .contract
            .dealsOf(node)
            .call()
            .await
            .map_err(|e| from_contract("dealsOf", e))?;
        Ok(v.into_iter().map(|x| x.saturating_to()).collect())
    }

    async fn is_proven(&self, node: Address, epoch: u64) -> Result<bool, ChainError> {
        self.contract
            .isProven(node, epoch)
            .call()
            .await
            .map_err(|e| from_contract("isProven", e))
    }

    async fn is_slashed(&self, node: Address, epoch: u64) -> Result<bool, ChainError> {
        self.contract
            .isSlashed(node, epoch)
            .call()
            .await
            .map_err(|e| from_contract("isSlashed", e))
    }

    async fn accept_deal(&self, id: u64) -> Result<u64, ChainError> {
        let r = self
            .send("acceptDeal", self.contract.acceptDeal(U256::from(id)))
            .await?;
        Ok(r.gas_used)
    }

    async fn prune(&self, slots: Vec<u64>) -> Result<u64, ChainError> {
        let slots = slots.into_iter().map(U256::from).collect();
        let r = self
            .send("prune", self.contract.prune(self.me, slots))
            .await?;
        Ok(r.gas_used)
    }

    async fn submit_proofs(&self, epoch: u64, blob: Vec<u8>) -> Result<u64, ChainError> {
        let r = self
            .send(
                "submitProofs",
                self.contract.submitProofs(epoch, blob.into()),
            )
            .await?;
        Ok(r.gas_used)
    }

    async fn report_missed(&self, node: Address, epoch: u64, deal: u64) -> Result<u64, ChainError> {
        let r = self
            .send(
                "reportMissed",
                self.contract.reportMissed(node, epoch, U256::from(deal)),
            )
            .await?;
        Ok(r.gas_used)
    }
}
