//! Unpins: here (refused while a deal this node accepted still runs on the checkpoint,
//! unless forced), or across the network by the checkpoint's publisher (its deals ended,
//! every holder asked to unpin).

use super::*;
use crate::chain::ending::running_deals_on;
use crate::cluster::NetworkDeleteError;

/// Query of an unpin.
#[derive(Debug, Default, Deserialize)]
pub struct UnpinQuery {
    /// Delete the checkpoint from every node (this node must be its publisher).
    #[serde(default)]
    network: bool,
    /// Unpin here even under a running deal (its proofs will then fail and be slashed).
    #[serde(default)]
    force: bool,
}

pub(super) async fn unpin<B: Backend>(
    _: auth::Writer,
    State(s): State<AppState<B>>,
    Path(cid): Path<String>,
    Query(q): Query<UnpinQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let root = root_of(&cid)?;
    let chain = s.publisher.as_ref().map(|p| &p.chain);
    if q.network {
        let cluster = s.cluster.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "no_network",
                "this node runs without a network: nothing to delete the checkpoint from",
            )
        })?;
        let report = cluster
            .delete_everywhere(root, chain)
            .await
            .map_err(|e| match &e {
                NetworkDeleteError::Manifest { .. } => {
                    ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
                }
                NetworkDeleteError::NotPublisher { .. } => {
                    ApiError::new(StatusCode::FORBIDDEN, "not_publisher", e.to_string())
                }
                _ => ApiError::new(StatusCode::BAD_GATEWAY, "chain", e.to_string()),
            })?;
        return Ok(Json(json!(report)));
    }
    if let Some(chain) = chain
        && !q.force
    {
        let running = running_deals_on(chain, &root).await.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "chain",
                format!("cannot read this node's deals: {e}"),
            )
        })?;
        if let Some(d) = running.first() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "deal_running",
                format!(
                    "deal {} this node accepted on {root} runs until epoch {}: unpinning would \
                     fail its proofs and be slashed; the publisher can end it (cairn rm \
                     --network), or unpin anyway with --force",
                    d.id, d.ends
                ),
            ));
        }
    }
    let store = s.store.clone();
    let freed = blocking(move || {
        store.unpin(&root).map_err(|e| match e {
            UnpinError::NotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
            }
            e => ApiError::internal(e.to_string()),
        })
    })
    .await?;
    Ok(Json(
        json!({"root": root.to_string(), "freed_shards": freed}),
    ))
}
