//! Reads about checkpoints and the node: status, listings, manifests, shard and stripe health, wallet.

use super::*;
/// The node's chain client, or 503 when it runs without a chain.
pub(super) fn chain_of<B: Backend>(
    s: &AppState<B>,
) -> Result<&crate::chain::publish::Publisher, ApiError> {
    s.publisher.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_chain",
            "this node is not connected to a chain (chain.rpc_url is empty)",
        )
    })
}

/// A chain call behind a route failed: 502, the chain's error as the message.
pub(super) fn chain_failed(e: crate::chain::ChainError) -> ApiError {
    ApiError::new(StatusCode::BAD_GATEWAY, "chain_error", e.to_string())
}

/// The node's account on chain: stake, credits, deals and escrow.
pub(super) async fn wallet<B: Backend>(
    State(s): State<AppState<B>>,
) -> Result<Json<crate::chain::wallet::Wallet>, ApiError> {
    crate::chain::wallet::wallet(&chain_of(&s)?.chain)
        .await
        .map(Json)
        .map_err(chain_failed)
}

#[derive(Serialize)]
pub(super) struct StatusBody {
    version: &'static str,
    uptime_secs: u64,
    used_bytes: u64,
    capacity_bytes: u64,
    shards: u64,
    corrupt_reads: u64,
    checkpoints: usize,
    /// Uploads being processed now.
    active_puts: usize,
    /// This node's libp2p identity (absent without a network).
    peer_id: Option<String>,
    /// Peers in the routing table, and with an open connection.
    peers: usize,
    connected_peers: usize,
    p2p_listen: Vec<String>,
    /// Shard bytes received from and sent to peers since start.
    net_bytes_in: u64,
    net_bytes_out: u64,
    /// Peer answers that failed verification since start.
    bad_peer_answers: u64,
    /// Shard bytes received from each peer since start (peer id -> bytes).
    sources: std::collections::BTreeMap<String, u64>,
    /// Where membership comes from: "chain", "list" or "open" (absent without a network).
    membership: Option<&'static str>,
    /// Whether this node is a member itself.
    member: bool,
    /// Other members known (in the routing table): placement candidates.
    members: usize,
    /// Provider records of other peers held, and refused since start.
    remote_provider_records: usize,
    provider_records_refused: u64,
    /// Shard requests from peers refused since start, by reason.
    shard_requests_refused: std::collections::BTreeMap<&'static str, u64>,
}

pub(super) async fn status<B: Backend>(
    State(s): State<AppState<B>>,
) -> Result<Json<StatusBody>, ApiError> {
    let store = s.store.clone();
    let checkpoints = blocking(move || Ok(store.list()?.len())).await?;
    let st = s.store.stats();
    let mut body = StatusBody {
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: s.started.elapsed().as_secs(),
        used_bytes: st.used_bytes,
        capacity_bytes: st.capacity_bytes,
        shards: st.shards,
        corrupt_reads: st.corrupt_reads,
        checkpoints,
        active_puts: s.max_puts.saturating_sub(s.put_permits.available_permits()),
        peer_id: None,
        peers: 0,
        connected_peers: 0,
        p2p_listen: Vec::new(),
        net_bytes_in: 0,
        net_bytes_out: 0,
        bad_peer_answers: 0,
        sources: std::collections::BTreeMap::new(),
        membership: None,
        member: false,
        members: 0,
        remote_provider_records: 0,
        provider_records_refused: 0,
        shard_requests_refused: std::collections::BTreeMap::new(),
    };
    if let Some(c) = &s.cluster {
        body.peer_id = Some(c.net.peer_id().to_string());
        body.peers = c.net.peers().await.len();
        body.connected_peers = c.net.connected().await;
        body.p2p_listen = c
            .net
            .listen_addrs()
            .await
            .iter()
            .map(ToString::to_string)
            .collect();
        let t = c.transfers.stats();
        body.net_bytes_in = t.metrics.bytes_total("in");
        body.net_bytes_out = t.metrics.bytes_total("out");
        body.bad_peer_answers = t.metrics.bad_peer_answers.get();
        body.sources = t
            .sources()
            .into_iter()
            .map(|(p, n)| (p.to_string(), n))
            .collect();
        body.shard_requests_refused = crate::metrics::SHARD_REFUSALS
            .iter()
            .map(|r| (*r, t.metrics.refused_total(r)))
            .collect();
        let me = c.net.peer_id();
        body.membership = Some(c.membership.mode().as_str());
        body.member = c.membership.is_member(&me);
        body.members = c.members().await.iter().filter(|p| **p != me).count();
        let records = c.net.record_stats().await;
        body.remote_provider_records = records.remote;
        body.provider_records_refused = records.refused;
    }
    Ok(Json(body))
}

#[derive(Serialize)]
pub(super) struct ListEntry {
    root: String,
    name: String,
    created: u64,
    files: usize,
    size: u64,
    /// False on a cluster member that holds only its share of the shards.
    complete: bool,
    /// Kept by this node's operator; a share another gateway pushed is not (with a chain it
    /// is freed after `storage.unpaid_grace_secs` unless a deal covers it).
    kept: bool,
}

pub(super) async fn list<B: Backend>(
    State(s): State<AppState<B>>,
) -> Result<Json<Vec<ListEntry>>, ApiError> {
    let store = s.store.clone();
    let list = blocking(move || Ok(store.list()?)).await?;
    Ok(Json(
        list.into_iter()
            .map(|c| ListEntry {
                root: c.root.to_string(),
                name: c.name,
                created: c.created,
                files: c.files,
                size: c.size,
                complete: c.complete,
                kept: c.kept,
            })
            .collect(),
    ))
}

/// The manifest as JSON (or as DAG-CBOR with `Accept: application/vnd.ipld.dag-cbor`).
pub(super) async fn manifest<B: Backend>(
    State(s): State<AppState<B>>,
    Path(cid): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let root = root_of(&cid)?;
    let wants_cbor = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("dag-cbor"));
    let (m, _) = find_manifest(&s, root).await?;
    if wants_cbor {
        let bytes = m.encode().map_err(|e| ApiError::internal(e.to_string()))?;
        return Ok((
            [(header::CONTENT_TYPE, "application/vnd.ipld.dag-cbor")],
            bytes,
        )
            .into_response());
    }
    Ok(Json(manifest_json(&root, &m)).into_response())
}

/// Whether this node holds a shard, verified: `{"cid", "status": "ok"|"missing"|"corrupt"}`.
pub(super) async fn shard_status<B: Backend>(
    State(s): State<AppState<B>>,
    Path(cid): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let cid = cairn_erasure::parse_shard_cid(&cid)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "malformed_cid", e.to_string()))?;
    let store = s.store.clone();
    let status = blocking(move || {
        store
            .check_shard(&cid)
            .map_err(|e| ApiError::internal(e.to_string()))
    })
    .await?;
    let (status, detail) = match status {
        ShardStatus::Ok => ("ok", None),
        ShardStatus::Missing => ("missing", None),
        ShardStatus::Corrupt(r) => ("corrupt", Some(r)),
    };
    Ok(Json(
        json!({"cid": cid.to_string(), "status": status, "detail": detail}),
    ))
}

/// JSON view of a manifest (CIDs as strings, hashes as hex).
pub fn manifest_json(root: &Cid, m: &Manifest) -> serde_json::Value {
    json!({
        "root": root.to_string(),
        "version": m.version,
        "codec": m.codec,
        "k": m.k,
        "m": m.m,
        "stripe_size": m.stripe_size,
        "group_size": m.group_size,
        "files": m.files.iter().map(|f| json!({
            "path": f.path,
            "size": f.size,
            "blake3": f.hash().to_hex().to_string(),
            "stripes": f.stripes.iter().map(|s| s.iter().map(|c| c.to_string()).collect::<Vec<_>>()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

#[derive(Deserialize)]
pub(super) struct StatQuery {
    /// Read and hash every shard instead of only checking presence.
    #[serde(default)]
    verify: bool,
    /// Ask every live member which shards it holds instead of reporting this node's share.
    #[serde(default)]
    network: bool,
}

/// A shard's state here: verified (`verify`) or only checked for presence.
pub(super) fn local_shard_state<B: Backend>(
    store: &Store<B>,
    cid: &Cid,
    verify: bool,
) -> Result<ShardStatus, ApiError> {
    let internal = |e: cairn_storage::BackendError| ApiError::internal(e.to_string());
    if verify {
        store.check_shard(cid).map_err(internal)
    } else if store.shard_present(cid).map_err(internal)? {
        Ok(ShardStatus::Ok)
    } else {
        Ok(ShardStatus::Missing)
    }
}

pub(super) async fn stat<B: Backend>(
    State(s): State<AppState<B>>,
    Path(cid): Path<String>,
    Query(q): Query<StatQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let root = root_of(&cid)?;
    if q.network {
        return super::health::network_stat(&s, root).await;
    }
    let store = s.store.clone();
    blocking(move || {
        let (m, complete) = store.manifest_entry(&root)?;
        if !complete {
            // A cluster member holds only its share: report that share, not a health that
            // would count every other node's shards as missing.
            let mut held = 0u64;
            let mut corrupt = Vec::new();
            for cid in m.shard_cids() {
                let st = local_shard_state(&store, cid, q.verify)?;
                match st {
                    ShardStatus::Ok => held += 1,
                    ShardStatus::Corrupt(_) => corrupt.push(cid.to_string()),
                    ShardStatus::Missing => {}
                }
            }
            return Ok(Json(json!({
                "root": root.to_string(),
                "health": if corrupt.is_empty() { "share" } else { "share_damaged" },
                "complete": false,
                "verified": q.verify,
                "files": m.files.len(),
                "size": m.total_size(),
                "k": m.k, "m": m.m, "stripe_size": m.stripe_size,
                "held_shards": held,
                "corrupt_shards": corrupt,
            })));
        }
        let k = usize::from(m.k);
        let (mut ok_total, mut missing_total, mut corrupt_total) = (0u64, 0u64, 0u64);
        let mut worst = "healthy";
        let mut damaged = Vec::new();
        for f in &m.files {
            for (si, shards) in f.stripes.iter().enumerate() {
                let (mut missing, mut corrupt) = (Vec::new(), Vec::new());
                for (i, cid) in shards.iter().enumerate() {
                    let st = local_shard_state(&store, cid, q.verify)?;
                    match st {
                        ShardStatus::Ok => ok_total += 1,
                        ShardStatus::Missing => missing.push(i),
                        ShardStatus::Corrupt(_) => corrupt.push(i),
                    }
                }
                missing_total += missing.len() as u64;
                corrupt_total += corrupt.len() as u64;
                let bad = missing.len() + corrupt.len();
                if bad > 0 {
                    let state = if shards.len() - bad < k { "unrecoverable" } else { "degraded" };
                    if state == "unrecoverable" || worst == "healthy" {
                        worst = state;
                    }
                    damaged.push(json!({"path": f.path, "stripe": si, "state": state, "missing": missing, "corrupt": corrupt}));
                }
            }
        }
        let stripes: usize = m.files.iter().map(|f| f.stripes.len()).sum();
        Ok(Json(json!({
            "root": root.to_string(),
            "health": worst,
            "complete": true,
            "verified": q.verify,
            "files": m.files.len(),
            "size": m.total_size(),
            "k": m.k, "m": m.m, "stripe_size": m.stripe_size,
            "stripes": stripes,
            "shards": {"ok": ok_total, "missing": missing_total, "corrupt": corrupt_total},
            "damaged_stripes": damaged,
        })))
    })
    .await
}
