//! Metrics of the background jobs: every job's steps and errors, and the scrubber's.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    pub job: &'static str,
}

/// Metrics of every job, by job.
#[derive(Clone, Debug, Default)]
pub struct JobMetrics {
    pub steps: Family<JobLabels, Counter>,
    pub errors: Family<JobLabels, Counter>,
}

impl JobMetrics {
    pub fn register(&self, reg: &mut Registry) {
        reg.register(
            "job_steps",
            "Units of work done by each background job",
            self.steps.clone(),
        );
        reg.register(
            "job_errors",
            "Failed steps of each background job (it backs off and tries again)",
            self.errors.clone(),
        );
    }
}

/// What each shard's check found, each a series from the start.
pub const SCRUB_RESULTS: &[&str] = &["ok", "corrupt", "missing"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// Scrub metrics.
#[derive(Clone, Debug, Default)]
pub struct ScrubMetrics {
    /// Shard bytes re-read and verified.
    pub bytes: Counter,
    /// Shards checked, by what was found.
    pub shards: Family<ResultLabels, Counter>,
    /// Bad shards rebuilt and written back.
    pub repaired: Counter,
    /// Bad shards that could not be rebuilt (they stay bad until a later pass).
    pub repair_failed: Counter,
    /// Passes over every shard completed.
    pub passes: Counter,
    /// Shards checked in the pass under way.
    pub pass_shards: Gauge,
}

impl ScrubMetrics {
    pub fn register(&self, reg: &mut Registry) {
        reg.register(
            "scrub_bytes",
            "Shard bytes re-read and verified by the scrubber",
            self.bytes.clone(),
        );
        reg.register(
            "scrub_shards",
            "Shards checked by the scrubber, by result (ok, corrupt, missing)",
            self.shards.clone(),
        );
        for result in SCRUB_RESULTS {
            let _ = self.shards.get_or_create(&ResultLabels { result });
        }
        reg.register(
            "scrub_repaired",
            "Corrupt or missing shards the scrubber rebuilt and wrote back",
            self.repaired.clone(),
        );
        reg.register(
            "scrub_repair_failed",
            "Corrupt or missing shards the scrubber could not rebuild",
            self.repair_failed.clone(),
        );
        reg.register(
            "scrub_passes",
            "Scrub passes over every shard completed",
            self.passes.clone(),
        );
        reg.register(
            "scrub_pass_shards",
            "Shards checked so far in the scrub pass under way",
            self.pass_shards.clone(),
        );
    }
}

/// What a repair push of one rebuilt shard came to, each a series from the start.
pub const REPAIR_RESULTS: &[&str] = &["ok", "failed"];

/// Repair metrics (of the stripes this node coordinates).
#[derive(Clone, Debug, Default)]
pub struct RepairMetrics {
    /// Health rounds completed.
    pub rounds: Counter,
    /// Stripes surveyed (all the stripes this node holds a shard of, each round).
    pub stripes_checked: Counter,
    /// Stripes this node coordinates that are below their repair threshold and not yet
    /// repaired (waiting out the grace time, or whose repair failed).
    pub backlog: Gauge,
    /// Stripes this node coordinates with fewer than k shards reachable.
    pub lost: Gauge,
    /// Rebuilt shards placed on a new holder, by result.
    pub shards: Family<ResultLabels, Counter>,
    /// Shard bytes fetched to rebuild stripes.
    pub fetched_bytes: Counter,
    /// Rebuilt shard bytes pushed to their new holders.
    pub pushed_bytes: Counter,
}

impl RepairMetrics {
    pub fn register(&self, reg: &mut Registry) {
        reg.register(
            "repair_rounds",
            "Repair health rounds completed",
            self.rounds.clone(),
        );
        reg.register(
            "repair_stripes_checked",
            "Stripes surveyed by the repairer (every stripe this node holds a shard of)",
            self.stripes_checked.clone(),
        );
        reg.register(
            "repair_backlog",
            "Stripes this node coordinates that are below their repair threshold, not yet repaired",
            self.backlog.clone(),
        );
        reg.register(
            "repair_lost_stripes",
            "Stripes this node coordinates with fewer than k shards reachable",
            self.lost.clone(),
        );
        reg.register(
            "repair_shards",
            "Rebuilt shards placed on a new holder, by result (ok, failed)",
            self.shards.clone(),
        );
        for result in REPAIR_RESULTS {
            let _ = self.shards.get_or_create(&ResultLabels { result });
        }
        reg.register(
            "repair_fetched_bytes",
            "Shard bytes fetched by the repairer to rebuild stripes",
            self.fetched_bytes.clone(),
        );
        reg.register(
            "repair_pushed_bytes",
            "Rebuilt shard bytes the repairer pushed to new holders",
            self.pushed_bytes.clone(),
        );
    }
}
