//! A checkpoint's health across the network (`stat?network=true`): who holds each shard of
//! every stripe, from one batched query per live member.

use super::*;
use crate::repair::survey::survey;

/// The network-wide stat of `root`.
pub(super) async fn network_stat<B: Backend>(
    s: &AppState<B>,
    root: Cid,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Some(cluster) = &s.cluster else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "no_network",
            "this node runs without a network: ask without network=true",
        ));
    };
    let (m, _) = find_manifest(s, root).await?;
    let stripes: Vec<(&str, usize, &[Cid])> = m
        .files
        .iter()
        .flat_map(|f| {
            f.stripes
                .iter()
                .enumerate()
                .map(move |(i, c)| (f.path.as_str(), i, c.as_slice()))
        })
        .collect();
    let cids: Vec<&[Cid]> = stripes.iter().map(|(_, _, c)| *c).collect();
    let found = survey(cluster, &cids).await;
    let k = usize::from(m.k);
    let total = k + usize::from(m.m);
    let (mut worst, mut min_intact) = ("healthy", total);
    let (mut intact_total, mut missing_total) = (0usize, 0usize);
    let mut per_stripe = Vec::with_capacity(stripes.len());
    for ((path, i, _), h) in stripes.iter().zip(&found.stripes) {
        let intact = h.intact();
        intact_total += intact;
        missing_total += total - intact;
        min_intact = min_intact.min(intact);
        let state = if intact < k {
            "unrecoverable"
        } else if intact < total {
            "degraded"
        } else {
            "healthy"
        };
        if state == "unrecoverable" || (state == "degraded" && worst == "healthy") {
            worst = state;
        }
        let holders: Vec<Vec<String>> = h
            .holders
            .iter()
            .map(|ps| ps.iter().map(ToString::to_string).collect())
            .collect();
        per_stripe.push(json!({
            "path": path, "stripe": i, "state": state, "intact": intact, "total": total,
            "holders": holders,
        }));
    }
    Ok(Json(json!({
        "root": root.to_string(),
        "network": true,
        "health": worst,
        "files": m.files.len(),
        "size": m.total_size(),
        "k": m.k, "m": m.m, "stripe_size": m.stripe_size,
        "stripes": stripes.len(),
        "min_intact": if stripes.is_empty() { total } else { min_intact },
        "shards": {"intact": intact_total, "missing": missing_total},
        "members_asked": found.asked.len(),
        "unreachable": found.unreachable.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "stripe_health": per_stripe,
    })))
}
