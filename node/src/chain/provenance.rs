//! Provenance and names on chain: each publisher's records of checkpoints (with their
//! parents), and `org/model` names pointing at a history of roots.
//!
//! Records are keyed by (publisher, root), so anyone recording a root first (a storing node
//! that saw its manifest, say) neither blocks nor renames the real publisher's record, and a
//! lineage follows (publisher, root) pairs. An org belongs to the first account that names a
//! checkpoint under it; only that account adds revisions to its names.

use alloy::primitives::{Address, B256, FixedBytes, U256, keccak256};
use cairn_erasure::Cid;
use cairn_storage::NameError;
use thiserror::Error;

use super::{CairnStorage, Chain, ChainError, from_contract, root_word};

/// Longest name on chain, in bytes (the contract's `MAX_NAME_BYTES`).
pub const MAX_NAME_BYTES: usize = 96;
/// Revisions read from chain per call when listing a name's history.
const HISTORY_PAGE: u64 = 256;
/// Longest lineage followed (records are append-only with known parents, so there are no
/// cycles; a bound anyway).
const MAX_LINEAGE: usize = 1_000;

/// A publisher's record of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub root: B256,
    pub publisher: Address,
    /// The parent: its publisher and root word (`None` for a base checkpoint).
    pub parent: Option<(Address, B256)>,
    pub meta_hash: B256,
    pub block: u64,
}

/// A name as the chain holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameHistory {
    /// The org's owner: the only account whose revisions the name has (`None`: nobody has
    /// named anything under the org).
    pub publisher: Option<Address>,
    /// Revisions the name has.
    pub revisions: u64,
    /// 0-based revision of `roots[0]`.
    pub first: u64,
    /// Root words of revisions `first..`, oldest first.
    pub roots: Vec<B256>,
}

/// A name cannot be recorded on chain.
#[derive(Debug, Error)]
pub enum ChainNameError {
    #[error(transparent)]
    Invalid(#[from] NameError),
    #[error("a name on chain is `org/model`; {0:?} has no org")]
    NoOrg(String),
}

/// Check a name against the contract's rules (the node's name rules, and an org), and return
/// the keccak256 of its org and of the whole name, in lower case, as the contract keys them.
pub fn name_keys(name: &str) -> Result<(B256, B256), ChainNameError> {
    cairn_storage::check_name(name)?;
    let Some((org, _)) = name.split_once('/') else {
        return Err(ChainNameError::NoOrg(name.to_owned()));
    };
    debug_assert!(name.len() <= MAX_NAME_BYTES, "check_name bounds the length");
    let lower = name.to_ascii_lowercase();
    Ok((keccak256(&lower.as_bytes()[..org.len()]), keccak256(lower)))
}

/// What one put records on chain besides its deals.
#[derive(Debug, Clone, Copy)]
pub struct Provenance<'a> {
    pub root: &'a Cid,
    /// The parent checkpoint and whose record of it this one derives from.
    pub parent: Option<(Address, &'a Cid)>,
    pub meta: B256,
    /// Name to point at `root` (`org/model`), if any.
    pub name: Option<&'a str>,
}

/// What a put's transaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    /// The record was written now (false: this account had recorded it before).
    pub recorded: bool,
    /// The name's revision written now, if any (none when the name pointed at the root).
    pub revision: Option<u64>,
    /// Deal ids, in the order of the targets.
    pub deals: Vec<u64>,
}

impl Chain {
    /// Record `root` as this account's (unless it did already, with this parent), name it
    /// and propose a deal to each of `targets`, in one transaction.
    pub async fn publish_with_deals(
        &self,
        p: Provenance<'_>,
        targets: &[(Address, cairn_proofs::Commitment)],
        epochs: u32,
        price: U256,
    ) -> Result<Published, ChainError> {
        let price88 = alloy::primitives::Uint::<88, 2>::checked_from_limbs_slice(price.as_limbs())
            .ok_or_else(|| ChainError::Config(format!("deal price {price} wei is too large")))?;
        let (parent_publisher, parent) =
            p.parent.map(|(a, c)| (a, root_word(c))).unwrap_or_default();
        let b = self
            .contract
            .publishWithDeals(
                CairnStorage::Provenance {
                    root: root_word(p.root),
                    parentPublisher: parent_publisher,
                    parent,
                    metaHash: p.meta,
                    name: p.name.unwrap_or_default().to_owned(),
                },
                targets.iter().map(|t| t.0).collect(),
                targets.iter().map(|t| FixedBytes(t.1.root)).collect(),
                targets.iter().map(|t| t.1.leaf_count).collect(),
                epochs,
                price88,
            )
            .value(price * U256::from(epochs) * U256::from(targets.len()));
        let receipt = self.send("publishWithDeals", b).await?;
        let logs = receipt.inner.logs();
        Ok(Published {
            recorded: logs
                .iter()
                .any(|l| l.log_decode::<CairnStorage::Published>().is_ok()),
            revision: logs
                .iter()
                .find_map(|l| l.log_decode::<CairnStorage::Named>().ok())
                .map(|l| l.inner.data.revision.saturating_to::<u64>()),
            deals: logs
                .iter()
                .filter_map(|l| l.log_decode::<CairnStorage::DealProposed>().ok())
                .map(|l| l.inner.data.id.saturating_to::<u64>())
                .collect(),
        })
    }

    /// `publisher`'s record of `root`, if it made one.
    pub async fn record(
        &self,
        publisher: Address,
        root: B256,
    ) -> Result<Option<Record>, ChainError> {
        let r = self
            .contract
            .records(publisher, root)
            .call()
            .await
            .map_err(|e| from_contract("records", e))?;
        if r.blockNumber == 0 {
            return Ok(None);
        }
        Ok(Some(Record {
            root,
            publisher,
            parent: (r.parent != B256::ZERO).then_some((r.parentPublisher, r.parent)),
            meta_hash: r.metaHash,
            block: r.blockNumber,
        }))
    }

    /// The lineage of `publisher`'s record of `root`: that record, its parent's, ... back to
    /// a base checkpoint (empty if `publisher` has no record of `root`).
    pub async fn lineage(&self, publisher: Address, root: B256) -> Result<Vec<Record>, ChainError> {
        let mut out = Vec::new();
        let mut next = Some((publisher, root));
        while let Some((who, w)) = next {
            let Some(r) = self.record(who, w).await? else {
                break;
            };
            next = r.parent;
            out.push(r);
            if out.len() >= MAX_LINEAGE {
                break;
            }
        }
        Ok(out)
    }

    /// The Unix time of block `block` (when a record in it was made).
    pub async fn block_time(&self, block: u64) -> Result<u64, ChainError> {
        use alloy::providers::Provider;
        let b = self
            .provider
            .get_block_by_number(block.into())
            .await
            .map_err(super::rpc("eth_getBlockByNumber"))?
            .ok_or(ChainError::Rpc {
                call: "eth_getBlockByNumber",
                reason: format!("no block {block}"),
            })?;
        Ok(b.header.timestamp)
    }

    /// A name's owner, its revision count, and the roots of its newest `newest` revisions,
    /// oldest first.
    pub async fn name_history(&self, name: &str, newest: u64) -> Result<NameHistory, ChainError> {
        let page = |from: u64, max: u64| {
            let call =
                self.contract
                    .nameHistory(name.to_owned(), U256::from(from), U256::from(max));
            async move {
                call.call()
                    .await
                    .map_err(|e| from_contract("nameHistory", e))
            }
        };
        let head = page(0, 0).await?;
        let total = head.revisions.saturating_to::<u64>();
        let mut out = NameHistory {
            publisher: (head.publisher != Address::ZERO).then_some(head.publisher),
            revisions: total,
            first: total.saturating_sub(newest),
            roots: Vec::new(),
        };
        while (out.roots.len() as u64) < total - out.first {
            let got = page(out.first + out.roots.len() as u64, HISTORY_PAGE).await?;
            if got.roots.is_empty() {
                break; // revisions are append-only; a shorter answer means a reorg: stop
            }
            out.roots.extend(got.roots);
        }
        out.roots.truncate((total - out.first) as usize);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_on_chain_need_an_org_and_compare_in_lower_case() {
        let (org, key) = name_keys("Org/Model-1.b").expect("valid");
        assert_eq!(
            (org, key),
            name_keys("org/model-1.B").expect("valid"),
            "case does not matter"
        );
        assert_eq!(org, keccak256(b"org"));
        assert_eq!(key, keccak256(b"org/model-1.b"));
        assert_ne!(key, name_keys("org/model-2.b").expect("valid").1);
        assert!(matches!(name_keys("model"), Err(ChainNameError::NoOrg(_))));
        for bad in [
            "", "/m", "o/", "o/m/x", "o-/m", "o/.m", "o/m--x", "o/m x", "o/é",
        ] {
            assert!(
                matches!(name_keys(bad), Err(ChainNameError::Invalid(_))),
                "{bad:?}"
            );
        }
        assert!(name_keys(&format!("o/{}", "m".repeat(MAX_NAME_BYTES - 2))).is_ok());
        assert!(name_keys(&format!("o/{}", "m".repeat(MAX_NAME_BYTES - 1))).is_err());
    }
}
