//! Prometheus metrics: one struct per component, all in one registry served at `/metrics`
//! (OpenMetrics text). Names follow Prometheus conventions: `cairn_` prefix, base units,
//! `_total` counters. The swarm and Kademlia are measured by `libp2p-metrics` under
//! `cairn_libp2p_`. Store figures are read at scrape time (the store keeps its own counters).

use std::fmt::Write as _;
use std::sync::Arc;

use cairn_storage::{Backend, Store};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

mod jobs;
pub use jobs::{
    JobLabels, JobMetrics, REPAIR_RESULTS, RepairMetrics, ResultLabels, SCRUB_RESULTS, ScrubMetrics,
};

/// Buckets for request and transfer durations: 1 ms to about 65 s.
fn duration_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The matched route, e.g. `/v1/checkpoints/{cid}/files/{*path}`.
    pub route: String,
    pub method: String,
    /// HTTP status code.
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteOnly {
    pub route: String,
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Why a request was refused (a stable short code).
    pub reason: &'static str,
}

/// Reasons a shard request is refused, each a series from the start.
pub const SHARD_REFUSALS: &[&str] = &[
    "not_member",
    "unknown_upload",
    "commit_mismatch",
    "stream_limit",
    "quota",
    "header_timeout",
    "bad_request",
];

/// Reasons a provider record from a peer is refused.
pub const PROVIDER_REFUSALS: &[&str] = &["not_member", "peer_cap", "remote_cap", "store"];

/// Reasons an HTTP request is refused before its handler runs.
pub const HTTP_REFUSALS: &[&str] = &["unauthorized", "foreign_host"];

/// The HTTP API.
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    pub requests: Family<RouteLabels, Counter>,
    pub duration: Family<RouteOnly, Histogram, fn() -> Histogram>,
    /// File bytes stored by uploads through this node.
    pub put_bytes: Counter,
    /// Upload body bytes received (what clients sent, counted as read: a resumed put's
    /// bytes sent again show as the excess over `put_bytes`).
    pub put_body_bytes: Counter,
    /// Puts that went on from where an interrupted run of them stopped.
    pub puts_resumed: Counter,
    /// File bytes sent to clients by reads through this node.
    pub get_bytes: Counter,
    /// Requests refused for a missing or wrong token, or a foreign Host.
    pub refused: Family<ReasonLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    /// `push` (this node sends a shard), `fetch` (it pulls one), `serve` (a peer pulls one
    /// from it), `receive` (a peer pushes one to it).
    pub op: &'static str,
    /// `ok` or `error`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpOnly {
    pub op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    /// `in` (received from peers) or `out` (sent to peers).
    pub direction: &'static str,
}

/// Shard transfers between nodes.
#[derive(Clone, Debug)]
pub struct TransferMetrics {
    pub transfers: Family<OpLabels, Counter>,
    pub duration: Family<OpOnly, Histogram, fn() -> Histogram>,
    pub bytes: Family<DirectionLabels, Counter>,
    /// Peer answers that failed verification (the peer was disconnected).
    pub bad_peer_answers: Counter,
    /// Shard streams this node is answering now.
    pub active_streams: Gauge,
    /// Shard requests refused, by reason.
    pub refused: Family<ReasonLabels, Counter>,
}

impl TransferMetrics {
    pub fn record(&self, op: &'static str, ok: bool, secs: f64) {
        let outcome = if ok { "ok" } else { "error" };
        self.transfers
            .get_or_create(&OpLabels { op, outcome })
            .inc();
        self.duration.get_or_create(&OpOnly { op }).observe(secs);
    }

    pub fn bytes(&self, direction: &'static str, n: u64) {
        self.bytes
            .get_or_create(&DirectionLabels { direction })
            .inc_by(n);
    }

    /// Count a refused request.
    pub fn refuse(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub fn refused_total(&self, reason: &'static str) -> u64 {
        self.refused.get_or_create(&ReasonLabels { reason }).get()
    }

    pub fn bytes_total(&self, direction: &'static str) -> u64 {
        self.bytes
            .get_or_create(&DirectionLabels { direction })
            .get()
    }
}

/// The swarm: peers and the routing table (events are recorded by `libp2p-metrics`).
#[derive(Clone)]
pub struct SwarmMetrics {
    pub libp2p: Arc<libp2p::metrics::Metrics>,
    pub connected_peers: Gauge,
    pub routing_table_peers: Gauge,
    /// Members known (other nodes and this one, when it is one).
    pub members: Gauge,
    /// Provider records of other peers held.
    pub remote_provider_records: Gauge,
    /// Provider records from peers refused, by reason.
    pub provider_refused: Family<ReasonLabels, Counter>,
}

impl std::fmt::Debug for SwarmMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwarmMetrics").finish_non_exhaustive()
    }
}

/// The members' registry followed from chain.
#[derive(Clone, Debug, Default)]
pub struct RegistryMetrics {
    /// Members in the registry (registered with enough stake and a bound peer id).
    pub members: Gauge,
    /// Last block whose registry events were read.
    pub synced_block: Gauge,
    /// Sync attempts that failed (the last good set is kept).
    pub errors: Counter,
}

/// Proofs of storage and the chain (prover and watcher tasks).
#[derive(Clone, Debug, Default)]
pub struct ProofMetrics {
    /// The chain's current epoch as last seen.
    pub current_epoch: Gauge,
    /// Deals this node accepted that run in the current epoch.
    pub deals: Gauge,
    /// Epochs whose proofs this node got onto the chain.
    pub epochs_proven: Counter,
    /// Last epoch proven.
    pub last_proven_epoch: Gauge,
    /// Challenged leaves proven.
    pub samples: Counter,
    /// Gas used by proof transactions.
    pub gas: Counter,
    /// Epochs this node could not prove from its own data (no proof was sent).
    pub failures: Counter,
    /// Of those, epochs where held data no longer matched a deal (corrupt or lost).
    pub corrupt: Counter,
    /// Proof transactions that failed to be sent or mined (retried within the window).
    pub submit_errors: Counter,
    /// Missed epochs of other nodes this node reported.
    pub reported: Counter,
    /// Transactions this node sent that were mined but reverted (gas paid for nothing).
    pub reverted: Counter,
    /// Shares pushed here that no deal paid for, freed after their grace time.
    pub unpaid_freed: Counter,
    /// Settlements of this node's deals it sent (payment for proven epochs).
    pub settlements: Counter,
    /// Gwei this node withdrew from what the contract owed it.
    pub withdrawn_gwei: Counter,
    /// Proposals this node made that no node accepted in time, cancelled.
    pub cancellations: Counter,
    /// This node's chain account balance, in gwei (pays for proof transactions).
    pub balance_gwei: Gauge,
}

/// Store figures, read at scrape time.
struct StoreCollector<B: Backend> {
    store: Store<B>,
}

impl<B: Backend> std::fmt::Debug for StoreCollector<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreCollector").finish_non_exhaustive()
    }
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

impl<B: Backend> Collector for StoreCollector<B> {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let st = self.store.stats();
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        gauge(
            &mut enc,
            "store_used_bytes",
            "Bytes of shards and outboards held",
            clamp(st.used_bytes),
        )?;
        gauge(
            &mut enc,
            "store_capacity_bytes",
            "Configured capacity (storage.capacity_bytes)",
            clamp(st.capacity_bytes),
        )?;
        gauge(&mut enc, "store_shards", "Shards held", clamp(st.shards))?;
        let c = ConstCounter::new(st.corrupt_reads);
        c.encode(enc.encode_descriptor(
            "store_corrupt_reads",
            "Local reads that found shard bytes not matching their CID",
            None,
            c.metric_type(),
        )?)?;
        Ok(())
    }
}

/// Every metric of a node.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub http: HttpMetrics,
    pub transfers: TransferMetrics,
    pub swarm: SwarmMetrics,
    pub proofs: ProofMetrics,
    pub chain_registry: RegistryMetrics,
    pub jobs: JobMetrics,
    pub scrub: ScrubMetrics,
    pub repair: RepairMetrics,
}

impl Metrics {
    /// A registry with every component's metrics; the store is read at scrape time.
    pub fn new<B: Backend>(store: Option<Store<B>>) -> Self {
        let mut root = Registry::default();
        let libp2p = Arc::new(libp2p::metrics::Metrics::new(
            root.sub_registry_with_prefix("cairn"),
        ));
        let reg = root.sub_registry_with_prefix("cairn");
        reg.register(
            "build",
            "Version of this node",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        let http = HttpMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_buckets as fn() -> Histogram),
            put_bytes: Counter::default(),
            put_body_bytes: Counter::default(),
            puts_resumed: Counter::default(),
            get_bytes: Counter::default(),
            refused: Family::default(),
        };
        reg.register(
            "http_refused",
            "HTTP requests refused before their handler (missing token, foreign Host)",
            http.refused.clone(),
        );
        for reason in HTTP_REFUSALS {
            let _ = http.refused.get_or_create(&ReasonLabels { reason });
        }
        reg.register(
            "http_requests",
            "HTTP API requests answered",
            http.requests.clone(),
        );
        reg.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP API request (until the response starts)",
            http.duration.clone(),
        );
        reg.register(
            "put_bytes",
            "File bytes stored by uploads through this node",
            http.put_bytes.clone(),
        );
        reg.register(
            "put_body_bytes",
            "Upload body bytes received by this node",
            http.put_body_bytes.clone(),
        );
        reg.register(
            "puts_resumed",
            "Puts that went on from where an interrupted run of them stopped",
            http.puts_resumed.clone(),
        );
        reg.register(
            "get_bytes",
            "File bytes sent to clients",
            http.get_bytes.clone(),
        );
        let transfers = TransferMetrics {
            transfers: Family::default(),
            duration: Family::new_with_constructor(duration_buckets as fn() -> Histogram),
            bytes: Family::default(),
            bad_peer_answers: Counter::default(),
            active_streams: Gauge::default(),
            refused: Family::default(),
        };
        reg.register(
            "shard_requests_refused",
            "Shard requests from peers refused, by reason",
            transfers.refused.clone(),
        );
        for reason in SHARD_REFUSALS {
            let _ = transfers.refused.get_or_create(&ReasonLabels { reason });
        }
        reg.register(
            "shard_transfers",
            "Shard transfers with peers, by operation and outcome",
            transfers.transfers.clone(),
        );
        reg.register(
            "shard_transfer_duration_seconds",
            "Duration of shard transfers with peers",
            transfers.duration.clone(),
        );
        reg.register(
            "shard_transfer_bytes",
            "Shard bytes moved to and from peers",
            transfers.bytes.clone(),
        );
        reg.register(
            "bad_peer_answers",
            "Peer answers that failed verification (the peer was disconnected)",
            transfers.bad_peer_answers.clone(),
        );
        reg.register(
            "shard_streams_active",
            "Shard streams this node is answering",
            transfers.active_streams.clone(),
        );
        // Every series exists from the start (at zero), so rates and alerts see the first event.
        for op in ["push", "fetch", "serve", "receive"] {
            for outcome in ["ok", "error"] {
                let _ = transfers.transfers.get_or_create(&OpLabels { op, outcome });
            }
            let _ = transfers.duration.get_or_create(&OpOnly { op });
        }
        for direction in ["in", "out"] {
            let _ = transfers
                .bytes
                .get_or_create(&DirectionLabels { direction });
        }
        let swarm = SwarmMetrics {
            libp2p,
            connected_peers: Gauge::default(),
            routing_table_peers: Gauge::default(),
            members: Gauge::default(),
            remote_provider_records: Gauge::default(),
            provider_refused: Family::default(),
        };
        reg.register(
            "members",
            "Members of the network this node knows (placement candidates)",
            swarm.members.clone(),
        );
        reg.register(
            "kad_remote_provider_records",
            "Provider records of other peers this node holds",
            swarm.remote_provider_records.clone(),
        );
        reg.register(
            "kad_provider_records_refused",
            "Provider records from peers refused, by reason",
            swarm.provider_refused.clone(),
        );
        for reason in PROVIDER_REFUSALS {
            let _ = swarm
                .provider_refused
                .get_or_create(&ReasonLabels { reason });
        }
        reg.register(
            "p2p_connected_peers",
            "Peers with an open QUIC connection",
            swarm.connected_peers.clone(),
        );
        reg.register(
            "kad_routing_table_peers",
            "Peers in the Kademlia routing table",
            swarm.routing_table_peers.clone(),
        );
        let proofs = ProofMetrics::default();
        for (name, help, m) in [
            (
                "proof_current_epoch",
                "The chain's epoch as last seen by the prover",
                &proofs.current_epoch,
            ),
            (
                "proof_deals",
                "Storage deals this node accepted that run in the current epoch",
                &proofs.deals,
            ),
            (
                "proof_last_proven_epoch",
                "Last epoch this node proved on chain",
                &proofs.last_proven_epoch,
            ),
            (
                "chain_balance_gwei",
                "Balance of this node's chain account, in gwei",
                &proofs.balance_gwei,
            ),
        ] {
            reg.register(name, help, m.clone());
        }
        for (name, help, m) in [
            (
                "proof_epochs_proven",
                "Epochs proven on chain by this node",
                &proofs.epochs_proven,
            ),
            (
                "proof_samples",
                "Challenged leaves proven by this node",
                &proofs.samples,
            ),
            (
                "proof_gas_used",
                "Gas used by this node's proof transactions",
                &proofs.gas,
            ),
            (
                "proof_failures",
                "Epochs this node could not prove from its data (no proof sent)",
                &proofs.failures,
            ),
            (
                "proof_corrupt_data",
                "Epochs where data held for a deal did not match its commitment",
                &proofs.corrupt,
            ),
            (
                "proof_submit_errors",
                "Proof transactions that failed to be sent or mined",
                &proofs.submit_errors,
            ),
            (
                "proof_missed_reported",
                "Missed epochs of other nodes reported by this node",
                &proofs.reported,
            ),
            (
                "chain_reverted_transactions",
                "Transactions this node sent that were mined but reverted",
                &proofs.reverted,
            ),
            (
                "unpaid_shares_freed",
                "Shares pushed here that no deal paid for, freed after their grace time",
                &proofs.unpaid_freed,
            ),
            (
                "chain_settlements",
                "Settlements of this node's deals it sent",
                &proofs.settlements,
            ),
            (
                "chain_cancelled_proposals",
                "Proposals this node made that no node accepted in time, cancelled",
                &proofs.cancellations,
            ),
            (
                "chain_withdrawn_gwei",
                "Gwei this node withdrew from what the contract owed it",
                &proofs.withdrawn_gwei,
            ),
        ] {
            reg.register(name, help, m.clone());
        }
        let registry = RegistryMetrics::default();
        reg.register(
            "registry_members",
            "Members in the chain's registry (bound peer id, enough stake)",
            registry.members.clone(),
        );
        reg.register(
            "registry_synced_block",
            "Last block whose registry events this node read",
            registry.synced_block.clone(),
        );
        reg.register(
            "registry_sync_errors",
            "Registry syncs that failed (the last member set is kept)",
            registry.errors.clone(),
        );
        let jobs = JobMetrics::default();
        jobs.register(reg);
        let scrub = ScrubMetrics::default();
        scrub.register(reg);
        let repair = RepairMetrics::default();
        repair.register(reg);
        if let Some(store) = store {
            reg.register_collector(Box::new(StoreCollector { store }));
        }
        Self {
            registry: Arc::new(root),
            http,
            transfers,
            swarm,
            proofs,
            chain_registry: registry,
            jobs,
            scrub,
            repair,
        }
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            let _ = writeln!(out, "# encoding failed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_storage::MemBackend;

    #[test]
    fn names_follow_conventions_and_values_show() {
        let store = Store::open(MemBackend::new(), 1 << 20).expect("store");
        let m = Metrics::new(Some(store));
        m.http.put_bytes.inc_by(42);
        m.transfers.record("fetch", true, 0.01);
        m.transfers.bytes("in", 7);
        let text = m.encode();
        for name in [
            "cairn_build_info{version=",
            "cairn_put_bytes_total 42",
            "cairn_shard_transfers_total{op=\"fetch\",outcome=\"ok\"} 1",
            "cairn_shard_transfer_bytes_total{direction=\"in\"} 7",
            "cairn_shard_transfer_duration_seconds_bucket{",
            "cairn_store_capacity_bytes 1048576",
            "cairn_store_corrupt_reads_total 0",
            "cairn_p2p_connected_peers 0",
            "cairn_proof_epochs_proven_total 0",
            "cairn_proof_missed_reported_total 0",
            "cairn_chain_reverted_transactions_total 0",
            "cairn_chain_balance_gwei 0",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            assert!(line.starts_with("cairn_"), "unprefixed metric: {line}");
        }
    }
}
