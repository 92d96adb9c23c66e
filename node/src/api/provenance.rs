//! Provenance and names from chain: a publisher's lineage of a checkpoint, and the revisions
//! of an `org/model` name. Reading is open: the chain is public.

use alloy::primitives::Address;

use super::info::{chain_failed, chain_of};
use super::*;
use crate::chain::provenance::{ChainNameError, Record, name_keys};
use crate::chain::{ProofChain, root_word, word_root};

/// One provenance record, as the lineage and name routes answer it.
#[derive(Debug, Serialize, Deserialize)]
pub struct LineageEntry {
    pub root: String,
    pub publisher: String,
    pub parent: Option<String>,
    /// Whose record of the parent this one derives from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_publisher: Option<String>,
    pub meta_hash: String,
    pub block: u64,
}

impl From<Record> for LineageEntry {
    fn from(r: Record) -> Self {
        Self {
            root: word_root(&r.root).to_string(),
            publisher: r.publisher.to_string(),
            parent: r.parent.map(|(_, p)| word_root(&p).to_string()),
            parent_publisher: r.parent.map(|(a, _)| a.to_string()),
            meta_hash: r.meta_hash.to_string(),
            block: r.block,
        }
    }
}

/// Newest revisions of a name the name route answers with.
pub const MAX_REVISIONS_SHOWN: u64 = 32;

/// A name on chain: its owner and its newest revisions, newest first.
#[derive(Debug, Serialize, Deserialize)]
pub struct NameLog {
    pub name: String,
    /// The org's owner, the only account that adds revisions.
    pub publisher: String,
    /// Revisions the name has (only the newest [`MAX_REVISIONS_SHOWN`] are listed).
    pub total: u64,
    pub revisions: Vec<NameRevision>,
}

/// One revision of a name: the root it pointed at and the owner's record of that root.
#[derive(Debug, Serialize, Deserialize)]
pub struct NameRevision {
    /// 1 for the first root the name pointed at.
    pub revision: u64,
    pub record: LineageEntry,
}

/// Query of the lineage route.
#[derive(Debug, Deserialize)]
pub struct LineageQuery {
    /// Whose record to follow (default: this node's account, which publishes its puts).
    publisher: Option<String>,
}

/// A publisher's record of the checkpoint, its parent's record, ... back to its base.
pub(super) async fn lineage<B: Backend>(
    State(s): State<AppState<B>>,
    Path(cid): Path<String>,
    Query(q): Query<LineageQuery>,
) -> Result<Json<Vec<LineageEntry>>, ApiError> {
    let root = root_of(&cid)?;
    let chain = &chain_of(&s)?.chain;
    let publisher = match &q.publisher {
        Some(p) => p.parse::<Address>().map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_params",
                format!("publisher {p:?} is not an account (0x and 40 hex digits): {e}"),
            )
        })?,
        None => ProofChain::me(chain),
    };
    let records = chain
        .lineage(publisher, root_word(&root))
        .await
        .map_err(chain_failed)?;
    if records.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{publisher} has no provenance record of {root} on chain"),
        ));
    }
    Ok(Json(records.into_iter().map(LineageEntry::from).collect()))
}

/// The revisions of `org/model`, newest first, each with its owner's record of the root.
pub(super) async fn name_log<B: Backend>(
    State(s): State<AppState<B>>,
    Path(name): Path<String>,
) -> Result<Json<NameLog>, ApiError> {
    name_keys(&name).map_err(|e: ChainNameError| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_name", e.to_string())
    })?;
    let chain = &chain_of(&s)?.chain;
    let history = chain
        .name_history(&name, MAX_REVISIONS_SHOWN)
        .await
        .map_err(chain_failed)?;
    let not_found = |why: String| ApiError::new(StatusCode::NOT_FOUND, "name_not_found", why);
    let Some(publisher) = history.publisher else {
        return Err(not_found(format!(
            "nobody has named a checkpoint under the org of {name:?} on chain"
        )));
    };
    if history.roots.is_empty() {
        return Err(not_found(format!(
            "{publisher} owns the org but has not named {name:?}"
        )));
    }
    let mut revisions = Vec::with_capacity(history.roots.len());
    for (i, w) in history.roots.iter().enumerate().rev() {
        let revision = history.first + i as u64 + 1;
        let record = chain
            .record(publisher, *w)
            .await
            .map_err(chain_failed)?
            .ok_or_else(|| {
                ApiError::internal(format!(
                    "revision {revision} of {name:?} names a root {publisher} has no record of"
                ))
            })?;
        revisions.push(NameRevision {
            revision,
            record: record.into(),
        });
    }
    Ok(Json(NameLog {
        name,
        publisher: publisher.to_string(),
        total: history.revisions,
        revisions,
    }))
}
