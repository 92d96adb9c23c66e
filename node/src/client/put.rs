//! `cairn put`: a file or a folder (as a tar stream) to a node, resumable. The client names
//! each upload by a key derived from what it sends (paths, sizes, modification times,
//! parameters); run again after a cut, it asks the node where the upload stopped and sends
//! only the rest.

use std::io::{Seek, SeekFrom};
use std::time::UNIX_EPOCH;

use super::*;
use crate::api::UploadStatus;

/// Tag mixed into upload keys (a new key format changes it).
const KEY_TAG: &[u8] = b"cairn put key v1";
/// Bytes of the body the producer hands over at once.
const BODY_CHUNK: usize = 1 << 20;

/// `Write` into a bounded channel of body chunks (1 MiB each), counting bytes; the first
/// `skip` bytes (sent by an earlier, interrupted run) are dropped.
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
    pb: ProgressBar,
    /// Bytes of the body produced so far (sent or skipped).
    pos: std::sync::Arc<std::sync::atomic::AtomicU64>,
    skip: u64,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        use std::sync::atomic::Ordering;
        let at = self.pos.fetch_add(data.len() as u64, Ordering::Relaxed);
        let dropped = usize::try_from(self.skip.saturating_sub(at))
            .unwrap_or(usize::MAX)
            .min(data.len());
        self.buf.extend_from_slice(&data[dropped..]);
        if self.buf.len() >= BODY_CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(BODY_CHUNK),
        ));
        self.pb.inc(chunk.len() as u64);
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "upload aborted"))
    }
}

/// A file's bytes for the tar stream: zeros, not read from disk, for the part of the body an
/// earlier run sent already (the writer drops them), then the file from there on.
struct SkippingFile {
    file: std::fs::File,
    len: u64,
    /// Bytes of the file handed out so far.
    off: u64,
    /// Where the body stands (the writer's count) and where the skipped part ends.
    pos: std::sync::Arc<std::sync::atomic::AtomicU64>,
    skip: u64,
    /// Whether the file was positioned for real reads.
    seeked: bool,
}

impl Read for SkippingFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.len - self.off;
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        if want == 0 {
            return Ok(0);
        }
        // The writer has taken every byte handed out so far: the body stands at pos.
        let at = self.pos.load(std::sync::atomic::Ordering::Relaxed);
        if at < self.skip {
            let n = usize::try_from(self.skip - at)
                .unwrap_or(usize::MAX)
                .min(want);
            buf[..n].fill(0);
            self.off += n as u64;
            return Ok(n);
        }
        if !self.seeked {
            self.file.seek(SeekFrom::Start(self.off))?;
            self.seeked = true;
        }
        let n = self.file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file got shorter while it was uploaded",
            ));
        }
        self.off += n as u64;
        Ok(n)
    }
}

fn body_from(rx: mpsc::Receiver<Result<Bytes, std::io::Error>>) -> reqwest::Body {
    reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// Modification time in nanoseconds (0 if unknown).
fn mtime(meta: &std::fs::Metadata) -> u128 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos())
}

/// The key of an upload: the same files (paths, sizes, modification times) with the same
/// options give the same key, so a re-run of a cut-off put finds what the first run placed.
pub fn upload_key(files: &[(String, u64, u128)], opts: &PutOptions, single: bool) -> String {
    let mut h = blake3::Hasher::new();
    h.update(KEY_TAG);
    let opt = |h: &mut blake3::Hasher, v: Option<u64>| {
        h.update(&v.map_or([0xff; 9], |v| {
            let mut b = [0u8; 9];
            b[1..].copy_from_slice(&v.to_le_bytes());
            b
        }));
    };
    opt(&mut h, opts.k.map(u64::from));
    opt(&mut h, opts.m.map(u64::from));
    opt(&mut h, opts.stripe_size);
    for s in [&opts.name, &opts.parent, &opts.tag, &opts.parent_publisher] {
        let s = s.as_deref().unwrap_or("\0none");
        h.update(&(s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    }
    h.update(&[u8::from(single)]);
    for (path, size, mtime) in files {
        h.update(&(path.len() as u64).to_le_bytes());
        h.update(path.as_bytes());
        h.update(&size.to_le_bytes());
        h.update(&mtime.to_le_bytes());
    }
    h.finalize().to_hex().to_string()
}

impl Client {
    /// Where an interrupted upload under `key` goes on (`None`: start from the beginning).
    async fn resume_point(&self, key: &str) -> Result<Option<UploadStatus>, ClientError> {
        let resp = self
            .write(self.http.get(self.url(&format!("/v1/uploads/{key}"))))
            .send()
            .await?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(Some(check(resp).await?.json().await?))
    }

    /// Upload a file or a folder; returns the node's answer with the root CID. A put cut off
    /// earlier (same files, same options) goes on where it stopped.
    pub async fn put(&self, path: &Path, opts: &PutOptions) -> Result<PutAnswer, ClientError> {
        let meta = std::fs::metadata(path).map_err(io_err(path))?;
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(n) = &opts.name {
            query.push(("name", n.clone()));
        }
        if let Some(k) = opts.k {
            query.push(("k", k.to_string()));
        }
        if let Some(m) = opts.m {
            query.push(("m", m.to_string()));
        }
        if let Some(p) = &opts.parent {
            query.push(("parent", p.clone()));
        }
        if let Some(p) = &opts.parent_publisher {
            query.push(("parent_publisher", p.clone()));
        }
        if let Some(s) = opts.stripe_size {
            query.push(("stripe_size", s.to_string()));
        }
        if let Some(t) = &opts.tag {
            // Refused here rather than by the node after the whole upload has been sent.
            cairn_storage::check_name(t).map_err(|e| ClientError::Invalid(e.to_string()))?;
            query.push(("tag", t.clone()));
        }
        let files: Vec<(PathBuf, String, u64)> = if meta.is_dir() {
            walk(path)?
        } else {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| {
                    ClientError::Invalid(format!("{} has no file name", path.display()))
                })?;
            vec![(path.to_path_buf(), name, meta.len())]
        };
        let mut keyed = Vec::with_capacity(files.len());
        for (abs, rel, size) in &files {
            let m = std::fs::metadata(abs).map_err(io_err(abs))?;
            keyed.push((rel.clone(), *size, mtime(&m)));
        }
        let key = upload_key(&keyed, opts, !meta.is_dir());
        let point = self.resume_point(&key).await?;
        if let Some(done) = point.as_ref().and_then(|p| p.done.clone()) {
            // An earlier run of this put stored it all; only its answer was lost.
            eprintln!("already stored by an earlier run of this put");
            return Ok(PutAnswer {
                root: done.root,
                files: done.files,
                size: done.size,
                stripes: done.stripes,
                shards: done.shards,
                tag: opts.tag.clone(),
                chain: None,
            });
        }
        let skip = point.as_ref().map_or(0, |p| p.offset);
        if let Some(p) = point.as_ref().filter(|p| p.offset > 0) {
            let total: u64 = files
                .iter()
                .map(|f| f.2.div_ceil(p.stripe_size.max(1)))
                .sum();
            eprintln!(
                "resuming at stripe {} of {} ({} of {} bytes already placed)",
                p.stripes + 1,
                total.max(p.stripes + 1),
                p.bytes,
                files.iter().map(|f| f.2).sum::<u64>()
            );
        }
        query.push(("resume", key));
        query.push(("offset", skip.to_string()));
        let (tx, rx) = mpsc::channel(4);
        let pos = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let total: u64 = files.iter().map(|f| f.2).sum();
        let pb = bar(total, self.progress, "put");
        let w = ChannelWriter {
            tx,
            buf: Vec::with_capacity(BODY_CHUNK),
            pb: pb.clone(),
            pos: pos.clone(),
            skip,
        };
        let producer;
        let mut req = self.write(self.http.post(self.url("/v1/checkpoints")));
        if meta.is_dir() {
            if opts.name.is_none() {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                query.push(("name", name));
            }
            producer = tokio::task::spawn_blocking(move || -> Result<(), ClientError> {
                let mut b = tar::Builder::new(w);
                b.mode(tar::HeaderMode::Deterministic);
                for (abs, rel, _) in &files {
                    let m = std::fs::metadata(abs).map_err(io_err(abs))?;
                    let mut header = tar::Header::new_gnu();
                    header.set_metadata_in_mode(&m, tar::HeaderMode::Deterministic);
                    let file = SkippingFile {
                        file: std::fs::File::open(abs).map_err(io_err(abs))?,
                        len: m.len(),
                        off: 0,
                        pos: pos.clone(),
                        skip,
                        seeked: false,
                    };
                    b.append_data(&mut header, rel, file).map_err(io_err(abs))?;
                }
                let mut w = b.into_inner().map_err(io_err(Path::new("tar")))?;
                w.flush().map_err(io_err(Path::new("tar")))?;
                pb.finish_and_clear();
                Ok(())
            });
            req = req.header("content-type", "application/x-tar");
        } else {
            query.push(("path", files[0].1.clone()));
            let src = path.to_path_buf();
            let len = meta.len();
            producer = tokio::task::spawn_blocking(move || -> Result<(), ClientError> {
                let mut w = w;
                let mut f = std::fs::File::open(&src).map_err(io_err(&src))?;
                f.seek(SeekFrom::Start(skip)).map_err(io_err(&src))?;
                w.pos.store(skip, std::sync::atomic::Ordering::Relaxed);
                w.pb.set_position(skip);
                let mut buf = vec![0u8; BODY_CHUNK];
                loop {
                    let n = f.read(&mut buf).map_err(io_err(&src))?;
                    if n == 0 {
                        break;
                    }
                    w.write_all(&buf[..n]).map_err(io_err(&src))?;
                }
                w.flush().map_err(io_err(&src))?;
                pb.finish_and_clear();
                Ok(())
            });
            req = req
                .header("content-type", "application/octet-stream")
                .header("content-length", len.saturating_sub(skip));
        }
        let sent = req.query(&query).body(body_from(rx)).send().await;
        let produced = producer
            .await
            .map_err(|e| ClientError::Invalid(format!("upload reader failed: {e}")))?;
        let resp = check(sent?).await?;
        produced?;
        Ok(resp.json().await?)
    }
}
