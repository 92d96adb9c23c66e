//! Reed-Solomon coding over GF(2^8) (`reed-solomon-erasure` with SIMD).

use reed_solomon_erasure::galois_8::ReedSolomon;
use thiserror::Error;

use crate::layout::Layout;

/// A stripe could not be rebuilt.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer than `k` shards are available.
    #[error("only {available} of {total} shards available, {needed} needed")]
    TooFewShards {
        available: usize,
        needed: usize,
        total: usize,
    },
    /// Shards have inconsistent lengths or count.
    #[error("inconsistent shards: {0}")]
    Shape(String),
}

/// Encoder/decoder for one `(k, m)`.
#[derive(Debug, Clone)]
pub struct Coder {
    rs: ReedSolomon,
    k: usize,
    m: usize,
}

impl Coder {
    pub fn new(layout: &Layout) -> Self {
        let rs = ReedSolomon::new(layout.k(), layout.m())
            .expect("Layout guarantees 1 <= k, 1 <= m, k + m <= 64");
        Self {
            rs,
            k: layout.k(),
            m: layout.m(),
        }
    }

    /// Compute the `m` parity shards of `data`, which holds the `k` data shards back to back
    /// (`data.len() == k * parity[i].len()`).
    pub fn encode(&self, data: &[u8], parity: &mut [Vec<u8>]) -> Result<(), DecodeError> {
        let shard_len = parity.first().map_or(0, Vec::len);
        // Cut into shards; a length that is not k shards shows up as a wrong count or shape.
        let data: Vec<&[u8]> = match shard_len {
            0 if data.is_empty() => vec![&[]; self.k],
            0 => Vec::new(),
            _ => data.chunks(shard_len).collect(),
        };
        let mut parity: Vec<&mut [u8]> = parity.iter_mut().map(Vec::as_mut_slice).collect();
        self.encode_columns(&data, &mut parity)
    }

    /// Compute bytes `[a, b)` of every parity shard from bytes `[a, b)` of every data shard
    /// (Reed-Solomon works column by column, so a stripe can be coded in slices).
    pub fn encode_columns(
        &self,
        data: &[&[u8]],
        parity: &mut [&mut [u8]],
    ) -> Result<(), DecodeError> {
        let len = parity.first().map_or(0, |p| p.len());
        if data.len() != self.k
            || parity.len() != self.m
            || data.iter().any(|d| d.len() != len)
            || parity.iter().any(|p| p.len() != len)
        {
            return Err(DecodeError::Shape(format!(
                "{} data and {} parity slices of unequal or wrong shape for k={} m={}",
                data.len(),
                parity.len(),
                self.k,
                self.m
            )));
        }
        if len == 0 {
            return Ok(());
        }
        self.rs
            .encode_sep(data, parity)
            .map_err(|e| DecodeError::Shape(format!("{e:?}")))
    }

    /// Rebuild the missing data shards in place. `shards` holds `k + m` entries, `None` where a
    /// shard is missing or failed verification. Parity shards are left as they are.
    pub fn reconstruct_data(&self, shards: &mut [Option<Vec<u8>>]) -> Result<(), DecodeError> {
        let total = self.k + self.m;
        if shards.len() != total {
            return Err(DecodeError::Shape(format!(
                "{} shards given, {total} expected",
                shards.len()
            )));
        }
        let available = shards.iter().filter(|s| s.is_some()).count();
        if available < self.k {
            return Err(DecodeError::TooFewShards {
                available,
                needed: self.k,
                total,
            });
        }
        if shards[..self.k].iter().all(Option::is_some) {
            return Ok(());
        }
        if shards.iter().flatten().all(Vec::is_empty) {
            // A zero-length stripe: every shard is empty, nothing to compute.
            for s in shards.iter_mut() {
                s.get_or_insert_with(Vec::new);
            }
            return Ok(());
        }
        self.rs
            .reconstruct_data(shards)
            .map_err(|e| DecodeError::Shape(format!("{e:?}")))
    }
}
