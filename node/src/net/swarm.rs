//! The libp2p swarm (QUIC transport, Kademlia in server mode, identify, raw streams for
//! shard transfer) in a task that owns it; [`Network`] is the cloneable handle that talks to
//! it over a bounded channel.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use libp2p::connection_limits::{self, ConnectionLimits};
use libp2p::futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::kad::store::RecordStore;
use libp2p::kad::{self, GetProvidersOk, InboundRequest, QueryId, QueryResult, RecordKey};
use libp2p::metrics::Recorder;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, identify};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::membership::Membership;
use crate::metrics::{ReasonLabels, SwarmMetrics};

/// Kademlia protocol name: a Cairn network is its own DHT.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/cairn/kad/1.0.0");
/// Shard transfer protocol (see `wire`).
pub const SHARD_PROTOCOL: StreamProtocol = StreamProtocol::new("/cairn/shard/1");
/// How often the routing table is refreshed.
const BOOTSTRAP_EVERY: Duration = Duration::from_secs(30);
/// How long a provider lookup may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Most keys one node announces (provider records are kept in memory by libp2p-kad).
const MAX_PROVIDED_KEYS: usize = 1 << 20;
/// Most provider records of other peers held. The store's own limit is this plus
/// [`MAX_PROVIDED_KEYS`], so strangers can never fill the room this node's own
/// announcements need.
const MAX_REMOTE_PROVIDER_KEYS: usize = 1 << 20;
/// Most provider records held for one other peer.
pub const MAX_REMOTE_KEYS_PER_PEER: usize = 1 << 16;
/// Concurrent streams one QUIC connection may open to this node (the transport enforces it).
const MAX_STREAMS_PER_CONNECTION: u32 = 128;
/// Established connections per peer.
const MAX_CONNECTIONS_PER_PEER: u32 = 2;
/// Connections being set up at once, and established in all.
const MAX_PENDING_INCOMING: u32 = 128;
const MAX_ESTABLISHED: u32 = 4096;
/// Commands waiting for the swarm task.
const COMMAND_QUEUE: usize = 256;

/// Starting the network failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum NetError {
    #[error("cannot read or create the node identity at {path}: {reason}")]
    Identity { path: String, reason: String },
    #[error("invalid multiaddr {addr:?}: {reason}")]
    Addr { addr: String, reason: String },
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("cannot build the swarm: {0}")]
    Build(String),
}

/// Load the node's ed25519 identity from `path`, creating it (mode 0600) on first start.
pub fn load_identity(path: &Path) -> Result<Keypair, NetError> {
    let err = |reason: String| NetError::Identity {
        path: path.display().to_string(),
        reason,
    };
    match std::fs::read(path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes).map_err(|e| err(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key.to_protobuf_encoding().map_err(|e| err(e.to_string()))?;
            crate::private_file::write_private(path, &bytes).map_err(|e| err(e.to_string()))?;
            info!(peer_id = %key.public().to_peer_id(), "created a new node identity");
            Ok(key)
        }
        Err(e) => Err(err(e.to_string())),
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: connection_limits::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    identify: identify::Behaviour,
    stream: libp2p_stream::Behaviour,
}

enum Command {
    Peers(oneshot::Sender<Vec<PeerId>>),
    Connected(oneshot::Sender<usize>),
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    Provide(RecordKey),
    Disconnect(PeerId),
    Providers(RecordKey, oneshot::Sender<Vec<PeerId>>),
    Records(oneshot::Sender<RecordStats>),
}

/// Provider records held for other peers, and those refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordStats {
    pub remote: usize,
    pub refused: u64,
}

/// Accounting of other peers' provider records (the store itself cannot say whose they are).
#[derive(Default)]
struct RemoteRecords {
    per_peer: HashMap<PeerId, usize>,
    total: usize,
    refused: u64,
}

/// Prefix of the chain account a node announces in its identify agent version (for operators;
/// nothing reads it back).
const ACCOUNT_TAG: &str = " account/";

/// Handle to the swarm task. Cheap to clone.
#[derive(Clone)]
pub struct Network {
    peer_id: PeerId,
    commands: mpsc::Sender<Command>,
    streams: libp2p_stream::Control,
}

/// Settings of the swarm.
pub struct NetConfig {
    pub listen: Multiaddr,
    pub bootstrap: Vec<Multiaddr>,
    /// This node's chain account, announced in identify for operators to see (deals take
    /// the account the registry binds to a peer id, never this claim).
    pub account: Option<String>,
    /// Who may announce provider records here.
    pub membership: Membership,
}

impl Network {
    /// Start the swarm task; it stops when `cancel` fires. Returns the handle and the task.
    pub fn start(
        key: Keypair,
        cfg: NetConfig,
        metrics: SwarmMetrics,
        cancel: CancellationToken,
    ) -> Result<(Network, tokio::task::JoinHandle<()>), NetError> {
        let peer_id = key.public().to_peer_id();
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_quic_config(|mut c| {
                // Bulk transfer: windows large enough to keep a loopback or LAN link busy.
                c.max_stream_data = 16 << 20;
                c.max_connection_data = 64 << 20;
                c.max_concurrent_stream_limit = MAX_STREAMS_PER_CONNECTION;
                c.handshake_timeout = Duration::from_secs(3);
                c.max_idle_timeout = 10_000;
                c
            })
            .with_behaviour(|key| {
                let id = key.public().to_peer_id();
                let mut kcfg = kad::Config::new(KAD_PROTOCOL);
                kcfg.set_query_timeout(QUERY_TIMEOUT);
                // Inbound provider and value records come to the swarm task, which stores
                // provider records of members only and never stores values.
                kcfg.set_record_filtering(kad::StoreInserts::FilterBoth);
                let store = kad::store::MemoryStore::with_config(
                    id,
                    kad::store::MemoryStoreConfig {
                        max_provided_keys: MAX_PROVIDED_KEYS + MAX_REMOTE_PROVIDER_KEYS,
                        max_records: 1024,
                        ..Default::default()
                    },
                );
                let mut kad = kad::Behaviour::with_config(id, store, kcfg);
                // Loopback and LAN addresses are never confirmed external: serve anyway.
                kad.set_mode(Some(kad::Mode::Server));
                let identify = identify::Behaviour::new(
                    identify::Config::new("/cairn/1.0.0".into(), key.public()).with_agent_version(
                        format!(
                            "cairn/{}{}",
                            env!("CARGO_PKG_VERSION"),
                            cfg.account
                                .as_ref()
                                .map(|a| format!("{ACCOUNT_TAG}{a}"))
                                .unwrap_or_default()
                        ),
                    ),
                );
                let limits = connection_limits::Behaviour::new(
                    ConnectionLimits::default()
                        .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER))
                        .with_max_pending_incoming(Some(MAX_PENDING_INCOMING))
                        .with_max_established(Some(MAX_ESTABLISHED)),
                );
                Behaviour {
                    limits,
                    kad,
                    identify,
                    stream: libp2p_stream::Behaviour::new(),
                }
            })
            .map_err(|e| NetError::Build(e.to_string()))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
            .build();
        swarm
            .listen_on(cfg.listen.clone())
            .map_err(|e| NetError::Listen {
                addr: cfg.listen.to_string(),
                reason: e.to_string(),
            })?;
        for addr in &cfg.bootstrap {
            if let Err(e) = swarm.dial(addr.clone()) {
                warn!(%addr, error = %e, "cannot dial bootstrap peer");
            }
        }
        let streams = swarm.behaviour().stream.new_control();
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let task = tokio::spawn(run(swarm, rx, metrics, cfg.membership, cancel));
        Ok((
            Network {
                peer_id,
                commands: tx,
                streams,
            },
            task,
        ))
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// A control for opening and accepting shard streams.
    pub fn streams(&self) -> libp2p_stream::Control {
        self.streams.clone()
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Every peer in the routing table (not necessarily connected now) or connected now.
    pub async fn peers(&self) -> Vec<PeerId> {
        self.ask(Command::Peers).await.unwrap_or_default()
    }

    /// Peers with an open connection.
    pub async fn connected(&self) -> usize {
        self.ask(Command::Connected).await.unwrap_or(0)
    }

    /// Addresses the swarm listens on.
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.ask(Command::ListenAddrs).await.unwrap_or_default()
    }

    /// Announce that this node holds `key` (a provider record).
    pub async fn provide(&self, key: &[u8]) {
        let _ = self
            .commands
            .send(Command::Provide(RecordKey::new(&key)))
            .await;
    }

    /// Close every connection to `peer` (it sent bad data).
    pub async fn disconnect(&self, peer: PeerId) {
        let _ = self.commands.send(Command::Disconnect(peer)).await;
    }

    /// Provider records held for other peers, and those refused so far.
    pub async fn record_stats(&self) -> RecordStats {
        self.ask(Command::Records).await.unwrap_or_default()
    }

    /// Nodes that announced `key`.
    pub async fn providers(&self, key: &[u8]) -> Vec<PeerId> {
        self.ask(|tx| Command::Providers(RecordKey::new(&key), tx))
            .await
            .unwrap_or_default()
    }
}

fn routing_table_len(swarm: &mut Swarm<Behaviour>) -> usize {
    swarm
        .behaviour_mut()
        .kad
        .kbuckets()
        .map(|b| b.num_entries())
        .sum()
}

async fn run(
    mut swarm: Swarm<Behaviour>,
    mut commands: mpsc::Receiver<Command>,
    metrics: SwarmMetrics,
    membership: Membership,
    cancel: CancellationToken,
) {
    let mut remote = RemoteRecords::default();
    let mut lookups: HashMap<QueryId, (HashSet<PeerId>, oneshot::Sender<Vec<PeerId>>)> =
        HashMap::new();
    let mut refresh = tokio::time::interval(BOOTSTRAP_EVERY);
    let mut joined = false;
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = refresh.tick() => {
                // Fails only while no peer is known yet.
                let _ = swarm.behaviour_mut().kad.bootstrap();
            }
            cmd = commands.recv() => {
                let Some(cmd) = cmd else { break };
                handle_command(&mut swarm, cmd, &mut lookups, &remote);
            }
            event = swarm.select_next_some() => {
                record(&metrics, &event);
                let identified = matches!(
                    event,
                    SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { .. }))
                );
                if let SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::InboundRequest {
                    request: InboundRequest::AddProvider { record: Some(record) },
                })) = &event
                {
                    store_provider(&mut swarm, record.clone(), &membership, &mut remote, &metrics);
                }
                handle_event(&mut swarm, event, &mut lookups);
                // Join as soon as the first peer is known: the walk towards our own key makes
                // the rest of the network learn this node (and its current address).
                if identified && !joined {
                    joined = swarm.behaviour_mut().kad.bootstrap().is_ok();
                }
                metrics.connected_peers.set(i64::try_from(swarm.connected_peers().count()).unwrap_or(i64::MAX));
                metrics.routing_table_peers.set(i64::try_from(routing_table_len(&mut swarm)).unwrap_or(i64::MAX));
                if identified {
                    let members = swarm
                        .behaviour_mut()
                        .kad
                        .kbuckets()
                        .flat_map(|b| b.iter().map(|e| *e.node.key.preimage()).collect::<Vec<_>>())
                        .filter(|p| membership.is_member(p))
                        .count();
                    metrics.members.set(i64::try_from(members).unwrap_or(i64::MAX));
                }
            }
        }
    }
    debug!("swarm task stopped");
}

/// Store a provider record a peer sent, if the peer is a member within its share.
fn store_provider(
    swarm: &mut Swarm<Behaviour>,
    record: kad::ProviderRecord,
    membership: &Membership,
    remote: &mut RemoteRecords,
    metrics: &SwarmMetrics,
) {
    let provider = record.provider;
    let refuse = |remote: &mut RemoteRecords, reason: &'static str| {
        remote.refused += 1;
        metrics
            .provider_refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
        debug!(%provider, reason, "provider record refused");
    };
    if !membership.is_member(&provider) {
        return refuse(remote, "not_member");
    }
    let store = swarm.behaviour_mut().kad.store_mut();
    // A record the peer already holds here is refreshed in place and costs nothing more.
    let renewal = store
        .providers(&record.key)
        .iter()
        .any(|p| p.provider == provider);
    if !renewal {
        let held = remote.per_peer.get(&provider).copied().unwrap_or(0);
        if held >= MAX_REMOTE_KEYS_PER_PEER {
            return refuse(remote, "peer_cap");
        }
        if remote.total >= MAX_REMOTE_PROVIDER_KEYS {
            return refuse(remote, "remote_cap");
        }
    }
    match store.add_provider(record) {
        Ok(()) if !renewal => {
            *remote.per_peer.entry(provider).or_default() += 1;
            remote.total += 1;
            metrics
                .remote_provider_records
                .set(i64::try_from(remote.total).unwrap_or(i64::MAX));
        }
        Ok(()) => {}
        Err(e) => {
            warn!(%provider, error = %e, "cannot store a provider record");
            refuse(remote, "store");
        }
    }
}

fn record(metrics: &SwarmMetrics, event: &SwarmEvent<BehaviourEvent>) {
    match event {
        SwarmEvent::Behaviour(BehaviourEvent::Kad(e)) => metrics.libp2p.record(e),
        SwarmEvent::Behaviour(BehaviourEvent::Identify(e)) => metrics.libp2p.record(e),
        _ => {}
    }
    metrics.libp2p.record(event);
}

fn handle_command(
    swarm: &mut Swarm<Behaviour>,
    cmd: Command,
    lookups: &mut HashMap<QueryId, (HashSet<PeerId>, oneshot::Sender<Vec<PeerId>>)>,
    remote: &RemoteRecords,
) {
    match cmd {
        Command::Records(tx) => {
            let _ = tx.send(RecordStats {
                remote: remote.total,
                refused: remote.refused,
            });
        }
        Command::Peers(tx) => {
            let mut peers = Vec::new();
            for bucket in swarm.behaviour_mut().kad.kbuckets() {
                for entry in bucket.iter() {
                    peers.push(*entry.node.key.preimage());
                }
            }
            // A full k-bucket leaves out peers this node is talking to anyway.
            peers.extend(swarm.connected_peers().copied());
            peers.sort();
            peers.dedup();
            let _ = tx.send(peers);
        }
        Command::Connected(tx) => {
            let _ = tx.send(swarm.connected_peers().count());
        }
        Command::ListenAddrs(tx) => {
            let _ = tx.send(swarm.listeners().cloned().collect());
        }
        Command::Disconnect(peer) => {
            let _ = swarm.disconnect_peer_id(peer);
        }
        Command::Provide(key) => {
            if let Err(e) = swarm.behaviour_mut().kad.start_providing(key) {
                warn!(error = %e, "cannot announce a provider record");
            }
        }
        Command::Providers(key, tx) => {
            let id = swarm.behaviour_mut().kad.get_providers(key);
            lookups.insert(id, (HashSet::new(), tx));
        }
    }
}

fn handle_event(
    swarm: &mut Swarm<Behaviour>,
    event: SwarmEvent<BehaviourEvent>,
    lookups: &mut HashMap<QueryId, (HashSet<PeerId>, oneshot::Sender<Vec<PeerId>>)>,
) {
    match event {
        SwarmEvent::NewListenAddr { address, .. } => {
            info!(%address, peer_id = %swarm.local_peer_id(), "p2p listening");
        }
        SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
            peer_id,
            info,
            ..
        })) if info.protocols.contains(&KAD_PROTOCOL) => {
            let kad = &mut swarm.behaviour_mut().kad;
            for addr in info.listen_addrs {
                kad.add_address(&peer_id, addr);
            }
        }
        SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
            id,
            result: QueryResult::GetProviders(r),
            step,
            ..
        })) => {
            if let Some((found, _)) = lookups.get_mut(&id)
                && let Ok(GetProvidersOk::FoundProviders { providers, .. }) = r
            {
                found.extend(providers);
            }
            if step.last
                && let Some((found, tx)) = lookups.remove(&id)
            {
                let _ = tx.send(found.into_iter().collect());
            }
        }
        SwarmEvent::ConnectionEstablished { peer_id, .. } => {
            debug!(%peer_id, "connected");
        }
        SwarmEvent::ConnectionClosed {
            peer_id,
            num_established: 0,
            ..
        } => {
            debug!(%peer_id, "disconnected");
        }
        _ => {}
    }
}
