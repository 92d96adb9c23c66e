//! Durability over a year, simulated with the node's own placement and repair decisions
//! (`cairn_node::repair::sim`): 10,000 nodes, 5% of them lost for good a month, one transient
//! outage per node a month (exponential, mean 30 minutes), a 1,000-stripe checkpoint, for
//! (4,2), (10,4) and Storj's (29,80), in 10-minute steps (the node's repair round): without
//! repair, with repair after the 1-hour grace only, and with the node's defaults (a stripe
//! two shards short repaired at once). Prints stripes lost in the simulated year, the repair
//! windows, the annual loss probability of the checkpoint as nines (from the windows: see the
//! module), and repair traffic per node and per stored byte.
//!
//! `CAIRN_SIM_NODES`, `CAIRN_SIM_STRIPES` and `CAIRN_SIM_HOURS` shrink it.

use std::time::{Duration, Instant};

use cairn_node::config::{
    DEFAULT_REPAIR_GRACE_SECS, DEFAULT_REPAIR_INTERVAL_SECS, DEFAULT_REPAIR_URGENT_MISSING,
};
use cairn_node::repair::policy::RepairPolicy;
use cairn_node::repair::sim::{SimParams, SimResult, YEAR_HOURS, simulate, tail};

/// Storj's published durability target: eleven nines.
const STORJ_PUBLISHED_NINES: f64 = 11.0;
/// The target for the default layout with repair.
const TARGET_NINES: f64 = 11.0;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn nines(p: f64) -> f64 {
    if p <= 0.0 { f64::INFINITY } else { -p.log10() }
}

fn main() {
    let nodes = env("CAIRN_SIM_NODES", 10_000) as usize;
    let stripes = env("CAIRN_SIM_STRIPES", 1000) as usize;
    let hours = env("CAIRN_SIM_HOURS", YEAR_HOURS);
    let monthly_loss = 0.05;
    let shard_bytes: u64 = 16 << 20;
    let grace = Duration::from_secs(DEFAULT_REPAIR_GRACE_SECS);
    let step = Duration::from_secs(DEFAULT_REPAIR_INTERVAL_SECS);
    println!(
        "{nodes} nodes, {stripes} stripes, {hours} h in {} min steps, {:.0}% of nodes lost a \
         month, 1 outage per node a month (mean 30 min), grace {} h; shards of {} MiB",
        step.as_secs() / 60,
        monthly_loss * 100.0,
        grace.as_secs() / 3600,
        shard_bytes >> 20
    );
    println!(
        "{:>8} {:>14} {:>5} {:>8} {:>8} {:>7} {:>9} {:>12} {:>16}",
        "layout",
        "repair",
        "lost",
        "grace_w",
        "urgent_w",
        "nines",
        "repaired",
        "GiB/node/yr",
        "repair/stored/yr"
    );
    let policies: [(&str, Option<RepairPolicy>); 3] = [
        ("none", None),
        (
            "grace only",
            Some(RepairPolicy {
                threshold: 0,
                grace,
                urgent: 0,
            }),
        ),
        (
            "defaults",
            Some(RepairPolicy {
                threshold: 0,
                grace,
                urgent: DEFAULT_REPAIR_URGENT_MISSING,
            }),
        ),
    ];
    for (k, m) in [(4usize, 2usize), (10, 4), (29, 51)] {
        for (label, repair) in &policies {
            let t = Instant::now();
            let p = SimParams {
                nodes,
                k,
                m,
                stripes,
                monthly_loss,
                outages_per_month: 1.0,
                outage_mean_hours: 0.5,
                hours,
                step,
                repair: *repair,
                shard_bytes,
                seed: 42,
            };
            let r = simulate(&p);
            let total = k + m;
            let stripe_loss = match repair {
                Some(policy) => SimResult::annual_loss(
                    k,
                    m,
                    policy,
                    monthly_loss,
                    r.grace_window_p99(),
                    r.urgent_window_p99(),
                ),
                // Exact: a stripe keeps a shard on each holder still alive after a year.
                None => tail(total, m + 1, 1.0 - (1.0f64 - monthly_loss).powi(12)),
            };
            // 1 - (1 - p)^stripes, accurate for tiny p.
            let checkpoint_loss = -((stripes as f64) * (-stripe_loss.min(1.0)).ln_1p()).exp_m1();
            // Traffic scaled to a year.
            let per_year = YEAR_HOURS as f64 / hours as f64;
            let per_node = r.repair_bytes as f64 * per_year / nodes as f64 / (1u64 << 30) as f64;
            let n = nines(checkpoint_loss);
            let verdict = if (k, m) == (10, 4) && *label == "defaults" {
                if n >= TARGET_NINES {
                    "  meets the 11-nines target"
                } else {
                    "  MISSES the 11-nines target"
                }
            } else {
                ""
            };
            println!(
                "{:>8} {:>14} {:>5} {:>7.2}h {:>7.2}h {:>7.1} {:>9} {:>12.3} {:>16.3}   ({:.0} s){verdict}",
                format!("{k}+{m}"),
                label,
                r.lost_stripes,
                r.grace_window_p99(),
                r.urgent_window_p99(),
                n,
                r.shards_repaired,
                per_node,
                r.repair_bytes as f64 * per_year / r.stored_bytes as f64,
                t.elapsed().as_secs_f64()
            );
        }
    }
    println!(
        "nines: of the whole checkpoint surviving the year; with repair from the 99th-percentile \
         repair windows (grace_w: first loss to repair after the grace; urgent_w: second loss to \
         repair), without from the binomial tail. Storj publishes {STORJ_PUBLISHED_NINES} \
         nines for (29,80) with repair at 35-50 pieces."
    );
}
