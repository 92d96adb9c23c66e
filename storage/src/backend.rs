use crate::error::BackendError;

/// One write of an atomic index batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

/// The storage engine under a [`Store`](crate::Store): an ordered key-value index with atomic
/// batches, and a blob area for shard bytes.
///
/// Contract, relied on for crash safety:
/// - `write(batch, true)` is atomic and durable when it returns, and makes every earlier
///   `write` durable too.
/// - `put_blob` need not be durable until `sync_blobs` returns.
/// - After a crash, any blob or non-durable index write may be lost, partially written or
///   present; the store sweeps what no committed manifest references when it opens.
pub trait Backend: Send + Sync + 'static {
    /// Read one index value.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError>;
    /// Apply a batch atomically; `durable` waits for it (and all before it) to reach disk.
    fn write(&self, batch: Vec<BatchOp>, durable: bool) -> Result<(), BackendError>;
    /// Visit every index entry whose key starts with `prefix`, in key order, until `visit`
    /// returns `false`.
    fn scan(
        &self,
        prefix: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), BackendError> {
        self.scan_from(prefix, prefix, visit)
    }
    /// [`scan`](Self::scan) from the first key `>= from` (a long walk resumes where it
    /// stopped without visiting what it already saw).
    fn scan_from(
        &self,
        prefix: &[u8],
        from: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), BackendError>;

    /// Store blob bytes under `key` (replacing any).
    fn put_blob(&self, key: &[u8], data: &[u8]) -> Result<(), BackendError>;
    /// Read `len` bytes at `offset` of a blob; `None` if there is no such blob. A blob shorter
    /// than asked returns what it has (the caller verifies).
    fn read_blob(&self, key: &[u8], offset: u64, len: u64)
    -> Result<Option<Vec<u8>>, BackendError>;
    /// Hint that bytes `[offset, offset + len)` of a blob will be read soon (readahead). Only a
    /// hint: the default does nothing and failures are ignored.
    fn prefetch_blob(&self, _key: &[u8], _offset: u64, _len: u64) {}
    /// Whether a blob exists (without reading it).
    fn has_blob(&self, key: &[u8]) -> Result<bool, BackendError>;
    /// Remove a blob (no error if absent).
    fn delete_blob(&self, key: &[u8]) -> Result<(), BackendError>;
    /// Make every blob written so far durable.
    fn sync_blobs(&self) -> Result<(), BackendError>;
    /// Visit the key of every blob present.
    fn list_blobs(&self, visit: &mut dyn FnMut(&[u8])) -> Result<(), BackendError>;
}

/// Bytes `[offset, offset + len)` of `value`, clamped to its length (backends that hold whole
/// values in memory answer range reads with this).
pub(crate) fn clamp_range(value: &[u8], offset: u64, len: u64) -> Vec<u8> {
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(value.len());
    let end = usize::try_from(offset.saturating_add(len))
        .unwrap_or(usize::MAX)
        .min(value.len());
    value[start..end].to_vec()
}

/// A shared backend is a backend (lets tests keep a handle across a store's reopen).
impl<B: Backend> Backend for std::sync::Arc<B> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        (**self).get(key)
    }
    fn write(&self, batch: Vec<BatchOp>, durable: bool) -> Result<(), BackendError> {
        (**self).write(batch, durable)
    }
    fn scan_from(
        &self,
        prefix: &[u8],
        from: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), BackendError> {
        (**self).scan_from(prefix, from, visit)
    }
    fn put_blob(&self, key: &[u8], data: &[u8]) -> Result<(), BackendError> {
        (**self).put_blob(key, data)
    }
    fn read_blob(
        &self,
        key: &[u8],
        offset: u64,
        len: u64,
    ) -> Result<Option<Vec<u8>>, BackendError> {
        (**self).read_blob(key, offset, len)
    }
    fn prefetch_blob(&self, key: &[u8], offset: u64, len: u64) {
        (**self).prefetch_blob(key, offset, len)
    }
    fn has_blob(&self, key: &[u8]) -> Result<bool, BackendError> {
        (**self).has_blob(key)
    }
    fn delete_blob(&self, key: &[u8]) -> Result<(), BackendError> {
        (**self).delete_blob(key)
    }
    fn sync_blobs(&self) -> Result<(), BackendError> {
        (**self).sync_blobs()
    }
    fn list_blobs(&self, visit: &mut dyn FnMut(&[u8])) -> Result<(), BackendError> {
        (**self).list_blobs(visit)
    }
}
