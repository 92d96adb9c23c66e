use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options,
    WriteBatch, WriteOptions,
};

use crate::backend::{Backend, BatchOp, clamp_range};
use crate::error::BackendError;

const BLOB_CF: &str = "blobs";
/// Alignment of `O_DIRECT` buffers, offsets and lengths (covers 512- and 4096-byte devices).
const DIRECT_ALIGN: usize = 4096;
/// Size of one `O_DIRECT` write (and of each writer's bounce buffer).
const DIRECT_CHUNK: usize = 1 << 20;
/// Shards smaller than this are written through the page cache.
const DIRECT_MIN: usize = 64 * 1024;

/// Where shard bytes live. The index is always RocksDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ValueMode {
    /// One file per shard under `<dir>/shards/`, RocksDB as the index (the default, chosen by
    /// benchmark: see ARCHITECTURE.md).
    #[default]
    Files,
    /// Shard bytes as RocksDB values in a column family with BlobDB (blob files) enabled.
    BlobDb,
}

/// Tuning of the RocksDB backend.
#[derive(Debug, Clone)]
pub struct RocksOptions {
    pub value_mode: ValueMode,
    /// Block cache for the index, bytes.
    pub block_cache_bytes: usize,
    /// Memtable size of the BlobDB column family (bounds memory: at most two are alive).
    pub blob_write_buffer_bytes: usize,
}

impl Default for RocksOptions {
    fn default() -> Self {
        Self {
            value_mode: ValueMode::Files,
            block_cache_bytes: 8 << 20,
            blob_write_buffer_bytes: 32 << 20,
        }
    }
}

/// [`Backend`] over RocksDB.
pub struct RocksBackend {
    db: DB,
    mode: ValueMode,
    shard_dir: PathBuf,
    /// Directories that gained shard files since the last `sync_blobs`.
    unsynced_dirs: Mutex<BTreeSet<PathBuf>>,
    /// Makes temporary file names unique.
    tmp_counter: AtomicU64,
    /// Whether the shard directory accepts `O_DIRECT`.
    direct_io: AtomicBool,
    /// Aligned write buffers, reused (one per concurrent writer).
    bounce: Mutex<Vec<Vec<u8>>>,
}

impl std::fmt::Debug for RocksBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksBackend")
            .field("path", &self.db.path())
            .field("mode", &self.mode)
            .finish()
    }
}

fn rocks(e: rocksdb::Error) -> BackendError {
    BackendError::Rocks(e.into_string())
}

fn io(path: &Path, source: std::io::Error) -> BackendError {
    BackendError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl RocksBackend {
    /// Open (or create) a store in `dir`.
    pub fn open(dir: &Path, options: &RocksOptions) -> Result<Self, BackendError> {
        fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let shard_dir = dir.join("shards");
        fs::create_dir_all(&shard_dir).map_err(|e| io(&shard_dir, e))?;

        let cache = Cache::new_lru_cache(options.block_cache_bytes);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_block_based_table_factory(&table);
        db_opts.set_write_buffer_size(8 << 20);
        db_opts.set_max_write_buffer_number(2);
        db_opts.set_keep_log_file_num(4);
        db_opts.set_max_total_wal_size(64 << 20);

        let mut blob_opts = Options::default();
        blob_opts.set_block_based_table_factory(&table);
        blob_opts.set_enable_blob_files(true);
        blob_opts.set_min_blob_size(0);
        blob_opts.set_blob_file_size(256 << 20);
        blob_opts.set_enable_blob_gc(true);
        blob_opts.set_write_buffer_size(options.blob_write_buffer_bytes);
        blob_opts.set_max_write_buffer_number(2);

        let cfs = vec![
            ColumnFamilyDescriptor::new(rocksdb::DEFAULT_COLUMN_FAMILY_NAME, db_opts.clone()),
            ColumnFamilyDescriptor::new(BLOB_CF, blob_opts),
        ];
        let db = DB::open_cf_descriptors(&db_opts, dir.join("index"), cfs).map_err(rocks)?;
        let backend = Self {
            db,
            mode: options.value_mode,
            shard_dir,
            unsynced_dirs: Mutex::new(BTreeSet::new()),
            tmp_counter: AtomicU64::new(0),
            direct_io: AtomicBool::new(true),
            bounce: Mutex::new(Vec::new()),
        };
        Ok(backend)
    }

    fn blob_cf(&self) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(BLOB_CF)
            .expect("blobs column family is created at open")
    }

    fn blob_path(&self, key: &[u8]) -> PathBuf {
        let fan = key.last().copied().unwrap_or(0);
        self.shard_dir.join(format!("{fan:02x}")).join(hex(key))
    }

    /// Write `data` to a new file at `path` and make it durable. Large writes bypass the page
    /// cache (`O_DIRECT`): on the VM measured for ARCHITECTURE.md, buffered writes were
    /// dominated by faulting in fresh page-cache pages. Filesystems that refuse `O_DIRECT`
    /// get buffered writes.
    fn write_file(&self, path: &Path, data: &[u8]) -> std::io::Result<()> {
        if data.len() >= DIRECT_MIN && self.direct_io.load(Ordering::Relaxed) {
            match OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .custom_flags(libc::O_DIRECT)
                .open(path)
            {
                Ok(f) => return self.write_direct(f, data),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    tracing::info!(dir = %self.shard_dir.display(), "O_DIRECT unsupported here; using buffered writes");
                    self.direct_io.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        let mut f = File::create(path)?;
        f.write_all(data)?;
        f.sync_data()
    }

    /// Write through an aligned, reused bounce buffer of `DIRECT_CHUNK` bytes (the last piece
    /// zero-padded to the alignment), cut the file back to its length, and sync it. Small
    /// pieces keep memory low while several shards are written at once.
    fn write_direct(&self, mut f: File, data: &[u8]) -> std::io::Result<()> {
        let pool = || self.bounce.lock().expect("bounce buffer pool lock");
        let mut bounce = pool().pop().unwrap_or_default();
        bounce.resize(DIRECT_CHUNK + DIRECT_ALIGN, 0);
        let at = bounce.as_ptr().align_offset(DIRECT_ALIGN);
        let buf = &mut bounce[at..at + DIRECT_CHUNK];
        let written = data
            .chunks(DIRECT_CHUNK)
            .try_for_each(|piece| {
                let aligned = piece.len().next_multiple_of(DIRECT_ALIGN);
                buf[..piece.len()].copy_from_slice(piece);
                buf[piece.len()..aligned].fill(0);
                f.write_all(&buf[..aligned])
            })
            .and_then(|()| f.set_len(data.len() as u64))
            .and_then(|()| f.sync_data());
        pool().push(bounce);
        written
    }

    /// Path of a blob's file in [`ValueMode::Files`] (for tests and tools that damage data).
    pub fn blob_file(&self, key: &[u8]) -> Option<PathBuf> {
        (self.mode == ValueMode::Files).then(|| self.blob_path(key))
    }
}

impl Backend for RocksBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        self.db.get(key).map_err(rocks)
    }

    fn write(&self, batch: Vec<BatchOp>, durable: bool) -> Result<(), BackendError> {
        let mut wb = WriteBatch::default();
        for op in batch {
            match op {
                BatchOp::Put(k, v) => wb.put(k, v),
                BatchOp::Delete(k) => wb.delete(k),
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(durable);
        self.db.write_opt(wb, &wo).map_err(rocks)
    }

    fn scan_from(
        &self,
        prefix: &[u8],
        from: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), BackendError> {
        let from = if from < prefix { prefix } else { from };
        for item in self
            .db
            .iterator(IteratorMode::From(from, Direction::Forward))
        {
            let (k, v) = item.map_err(rocks)?;
            if !k.starts_with(prefix) || !visit(&k, &v) {
                break;
            }
        }
        Ok(())
    }

    fn put_blob(&self, key: &[u8], data: &[u8]) -> Result<(), BackendError> {
        match self.mode {
            ValueMode::BlobDb => {
                // No WAL: durability comes from the flush in `sync_blobs`, which a commit
                // performs before any manifest may reference these bytes.
                let mut wo = WriteOptions::default();
                wo.disable_wal(true);
                self.db
                    .put_cf_opt(self.blob_cf(), key, data, &wo)
                    .map_err(rocks)
            }
            ValueMode::Files => {
                let path = self.blob_path(key);
                let dir = path.parent().expect("blob path has a fan-out directory");
                fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
                // Write a private temporary file and rename it over the final name: a shard
                // that is already committed is never seen half-rewritten (a repair, or two
                // uploads of the same bytes). Leftover temporary names are not hex and are
                // removed by `list_blobs` at the next open.
                let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
                let tmp = dir.join(format!("{}.{n}.tmp", hex(key)));
                // Synced here, on the upload's writer thread, while the next stripe is being
                // coded: a commit then only has directory entries left to sync.
                if let Err(e) = self.write_file(&tmp, data) {
                    let _ = fs::remove_file(&tmp);
                    return Err(io(&tmp, e));
                }
                fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
                self.unsynced_dirs
                    .lock()
                    .expect("unsynced list lock")
                    .insert(dir.to_path_buf());
                Ok(())
            }
        }
    }

    fn read_blob(
        &self,
        key: &[u8],
        offset: u64,
        len: u64,
    ) -> Result<Option<Vec<u8>>, BackendError> {
        match self.mode {
            ValueMode::BlobDb => {
                let v = self.db.get_pinned_cf(self.blob_cf(), key).map_err(rocks)?;
                Ok(v.map(|v| clamp_range(&v, offset, len)))
            }
            ValueMode::Files => {
                let path = self.blob_path(key);
                let mut f = match File::open(&path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(io(&path, e)),
                };
                f.seek(SeekFrom::Start(offset)).map_err(|e| io(&path, e))?;
                let cap = usize::try_from(len).unwrap_or(usize::MAX).min(1 << 30);
                let mut buf = Vec::with_capacity(cap);
                f.take(len)
                    .read_to_end(&mut buf)
                    .map_err(|e| io(&path, e))?;
                Ok(Some(buf))
            }
        }
    }

    fn prefetch_blob(&self, key: &[u8], offset: u64, len: u64) {
        if self.mode == ValueMode::Files
            && let Ok(f) = File::open(self.blob_path(key))
        {
            let _ = rustix::fs::fadvise(
                &f,
                offset,
                std::num::NonZeroU64::new(len),
                rustix::fs::Advice::WillNeed,
            );
        }
    }

    fn has_blob(&self, key: &[u8]) -> Result<bool, BackendError> {
        match self.mode {
            ValueMode::BlobDb => Ok(self
                .db
                .get_pinned_cf(self.blob_cf(), key)
                .map_err(rocks)?
                .is_some()),
            ValueMode::Files => {
                let path = self.blob_path(key);
                match fs::metadata(&path) {
                    Ok(_) => Ok(true),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                    Err(e) => Err(io(&path, e)),
                }
            }
        }
    }

    fn delete_blob(&self, key: &[u8]) -> Result<(), BackendError> {
        match self.mode {
            ValueMode::BlobDb => self.db.delete_cf(self.blob_cf(), key).map_err(rocks),
            ValueMode::Files => {
                let path = self.blob_path(key);
                match fs::remove_file(&path) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(io(&path, e)),
                }
            }
        }
    }

    fn sync_blobs(&self) -> Result<(), BackendError> {
        match self.mode {
            ValueMode::BlobDb => self.db.flush_cf(self.blob_cf()).map_err(rocks),
            ValueMode::Files => {
                // Held for the whole sync: a concurrent commit must not find the set empty
                // while another caller is still syncing the directories it took.
                let mut dirs = self.unsynced_dirs.lock().expect("unsynced list lock");
                if dirs.is_empty() {
                    return Ok(());
                }
                for dir in dirs.iter() {
                    match File::open(dir) {
                        Ok(d) => d.sync_all().map_err(|e| io(dir, e))?,
                        // Removed since (its shards were unpinned): nothing to make durable.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io(dir, e)),
                    }
                }
                File::open(&self.shard_dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| io(&self.shard_dir, e))?;
                dirs.clear();
                Ok(())
            }
        }
    }

    fn list_blobs(&self, visit: &mut dyn FnMut(&[u8])) -> Result<(), BackendError> {
        match self.mode {
            ValueMode::BlobDb => {
                for item in self.db.iterator_cf(self.blob_cf(), IteratorMode::Start) {
                    let (k, _) = item.map_err(rocks)?;
                    visit(&k);
                }
                Ok(())
            }
            ValueMode::Files => {
                let fans = fs::read_dir(&self.shard_dir).map_err(|e| io(&self.shard_dir, e))?;
                for fan in fans {
                    let fan = fan.map_err(|e| io(&self.shard_dir, e))?.path();
                    if !fan.is_dir() {
                        continue;
                    }
                    for entry in fs::read_dir(&fan).map_err(|e| io(&fan, e))? {
                        let entry = entry.map_err(|e| io(&fan, e))?;
                        let name = entry.file_name();
                        match name.to_str().and_then(unhex) {
                            Some(key) => visit(&key),
                            // Not ours (editor swap file, partial copy): remove it.
                            None => {
                                let p = entry.path();
                                fs::remove_file(&p).map_err(|e| io(&p, e))?;
                            }
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let k = vec![0u8, 1, 0xab, 0xff];
        assert_eq!(unhex(&hex(&k)), Some(k));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn large_unaligned_blobs_round_trip_and_replace_atomically() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = RocksBackend::open(dir.path(), &RocksOptions::default()).expect("open");
        for len in [
            DIRECT_MIN,
            DIRECT_MIN + 1,
            3 * DIRECT_ALIGN * 100 + 17,
            DIRECT_CHUNK,
            2 * DIRECT_CHUNK + DIRECT_ALIGN + 1,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            b.put_blob(b"big", &data).expect("put");
            // Written twice: the second replaces the first whole.
            b.put_blob(b"big", &data).expect("put again");
            b.sync_blobs().expect("sync");
            assert_eq!(
                b.read_blob(b"big", 0, len as u64 + 10).expect("read"),
                Some(data.clone())
            );
            let f = b.blob_file(b"big").expect("files mode");
            assert_eq!(std::fs::metadata(f).expect("stat").len(), len as u64);
        }
        let mut keys = Vec::new();
        b.list_blobs(&mut |k| keys.push(k.to_vec())).expect("list");
        assert_eq!(keys, vec![b"big".to_vec()], "no temporary files left");
    }

    #[test]
    fn both_modes_store_and_list_blobs() {
        for mode in [ValueMode::Files, ValueMode::BlobDb] {
            let dir = tempfile::tempdir().expect("tempdir");
            let opts = RocksOptions {
                value_mode: mode,
                ..RocksOptions::default()
            };
            let b = RocksBackend::open(dir.path(), &opts).expect("open");
            b.put_blob(b"k1", b"hello world").expect("put");
            b.sync_blobs().expect("sync");
            assert_eq!(
                b.read_blob(b"k1", 6, 100).expect("read"),
                Some(b"world".to_vec())
            );
            assert_eq!(b.read_blob(b"k2", 0, 1).expect("read"), None);
            let mut keys = Vec::new();
            b.list_blobs(&mut |k| keys.push(k.to_vec())).expect("list");
            assert_eq!(keys, vec![b"k1".to_vec()]);
            b.delete_blob(b"k1").expect("delete");
            assert_eq!(b.read_blob(b"k1", 0, 1).expect("read"), None);
        }
    }
}
