//! The HuggingFace Hub's URL shapes and ids, parsed and made without I/O.
//!
//! - `api/models/{repo}` and `api/models/{repo}/revision/{rev}`: repository info;
//! - `api/models/{repo}/tree/{rev}[/{path}]`: a folder listing;
//! - `{repo}/resolve/{rev}/{path}`: a file.
//!
//! A repo id has one or two segments, so a path can often be read two ways; both are
//! returned and the handler takes the one that names a repository here.

use cairn_erasure::{Cid, FileEntry, Manifest};
use serde::Serialize;

/// What a request asks of a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// Repository info at a revision (`None`: the default branch).
    Info { rev: Option<String> },
    /// Entries under `path` ("" = the top) at a revision.
    Tree { rev: String, path: String },
    /// One file at a revision.
    Resolve { rev: String, path: String },
}

/// One reading of a request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    pub repo: String,
    pub call: Call,
}

/// Why a path cannot be a Hub request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// Not percent-encoded UTF-8.
    Encoding,
    /// A `.` or `..` segment in a file path.
    DotSegment,
}

/// Percent-decode one path segment.
fn decode(segment: &str) -> Result<String, PathError> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(PathError::Encoding)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return Err(PathError::Encoding);
            }
            let hex = std::str::from_utf8(hex).map_err(|_| PathError::Encoding)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| PathError::Encoding)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| PathError::Encoding)
}

/// The decoded segments of a raw path (split before decoding, so an encoded `/` stays in
/// its segment, as a revision like `refs%2Fpr%2F1` needs).
fn segments(raw: &str) -> Result<Vec<String>, PathError> {
    raw.split('/')
        .filter(|s| !s.is_empty())
        .map(decode)
        .collect()
}

/// A file path from segments; `.` and `..` are refused.
fn file_path(segs: &[String]) -> Result<String, PathError> {
    if segs
        .iter()
        .any(|s| s.split('/').any(|p| p == "." || p == ".."))
    {
        return Err(PathError::DotSegment);
    }
    Ok(segs.join("/"))
}

/// Readings of the part of an API path after `api/models/`.
pub fn parse_api(raw: &str) -> Result<Vec<Reading>, PathError> {
    let segs = segments(raw)?;
    let mut out = Vec::new();
    for n in [2, 1] {
        if segs.len() < n {
            continue;
        }
        let (repo, rest) = segs.split_at(n);
        let repo = repo.join("/");
        let call = match rest {
            [] => Call::Info { rev: None },
            [kw, rev] if kw == "revision" => Call::Info {
                rev: Some(rev.clone()),
            },
            [kw, rev, path @ ..] if kw == "tree" => Call::Tree {
                rev: rev.clone(),
                path: file_path(path)?,
            },
            _ => continue,
        };
        out.push(Reading { repo, call });
    }
    Ok(out)
}

/// Readings of a file path `{repo}/resolve/{rev}/{path}`.
pub fn parse_resolve(raw: &str) -> Result<Vec<Reading>, PathError> {
    let segs = segments(raw)?;
    let mut out = Vec::new();
    for n in [2, 1] {
        if segs.len() < n + 3 || segs[n] != "resolve" {
            continue;
        }
        out.push(Reading {
            repo: segs[..n].join("/"),
            call: Call::Resolve {
                rev: segs[n + 1].clone(),
                path: file_path(&segs[n + 2..])?,
            },
        });
    }
    Ok(out)
}

/// The 40-hex commit id of a root: the first 20 bytes of its BLAKE3 digest. Stable (the
/// client caches by it forever) and accepted back as a revision.
pub fn commit_id(root: &Cid) -> String {
    let digest = root.hash().digest();
    digest[..20.min(digest.len())]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `rev` has the shape of a commit id.
pub fn is_commit_id(rev: &str) -> bool {
    rev.len() == 40 && rev.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// A file's id in the Hub's answers (tree `oid`, `ETag`): 40 hex of its BLAKE3. Never 64
/// hex, which the client would take for a SHA-256 and check the file against.
pub fn file_oid(f: &FileEntry) -> String {
    f.hash().to_hex()[..40].to_owned()
}

/// A folder's id: 40 hex derived from the commit and the folder's path.
fn dir_oid(commit: &str, path: &str) -> String {
    let mut h = blake3::Hasher::new();
    h.update(commit.as_bytes());
    h.update(b"/");
    h.update(path.as_bytes());
    h.finalize().to_hex()[..40].to_owned()
}

/// Unix seconds as the Hub writes times: `YYYY-MM-DDTHH:MM:SS.000Z`.
pub fn hub_time(unix: u64) -> String {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.000Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// One entry of a tree listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TreeEntry {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub oid: String,
    pub size: u64,
    pub path: String,
}

/// The entries under `dir` ("" = the top) of a checkpoint: its direct children, or
/// everything below with `recursive`. `None` when `dir` is neither a folder nor a file (a
/// file lists itself).
pub fn tree(m: &Manifest, commit: &str, dir: &str, recursive: bool) -> Option<Vec<TreeEntry>> {
    let dir = dir.trim_matches('/');
    if let Some(f) = m.file(dir) {
        return Some(vec![file_entry(f)]);
    }
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let mut found = false;
    let mut dirs = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for f in &m.files {
        let Some(rel) = f.path.strip_prefix(&prefix) else {
            continue;
        };
        found = true;
        let parts: Vec<&str> = rel.split('/').collect();
        let folders = if recursive {
            parts.len() - 1
        } else {
            parts.len().min(2) - 1
        };
        for i in 1..=folders {
            dirs.insert(format!("{prefix}{}", parts[..i].join("/")));
        }
        if recursive || parts.len() == 1 {
            out.push(file_entry(f));
        }
    }
    if !found {
        return None;
    }
    out.extend(dirs.into_iter().map(|path| TreeEntry {
        kind: "directory",
        oid: dir_oid(commit, &path),
        size: 0,
        path,
    }));
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Some(out)
}

fn file_entry(f: &FileEntry) -> TreeEntry {
    TreeEntry {
        kind: "file",
        oid: file_oid(f),
        size: f.size,
        path: f.path.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(repo: &str, call: Call) -> Reading {
        Reading {
            repo: repo.into(),
            call,
        }
    }

    #[test]
    fn api_paths() {
        assert_eq!(
            parse_api("org/model").expect("parse"),
            vec![reading("org/model", Call::Info { rev: None })]
        );
        assert_eq!(
            parse_api("gpt2").expect("parse"),
            vec![reading("gpt2", Call::Info { rev: None })]
        );
        assert_eq!(
            parse_api("org/model/revision/refs%2Fpr%2F1").expect("parse"),
            vec![reading(
                "org/model",
                Call::Info {
                    rev: Some("refs/pr/1".into())
                }
            )]
        );
        assert_eq!(
            parse_api("org/model/tree/main/sub%2Fdir").expect("parse"),
            vec![reading(
                "org/model",
                Call::Tree {
                    rev: "main".into(),
                    path: "sub/dir".into()
                }
            )]
        );
        // One segment or two: both readings, two first.
        let both = parse_api("gpt2/tree/tree/main").expect("parse");
        assert_eq!(both.len(), 2);
        assert_eq!(both[0].repo, "gpt2/tree");
        assert_eq!(both[1].repo, "gpt2");
        assert!(
            parse_api("org/model/xet-read-token/main")
                .expect("parse")
                .is_empty()
        );
        assert_eq!(
            parse_api("a/b/tree/main/..%2Fx"),
            Err(PathError::DotSegment)
        );
        assert_eq!(parse_api("a/%zz"), Err(PathError::Encoding));
        assert_eq!(parse_api("a/%ff"), Err(PathError::Encoding));
        assert_eq!(
            parse_api("a/%+F"),
            Err(PathError::Encoding),
            "two hex digits only"
        );
    }

    #[test]
    fn resolve_paths() {
        assert_eq!(
            parse_resolve("org/model/resolve/main/tok/a%20b.json").expect("parse"),
            vec![reading(
                "org/model",
                Call::Resolve {
                    rev: "main".into(),
                    path: "tok/a b.json".into()
                }
            )]
        );
        assert_eq!(
            parse_resolve("gpt2/resolve/abc/config.json").expect("parse"),
            vec![reading(
                "gpt2",
                Call::Resolve {
                    rev: "abc".into(),
                    path: "config.json".into()
                }
            )]
        );
        assert!(
            parse_resolve("org/model/resolve/main")
                .expect("parse")
                .is_empty()
        );
        assert!(
            parse_resolve("org/model/blob/main/x")
                .expect("parse")
                .is_empty()
        );
        assert_eq!(
            parse_resolve("a/b/resolve/main/../../etc/passwd"),
            Err(PathError::DotSegment)
        );
    }

    #[test]
    fn times_are_the_hubs() {
        assert_eq!(hub_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(hub_time(951_782_400), "2000-02-29T00:00:00.000Z");
        assert_eq!(hub_time(1_796_083_199), "2026-11-30T23:59:59.000Z");
    }

    #[test]
    fn ids() {
        let root = cairn_erasure::manifest_cid(b"x");
        let id = commit_id(&root);
        assert!(is_commit_id(&id), "{id}");
        assert_ne!(id, commit_id(&cairn_erasure::manifest_cid(b"y")));
        assert!(!is_commit_id(&id.to_uppercase()));
        assert!(!is_commit_id(&id[..39]));
    }

    fn manifest(paths: &[&str]) -> Manifest {
        let layout = cairn_erasure::Layout::new(2, 1, 4096).expect("layout");
        let files = paths
            .iter()
            .map(|p| FileEntry {
                path: (*p).into(),
                size: 0,
                blake3: blake3::hash(p.as_bytes()).as_bytes().to_vec(),
                stripes: vec![],
            })
            .collect();
        Manifest::new(&layout, files).expect("manifest")
    }

    #[test]
    fn trees() {
        let m = manifest(&["a.json", "sub/b.bin", "sub/deep/c.txt", "z.txt"]);
        let paths = |t: Vec<TreeEntry>| -> Vec<(String, &'static str)> {
            t.into_iter().map(|e| (e.path, e.kind)).collect()
        };
        let top = tree(&m, "c", "", false).expect("top");
        assert_eq!(
            paths(top),
            vec![
                ("a.json".into(), "file"),
                ("sub".into(), "directory"),
                ("z.txt".into(), "file")
            ]
        );
        let all = tree(&m, "c", "", true).expect("all");
        assert_eq!(all.len(), 6, "4 files, 2 folders");
        let sub = tree(&m, "c", "sub", false).expect("sub");
        assert_eq!(
            paths(sub),
            vec![
                ("sub/b.bin".into(), "file"),
                ("sub/deep".into(), "directory")
            ]
        );
        assert!(tree(&m, "c", "nope", false).is_none());
        assert!(
            tree(&m, "c", "su", false).is_none(),
            "a prefix is not a folder"
        );
        assert_eq!(tree(&m, "c", "z.txt", false).expect("file").len(), 1);
    }
}
