//! Encoding one stripe: pad, Reed-Solomon, hash every shard with its outboard.

use std::sync::{Mutex, PoisonError};

use cid::Cid;

use crate::coder::{Coder, DecodeError};
use crate::ids::shard_cid;
use crate::layout::Layout;
use crate::verify::Outboard;

/// Identity of one encoded shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMeta {
    pub cid: Cid,
    pub hash: blake3::Hash,
    pub outboard: Outboard,
}

/// A stripe coded into `k + m` shards. Data shards are slices of the (zero-padded) stripe
/// buffer: the encoder copies no data.
#[derive(Debug)]
pub struct EncodedStripe {
    data: Vec<u8>,
    parity: Vec<Vec<u8>>,
    shard_len: usize,
    k: usize,
    /// Bytes of file data in this stripe (before padding).
    pub stripe_len: u64,
    /// Shard identities, data shards first.
    pub shards: Vec<ShardMeta>,
}

impl EncodedStripe {
    /// Bytes of shard `i` (`0..k` data, `k..k+m` parity).
    pub fn shard(&self, i: usize) -> &[u8] {
        if i < self.k {
            &self.data[i * self.shard_len..(i + 1) * self.shard_len]
        } else {
            &self.parity[i - self.k]
        }
    }

    /// Every shard's identity with its bytes, in order (what a store takes).
    pub fn shards_with_bytes(&self) -> Vec<(&ShardMeta, &[u8])> {
        (self.shards.iter().enumerate())
            .map(|(i, meta)| (meta, self.shard(i)))
            .collect()
    }

    /// Shard CIDs in order, as the manifest records them.
    pub fn cids(&self) -> Vec<Cid> {
        self.shards.iter().map(|s| s.cid).collect()
    }

    /// Give the buffers back for the next stripe.
    pub fn into_buffers(self) -> (Vec<u8>, Vec<Vec<u8>>) {
        (self.data, self.parity)
    }
}

/// A stripe's bytes, zero-padded to `k` equal data shards, ready to be coded. Coding borrows
/// it immutably, so the caller may read [`bytes`](Self::bytes) concurrently (for a whole-file
/// hash, say).
#[derive(Debug)]
pub struct Stripe {
    data: Vec<u8>,
    stripe_len: u64,
    shard_len: usize,
    k: usize,
}

/// Parity shards and shard identities of a [`Stripe`].
#[derive(Debug)]
pub struct Coded {
    parity: Vec<Vec<u8>>,
    shards: Vec<ShardMeta>,
}

impl Stripe {
    /// Take the stripe held in `data` (its length is the stripe length) and pad it.
    pub fn new(layout: &Layout, mut data: Vec<u8>) -> Self {
        let stripe_len = data.len() as u64;
        let shard_len = usize::try_from(layout.shard_len(stripe_len))
            .expect("shard length bounded by stripe size");
        data.resize(shard_len * layout.k(), 0);
        Self {
            data,
            stripe_len,
            shard_len,
            k: layout.k(),
        }
    }

    /// The stripe's file bytes (without padding).
    pub fn bytes(&self) -> &[u8] {
        &self.data[..usize::try_from(self.stripe_len).expect("stripe fits memory")]
    }

    fn data_shard(&self, i: usize) -> &[u8] {
        &self.data[i * self.shard_len..(i + 1) * self.shard_len]
    }

    /// Compute parity into `parity` (scratch reused between stripes) and hash every shard, on
    /// the calling thread.
    pub fn code(&self, coder: &Coder, layout: &Layout, parity: Vec<Vec<u8>>) -> Coded {
        self.code_parallel(coder, layout, parity, 1)
    }

    /// Like [`code`](Self::code), spread over up to `threads` threads (the calling thread is
    /// one of them): parity is computed in column slices beside the data shards' hashes, then
    /// the parity shards are hashed. The result is the same whatever `threads` is.
    pub fn code_parallel(
        &self,
        coder: &Coder,
        layout: &Layout,
        mut parity: Vec<Vec<u8>>,
        threads: usize,
    ) -> Coded {
        parity.resize_with(layout.m(), Vec::new);
        // No clearing: encoding overwrites every parity byte (the first data shard's product
        // is stored, the others are added to it), so recycled buffers skip a memset.
        for p in &mut parity {
            p.resize(self.shard_len, 0);
        }
        let len = self.shard_len;
        // Small stripes are not worth a thread.
        let threads = if len * self.k < PARALLEL_MIN {
            1
        } else {
            threads.max(1)
        };
        let mut metas: Vec<Option<ShardMeta>> = vec![None; layout.total()];
        {
            // Phase 1: parity column slices and data shard hashes, all independent.
            let mut columns: Vec<Vec<&mut [u8]>> = Vec::new();
            for p in &mut parity {
                for (c, slice) in p.chunks_mut(COLUMN_SLICE).enumerate() {
                    if columns.len() <= c {
                        columns.push(Vec::with_capacity(layout.m()));
                    }
                    columns[c].push(slice);
                }
            }
            // The whole-shard hashes first: the largest tasks should not finish last.
            let tasks = (0..self.k).map(Task::Hash).chain(
                (columns.into_iter().enumerate())
                    .map(|(c, slices)| Task::Parity(c * COLUMN_SLICE, slices)),
            );
            let tasks: Vec<_> = tasks.collect();
            let done = run_tasks(threads, tasks, |task| match task {
                Task::Parity(at, mut slices) => {
                    let width = slices.first().map_or(0, |s| s.len());
                    let data: Vec<&[u8]> = (0..self.k)
                        .map(|i| &self.data_shard(i)[at..at + width])
                        .collect();
                    coder
                        .encode_columns(&data, &mut slices)
                        .expect("slices cut to the layout's shape");
                    None
                }
                Task::Hash(i) => Some((i, shard_meta(self.data_shard(i)))),
            });
            for (i, meta) in done {
                metas[i] = Some(meta);
            }
        }
        // Phase 2: the parity shards' hashes.
        let done = run_tasks(threads, (self.k..layout.total()).collect(), |i| {
            Some((i, shard_meta(&parity[i - self.k])))
        });
        for (i, meta) in done {
            metas[i] = Some(meta);
        }
        let shards = metas
            .into_iter()
            .map(|m| m.expect("every shard was hashed"))
            .collect();
        Coded { parity, shards }
    }

    /// Join the stripe with its coding result.
    pub fn finish(self, coded: Coded) -> EncodedStripe {
        EncodedStripe {
            data: self.data,
            parity: coded.parity,
            shard_len: self.shard_len,
            k: self.k,
            stripe_len: self.stripe_len,
            shards: coded.shards,
        }
    }
}

/// Stripes smaller than this are coded on one thread.
const PARALLEL_MIN: usize = 1 << 20;
/// Width of the parity column slices coded as separate tasks (a slice of every shard stays in
/// cache while the `k + m` shards are combined).
const COLUMN_SLICE: usize = 256 << 10;

/// One unit of stripe coding work.
enum Task<'a> {
    /// Parity bytes from this offset, for the slices' width.
    Parity(usize, Vec<&'a mut [u8]>),
    /// Hash data shard `i`.
    Hash(usize),
}

fn shard_meta(bytes: &[u8]) -> ShardMeta {
    let (hash, outboard) = Outboard::compute(bytes);
    ShardMeta {
        cid: shard_cid(&hash),
        hash,
        outboard,
    }
}

/// Run `work` on every task, on up to `threads` threads (the caller's included), and collect
/// what it returns.
fn run_tasks<T: Send, R: Send>(
    threads: usize,
    tasks: Vec<T>,
    work: impl Fn(T) -> Option<R> + Sync,
) -> Vec<R> {
    let threads = threads.min(tasks.len());
    let queue = Mutex::new(tasks.into_iter());
    let results = Mutex::new(Vec::new());
    let worker = || {
        loop {
            let next = queue.lock().unwrap_or_else(PoisonError::into_inner).next();
            let Some(task) = next else { break };
            if let Some(r) = work(task) {
                results
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(r);
            }
        }
    };
    if threads <= 1 {
        worker();
    } else {
        std::thread::scope(|s| {
            for _ in 1..threads {
                s.spawn(worker);
            }
            worker();
        });
    }
    results.into_inner().unwrap_or_else(PoisonError::into_inner)
}

/// Encode the stripe held in `data` (its length is the stripe length). `parity` is scratch
/// space reused between stripes (resized as needed).
pub fn encode_stripe(
    coder: &Coder,
    layout: &Layout,
    data: Vec<u8>,
    parity: Vec<Vec<u8>>,
) -> EncodedStripe {
    let stripe = Stripe::new(layout, data);
    let coded = stripe.code(coder, layout, parity);
    stripe.finish(coded)
}

/// Rebuild a stripe's bytes from whatever shards are present (`None` = missing). Returns
/// exactly `stripe_len` bytes. Shards given are trusted: verify them first.
pub fn decode_stripe(
    coder: &Coder,
    layout: &Layout,
    stripe_len: u64,
    mut shards: Vec<Option<Vec<u8>>>,
) -> Result<Vec<u8>, DecodeError> {
    let shard_len =
        usize::try_from(layout.shard_len(stripe_len)).expect("shard length bounded by stripe size");
    if let Some(bad) = shards.iter().flatten().find(|s| s.len() != shard_len) {
        return Err(DecodeError::Shape(format!(
            "shard of {} bytes where {shard_len} expected",
            bad.len()
        )));
    }
    coder.reconstruct_data(&mut shards)?;
    let mut out = Vec::with_capacity(shard_len * layout.k());
    for s in shards.into_iter().take(layout.k()) {
        out.extend_from_slice(&s.expect("reconstruct_data filled every data shard"));
    }
    out.truncate(usize::try_from(stripe_len).expect("stripe length fits usize"));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        /// Coding on several threads gives exactly the single-threaded result, also into
        /// recycled parity buffers full of old bytes, for stripes around the sizes where the
        /// work is split (the threshold and the column slice width).
        #[test]
        fn parallel_coding_equals_sequential(
            k in 1u8..=12,
            m in 1u8..=5,
            len in (PARALLEL_MIN - 2)..(3 * PARALLEL_MIN + COLUMN_SLICE + 7),
            threads in 2usize..6,
            seed: u64,
        ) {
            let layout = Layout::new(k, m, 4 << 20).expect("valid");
            let coder = Coder::new(&layout);
            let data = bytes(len, seed);
            // The reference: the whole stripe coded in one call, every shard hashed whole.
            let shard_len = layout.shard_len(len as u64) as usize;
            let mut padded = data.clone();
            padded.resize(shard_len * layout.k(), 0);
            let mut parity = vec![vec![0; shard_len]; layout.m()];
            coder.encode(&padded, &mut parity).expect("encode");
            let reference: Vec<&[u8]> = padded
                .chunks(shard_len)
                .chain(parity.iter().map(Vec::as_slice))
                .collect();
            let old = vec![bytes(len / 3 + 5, !seed); layout.m()];
            let stripe = Stripe::new(&layout, data);
            let coded = stripe.code_parallel(&coder, &layout, old, threads);
            let many = stripe.finish(coded);
            for (i, bytes) in reference.iter().enumerate() {
                prop_assert_eq!(*bytes, many.shard(i));
                prop_assert_eq!(&shard_meta(bytes), &many.shards[i]);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Any k of the k+m shards rebuild the stripe; any k-1 fail with a clear error.
        #[test]
        fn any_k_shards_rebuild(
            k in 1u8..=12,
            m in 1u8..=6,
            size_kind in 0usize..5,
            odd in 1usize..50_000,
            seed: u64,
            pick in proptest::collection::vec(any::<prop::sample::Index>(), 64),
        ) {
            let layout = Layout::new(k, m, 64 * 1024).expect("valid");
            let len = match size_kind {
                0 => 0,
                1 => 1,
                2 => 64 * 1024,
                3 => 64 * 1024 - 1,
                _ => odd,
            };
            let data = bytes(len, seed);
            let coder = Coder::new(&layout);
            let enc = encode_stripe(&coder, &layout, data.clone(), Vec::new());
            prop_assert_eq!(enc.shards.len(), layout.total());
            for (i, meta) in enc.shards.iter().enumerate() {
                meta.outboard.verify_all(&meta.hash, enc.shard(i)).expect("shard verifies");
            }
            // Choose which shards survive: a random permutation prefix of length k.
            let mut order: Vec<usize> = (0..layout.total()).collect();
            for (i, ix) in pick.iter().take(order.len()).enumerate() {
                let j = i + ix.index(order.len() - i);
                order.swap(i, j);
            }
            let keep = |n: usize| -> Vec<Option<Vec<u8>>> {
                let mut v = vec![None; layout.total()];
                for &i in &order[..n] {
                    v[i] = Some(enc.shard(i).to_vec());
                }
                v
            };
            let back = decode_stripe(&coder, &layout, len as u64, keep(layout.k())).expect("k shards suffice");
            prop_assert_eq!(back, data);
            let err = decode_stripe(&coder, &layout, len as u64, keep(layout.k() - 1)).expect_err("k-1 must fail");
            prop_assert_eq!(err, DecodeError::TooFewShards { available: layout.k() - 1, needed: layout.k(), total: layout.total() });
        }
    }

    #[test]
    fn data_shards_are_contiguous_slices() {
        let layout = Layout::new(4, 2, 4096).expect("valid");
        let data = bytes(4000, 9);
        let enc = encode_stripe(&Coder::new(&layout), &layout, data.clone(), Vec::new());
        assert_eq!(enc.shard(0), &data[..1000]);
        assert_eq!(enc.shard(3), &data[3000..4000]);
    }
}
