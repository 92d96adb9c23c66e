use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::backend::{Backend, BatchOp, clamp_range};
use crate::error::BackendError;

/// In-memory [`Backend`] for tests: same semantics, nothing on disk. Test helpers can damage
/// blobs to exercise the verification paths.
#[derive(Debug, Default)]
pub struct MemBackend {
    index: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
    blobs: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
}

impl MemBackend {
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of everything stored: what a process restarted over the same data would find.
    pub fn snapshot(&self) -> Self {
        fn copy<T: Clone>(m: &Mutex<T>) -> T {
            m.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        }
        Self {
            index: Mutex::new(copy(&self.index)),
            blobs: Mutex::new(copy(&self.blobs)),
        }
    }

    /// Flip one byte of a blob (test fault injection). Returns whether the blob existed.
    pub fn flip_blob_byte(&self, key: &[u8], at: usize) -> bool {
        let mut blobs = self.blobs.lock().expect("mem backend lock");
        match blobs.get_mut(key) {
            Some(b) if !b.is_empty() => {
                let i = at % b.len();
                b[i] ^= 0x5a;
                true
            }
            _ => false,
        }
    }

    /// Remove a blob behind the index's back (test fault injection).
    pub fn drop_blob(&self, key: &[u8]) -> bool {
        self.blobs
            .lock()
            .expect("mem backend lock")
            .remove(key)
            .is_some()
    }
}

impl Backend for MemBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(self
            .index
            .lock()
            .expect("mem backend lock")
            .get(key)
            .cloned())
    }

    fn write(&self, batch: Vec<BatchOp>, _durable: bool) -> Result<(), BackendError> {
        let mut index = self.index.lock().expect("mem backend lock");
        for op in batch {
            match op {
                BatchOp::Put(k, v) => {
                    index.insert(k, v);
                }
                BatchOp::Delete(k) => {
                    index.remove(&k);
                }
            }
        }
        Ok(())
    }

    fn scan_from(
        &self,
        prefix: &[u8],
        from: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), BackendError> {
        let from = if from < prefix { prefix } else { from };
        // Copy out first: `visit` may call back into the backend (RocksDB allows that too).
        let entries: Vec<(Vec<u8>, Vec<u8>)> = {
            let index = self.index.lock().expect("mem backend lock");
            index
                .range(from.to_vec()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        for (k, v) in &entries {
            if !visit(k, v) {
                break;
            }
        }
        Ok(())
    }

    fn put_blob(&self, key: &[u8], data: &[u8]) -> Result<(), BackendError> {
        self.blobs
            .lock()
            .expect("mem backend lock")
            .insert(key.to_vec(), data.to_vec());
        Ok(())
    }

    fn read_blob(
        &self,
        key: &[u8],
        offset: u64,
        len: u64,
    ) -> Result<Option<Vec<u8>>, BackendError> {
        let blobs = self.blobs.lock().expect("mem backend lock");
        Ok(blobs.get(key).map(|b| clamp_range(b, offset, len)))
    }

    fn has_blob(&self, key: &[u8]) -> Result<bool, BackendError> {
        Ok(self
            .blobs
            .lock()
            .expect("mem backend lock")
            .contains_key(key))
    }

    fn delete_blob(&self, key: &[u8]) -> Result<(), BackendError> {
        self.blobs.lock().expect("mem backend lock").remove(key);
        Ok(())
    }

    fn sync_blobs(&self) -> Result<(), BackendError> {
        Ok(())
    }

    fn list_blobs(&self, visit: &mut dyn FnMut(&[u8])) -> Result<(), BackendError> {
        let keys: Vec<Vec<u8>> = self
            .blobs
            .lock()
            .expect("mem backend lock")
            .keys()
            .cloned()
            .collect();
        for k in &keys {
            visit(k);
        }
        Ok(())
    }
}
