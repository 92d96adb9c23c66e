//! The members' registry on chain, followed from the contract's events: which peer ids are
//! bound to accounts registered with at least `minStake` bonded. The node's [`Membership`]
//! (chain mode) is this task's published set.
//!
//! The task reads the registry's events (`NodeRegistered`, `StakeAdded`,
//! `WithdrawalRequested`, `StakeWithdrawn`, `NodeExited`, `Slashed`) from the contract's
//! genesis block on, re-reads each account they name, and every [`FULL_REFRESH`] re-reads
//! every account it knows, so a reorganised chain (a registration that disappeared, a slash
//! that moved) is caught up with. It runs as the node's `registry` job ([`Worker`]): RPC
//! errors back off (up to 30 s) and keep the last good set.
//!
//! [`Membership`]: crate::net::Membership

use std::collections::HashMap;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256};
use tracing::{debug, info};

use super::{Chain, ChainError, ProofChain};
use crate::metrics::RegistryMetrics;
use crate::net::membership::{MemberSet, MembershipWriter};
use crate::worker::{Step, Worker, next_round};

/// Most blocks one `eth_getLogs` covers (providers cap ranges).
const LOG_RANGE: u64 = 10_000;
/// Every account known is re-read this often, whatever the events said.
pub const FULL_REFRESH: Duration = Duration::from_secs(60);
/// Longest wait between attempts after RPC errors.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Follows the registry and publishes the member set.
pub struct Registry {
    chain: Chain,
    writer: MembershipWriter,
    metrics: RegistryMetrics,
    /// account -> (bound peer word, member now)
    entries: HashMap<Address, (B256, bool)>,
    next_block: u64,
    /// One round per `poll`.
    poll: Duration,
    /// When every known account was last re-read.
    last_full: Instant,
}

impl Registry {
    /// Read the whole registry once (so the node starts with its members known).
    pub async fn new(
        chain: Chain,
        writer: MembershipWriter,
        metrics: RegistryMetrics,
        poll: Duration,
    ) -> Result<Self, ChainError> {
        let from = chain.params().await?.genesis_block;
        let mut r = Self {
            chain,
            writer,
            metrics,
            entries: HashMap::new(),
            next_block: from,
            poll,
            last_full: Instant::now(),
        };
        r.sync().await?;
        info!(
            members = r.writer.current().len(),
            "membership read from chain"
        );
        Ok(r)
    }

    fn publish(&self) {
        let set: HashMap<[u8; 32], Option<String>> = self
            .entries
            .iter()
            .filter(|(_, (_, member))| *member)
            .map(|(account, (peer, _))| (peer.0, Some(account.to_string())))
            .collect();
        self.metrics
            .members
            .set(i64::try_from(set.len()).unwrap_or(i64::MAX));
        self.writer.publish(MemberSet::new(set));
    }

    async fn read(
        &mut self,
        accounts: impl IntoIterator<Item = Address>,
    ) -> Result<(), ChainError> {
        for a in accounts {
            let entry = self.chain.member_entry(a).await?;
            self.entries.insert(a, entry);
        }
        Ok(())
    }

    /// Read the events since the last sync and the accounts they name.
    async fn sync(&mut self) -> Result<(), ChainError> {
        let head = self.chain.block_number().await?;
        while self.next_block <= head {
            let to = (self.next_block + LOG_RANGE - 1).min(head);
            let touched = self.chain.registry_changes(self.next_block, to).await?;
            self.read(touched).await?;
            self.next_block = to + 1;
            self.metrics
                .synced_block
                .set(i64::try_from(to).unwrap_or(i64::MAX));
        }
        self.publish();
        Ok(())
    }

    async fn refresh_all(&mut self) -> Result<(), ChainError> {
        let known: Vec<Address> = self.entries.keys().copied().collect();
        self.read(known).await?;
        self.publish();
        Ok(())
    }
}

impl Worker for Registry {
    type Error = ChainError;

    fn name(&self) -> &'static str {
        "registry"
    }

    /// One sync of the events since the last (every [`FULL_REFRESH`], a re-read of every
    /// account instead). On an error the last good member set stays published.
    async fn step(&mut self) -> Result<Step, ChainError> {
        let started = Instant::now();
        let full = self.last_full.elapsed() >= FULL_REFRESH;
        let r = if full {
            self.refresh_all().await
        } else {
            self.sync().await
        };
        if let Err(e) = r {
            self.metrics.errors.inc();
            return Err(e);
        }
        if full {
            self.last_full = Instant::now();
        }
        debug!(members = self.writer.current().len(), "registry synced");
        Ok(next_round(started, self.poll))
    }

    fn progress(&self) -> String {
        format!(
            "{} members of {} accounts known; synced to block {}",
            self.writer.current().len(),
            self.entries.len(),
            self.next_block.saturating_sub(1)
        )
    }

    fn backoff_first(&self) -> Duration {
        self.poll
    }

    fn backoff_max(&self) -> Duration {
        MAX_BACKOFF
    }
}
