//! Cairn's shard store.
//!
//! [`Store`] holds verified shards, their outboards, checkpoint manifests and pins, with
//! reference counts so that unpinning a checkpoint frees exactly the shards nothing else uses.
//! All of that logic is written once over the [`Backend`] trait, which has two implementations:
//! [`RocksBackend`] (RocksDB index, shard bytes in files or in BlobDB) and [`MemBackend`] (an
//! in-memory twin for tests).

mod backend;
mod error;
mod mem;
mod rocks;
mod store;

pub use backend::{Backend, BatchOp};
pub use error::{BackendError, CommitError, OpenError, PutError, ReadError, UnpinError};
pub use mem::MemBackend;
pub use rocks::{RocksBackend, RocksOptions, ValueMode};
pub use store::{
    AcceptedDeal, CHUNK_ROOT_LEN, CheckpointInfo, MAX_NAME_HISTORY, MAX_NAME_LEN,
    MAX_PENDING_PEERS, NameEntry, NameError, PendingDelete, PutSession, ScrubState, ShardPlace,
    ShardStatus, StagedRecord, Store, StoreStats, UPLOAD_KEY_LEN, check_name, record_charge,
    shard_charge,
};
