//! The HTTP client the command line uses: upload a file or folder, download a checkpoint
//! verifying every file, read one file or a byte range.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use cairn_erasure::manifest::{MAX_MANIFEST_LEN, validate_path};
use cairn_erasure::{Manifest, manifest_cid, parse_cid};
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use thiserror::Error;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

pub use crate::api::PutAnswer;

mod names;
mod put;
pub use names::TensorRead;
pub use put::upload_key;

/// A client operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("cannot reach node: {0}")]
    Http(#[from] reqwest::Error),
    #[error("node answered {status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(
        "{path}: downloaded bytes do not match the checkpoint (expected blake3 {expected}, got {actual})"
    )]
    Verify {
        path: String,
        expected: String,
        actual: String,
    },
    #[error(
        "{path}: the node ended the transfer early after {got} of {want} bytes (see the node log)"
    )]
    Truncated { path: String, got: u64, want: u64 },
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ClientError + '_ {
    move |source| ClientError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Percent-encode each segment of a checkpoint path for use in a URL (keeps `/`).
pub fn url_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Options of an upload.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    pub name: Option<String>,
    pub k: Option<u8>,
    pub m: Option<u8>,
    pub stripe_size: Option<u64>,
    /// Root CID of the checkpoint this one derives from.
    pub parent: Option<String>,
    /// Whose record of `parent` (an account; default: the node's own).
    pub parent_publisher: Option<String>,
    /// Point this name (`org/model`) of the node's name table at the new root.
    pub tag: Option<String>,
}

/// What a download did.
#[derive(Debug, Clone, Default)]
pub struct GetSummary {
    pub files: usize,
    /// Bytes transferred now (excludes bytes resumed from an earlier partial download).
    pub transferred: u64,
    /// Total bytes of the checkpoint.
    pub total: u64,
    pub skipped_files: usize,
    /// Bytes the node pulled from each storage node during this get (peer id, bytes), from
    /// the node's counters: other reads running at the same time are included.
    pub sources: Vec<(String, u64)>,
}

/// Shard bytes a node has pulled from each peer so far.
async fn node_sources(c: &Client) -> std::collections::BTreeMap<String, u64> {
    c.json("/v1/status")
        .await
        .ok()
        .and_then(|v| v["sources"].as_object().cloned())
        .into_iter()
        .flatten()
        .map(|(k, v)| (k, v.as_u64().unwrap_or(0)))
        .collect()
}

/// Show on `pb`, once a second, how fast the node pulls from each source.
fn watch_sources(c: &Client, pb: &ProgressBar) -> tokio::task::JoinHandle<()> {
    let (c, pb) = (c.clone(), pb.clone());
    tokio::spawn(async move {
        let mut last = node_sources(&c).await;
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            let now = node_sources(&c).await;
            let mut rates: Vec<f64> = now
                .iter()
                .map(|(k, v)| {
                    v.saturating_sub(last.get(k).copied().unwrap_or(0)) as f64 / 1048576.0
                })
                .filter(|r| *r > 0.0)
                .collect();
            last = now;
            if rates.is_empty() {
                continue;
            }
            rates.sort_by(f64::total_cmp);
            pb.set_message(format!(
                "get from {} nodes, {:.0}-{:.0} MiB/s each",
                rates.len(),
                rates[0],
                rates[rates.len() - 1]
            ));
        }
    })
}

fn bar(total: u64, show: bool, what: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .expect("static template"),
    );
    pb.set_message(what.to_owned());
    pb
}

/// Talks to one node's HTTP API.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    /// Show progress bars on stderr.
    pub progress: bool,
    /// The node's API token, sent with writes (put, delete, manifest import).
    pub token: Option<String>,
}

/// Environment variable naming a devnet directory whose nodes' tokens the client may use.
pub const DEVNET_DIR_ENV: &str = "CAIRN_DEVNET_DIR";

/// The API token for the node at `base`, found without the user typing it: CAIRN_API_TOKEN;
/// else, if `base` is a node of the local devnet (CAIRN_DEVNET_DIR or `.cairn/devnet`), that
/// node's `api.token`; else the default data directory's (`.cairn/node/api.token`).
pub fn discover_token(base: &str) -> Option<String> {
    if let Ok(t) = std::env::var(crate::config::API_TOKEN_ENV)
        && !t.trim().is_empty()
    {
        return Some(t.trim().to_owned());
    }
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
    };
    let base = base.trim_end_matches('/');
    let devnet = std::env::var(DEVNET_DIR_ENV).unwrap_or_else(|_| ".cairn/devnet".to_owned());
    if let Ok(text) = std::fs::read_to_string(Path::new(&devnet).join("devnet.json"))
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
        && let Some(nodes) = v["nodes"].as_array()
    {
        for n in nodes {
            if n["http"].as_str().map(|h| h.trim_end_matches('/')) == Some(base)
                && let Some(dir) = n["dir"].as_str()
                && let Some(t) = read(
                    &Path::new(dir)
                        .join("data")
                        .join(crate::api::auth::TOKEN_FILE),
                )
            {
                return Some(t);
            }
        }
    }
    read(&Path::new(crate::config::DEFAULT_DATA_DIR).join(crate::api::auth::TOKEN_FILE))
}

pub(crate) async fn check(resp: reqwest::Response) -> Result<reqwest::Response, ClientError> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    Err(ClientError::Api {
        status,
        code: v["error"]["code"].as_str().unwrap_or("unknown").to_owned(),
        message: v["error"]["message"]
            .as_str()
            .map_or_else(|| text.chars().take(500).collect(), str::to_owned),
    })
}

/// Files of a folder, recursively, sorted, as (absolute path, relative `/` path, size).
/// Symlinks to files are followed (Hugging Face snapshots are made of them).
pub fn walk(dir: &Path) -> Result<Vec<(PathBuf, String, u64)>, ClientError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(io_err(&d))? {
            let entry = entry.map_err(io_err(&d))?;
            let p = entry.path();
            let meta = std::fs::metadata(&p).map_err(io_err(&p))?;
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file() {
                let rel = p
                    .strip_prefix(dir)
                    .expect("walked path is under its root")
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                validate_path(&rel).map_err(|e| ClientError::Invalid(e.to_string()))?;
                out.push((p, rel, meta.len()));
            }
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

impl Client {
    pub fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .expect("a client without TLS always builds");
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            progress: false,
            token: discover_token(base),
        }
    }

    /// A write request with the node's token.
    pub(crate) fn write(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Fetch and verify a manifest: its bytes must hash to the root CID.
    pub async fn manifest(&self, root: &str) -> Result<Manifest, ClientError> {
        let cid = parse_cid(root).map_err(|e| ClientError::Invalid(e.to_string()))?;
        let resp = self
            .http
            .get(self.url(&format!("/v1/checkpoints/{cid}")))
            .header("accept", "application/vnd.ipld.dag-cbor")
            .send()
            .await?;
        let mut stream = check(resp).await?.bytes_stream();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk?);
            if bytes.len() > MAX_MANIFEST_LEN {
                return Err(ClientError::Invalid(format!(
                    "the node sent a manifest larger than {MAX_MANIFEST_LEN} bytes"
                )));
            }
        }
        if manifest_cid(&bytes) != cid {
            return Err(ClientError::Invalid(format!(
                "the node sent a manifest that does not hash to {cid}"
            )));
        }
        Manifest::decode(&bytes).map_err(|e| ClientError::Invalid(e.to_string()))
    }

    /// Download a whole checkpoint into `out`, resuming partial files and verifying every
    /// file's BLAKE3 against the (verified) manifest.
    pub async fn get(&self, root: &str, out: &Path) -> Result<GetSummary, ClientError> {
        let manifest = self.manifest(root).await?;
        let total = manifest.total_size();
        let pb = bar(total, self.progress, "get");
        let mut summary = GetSummary {
            total,
            files: manifest.files.len(),
            ..GetSummary::default()
        };
        let before = node_sources(self).await;
        let watcher = self.progress.then(|| watch_sources(self, &pb));
        for f in &manifest.files {
            let dest = out.join(&f.path);
            if let Some(parent) = dest.parent() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(io_err(parent))?;
            }
            if file_matches(&dest, f.size, &f.hash()).await? {
                pb.inc(f.size);
                summary.skipped_files += 1;
                continue;
            }
            let part = PathBuf::from(format!("{}.cairn-part", dest.display()));
            let mut attempt = 0;
            loop {
                attempt += 1;
                let got = self.fetch_file(root, &f.path, f.size, &part, &pb).await?;
                summary.transferred += got.0;
                if got.1 == f.hash() {
                    break;
                }
                let _ = tokio::fs::remove_file(&part).await;
                if attempt >= 2 {
                    return Err(ClientError::Verify {
                        path: f.path.clone(),
                        expected: f.hash().to_hex().to_string(),
                        actual: got.1.to_hex().to_string(),
                    });
                }
            }
            tokio::fs::rename(&part, &dest)
                .await
                .map_err(io_err(&dest))?;
        }
        if let Some(w) = watcher {
            w.abort();
        }
        pb.finish_and_clear();
        summary.sources = node_sources(self)
            .await
            .into_iter()
            .map(|(k, v)| (v.saturating_sub(before.get(&k).copied().unwrap_or(0)), k))
            .filter(|(n, _)| *n > 0)
            .map(|(n, k)| (k, n))
            .collect();
        Ok(summary)
    }

    /// Continue (or start) downloading one file into `part`; returns (bytes fetched now, hash
    /// of the whole part file).
    async fn fetch_file(
        &self,
        root: &str,
        path: &str,
        size: u64,
        part: &Path,
        pb: &ProgressBar,
    ) -> Result<(u64, blake3::Hash), ClientError> {
        let mut have = tokio::fs::metadata(part)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        if have > size {
            tokio::fs::remove_file(part).await.map_err(io_err(part))?;
            have = 0;
        }
        // Hash what is already there (resume), then the rest as it arrives.
        let mut hasher = blake3::Hasher::new();
        if have > 0 {
            let p = part.to_path_buf();
            hasher = tokio::task::spawn_blocking(move || -> Result<blake3::Hasher, ClientError> {
                let mut h = blake3::Hasher::new();
                h.update_reader(std::fs::File::open(&p).map_err(io_err(&p))?)
                    .map_err(io_err(&p))?;
                Ok(h)
            })
            .await
            .map_err(|e| ClientError::Invalid(e.to_string()))??;
            pb.inc(have);
        }
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(part)
            .await
            .map_err(io_err(part))?;
        let mut fetched = 0u64;
        // A body cut short is resumed from where it stopped: the node then either goes on or
        // answers, before any byte, why it cannot (e.g. a stripe beyond repair).
        while have + fetched < size {
            let resp = self
                .http
                .get(self.url(&format!("/v1/checkpoints/{root}/files/{}", url_path(path))))
                .header("range", format!("bytes={}-", have + fetched))
                .send()
                .await?;
            let mut stream = check(resp).await?.bytes_stream();
            let mut this_round = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = match chunk {
                    Ok(c) => c,
                    Err(_) => break,
                };
                hasher.update(&chunk);
                file.write_all(&chunk).await.map_err(io_err(part))?;
                this_round += chunk.len() as u64;
                pb.inc(chunk.len() as u64);
            }
            file.flush().await.map_err(io_err(part))?;
            fetched += this_round;
            if this_round == 0 && have + fetched < size {
                return Err(ClientError::Truncated {
                    path: path.to_owned(),
                    got: have + fetched,
                    want: size,
                });
            }
        }
        file.sync_all().await.map_err(io_err(part))?;
        Ok((fetched, hasher.finalize()))
    }

    /// Read one file, or bytes `[start, end]` (inclusive, like HTTP) of it, into `out`.
    /// The node verified every byte; a whole-file read is also checked against the manifest.
    pub async fn read(
        &self,
        root: &str,
        path: &str,
        range: Option<(u64, u64)>,
        out: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
    ) -> Result<u64, ClientError> {
        let manifest = self.manifest(root).await?;
        let file = manifest
            .file(path)
            .ok_or_else(|| ClientError::Invalid(format!("{root} has no file {path:?}")))?;
        let mut req = self
            .http
            .get(self.url(&format!("/v1/checkpoints/{root}/files/{}", url_path(path))));
        let want = match range {
            Some((a, b)) => {
                req = req.header("range", format!("bytes={a}-{b}"));
                b.min(file.size.saturating_sub(1))
                    .saturating_add(1)
                    .saturating_sub(a)
            }
            None => file.size,
        };
        let mut stream = check(req.send().await?).await?.bytes_stream();
        let mut hasher = blake3::Hasher::new();
        let mut got = 0u64;
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else { break };
            if range.is_none() {
                hasher.update(&chunk);
            }
            out.write_all(&chunk)
                .await
                .map_err(io_err(Path::new(path)))?;
            got += chunk.len() as u64;
        }
        out.flush().await.map_err(io_err(Path::new(path)))?;
        if got != want {
            return Err(ClientError::Truncated {
                path: path.to_owned(),
                got,
                want,
            });
        }
        if range.is_none() && hasher.finalize() != file.hash() {
            return Err(ClientError::Verify {
                path: path.to_owned(),
                expected: file.hash().to_hex().to_string(),
                actual: hasher.finalize().to_hex().to_string(),
            });
        }
        Ok(got)
    }

    /// GET a JSON endpoint.
    /// A publisher's lineage of a checkpoint from chain, newest first (default publisher:
    /// the node's account).
    pub async fn lineage(
        &self,
        cid: &str,
        publisher: Option<&str>,
    ) -> Result<Vec<crate::api::LineageEntry>, ClientError> {
        let query = publisher.map_or(String::new(), |p| format!("?publisher={p}"));
        let v = self
            .json(&format!("/v1/checkpoints/{cid}/lineage{query}"))
            .await?;
        serde_json::from_value(v).map_err(|e| ClientError::Invalid(format!("lineage answer: {e}")))
    }

    /// A name's revisions on chain, newest first.
    pub async fn chain_name(&self, name: &str) -> Result<crate::api::NameLog, ClientError> {
        let v = self.json(&format!("/v1/chain/names/{name}")).await?;
        serde_json::from_value(v).map_err(|e| ClientError::Invalid(format!("name answer: {e}")))
    }

    /// The node's account on chain (`GET /v1/wallet`).
    pub async fn wallet(&self) -> Result<crate::chain::wallet::Wallet, ClientError> {
        let v = self.json("/v1/wallet").await?;
        serde_json::from_value(v).map_err(|e| ClientError::Invalid(format!("wallet answer: {e}")))
    }

    pub async fn json(&self, path: &str) -> Result<serde_json::Value, ClientError> {
        let resp = self.http.get(self.url(path)).send().await?;
        Ok(check(resp).await?.json().await?)
    }

    /// Unpin a checkpoint.
    /// Unpin `root` on the node (`force`: even under a running deal), or, with `network`,
    /// delete it from every node (the node being its publisher).
    pub async fn rm(
        &self,
        root: &str,
        network: bool,
        force: bool,
    ) -> Result<serde_json::Value, ClientError> {
        let cid = parse_cid(root).map_err(|e| ClientError::Invalid(e.to_string()))?;
        let resp = self
            .write(self.http.delete(self.url(&format!(
                "/v1/checkpoints/{cid}?network={network}&force={force}"
            ))))
            .send()
            .await?;
        Ok(check(resp).await?.json().await?)
    }
}

async fn file_matches(path: &Path, size: u64, hash: &blake3::Hash) -> Result<bool, ClientError> {
    match tokio::fs::metadata(path).await {
        Ok(m) if m.len() == size => {}
        _ => return Ok(false),
    }
    let p = path.to_path_buf();
    let h = tokio::task::spawn_blocking(move || -> std::io::Result<blake3::Hash> {
        let mut h = blake3::Hasher::new();
        h.update_reader(std::fs::File::open(&p)?)?;
        Ok(h.finalize())
    })
    .await
    .map_err(|e| ClientError::Invalid(e.to_string()))?
    .map_err(io_err(path))?;
    Ok(h == *hash)
}

/// Throughput in MiB/s.
pub fn mib_per_sec(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64().max(1e-9)
}

#[cfg(test)]
mod tests {
    #[test]
    fn url_paths_are_escaped_per_segment() {
        assert_eq!(super::url_path("a/b c#d?.json"), "a/b%20c%23d%3F.json");
        assert_eq!(
            super::url_path("tokenizer/vocab.txt"),
            "tokenizer/vocab.txt"
        );
        assert_eq!(super::url_path("é"), "%C3%A9");
    }
}
