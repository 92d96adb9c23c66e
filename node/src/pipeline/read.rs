//! Reading stored files back, verified, rebuilding stripes from parity.

use super::*;

/// A read that cannot be served.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum GetError {
    /// Too few intact shards remain in a stripe.
    #[error(
        "stripe {stripe} of {path:?} cannot be reconstructed: {available} of {total} shards intact, {needed} needed ({detail})"
    )]
    Unrecoverable {
        path: String,
        stripe: u64,
        available: usize,
        needed: usize,
        total: usize,
        detail: String,
    },
    /// Reconstruction produced bytes that do not match the manifest (should not happen).
    #[error("stripe {stripe} of {path:?}: reconstructed shard {shard} does not match its cid")]
    Reconstructed {
        path: String,
        stripe: u64,
        shard: usize,
    },
    #[error(transparent)]
    Store(#[from] ReadError),
    #[error(transparent)]
    Backend(#[from] cairn_storage::BackendError),
}

/// How many pieces (data-shard ranges, up to one shard each) a read asks the disk for ahead.
const PREFETCH_PIECES: usize = 2;

/// Reads files of one checkpoint, verified, reconstructing stripes from parity when needed.
pub struct FileReader<'a, B: Backend> {
    store: &'a Store<B>,
    layout: Layout,
    coder: Coder,
}

impl<'a, B: Backend> FileReader<'a, B> {
    pub fn new(store: &'a Store<B>, layout: Layout) -> Self {
        Self {
            store,
            layout,
            coder: Coder::new(&layout),
        }
    }

    /// Cheap pre-flight: every stripe touched by `[start, end)` has at least `k` shards whose
    /// bytes are present (not verified). Lets a request fail before any byte is sent.
    pub fn preflight(&self, file: &FileEntry, start: u64, end: u64) -> Result<(), GetError> {
        if start >= end {
            return Ok(());
        }
        let first = start / self.layout.stripe_size();
        let last = (end - 1) / self.layout.stripe_size();
        for stripe in first..=last {
            let cids = &file.stripes[usize::try_from(stripe).expect("stripe index fits usize")];
            let mut missing = Vec::new();
            for (i, cid) in cids.iter().enumerate() {
                if !self.store.shard_present(cid)? {
                    missing.push(i);
                }
            }
            let available = cids.len() - missing.len();
            if available < self.layout.k() {
                return Err(GetError::Unrecoverable {
                    path: file.path.clone(),
                    stripe,
                    available,
                    needed: self.layout.k(),
                    total: cids.len(),
                    detail: format!("shards {missing:?} missing"),
                });
            }
        }
        Ok(())
    }

    /// Stream bytes `[start, end)` of `file` to `emit`, in order, in pieces of at most one
    /// shard. Every byte is verified before `emit` sees it. Stops early when `emit` returns
    /// `false` (the reader went away).
    pub fn read(
        &self,
        file: &FileEntry,
        start: u64,
        end: u64,
        emit: &mut dyn FnMut(Vec<u8>) -> bool,
    ) -> Result<(), GetError> {
        let pieces = self.layout.pieces(file.size, start, end);
        let mut rebuilt: Option<(u64, Vec<u8>)> = None;
        // Readahead: the disk fetches the next pieces while this one is verified and sent.
        let prefetch = |i: usize| {
            if let Some(p) = pieces.get(i) {
                let cid = &file.stripes
                    [usize::try_from(p.stripe).expect("stripe index fits usize")][p.shard];
                self.store.prefetch_shard(cid, p.offset, p.offset + p.len);
            }
        };
        for i in 0..PREFETCH_PIECES {
            prefetch(i);
        }
        for (i, &p) in pieces.iter().enumerate() {
            prefetch(i + PREFETCH_PIECES);
            let cids = &file.stripes[usize::try_from(p.stripe).expect("stripe index fits usize")];
            let shard_len = self
                .layout
                .shard_len(self.layout.stripe_len(file.size, p.stripe));
            let from_rebuilt = |data: &Vec<u8>| {
                let at = usize::try_from(p.shard as u64 * shard_len + p.offset).expect("in stripe");
                data[at..at + usize::try_from(p.len).expect("in stripe")].to_vec()
            };
            let bytes = match &rebuilt {
                Some((s, data)) if *s == p.stripe => from_rebuilt(data),
                _ => match self
                    .store
                    .read_shard_range(&cids[p.shard], p.offset, p.offset + p.len)
                {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(path = %file.path, stripe = p.stripe, shard = p.shard, error = %e, "data shard unreadable, reconstructing stripe");
                        let data = self.rebuild(file, p.stripe)?;
                        let out = from_rebuilt(&data);
                        rebuilt = Some((p.stripe, data));
                        out
                    }
                },
            };
            if !emit(bytes) {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Rebuild a whole stripe from any `k` intact shards, verify the rebuilt data shards
    /// against their CIDs, and write back the ones that were damaged.
    pub fn rebuild(&self, file: &FileEntry, stripe: u64) -> Result<Vec<u8>, GetError> {
        let cids = &file.stripes[usize::try_from(stripe).expect("stripe index fits usize")];
        let stripe_len = self.layout.stripe_len(file.size, stripe);
        let k = self.layout.k();
        let mut shards: Vec<Option<Vec<u8>>> = vec![None; cids.len()];
        let mut failures = Vec::new();
        let mut available = 0;
        for (i, cid) in cids.iter().enumerate() {
            if available == k {
                break;
            }
            match self.store.read_shard(cid) {
                Ok(b) => {
                    shards[i] = Some(b);
                    available += 1;
                }
                Err(ReadError::Backend(e)) => return Err(ReadError::Backend(e).into()),
                Err(e) => failures.push(format!("shard {i}: {e}")),
            }
        }
        if available < k {
            return Err(GetError::Unrecoverable {
                path: file.path.clone(),
                stripe,
                available,
                needed: k,
                total: cids.len(),
                detail: failures.join("; "),
            });
        }
        let damaged: Vec<usize> = (0..k).filter(|&i| shards[i].is_none()).collect();
        let data = decode_stripe(&self.coder, &self.layout, stripe_len, shards).map_err(|e| {
            GetError::Unrecoverable {
                path: file.path.clone(),
                stripe,
                available,
                needed: k,
                total: cids.len(),
                detail: e.to_string(),
            }
        })?;
        if let Err(shard) = check_rebuilt(&self.layout, stripe_len, &data, cids, &damaged) {
            return Err(GetError::Reconstructed {
                path: file.path.clone(),
                stripe,
                shard,
            });
        }
        for i in damaged {
            let shard = rebuilt_shard(&self.layout, stripe_len, &data, i);
            if let Err(e) = self.store.repair_shard(&cids[i], &shard) {
                tracing::warn!(cid = %cids[i], error = %e, "could not write back a repaired shard");
            }
        }
        Ok(data)
    }
}

/// Data shard `i` of a decoded stripe, zero-padded to the shard length.
pub(crate) fn rebuilt_shard(layout: &Layout, stripe_len: u64, data: &[u8], i: usize) -> Vec<u8> {
    let shard_len = usize::try_from(layout.shard_len(stripe_len)).expect("in memory");
    let mut shard = vec![0u8; shard_len];
    let lo = (i * shard_len).min(data.len());
    let hi = ((i + 1) * shard_len).min(data.len());
    shard[..hi - lo].copy_from_slice(&data[lo..hi]);
    shard
}

/// Check that the data shards `rebuilt` of a decoded stripe hash to their CIDs: parity that
/// is inconsistent with the data (a lying publisher, or bytes corrupted before they were
/// hashed) decodes into wrong bytes, which must never be served. `Err(i)`: shard `i` does not.
pub(crate) fn check_rebuilt(
    layout: &Layout,
    stripe_len: u64,
    data: &[u8],
    cids: &[Cid],
    rebuilt: &[usize],
) -> Result<(), usize> {
    for &i in rebuilt {
        let shard = rebuilt_shard(layout, stripe_len, data, i);
        if cairn_erasure::shard_cid(&blake3::hash(&shard)) != cids[i] {
            return Err(i);
        }
    }
    Ok(())
}
