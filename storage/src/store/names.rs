//! The node-local name table: `org/model` names, each with the history of roots it pointed
//! to (the newest is what the name means now). Written only through the node's API with its
//! token; readers resolve names and accept any root of a name's history back.

use cairn_erasure::Cid;
use thiserror::Error;

use super::{Store, lock};
use crate::backend::{Backend, BatchOp};
use crate::error::BackendError;

/// `n/<name>\0<seq: u64 BE>` -> [`encode_entry`]: one revision of a name, oldest first.
const NAME: &[u8] = b"n/";
/// Separates a name from its sequence number in keys (names never contain it).
const NAME_END: u8 = 0;
/// Version tag of name entries.
const NAME_VERSION: u8 = 1;
/// Longest name, in bytes (what the HuggingFace Hub allows for a repository id).
pub const MAX_NAME_LEN: usize = 96;
/// Revisions kept per name; the oldest is dropped beyond this.
pub const MAX_NAME_HISTORY: usize = 1000;

/// One revision of a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameEntry {
    pub root: Cid,
    /// Unix seconds when the name was set to `root`.
    pub set: u64,
}

/// Setting or reading a name failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum NameError {
    #[error("invalid name {name:?}: {reason}")]
    Invalid { name: String, reason: &'static str },
    #[error("name table entry {key} is unreadable: {reason}")]
    Corrupt { key: String, reason: &'static str },
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Check a name: one or two segments (`model` or `org/model`) of ASCII letters, digits, `-`,
/// `_` and `.`, not starting or ending with `-` or `.`, without `--` or `..`, at most
/// [`MAX_NAME_LEN`] bytes in all: the HuggingFace Hub's rules for repository ids.
pub fn check_name(name: &str) -> Result<(), NameError> {
    let bad = |reason| {
        Err(NameError::Invalid {
            name: name.chars().take(MAX_NAME_LEN + 8).collect(),
            reason,
        })
    };
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return bad("a name has 1 to 96 bytes");
    }
    let segments: Vec<&str> = name.split('/').collect();
    if segments.len() > 2 {
        return bad("a name is `model` or `org/model`");
    }
    for s in segments {
        if s.is_empty() {
            return bad("empty segment");
        }
        if !s
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        {
            return bad("only ASCII letters, digits, '-', '_' and '.' are allowed");
        }
        if s.starts_with(['-', '.']) || s.ends_with(['-', '.']) {
            return bad("a segment may not start or end with '-' or '.'");
        }
        if s.contains("--") || s.contains("..") {
            return bad("'--' and '..' are not allowed");
        }
    }
    Ok(())
}

fn prefix(name: &str) -> Vec<u8> {
    let mut k = NAME.to_vec();
    k.extend_from_slice(name.as_bytes());
    k.push(NAME_END);
    k
}

fn encode_entry(e: &NameEntry) -> Vec<u8> {
    let mut v = vec![NAME_VERSION];
    v.extend_from_slice(&e.set.to_le_bytes());
    v.extend_from_slice(&e.root.to_bytes());
    v
}

fn decode_entry(v: &[u8]) -> Result<NameEntry, &'static str> {
    let (&version, rest) = v.split_first().ok_or("empty entry")?;
    if version != NAME_VERSION {
        return Err("unknown entry version");
    }
    let (set, root) = rest.split_first_chunk::<8>().ok_or("truncated entry")?;
    let root = Cid::try_from(root).map_err(|_| "unparsable root cid")?;
    Ok(NameEntry {
        root,
        set: u64::from_le_bytes(*set),
    })
}

/// Key of a name entry: the name and its sequence number.
fn split_key(k: &[u8]) -> Result<(&str, u64), &'static str> {
    let rest = &k[NAME.len()..];
    let at = rest
        .iter()
        .position(|&c| c == NAME_END)
        .ok_or("key without end mark")?;
    let name = std::str::from_utf8(&rest[..at]).map_err(|_| "name is not utf-8")?;
    let seq: [u8; 8] = rest[at + 1..]
        .try_into()
        .map_err(|_| "bad sequence number")?;
    Ok((name, u64::from_be_bytes(seq)))
}

impl<B: Backend> Store<B> {
    /// Point `name` at `root` (a new revision, unless it points there already). Returns
    /// whether the name changed.
    pub fn set_name(&self, name: &str, root: &Cid, now_unix: u64) -> Result<bool, NameError> {
        check_name(name)?;
        let _guard = lock(&self.inner.commit);
        let history = self.scan_name(name)?;
        if history.last().is_some_and(|(_, e)| e.root == *root) {
            return Ok(false);
        }
        let next = history.last().map_or(0, |(seq, _)| seq + 1);
        let mut key = prefix(name);
        key.extend_from_slice(&next.to_be_bytes());
        let entry = NameEntry {
            root: *root,
            set: now_unix,
        };
        let mut batch = vec![BatchOp::Put(key, encode_entry(&entry))];
        let excess = (history.len() + 1).saturating_sub(MAX_NAME_HISTORY);
        for (seq, _) in &history[..excess] {
            let mut old = prefix(name);
            old.extend_from_slice(&seq.to_be_bytes());
            batch.push(BatchOp::Delete(old));
        }
        self.inner.backend.write(batch, true)?;
        Ok(true)
    }

    /// Every revision of `name`, oldest first (empty when the name is not set).
    pub fn name_history(&self, name: &str) -> Result<Vec<NameEntry>, NameError> {
        check_name(name)?;
        Ok(self.scan_name(name)?.into_iter().map(|(_, e)| e).collect())
    }

    /// What `name` points to now.
    pub fn resolve_name(&self, name: &str) -> Result<Option<NameEntry>, NameError> {
        Ok(self.name_history(name)?.pop())
    }

    /// Every name with its newest revision, in name order.
    pub fn names(&self) -> Result<Vec<(String, NameEntry)>, NameError> {
        let mut out: Vec<(String, NameEntry)> = Vec::new();
        self.scan_entries(NAME, &mut |name, _, e| match out.last_mut() {
            Some(last) if last.0 == name => last.1 = e,
            _ => out.push((name.to_owned(), e)),
        })?;
        Ok(out)
    }

    fn scan_name(&self, name: &str) -> Result<Vec<(u64, NameEntry)>, NameError> {
        let mut out = Vec::new();
        self.scan_entries(&prefix(name), &mut |_, seq, e| out.push((seq, e)))?;
        Ok(out)
    }

    /// Visit every name entry under `prefix` in key order: (name, sequence, entry). The
    /// first unreadable entry stops the scan as an error naming its key.
    fn scan_entries(
        &self,
        prefix: &[u8],
        visit: &mut dyn FnMut(&str, u64, NameEntry),
    ) -> Result<(), NameError> {
        let mut bad = None;
        self.inner
            .backend
            .scan(prefix, &mut |k, v| match split_key(k)
                .and_then(|(name, seq)| Ok((name, seq, decode_entry(v)?)))
            {
                Ok((name, seq, e)) => {
                    visit(name, seq, e);
                    true
                }
                Err(reason) => {
                    bad = Some((String::from_utf8_lossy(k).into_owned(), reason));
                    false
                }
            })?;
        match bad {
            Some((key, reason)) => Err(NameError::Corrupt { key, reason }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemBackend;

    fn cid(n: u8) -> Cid {
        cairn_erasure::manifest_cid(&[n; 8])
    }

    fn names_round_trip<B: Backend>(store: Store<B>) {
        assert_eq!(store.resolve_name("org/model").expect("read"), None);
        assert!(store.set_name("org/model", &cid(1), 10).expect("set"));
        assert!(!store.set_name("org/model", &cid(1), 11).expect("same root"));
        assert!(store.set_name("org/model", &cid(2), 12).expect("set"));
        assert!(store.set_name("org/model-b", &cid(3), 13).expect("set"));
        assert!(store.set_name("org", &cid(4), 14).expect("set"));
        let h = store.name_history("org/model").expect("history");
        assert_eq!(
            h,
            vec![
                NameEntry {
                    root: cid(1),
                    set: 10
                },
                NameEntry {
                    root: cid(2),
                    set: 12
                }
            ]
        );
        // "org" is a prefix of "org/model" in bytes; neither sees the other's revisions.
        assert_eq!(store.name_history("org").expect("history").len(), 1);
        let all = store.names().expect("names");
        let listed: Vec<(&str, Cid)> = all.iter().map(|(n, e)| (n.as_str(), e.root)).collect();
        assert_eq!(
            listed,
            vec![
                ("org", cid(4)),
                ("org/model", cid(2)),
                ("org/model-b", cid(3))
            ]
        );
        // Pointing back at an old root is a new revision.
        assert!(store.set_name("org/model", &cid(1), 15).expect("set"));
        assert_eq!(
            store
                .resolve_name("org/model")
                .expect("read")
                .map(|e| e.root),
            Some(cid(1))
        );
    }

    #[test]
    fn names_over_memory() {
        names_round_trip(Store::open(MemBackend::new(), 1 << 20).expect("open"));
    }

    #[test]
    fn names_over_rocksdb_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let open = || crate::store::rocks_store(dir.path());
        names_round_trip(open());
        let store = open();
        assert_eq!(store.name_history("org/model").expect("history").len(), 3);
    }

    #[test]
    fn history_is_bounded() {
        let store = Store::open(MemBackend::new(), 1 << 20).expect("open");
        for i in 0..MAX_NAME_HISTORY + 5 {
            let root = cairn_erasure::manifest_cid(&(i as u64).to_le_bytes());
            store.set_name("a/b", &root, i as u64).expect("set");
        }
        let h = store.name_history("a/b").expect("history");
        assert_eq!(h.len(), MAX_NAME_HISTORY);
        assert_eq!(h[0].set, 5, "the oldest revisions were dropped");
    }

    #[test]
    fn names_follow_the_hub_rules() {
        for good in ["gpt2", "org/model", "Org_1/model-v2.5", "a/b"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        let long = "a".repeat(MAX_NAME_LEN + 1);
        for bad in [
            "", "/", "a/", "/a", "a/b/c", "a b", "a/-b", "a/b.", "a--b", "a/..", "..", "a\0b",
            "é/b", &long,
        ] {
            assert!(
                matches!(check_name(bad), Err(NameError::Invalid { .. })),
                "{bad:?}"
            );
        }
        assert!(
            Store::open(MemBackend::new(), 1 << 20)
                .expect("open")
                .set_name("a/../b", &cid(1), 0)
                .is_err()
        );
    }
}
