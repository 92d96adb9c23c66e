//! Cutting an upload into stripes and coding them.

use super::*;
use cairn_erasure::{FileHash, StripeHash, hash_stripe};

/// A stripe buffer and its parity shards, recycled between stripes (fresh 64 MiB allocations
/// are page-faulted in, which costs as much as the coding on some machines).
type Buffers = (Vec<u8>, Vec<Vec<u8>>);

/// How many stripes' buffers an upload may hold: one being coded, one being written.
const STRIPES_IN_FLIGHT: usize = 2;

/// With a stage after the writer ([`encode_then`]): one more, the stripe that stage holds.
const STRIPES_IN_FLIGHT_WITH_AFTER: usize = STRIPES_IN_FLIGHT + 1;

/// A stage that sees each stripe after the sink stored it, on its own thread, with what the
/// sink returned for it; the stripe's buffers go back to the encoder only after it.
pub type After<'a, T> =
    &'a mut (dyn FnMut(&EncodedStripe, &StripeMark, T) -> Result<(), IngestError> + Send);

/// Threads that code one stripe: every core, up to a point (beyond it the whole-file hash,
/// which runs beside them on one thread, and the writes set the pace).
fn coding_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_CODING_THREADS))
}

/// Upper bound of [`coding_threads`].
const MAX_CODING_THREADS: usize = 8;

/// Where a stripe sits in the upload: what a resumable upload records once the stripe is
/// placed, so that the upload can go on after it from the body's next byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeMark {
    /// The file the stripe belongs to.
    pub path: String,
    /// The file's bytes up to the end of this stripe.
    pub file_end: u64,
    /// The file's size when the upload says it up front (a tar entry), else `None` (a single
    /// file ends with the body).
    pub file_size: Option<u64>,
    /// Body bytes up to the end of this stripe's data.
    pub body_end: u64,
    /// The stripe's part of the file's hash (`None`: this stripe size hashes whole files).
    pub hash: Option<StripeHash>,
    /// Empty files of the archive met since the previous stripe, in order (they have no
    /// stripe of their own).
    pub empty_before: Vec<String>,
}

/// The hash of the file being read: stripe by stripe when the stripe size allows it (then an
/// upload can be resumed within the file), else in one pass.
enum FileHasher {
    Stripes(FileHash),
    Whole(Box<blake3::Hasher>),
}

/// A file partly stored by an earlier, interrupted run of the same upload.
#[derive(Debug, Clone)]
pub struct PartialFile {
    pub path: String,
    /// The entry's size, for an archive entry.
    pub size: Option<u64>,
    pub stripes: Vec<Vec<Cid>>,
    pub hash: FileHash,
}

/// Where an interrupted upload goes on: the body given to [`encode`] starts at `body_offset`
/// of the original one.
#[derive(Debug, Clone, Default)]
pub struct Resume {
    pub body_offset: u64,
    /// Files stored whole.
    pub files: Vec<FileEntry>,
    /// The file cut off after a stripe.
    pub partial: Option<PartialFile>,
}

/// Counts the body bytes read, from where the body started in the original upload.
struct Counted<R> {
    inner: R,
    at: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.at.set(self.at.get() + n as u64);
        Ok(n)
    }
}

/// Cuts files into stripes and codes them; finished stripes go to the writer thread, which
/// stores their shards and hands the buffers back.
struct Encoder<'a> {
    layout: Layout,
    coder: Coder,
    /// Threads that code a stripe ([`coding_threads`]).
    threads: usize,
    to_writer: SyncSender<(EncodedStripe, StripeMark)>,
    returned: Receiver<Buffers>,
    spare: Vec<Buffers>,
    allocated: usize,
    /// Buffers it may allocate (the stripes the stages may hold at once).
    in_flight: usize,
    progress: &'a dyn Fn(u64),
    /// Body bytes read so far (counted from the start of the original body).
    body: std::rc::Rc<std::cell::Cell<u64>>,
    /// Empty archive entries not yet named in a stripe's mark.
    empty: Vec<String>,
}

impl Encoder<'_> {
    fn buffers(&mut self) -> Result<Buffers, IngestError> {
        if let Some(b) = self.spare.pop() {
            return Ok(b);
        }
        if self.allocated < self.in_flight {
            self.allocated += 1;
            let cap = usize::try_from(self.layout.stripe_size()).expect("stripe size <= 1 GiB")
                + self.layout.k();
            return Ok((Vec::with_capacity(cap), Vec::new()));
        }
        self.returned.recv().map_err(|_| IngestError::WriterStopped)
    }

    /// Read one file (`size`: its length when known up front), going on from `partial`.
    fn file(
        &mut self,
        path: &str,
        size: Option<u64>,
        partial: Option<PartialFile>,
        reader: &mut dyn Read,
    ) -> Result<FileEntry, IngestError> {
        validate_path(path)?;
        let stripe_size = usize::try_from(self.layout.stripe_size()).expect("stripe size <= 1 GiB");
        let (mut hasher, mut stripes) = match partial {
            Some(p) => (FileHasher::Stripes(p.hash), p.stripes),
            None => (
                FileHash::new(self.layout.stripe_size()).map_or_else(
                    || FileHasher::Whole(Box::new(blake3::Hasher::new())),
                    FileHasher::Stripes,
                ),
                Vec::new(),
            ),
        };
        let mut file_len = match &hasher {
            FileHasher::Stripes(h) => h.len(),
            FileHasher::Whole(_) => 0,
        };
        if size == Some(file_len) {
            // Nothing is left of it (an empty file, or one whose last stripe was placed).
            if stripes.is_empty() {
                self.empty.push(path.to_owned());
            }
            return Ok(finish_file(path, file_len, &hasher, stripes));
        }
        loop {
            let (mut buf, parity) = self.buffers()?;
            buf.clear();
            let n = reader
                .take(stripe_size as u64)
                .read_to_end(&mut buf)
                .map_err(IngestError::Body)?;
            if n == 0 {
                self.spare.push((buf, parity));
                break;
            }
            let index = stripes.len() as u64;
            // The file's hash runs beside the stripe's coding and shard hashing: both only
            // read the stripe.
            let stripe = Stripe::new(&self.layout, buf);
            let (coded, hashed) = std::thread::scope(|s| {
                let h = s.spawn(|| match &mut hasher {
                    FileHasher::Stripes(_) => Some(hash_stripe(
                        self.layout.stripe_size(),
                        index,
                        stripe.bytes(),
                    )),
                    FileHasher::Whole(h) => {
                        h.update(stripe.bytes());
                        None
                    }
                });
                let coded = stripe.code_parallel(&self.coder, &self.layout, parity, self.threads);
                (coded, h.join().expect("hashing does not panic"))
            });
            if let (FileHasher::Stripes(fh), Some(h)) = (&mut hasher, hashed) {
                fh.push(n as u64, h);
            }
            file_len += n as u64;
            let enc = stripe.finish(coded);
            stripes.push(enc.cids());
            let mark = StripeMark {
                path: path.to_owned(),
                file_end: file_len,
                file_size: size,
                body_end: self.body.get(),
                hash: hashed,
                empty_before: std::mem::take(&mut self.empty),
            };
            self.to_writer
                .send((enc, mark))
                .map_err(|_| IngestError::WriterStopped)?;
            (self.progress)(n as u64);
            if n < stripe_size {
                break;
            }
        }
        if size.is_some_and(|s| s != file_len) {
            return Err(IngestError::Body(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("{path}: the archive ended inside the file"),
            )));
        }
        if stripes.is_empty() {
            self.empty.push(path.to_owned());
        }
        Ok(finish_file(path, file_len, &hasher, stripes))
    }
}

fn finish_file(path: &str, size: u64, hasher: &FileHasher, stripes: Vec<Vec<Cid>>) -> FileEntry {
    let hash = match hasher {
        FileHasher::Stripes(h) => h.finish(),
        FileHasher::Whole(h) => h.finalize(),
    };
    FileEntry {
        path: path.to_owned(),
        size,
        blake3: hash.as_bytes().to_vec(),
        stripes,
    }
}

/// Where the writer hands a stripe it stored.
enum Next<T> {
    /// To the stage after it.
    After(SyncSender<(EncodedStripe, StripeMark, T)>),
    /// Its buffers back to the encoder.
    Encoder(SyncSender<Buffers>),
}

/// Hand every stripe it receives to `sink` (which stores its shards), then on to `next`.
fn write_stripes<T>(
    sink: &mut dyn FnMut(&EncodedStripe, &StripeMark) -> Result<T, IngestError>,
    stripes: Receiver<(EncodedStripe, StripeMark)>,
    next: Next<T>,
) -> Result<(), IngestError> {
    for (enc, mark) in stripes {
        let t = sink(&enc, &mark)?;
        match &next {
            Next::After(after) => {
                // The stage after stopped on an error of its own, which is reported.
                if after.send((enc, mark, t)).is_err() {
                    return Ok(());
                }
            }
            // The encoder may have finished already; then nobody needs the buffers.
            Next::Encoder(returned) => {
                let _ = returned.send(enc.into_buffers());
            }
        }
    }
    Ok(())
}

/// Run the stage after the writer on every stripe, then return the buffers.
fn after_stripes<T>(
    after: &mut dyn FnMut(&EncodedStripe, &StripeMark, T) -> Result<(), IngestError>,
    stripes: Receiver<(EncodedStripe, StripeMark, T)>,
    returned: SyncSender<Buffers>,
) -> Result<(), IngestError> {
    for (enc, mark, t) in stripes {
        after(&enc, &mark, t)?;
        let _ = returned.send(enc.into_buffers());
    }
    Ok(())
}

/// Records the first error the underlying reader returned, so that a truncated upload is told
/// apart from a malformed archive.
struct Tracked<R> {
    inner: R,
    failed: Option<std::io::ErrorKind>,
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            self.failed.get_or_insert(e.kind());
        })
    }
}

/// Cut an upload into stripes and code them; `sink` stores each stripe's shards on a second
/// thread while the next stripe is coded. Returns the manifest once every stripe was stored.
/// With a `resume`, the upload's body starts where an earlier run of it stopped.
pub fn encode<R: Read>(
    layout: Layout,
    upload: Upload<R>,
    resume: Resume,
    progress: &dyn Fn(u64),
    sink: &mut (dyn FnMut(&EncodedStripe, &StripeMark) -> Result<(), IngestError> + Send),
) -> Result<Manifest, IngestError> {
    encode_then(layout, upload, resume, progress, sink, None)
}

/// [`encode`] with a third stage: `after` sees each stripe once `sink` stored it (with what
/// `sink` returned), on a third thread, while the sink stores the next one and the encoder
/// codes the one after. Work that needs a stripe's bytes but not before its shards are
/// placed (the deal trees) runs there without holding the placement up; one more stripe's
/// buffers are held for it.
pub fn encode_then<R: Read, T: Send>(
    layout: Layout,
    upload: Upload<R>,
    resume: Resume,
    progress: &dyn Fn(u64),
    sink: &mut (dyn FnMut(&EncodedStripe, &StripeMark) -> Result<T, IngestError> + Send),
    after: Option<After<'_, T>>,
) -> Result<Manifest, IngestError> {
    let in_flight = if after.is_some() {
        STRIPES_IN_FLIGHT_WITH_AFTER
    } else {
        STRIPES_IN_FLIGHT
    };
    let (to_writer, stripes) = sync_channel::<(EncodedStripe, StripeMark)>(0);
    let (to_encoder, returned) = sync_channel::<Buffers>(in_flight);
    let (files, written, afterwards) = std::thread::scope(|s| {
        let (next, after) = match after {
            Some(after) => {
                let (to_after, received) = sync_channel::<(EncodedStripe, StripeMark, T)>(0);
                let stage = s.spawn(move || after_stripes(after, received, to_encoder));
                (Next::After(to_after), Some(stage))
            }
            None => (Next::Encoder(to_encoder), None),
        };
        let writer = s.spawn(move || write_stripes(sink, stripes, next));
        let mut enc = Encoder {
            layout,
            coder: Coder::new(&layout),
            threads: coding_threads(),
            to_writer,
            returned,
            spare: Vec::new(),
            allocated: 0,
            in_flight,
            progress,
            body: std::rc::Rc::new(std::cell::Cell::new(resume.body_offset)),
            empty: Vec::new(),
        };
        let files = encode_upload(&mut enc, upload, resume);
        drop(enc); // closes the channel: the writer drains what is left and stops
        let written = writer.join().expect("the shard writer does not panic");
        let afterwards = after.map_or(Ok(()), |a| {
            a.join().expect("the stage after the writer does not panic")
        });
        (files, written, afterwards)
    });
    // A stage's error stops the stages before it; they only saw it stop.
    afterwards?;
    written?;
    let files = files?;
    if files.is_empty() {
        return Err(IngestError::Empty);
    }
    Ok(Manifest::new(&layout, files)?)
}

/// Bytes of a tar entry's data block: its data padded to whole 512-byte blocks.
pub fn tar_padded(size: u64) -> u64 {
    size.div_ceil(TAR_BLOCK) * TAR_BLOCK
}

/// A tar archive's block size.
const TAR_BLOCK: u64 = 512;

/// Read every file of an upload and send its stripes to the writer.
fn encode_upload<R: Read>(
    enc: &mut Encoder<'_>,
    upload: Upload<R>,
    resume: Resume,
) -> Result<Vec<FileEntry>, IngestError> {
    let Resume {
        files: mut done,
        mut partial,
        ..
    } = resume;
    match upload {
        Upload::File { path, reader } => {
            let mut reader = Counted {
                inner: reader,
                at: enc.body.clone(),
            };
            if !done.is_empty() || partial.as_ref().is_some_and(|p| p.path != path) {
                return Err(IngestError::Archive(format!(
                    "the interrupted upload was not of the single file {path:?}"
                )));
            }
            done.push(enc.file(&path, None, partial, &mut reader)?);
            Ok(done)
        }
        Upload::Tar(reader) => {
            let mut body = Counted {
                inner: reader,
                at: enc.body.clone(),
            };
            let mut seen: std::collections::BTreeSet<String> =
                done.iter().map(|f| f.path.clone()).collect();
            // The rest of the entry the interrupted run was inside, and its padding.
            if let Some(p) = partial.take() {
                let size = p.size.ok_or_else(|| {
                    IngestError::Archive("an interrupted archive entry has no size".into())
                })?;
                let left = size.saturating_sub(p.hash.len());
                let path = p.path.clone();
                seen.insert(path.clone());
                let file = enc.file(&path, Some(size), Some(p), &mut (&mut body).take(left))?;
                done.push(file);
                let pad = tar_padded(size) - size;
                std::io::copy(&mut (&mut body).take(pad), &mut std::io::sink())
                    .map_err(IngestError::Body)?;
            }
            let mut archive = tar::Archive::new(Tracked {
                inner: body,
                failed: None,
            });
            let result = (|| -> Result<(), IngestError> {
                let archive_err = |e: std::io::Error| IngestError::Archive(e.to_string());
                for entry in archive.entries().map_err(archive_err)? {
                    let mut entry = entry.map_err(archive_err)?;
                    let kind = entry.header().entry_type();
                    let raw = entry.path().map_err(archive_err)?;
                    let path = raw.to_string_lossy().replace('\\', "/");
                    let path = path
                        .trim_start_matches("./")
                        .trim_end_matches('/')
                        .to_owned();
                    if kind.is_dir() || path.is_empty() {
                        continue;
                    }
                    if !kind.is_file() {
                        return Err(IngestError::EntryType { path });
                    }
                    if !seen.insert(path.clone()) {
                        return Err(IngestError::DuplicatePath(path));
                    }
                    let size = entry.size();
                    done.push(enc.file(&path, Some(size), None, &mut entry)?);
                }
                Ok(())
            })();
            if let Err(e) = result {
                let failed = archive.into_inner().failed;
                return Err(match (failed, e) {
                    (Some(kind), e @ (IngestError::Archive(_) | IngestError::Body(_))) => {
                        IngestError::Body(std::io::Error::new(kind, e.to_string()))
                    }
                    (_, e) => e,
                });
            }
            Ok(done)
        }
    }
}
