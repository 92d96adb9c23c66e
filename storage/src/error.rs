use cairn_erasure::VerifyError;
use thiserror::Error;

/// The storage engine underneath failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BackendError {
    #[error("rocksdb: {0}")]
    Rocks(String),
    #[error("i/o on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Opening a store failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("store holds an unreadable record under key {key}: {reason}")]
    Corrupt { key: String, reason: String },
}

/// Writing a shard failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PutError {
    #[error("store full: {needed} more bytes needed, {used} of {capacity} bytes used")]
    StoreFull {
        needed: u64,
        used: u64,
        capacity: u64,
    },
    #[error("shard {cid} does not match its hash: {source}")]
    Verify {
        cid: String,
        #[source]
        source: VerifyError,
    },
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Reading a shard or manifest failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ReadError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{cid} is corrupt: {reason}")]
    Corrupt { cid: String, reason: String },
    #[error("range {start}..{end} is outside {cid} ({len} bytes)")]
    Range {
        cid: String,
        start: u64,
        end: u64,
        len: u64,
    },
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Committing a checkpoint failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CommitError {
    #[error("manifest references shard {0}, which this upload did not store")]
    MissingShard(String),
    #[error("manifest could not be encoded: {0}")]
    Manifest(String),
    #[error("store full: the manifest needs {needed} more bytes, {used} of {capacity} bytes used")]
    StoreFull {
        needed: u64,
        used: u64,
        capacity: u64,
    },
    #[error("shard {0} was stored for this upload but the manifest does not list it")]
    Unlisted(String),
    #[error("{0} was deleted here by its publisher: it is not pinned again")]
    Deleted(String),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Unpinning a checkpoint failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum UnpinError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("stored manifest of {cid} is unreadable: {reason}")]
    Corrupt { cid: String, reason: String },
    #[error(transparent)]
    Backend(#[from] BackendError),
}
