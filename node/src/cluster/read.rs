//! Reads across the cluster: pieces from their holders, stripes rebuilt from any k shards.

use super::*;

/// How long one data piece may take before the gateway rebuilds its stripe from others.
const PIECE_DEADLINE: Duration = Duration::from_secs(5);
/// Pieces (data-shard ranges) fetched ahead of the one being sent.
const PIECES_AHEAD: usize = 16;
/// Members asked per shard of a stripe (in placement order) when a rebuild cannot find
/// enough shards: repair places rebuilt shards on the first live members past the original
/// holders, so they lie within a few stripe widths even with many dead members in the way.
const LOCATE_WINDOW_PER_SHARD: usize = 4;

impl<B: Backend> Cluster<B> {
    fn reader(&self, layout: Layout, salt: Option<Vec<u8>>, file: FileEntry) -> Reader<B> {
        Reader {
            cluster: self.clone(),
            layout,
            coder: Coder::new(&layout),
            salt,
            file,
            members: tokio::sync::OnceCell::new(),
            rebuilt: Mutex::new(HashMap::new()),
            suspect: Mutex::new(HashSet::new()),
        }
    }

    /// The data of one stripe of `file`, rebuilt from any `k` verified shards its holders
    /// (this node among them) serve; data shards out of the decoder are checked against
    /// their CIDs. For repairs of a single shard.
    pub async fn stripe_data(
        &self,
        layout: Layout,
        salt: Option<Vec<u8>>,
        file: FileEntry,
        stripe: u64,
    ) -> Result<Vec<u8>, GetError> {
        let reader = self.reader(layout, salt, file);
        Ok(reader.rebuild(stripe).await?.as_ref().clone())
    }

    /// Stream bytes `[start, end)` of `file`, in order, verified. Pieces are fetched from
    /// their holders several at a time; a piece whose holder fails or is slow is cut from
    /// its stripe rebuilt out of any k shards.
    pub fn read(
        &self,
        layout: Layout,
        salt: Option<Vec<u8>>,
        file: FileEntry,
        start: u64,
        end: u64,
    ) -> mpsc::Receiver<Result<Bytes, GetError>> {
        let (tx, rx) = mpsc::channel(4);
        let reader = Arc::new(self.reader(layout, salt, file));
        tokio::spawn(async move {
            let pieces = reader.layout.pieces(reader.file.size, start, end);
            let mut out = libp2p::futures::stream::iter(pieces)
                .map(|p| {
                    let r = Arc::clone(&reader);
                    async move { r.piece(p).await }
                })
                .buffered(PIECES_AHEAD);
            while let Some(item) = out.next().await {
                let failed = item.is_err();
                if tx.send(item.map(Bytes::from)).await.is_err() || failed {
                    break;
                }
            }
        });
        rx
    }
}

/// A stripe rebuilt once and shared by the pieces that need it.
type RebuiltStripe = Arc<tokio::sync::OnceCell<Result<Arc<Vec<u8>>, RebuildFailure>>>;

/// Why a stripe could not be rebuilt.
#[derive(Debug, Clone)]
struct RebuildFailure {
    /// Intact shards that could be had.
    available: usize,
    detail: String,
}

/// Why a fetch failed.
#[derive(Debug)]
struct Fetch {
    /// The node answered that it does not hold the shard (it is not a suspect for that).
    not_found: bool,
    message: String,
}

impl std::fmt::Display for Fetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Shard `i` of a stripe as fetched for a rebuild.
type Fetched = (usize, Result<Vec<u8>, String>);

struct Reader<B: Backend> {
    cluster: Cluster<B>,
    layout: Layout,
    coder: Coder,
    /// The checkpoint's placement salt (from its manifest).
    salt: Option<Vec<u8>>,
    file: FileEntry,
    members: tokio::sync::OnceCell<Vec<PeerId>>,
    /// Stripes rebuilt from parity, shared by their pieces.
    rebuilt: Mutex<HashMap<u64, RebuiltStripe>>,
    /// Nodes that failed during this read: their pieces go straight to a rebuild.
    suspect: Mutex<HashSet<PeerId>>,
}

impl<B: Backend> Reader<B> {
    async fn members(&self) -> &[PeerId] {
        self.members.get_or_init(|| self.cluster.members()).await
    }

    async fn ordered(&self, stripe: u64) -> Vec<PeerId> {
        let cids = &self.file.stripes[usize::try_from(stripe).expect("stripe index")];
        member_order(
            &self.cluster.membership,
            self.members().await,
            &stripe_key(self.salt.as_deref(), cids),
        )
    }

    async fn fetch(&self, peer: PeerId, cid: Cid, start: u64, end: u64) -> Result<Vec<u8>, Fetch> {
        if peer == self.cluster.net.peer_id() {
            let store = self.cluster.store.clone();
            let local = tokio::task::spawn_blocking(move || {
                let end = if end == u64::MAX {
                    store.shard_len(&cid)?
                } else {
                    end
                };
                store.read_shard_range(&cid, start, end)
            })
            .await;
            return match local {
                Ok(Ok(b)) => Ok(b),
                Ok(Err(e)) => Err(Fetch {
                    not_found: matches!(e, ReadError::NotFound(_)),
                    message: e.to_string(),
                }),
                Err(e) => Err(Fetch {
                    not_found: false,
                    message: e.to_string(),
                }),
            };
        }
        let r = self
            .cluster
            .transfers
            .fetch_range(peer, &cid, start, end)
            .await;
        match r {
            Ok(b) => Ok(b),
            Err(e) => {
                if !e.is_not_found() {
                    lock(&self.suspect).insert(peer);
                }
                Err(Fetch {
                    not_found: e.is_not_found(),
                    message: e.to_string(),
                })
            }
        }
    }

    /// A piece from the members that announced its shard, other than `not`: a shard a put
    /// moved off its rendezvous holder (that node failed or lagged) is found here.
    async fn piece_elsewhere(
        &self,
        cid: Cid,
        start: u64,
        end: u64,
        not: PeerId,
    ) -> Option<Vec<u8>> {
        let providers = self.cluster.net.providers(&cid.to_bytes()).await;
        for p in self.cluster.membership.filter(providers) {
            if p == not || lock(&self.suspect).contains(&p) {
                continue;
            }
            match tokio::time::timeout(PIECE_DEADLINE, self.fetch(p, cid, start, end)).await {
                Ok(Ok(b)) => return Some(b),
                Ok(Err(e)) => debug!(%p, %cid, error = %e, "piece fetch from a provider failed"),
                Err(_) => {
                    lock(&self.suspect).insert(p);
                }
            }
        }
        None
    }

    async fn piece(&self, p: cairn_erasure::Piece) -> Result<Vec<u8>, GetError> {
        let cids = &self.file.stripes[usize::try_from(p.stripe).expect("stripe index")];
        let ordered = self.ordered(p.stripe).await;
        if let Some(peer) = holder(&ordered, p.shard)
            && !lock(&self.suspect).contains(&peer)
        {
            let got = tokio::time::timeout(
                PIECE_DEADLINE,
                self.fetch(peer, cids[p.shard], p.offset, p.offset + p.len),
            )
            .await;
            match got {
                Ok(Ok(bytes)) => return Ok(bytes),
                Ok(Err(e)) if e.not_found => {
                    let (a, b) = (p.offset, p.offset + p.len);
                    if let Some(bytes) = self.piece_elsewhere(cids[p.shard], a, b, peer).await {
                        return Ok(bytes);
                    }
                    debug!(stripe = p.stripe, shard = p.shard, %peer, "no holder has the piece; rebuilding the stripe");
                }
                Ok(Err(e)) => {
                    debug!(stripe = p.stripe, shard = p.shard, %peer, error = %e, "piece fetch failed; rebuilding the stripe");
                }
                Err(_) => {
                    lock(&self.suspect).insert(peer);
                    warn!(stripe = p.stripe, shard = p.shard, %peer, "piece fetch too slow; rebuilding the stripe");
                }
            }
        }
        let stripe = self.rebuild(p.stripe).await?;
        let stripe_len = self.layout.stripe_len(self.file.size, p.stripe);
        let shard_len = self.layout.shard_len(stripe_len);
        let lo = usize::try_from(p.shard as u64 * shard_len + p.offset).expect("in memory");
        let hi = lo + usize::try_from(p.len).expect("in memory");
        Ok(stripe[lo..hi].to_vec())
    }

    async fn rebuild(&self, stripe: u64) -> Result<Arc<Vec<u8>>, GetError> {
        let cell = {
            let mut map = lock(&self.rebuilt);
            // Keep the last few stripes only: reads move forward.
            if map.len() > 2 {
                let oldest = *map.keys().min().expect("non-empty");
                map.remove(&oldest);
            }
            Arc::clone(map.entry(stripe).or_default())
        };
        let result = cell
            .get_or_init(|| async { self.rebuild_now(stripe).await.map(Arc::new) })
            .await;
        result.clone().map_err(|f| GetError::Unrecoverable {
            path: self.file.path.clone(),
            stripe,
            available: f.available,
            needed: self.layout.k(),
            total: self.layout.total(),
            detail: f.detail,
        })
    }

    /// Fetch whole shards of a stripe from all holders at once and decode from the first k
    /// that verify.
    async fn rebuild_now(&self, stripe: u64) -> Result<Vec<u8>, RebuildFailure> {
        let cids = &self.file.stripes[usize::try_from(stripe).expect("stripe index")];
        let ordered = self.ordered(stripe).await;
        let k = self.layout.k();
        let mut f: FuturesUnordered<_> = (0..cids.len())
            .map(|i| {
                let first = holder(&ordered, i);
                async move { (i, self.fetch_anywhere(first, cids[i]).await) }
            })
            .collect::<FuturesUnordered<_>>();
        let mut shards: Vec<Option<Vec<u8>>> = vec![None; cids.len()];
        let mut got = 0;
        let mut failures = Vec::new();
        while let Some((i, r)) = f.next().await as Option<Fetched> {
            match r {
                Ok(b) => {
                    shards[i] = Some(b);
                    got += 1;
                    if got == k {
                        break; // the slow tail is dropped (cancelled)
                    }
                }
                Err(e) => failures.push(format!("shard {i}: {e}")),
            }
        }
        drop(f);
        if got < k {
            got += self
                .locate_and_fetch(&ordered, cids, &mut shards, k - got, &mut failures)
                .await;
        }
        if got < k {
            return Err(RebuildFailure {
                available: got,
                detail: failures.join("; "),
            });
        }
        let fail = move |detail: String| RebuildFailure {
            available: got,
            detail,
        };
        let stripe_len = self.layout.stripe_len(self.file.size, stripe);
        let layout = self.layout;
        let coder = self.coder.clone();
        let cids = cids.clone();
        tokio::task::spawn_blocking(move || {
            // Data shards that were not fetched (and verified) come out of the decoder: they
            // are hashed against their CIDs before anything is served from them.
            let rebuilt: Vec<usize> = (0..layout.k()).filter(|&i| shards[i].is_none()).collect();
            let data = decode_stripe(&coder, &layout, stripe_len, shards)
                .map_err(|e| fail(e.to_string()))?;
            check_rebuilt(&layout, stripe_len, &data, &cids, &rebuilt).map_err(|i| {
                fail(format!(
                    "data shard {i} rebuilt from parity does not match its cid: the \
                     stripe's parity is inconsistent with its data"
                ))
            })?;
            Ok(data)
        })
        .await
        .map_err(|e| fail(e.to_string()))?
    }

    /// The second pass of a rebuild short of shards: ask the first members of the stripe's
    /// placement order (where repair puts rebuilt shards, past dead members) which of the
    /// missing shards they hold, in one batched query each, and fetch from those that do,
    /// suspects included (they just answered). Fills `shards`; returns how many it got, at
    /// most `wanted`.
    async fn locate_and_fetch(
        &self,
        ordered: &[PeerId],
        cids: &[Cid],
        shards: &mut [Option<Vec<u8>>],
        wanted: usize,
        failures: &mut Vec<String>,
    ) -> usize {
        let missing: Vec<usize> = (0..cids.len()).filter(|&i| shards[i].is_none()).collect();
        let asked: Vec<PeerId> = ordered
            .iter()
            .copied()
            .take(LOCATE_WINDOW_PER_SHARD * cids.len())
            .collect();
        let wanted_cids: Vec<Cid> = missing.iter().map(|&i| cids[i]).collect();
        let found = self
            .cluster
            .who_holds(&asked, &wanted_cids, PIECE_DEADLINE)
            .await;
        let mut f: FuturesUnordered<_> = missing
            .iter()
            .filter(|&&i| !found.of(&cids[i]).is_empty())
            .map(|&i| {
                let holders = found.of(&cids[i]).to_vec();
                async move {
                    let mut errors = Vec::new();
                    for p in holders {
                        match tokio::time::timeout(
                            PIECE_DEADLINE,
                            self.fetch(p, cids[i], 0, u64::MAX),
                        )
                        .await
                        {
                            Ok(Ok(b)) => return (i, Ok(b)),
                            Ok(Err(e)) => errors.push(e.message),
                            Err(_) => {
                                errors.push(format!("{p} did not answer within {PIECE_DEADLINE:?}"))
                            }
                        }
                    }
                    (i, Err(errors.join("; ")))
                }
            })
            .collect();
        let mut got = 0;
        while let Some((i, r)) = f.next().await as Option<Fetched> {
            match r {
                Ok(b) => {
                    debug!(shard = i, "shard found by asking the stripe's members");
                    shards[i] = Some(b);
                    got += 1;
                    if got == wanted {
                        break;
                    }
                }
                Err(e) => failures.push(format!("shard {i} (asked its members): {e}")),
            }
        }
        got
    }

    /// A whole shard from its placement node, else from the members that announced it; the
    /// nodes this read holds suspect (slow, failed or lying before) are asked last, each
    /// within the piece deadline, so that a stripe with k intact shards reachable is rebuilt
    /// even when a loaded node was slow once.
    async fn fetch_anywhere(&self, first: Option<PeerId>, cid: Cid) -> Result<Vec<u8>, String> {
        let mut errors = Vec::new();
        let mut candidates: Vec<PeerId> = first.into_iter().collect();
        let mut looked_up = false;
        let mut tried = HashSet::new();
        let mut later = Vec::new();
        let mut i = 0;
        loop {
            if i == candidates.len() {
                if looked_up {
                    break;
                }
                looked_up = true;
                let providers = self.cluster.net.providers(&cid.to_bytes()).await;
                candidates.extend(self.cluster.membership.filter(providers));
                continue;
            }
            let p = candidates[i];
            i += 1;
            if !tried.insert(p) {
                continue;
            }
            if lock(&self.suspect).contains(&p) {
                later.push(p);
                continue;
            }
            match self.fetch(p, cid, 0, u64::MAX).await {
                Ok(b) => return Ok(b),
                Err(e) => errors.push(e.message),
            }
        }
        for p in later {
            match tokio::time::timeout(PIECE_DEADLINE, self.fetch(p, cid, 0, u64::MAX)).await {
                Ok(Ok(b)) => return Ok(b),
                Ok(Err(e)) => errors.push(e.message),
                Err(_) => errors.push(format!("{p} did not answer within {PIECE_DEADLINE:?}")),
            }
        }
        if errors.is_empty() {
            errors.push("no reachable node holds it".into());
        }
        Err(errors.join("; "))
    }
}
