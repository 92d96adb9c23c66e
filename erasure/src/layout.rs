//! Stripe and shard geometry. Everything here is arithmetic on sizes.

use thiserror::Error;

/// Default stripe size: 64 MiB.
pub const DEFAULT_STRIPE_SIZE: u64 = 64 * 1024 * 1024;
/// Default number of data shards per stripe.
pub const DEFAULT_K: u8 = 10;
/// Default number of parity shards per stripe.
pub const DEFAULT_M: u8 = 4;
/// Largest `k + m` accepted.
pub const MAX_SHARDS: usize = 64;
/// Largest stripe accepted (1 GiB): bounds the memory a decoder may be asked to hold.
pub const MAX_STRIPE_SIZE: u64 = 1 << 30;
/// Smallest stripe accepted.
pub const MIN_STRIPE_SIZE: u64 = 4096;

/// Coding parameters that are out of range.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParamsError {
    /// `k` or `m` is zero or `k + m` exceeds [`MAX_SHARDS`].
    #[error("invalid shard counts k={k} m={m}: need k >= 1, m >= 1, k + m <= {MAX_SHARDS}")]
    ShardCounts { k: u8, m: u8 },
    /// Stripe size out of range.
    #[error(
        "invalid stripe size {size}: must be between {MIN_STRIPE_SIZE} and {MAX_STRIPE_SIZE} bytes"
    )]
    StripeSize { size: u64 },
}

/// How a checkpoint's files are cut: `k` data shards and `m` parity shards per stripe of
/// `stripe_size` bytes. The last stripe of a file may be shorter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    k: u8,
    m: u8,
    stripe_size: u64,
}

impl Default for Layout {
    fn default() -> Self {
        Self {
            k: DEFAULT_K,
            m: DEFAULT_M,
            stripe_size: DEFAULT_STRIPE_SIZE,
        }
    }
}

/// One contiguous piece of a file read: `len` bytes of data shard `shard` of stripe `stripe`,
/// starting at `offset` inside that shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub stripe: u64,
    pub shard: usize,
    pub offset: u64,
    pub len: u64,
}

impl Layout {
    /// Validated parameters.
    pub fn new(k: u8, m: u8, stripe_size: u64) -> Result<Self, ParamsError> {
        if k == 0 || m == 0 || usize::from(k) + usize::from(m) > MAX_SHARDS {
            return Err(ParamsError::ShardCounts { k, m });
        }
        if !(MIN_STRIPE_SIZE..=MAX_STRIPE_SIZE).contains(&stripe_size) {
            return Err(ParamsError::StripeSize { size: stripe_size });
        }
        Ok(Self { k, m, stripe_size })
    }

    pub fn k(&self) -> usize {
        usize::from(self.k)
    }

    pub fn m(&self) -> usize {
        usize::from(self.m)
    }

    /// `k + m`.
    pub fn total(&self) -> usize {
        self.k() + self.m()
    }

    pub fn stripe_size(&self) -> u64 {
        self.stripe_size
    }

    /// Number of stripes of a file of `file_size` bytes (0 for an empty file).
    pub fn stripe_count(&self, file_size: u64) -> u64 {
        file_size.div_ceil(self.stripe_size)
    }

    /// Bytes of the file in stripe `stripe`.
    pub fn stripe_len(&self, file_size: u64, stripe: u64) -> u64 {
        let start = stripe.saturating_mul(self.stripe_size);
        file_size.saturating_sub(start).min(self.stripe_size)
    }

    /// Length of every shard of a stripe holding `stripe_len` bytes: `ceil(stripe_len / k)`.
    /// The last data shard(s) are zero-padded to this length.
    pub fn shard_len(&self, stripe_len: u64) -> u64 {
        stripe_len.div_ceil(u64::from(self.k))
    }

    /// Largest shard this layout produces.
    pub fn max_shard_len(&self) -> u64 {
        self.shard_len(self.stripe_size)
    }

    /// The data-shard pieces covering bytes `[start, end)` of a file of `file_size` bytes, in
    /// order. `end` is clamped to the file size.
    pub fn pieces(&self, file_size: u64, start: u64, end: u64) -> Vec<Piece> {
        let end = end.min(file_size);
        let mut out = Vec::new();
        let mut pos = start;
        while pos < end {
            let stripe = pos / self.stripe_size;
            let stripe_start = stripe * self.stripe_size;
            let stripe_len = self.stripe_len(file_size, stripe);
            let shard_len = self.shard_len(stripe_len);
            let in_stripe = pos - stripe_start;
            let shard = in_stripe / shard_len;
            let offset = in_stripe % shard_len;
            let shard_end_in_file = stripe_start + (shard + 1) * shard_len;
            let stop = end.min(shard_end_in_file).min(stripe_start + stripe_len);
            out.push(Piece {
                stripe,
                shard: usize::try_from(shard).expect("shard index < k <= 64"),
                offset,
                len: stop - pos,
            });
            pos = stop;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_params() {
        assert!(Layout::new(0, 1, 1 << 20).is_err());
        assert!(Layout::new(1, 0, 1 << 20).is_err());
        assert!(Layout::new(60, 5, 1 << 20).is_err());
        assert!(Layout::new(60, 4, 1 << 20).is_ok());
        assert!(Layout::new(4, 2, 100).is_err());
        assert!(Layout::new(4, 2, (1 << 30) + 1).is_err());
    }

    #[test]
    fn geometry() {
        let l = Layout::new(4, 2, 4096).expect("valid");
        assert_eq!(l.stripe_count(0), 0);
        assert_eq!(l.stripe_count(1), 1);
        assert_eq!(l.stripe_count(4096), 1);
        assert_eq!(l.stripe_count(4097), 2);
        assert_eq!(l.stripe_len(4097, 1), 1);
        assert_eq!(l.shard_len(1), 1);
        assert_eq!(l.shard_len(4096), 1024);
        assert_eq!(l.shard_len(4095), 1024);
    }

    #[test]
    fn pieces_cover_range_exactly() {
        let l = Layout::new(3, 2, 4096).expect("valid");
        for size in [0u64, 1, 100, 4095, 4096, 4097, 9000, 12288] {
            for (a, b) in [(0, size), (1, size / 2 + 1), (size / 3, size), (0, 1)] {
                let pieces = l.pieces(size, a, b);
                let total: u64 = pieces.iter().map(|p| p.len).sum();
                assert_eq!(
                    total,
                    b.min(size).saturating_sub(a),
                    "size {size} range {a}..{b}"
                );
                // Each piece maps back to the file offset it claims.
                let mut pos = a;
                for p in pieces {
                    let sl = l.shard_len(l.stripe_len(size, p.stripe));
                    let file_off = p.stripe * 4096 + p.shard as u64 * sl + p.offset;
                    assert_eq!(file_off, pos);
                    assert!(p.offset + p.len <= sl);
                    pos += p.len;
                }
            }
        }
    }
}
