//! A running node: the store, the HTTP server, and their shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use cairn_storage::{OpenError, RocksBackend, RocksOptions, Store};
use thiserror::Error;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::{AppState, router};
use crate::config::{NodeConfig, ValueMode};

/// A node could not start.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot open the store in {dir}: {source}")]
    Store {
        dir: String,
        #[source]
        source: OpenError,
    },
    #[error(transparent)]
    Network(#[from] crate::net::NetError),
    #[error("chain: {0}")]
    Chain(#[from] crate::chain::ChainError),
    #[error(transparent)]
    Token(#[from] crate::api::auth::TokenError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Who is a member without a chain: the configured list, or everyone (development).
fn membership_of(config: &NodeConfig) -> Result<crate::net::Membership, StartError> {
    use crate::net::Membership;
    if config.network.open_membership {
        tracing::warn!(
            "OPEN MEMBERSHIP: every peer may store shards here, be placed on and serve reads. \
             For local development only; list the members in network.members or use a chain"
        );
        return Ok(Membership::open());
    }
    let peers = config
        .network
        .members
        .iter()
        .map(|m| {
            m.parse::<libp2p::PeerId>()
                .map_err(|e| StartError::Config(format!("network.members: {m:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if peers.is_empty() && !config.network.bootstrap.is_empty() {
        tracing::warn!(
            "network.members is empty and there is no chain: this node joins its peers but \
             places nothing on them and accepts no shards from them"
        );
    }
    Ok(Membership::list(&peers))
}

/// A started node. Dropping it does not stop it: call [`Node::shutdown`] and [`Node::wait`].
pub struct Node {
    /// The address the HTTP API listens on.
    pub http_addr: SocketAddr,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
}

impl Node {
    /// Open the store and start serving.
    pub async fn start(config: NodeConfig) -> Result<Node, StartError> {
        let layout = config
            .erasure
            .layout()
            .map_err(|e| StartError::Config(e.to_string()))?;
        let dir = config.node.data_dir.join("store");
        let opts = RocksOptions {
            value_mode: match config.storage.value_mode {
                ValueMode::Files => cairn_storage::ValueMode::Files,
                ValueMode::Blobdb => cairn_storage::ValueMode::BlobDb,
            },
            ..RocksOptions::default()
        };
        let capacity = config.storage.capacity_bytes;
        let open_dir = dir.clone();
        let store = tokio::task::spawn_blocking(move || {
            let backend = RocksBackend::open(&open_dir, &opts).map_err(OpenError::from)?;
            Store::open(backend, capacity)
        })
        .await
        .map_err(|e| StartError::Config(format!("store opener failed: {e}")))?
        .map_err(|source| StartError::Store {
            dir: dir.display().to_string(),
            source,
        })?;
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let key = crate::net::load_identity(&config.node.data_dir.join("identity.key"))?;
        let parse = |a: &String| {
            a.parse::<libp2p::Multiaddr>()
                .map_err(|e| StartError::Config(format!("invalid multiaddr {a:?}: {e}")))
        };
        let metrics = crate::metrics::Metrics::new(Some(store.clone()));
        let chain = if config.chain.enabled() {
            let chain_key = config.chain.key();
            if chain_key.is_empty() {
                return Err(StartError::Config(format!(
                    "chain.rpc_url is set but no key: set chain.key or {}",
                    crate::chain::KEY_ENV
                )));
            }
            let c = crate::chain::Chain::connect(
                &config.chain.rpc_url,
                &config.chain.contract,
                &chain_key,
            )?
            .count_reverted_in(metrics.proofs.reverted.clone());
            let stake = crate::chain::gwei_to_wei(config.chain.stake_gwei);
            let peer = crate::chain::peer_word(&key.public().to_peer_id());
            if config.chain.stake_gwei > 0 && c.ensure_registered(stake, peer).await? {
                tracing::info!(account = %crate::chain::ProofChain::me(&c), %peer, stake_gwei = config.chain.stake_gwei, "registered on chain");
            }
            Some(c)
        } else {
            None
        };
        let jobs = crate::worker::Jobs::new(metrics.jobs.clone());
        let poll = std::time::Duration::from_millis(config.chain.poll_ms);
        let membership = match &chain {
            Some(c) => {
                // The registry is read once before the node serves, then followed.
                let (m, writer) =
                    crate::net::Membership::dynamic(crate::net::membership::Mode::Chain);
                let registry = crate::chain::registry::Registry::new(
                    c.clone(),
                    writer,
                    metrics.chain_registry.clone(),
                    poll,
                )
                .await?;
                crate::worker::spawn(&mut tasks, &jobs, registry, cancel.clone());
                m
            }
            None => membership_of(&config)?,
        };
        let net_cfg = crate::net::NetConfig {
            membership: membership.clone(),
            account: chain
                .as_ref()
                .map(|c| crate::chain::ProofChain::me(c).to_string()),
            listen: parse(&config.network.listen)?,
            bootstrap: config
                .network
                .bootstrap
                .iter()
                .map(parse)
                .collect::<Result<_, _>>()?,
        };
        let (net, swarm_task) =
            crate::net::Network::start(key, net_cfg, metrics.swarm.clone(), cancel.clone())?;
        tasks.spawn(async move {
            let _ = swarm_task.await;
        });
        let stats = Arc::new(crate::net::TransferStats::new(metrics.transfers.clone()));
        let server = crate::net::ShardServer::new(
            store.clone(),
            net.clone(),
            membership.clone(),
            crate::net::ServerLimits {
                peer_pending_bytes: config.storage.peer_pending_bytes,
                max_sessions_per_peer: config.storage.max_uploads_per_peer,
                upload_idle: std::time::Duration::from_secs(config.storage.upload_idle_secs.max(1)),
            },
            Arc::clone(&stats),
            chain.clone(),
        );
        let upload_sweep = crate::net::UploadSweeper::new(
            Arc::clone(&server),
            std::time::Duration::from_secs(config.storage.upload_idle_secs.max(1)),
        );
        tasks.spawn(server.run(cancel.clone()));
        crate::worker::spawn(&mut tasks, &jobs, upload_sweep, cancel.clone());
        let publisher = match chain {
            Some(c) => {
                let prover = crate::chain::prover::Prover::new(
                    c.clone(),
                    store.clone(),
                    metrics.proofs.clone(),
                    poll,
                )
                .await?;
                crate::worker::spawn(&mut tasks, &jobs, prover, cancel.clone());
                let watcher = crate::chain::watcher::Watcher::new(
                    c.clone(),
                    metrics.proofs.clone(),
                    membership.clone(),
                    poll,
                )
                .await?;
                crate::worker::spawn(&mut tasks, &jobs, watcher, cancel.clone());
                let sweeper = crate::chain::unpaid::UnpaidSweeper {
                    chain: c.clone(),
                    store: store.clone(),
                    grace: std::time::Duration::from_secs(config.storage.unpaid_grace_secs),
                    metrics: metrics.proofs.clone(),
                    freed: 0,
                };
                crate::worker::spawn(&mut tasks, &jobs, sweeper, cancel.clone());
                let mut payout = crate::chain::payout::Payout::new(
                    c.clone(),
                    crate::chain::ProofChain::params(&c).await?,
                    poll * crate::chain::payout::PAYOUT_POLLS,
                    metrics.proofs.clone(),
                );
                payout.settle_every = config.chain.settle_every_epochs;
                payout.cancel_after = config.chain.cancel_proposals_after_epochs;
                payout.withdraw_min_gwei = config.chain.withdraw_min_gwei;
                crate::worker::spawn(&mut tasks, &jobs, payout, cancel.clone());
                Some(crate::chain::publish::Publisher {
                    chain: c,
                    deal_epochs: config.chain.deal_epochs,
                    deal_price: crate::chain::gwei_to_wei(config.chain.deal_price_gwei),
                })
            }
            None => None,
        };
        let cluster = crate::cluster::Cluster {
            transfers: crate::net::Transfers::new(net.clone(), stats),
            net,
            store: store.clone(),
            allow_colocation: config.network.allow_colocation,
            membership,
        };
        let delete_retry = crate::cluster::DeleteRetry::new(
            cluster.clone(),
            std::time::Duration::from_secs(config.storage.delete_retry_secs.max(1)),
        );
        crate::worker::spawn(&mut tasks, &jobs, delete_retry, cancel.clone());
        if config.storage.scrub_mib_per_s > 0 {
            let scrubber = crate::scrub::Scrubber::new(
                store.clone(),
                cluster.clone(),
                config.storage.scrub_mib_per_s,
                std::time::Duration::from_secs(config.storage.scrub_interval_secs),
                metrics.scrub.clone(),
            );
            crate::worker::spawn(&mut tasks, &jobs, scrubber, cancel.clone());
        }
        if config.repair.mib_per_s > 0 {
            let repairer = crate::repair::Repairer::new(
                cluster.clone(),
                crate::repair::policy::RepairPolicy {
                    threshold: config.repair.threshold,
                    grace: std::time::Duration::from_secs(config.repair.grace_secs),
                    urgent: config.repair.urgent_missing,
                },
                std::time::Duration::from_secs(config.repair.interval_secs),
                config.repair.mib_per_s,
                metrics.repair.clone(),
            );
            crate::worker::spawn(&mut tasks, &jobs, repairer, cancel.clone());
        }
        let token = match config.node.configured_token() {
            t if !t.is_empty() => t,
            _ => crate::api::auth::load_or_create_token(&config.node.data_dir)?,
        };
        let addr = config.node.http_listen;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Listen { addr, source })?;
        let http_addr = listener
            .local_addr()
            .map_err(|source| StartError::Listen { addr, source })?;
        let state = AppState {
            store,
            default_layout: layout,
            put_permits: Arc::new(Semaphore::new(config.storage.max_concurrent_puts)),
            max_puts: config.storage.max_concurrent_puts,
            started: Instant::now(),
            cluster: Some(cluster),
            publisher,
            metrics,
            access: Arc::new(crate::api::auth::Access::new(
                token,
                http_addr,
                &config.node.allowed_hosts,
            )),
            tensors: Default::default(),
            jobs,
            uploads: Default::default(),
        };
        let stop = cancel.clone();
        tasks.spawn(async move {
            let served = axum::serve(listener, router(state))
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "http server failed");
            }
        });
        tracing::info!(%http_addr, data_dir = %config.node.data_dir.display(), "node started");
        Ok(Node {
            http_addr,
            cancel,
            tasks,
        })
    }

    /// Ask every task to stop.
    pub fn shutdown(&self) {
        self.cancel.cancel();
    }

    /// A token that stops the node when cancelled.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Wait for every task to finish.
    pub async fn wait(mut self) {
        while let Some(r) = self.tasks.join_next().await {
            if let Err(e) = r {
                tracing::error!(error = %e, "node task failed");
            }
        }
    }
}
