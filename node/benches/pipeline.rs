//! Put and get pipeline throughput against the raw coding and hashing figures, in one run on
//! the same machine and data. Prints ratios (the machine is shared: absolute numbers drift).
//!
//! `cargo bench -p cairn-node --bench pipeline` (env `CAIRN_BENCH_MIB` sets the data size,
//! `CAIRN_BENCH_DIR` where the stores live).

use std::hint::black_box;
use std::time::Instant;

use cairn_erasure::{Coder, Layout, Stripe};
use cairn_node::pipeline::{FileReader, Upload, encode, ingest};
use cairn_storage::{RocksBackend, RocksOptions, Store, ValueMode};

fn gib_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64 / secs
}

/// Best of `runs` timings of `f`, in seconds.
fn best(runs: usize, mut f: impl FnMut()) -> f64 {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
}

fn main() {
    let mib: u64 = std::env::var("CAIRN_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let layout = Layout::default();
    let coder = Coder::new(&layout);
    let stripe = usize::try_from(layout.stripe_size()).expect("64 MiB");
    let mut data = vec![0u8; stripe];
    cairn_node::sample::fill_random(&mut 7, &mut data);
    let shard_len = usize::try_from(layout.max_shard_len()).expect("fits");

    // Raw figures on one core, one 64 MiB stripe, (k, m) = (10, 4).
    let padded = {
        let mut d = data.clone();
        d.resize(shard_len * layout.k(), 0);
        d
    };
    let mut parity = vec![vec![0u8; shard_len]; layout.m()];
    let rs = best(5, || coder.encode(&padded, &mut parity).expect("encode"));
    let all_shards = (layout.total() * shard_len) as u64;
    let b3 = best(5, || {
        for c in padded
            .chunks(shard_len)
            .chain(parity.iter().map(Vec::as_slice))
        {
            black_box(blake3::hash(c));
        }
    });
    let raw = rs + b3; // seconds per stripe for RS + BLAKE3 of every shard
    let s = stripe as u64;
    // Reuse buffers, as the put pipeline does: fresh 64 MiB allocations are page-faulted in
    // and would dominate the figure on a VM.
    let mut buf = Vec::with_capacity(stripe + layout.k());
    let mut scratch = Vec::new();
    let code = best(5, || {
        buf.clear();
        buf.extend_from_slice(&data);
        let st = Stripe::new(&layout, std::mem::take(&mut buf));
        let coded = st.code(&coder, &layout, std::mem::take(&mut scratch));
        let (b, p) = st.finish(coded).into_buffers();
        buf = b;
        scratch = p;
    });
    println!("raw, one core, per 64 MiB stripe (10+4):");
    println!(
        "  reed-solomon encode     {:>6.2} GiB/s of input",
        gib_s(s, rs)
    );
    println!(
        "  blake3 of all shards    {:>6.2} GiB/s of shard bytes",
        gib_s(all_shards, b3)
    );
    println!(
        "  RS + BLAKE3 (raw)       {:>6.2} GiB/s of input",
        gib_s(s, raw)
    );
    println!(
        "  stripe coding (ours)    {:>6.2} GiB/s of input   ratio to raw {:.2}",
        gib_s(s, code),
        raw / code
    );

    // The put pipeline without a store: reading, coding on every core, the whole-file hash
    // and the hand-off to the writer thread, with a sink that drops the stripes.
    let total = mib << 20;
    let coding = best(2, || {
        let manifest = encode(
            layout,
            Upload::File {
                path: "bench.bin".into(),
                reader: Repeat::new(&data, total),
            },
            Default::default(),
            &|_| {},
            &mut |_, _| Ok(()),
        )
        .expect("encode");
        black_box(manifest);
    });
    println!("put pipeline without a store, {mib} MiB file, all cores:");
    println!(
        "  coding pipeline         {:>6.2} GiB/s of input   ratio to raw {:.2}",
        gib_s(total, coding),
        gib_s(total, coding) / gib_s(s, raw)
    );

    // Disk baselines: the bytes a put writes (k+m shard files per stripe), with no coding,
    // in the directory tree the store uses, each file synced. Buffered: plain writes, one
    // file after another. Direct: the device's best case for this pattern, O_DIRECT from an
    // aligned buffer, eight files at once (what the store does, minus its bounce copy).
    // Each runs twice: the first pass also warms the page cache's memory (first-touch page
    // faults are slow on VMs).
    let shard_bytes = total / s * all_shards;
    let files = usize::try_from(shard_bytes / shard_len as u64).expect("fits");
    let chunk = &padded[..shard_len];
    let buffered = best_in_dir(2, |dir| {
        let paths: Vec<_> = (0..files).map(|i| dir.join(format!("{i:06}"))).collect();
        for p in &paths {
            std::fs::write(p, chunk).expect("write");
        }
        for p in &paths {
            std::fs::File::open(p)
                .and_then(|f| f.sync_all())
                .expect("fsync");
        }
    });
    // `None` where the filesystem refuses O_DIRECT (tmpfs).
    let direct = direct_supported().then(|| {
        best_in_dir(2, |dir| {
            for group in (0..files).collect::<Vec<_>>().chunks(layout.total()) {
                let next = std::sync::atomic::AtomicUsize::new(0);
                std::thread::scope(|sc| {
                    for _ in 0..8 {
                        sc.spawn(|| {
                            let mut bounce = AlignedChunk::new();
                            loop {
                                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                let Some(i) = group.get(n) else { break };
                                let path = dir.join(format!("{i:06}"));
                                bounce.write_file(&path, chunk).expect("direct write");
                            }
                        });
                    }
                });
            }
        })
    });
    println!("disk baselines: k+m shard files for {mib} MiB of input, written and synced:");
    for (name, secs) in [("buffered", Some(buffered)), ("direct, 8 at once", direct)] {
        match secs {
            Some(secs) => println!(
                "  {name:<22}  {:>6.2} GiB/s of input ({:.2} GiB/s written)",
                gib_s(total, secs),
                gib_s(shard_bytes, secs)
            ),
            None => println!("  {name:<22}  (O_DIRECT refused by this filesystem)"),
        }
    }
    let disk_input = gib_s(total, direct.map_or(buffered, |d| d.min(buffered)));
    println!(
        "  the device allows at most {:.2} of raw RS+BLAKE3 on a put",
        disk_input / gib_s(s, raw)
    );
    let bound = disk_input.min(gib_s(s, raw));

    // Put and get through the real store.
    // Each mode runs twice into a fresh store, like the disk baseline, and keeps the best.
    for mode in [ValueMode::Files, ValueMode::BlobDb] {
        let (mut put, mut get) = (f64::MAX, f64::MAX);
        for _ in 0..2 {
            let dir = bench_dir();
            let backend = RocksBackend::open(
                dir.path(),
                &RocksOptions {
                    value_mode: mode,
                    ..RocksOptions::default()
                },
            )
            .expect("open");
            let store = Store::open(backend, u64::MAX).expect("store");
            let reader = Repeat::new(&data, total);
            let t = Instant::now();
            let (_, manifest) = ingest(
                &store,
                layout,
                Upload::File {
                    path: "bench.bin".into(),
                    reader,
                },
                "bench",
                &|_| {},
            )
            .expect("ingest");
            let put_secs = t.elapsed().as_secs_f64();
            let file = &manifest.files[0];
            let reader = FileReader::new(&store, layout);
            let mut got = 0u64;
            let t = Instant::now();
            reader
                .read(file, 0, file.size, &mut |b| {
                    got += b.len() as u64;
                    true
                })
                .expect("read");
            let get_secs = t.elapsed().as_secs_f64();
            assert_eq!(got, total);
            put = put.min(put_secs);
            get = get.min(get_secs);
        }

        let raw_get = b3 * (s as f64 / all_shards as f64); // BLAKE3 of the data shards only
        println!("{mode:?} store, {mib} MiB file:");
        println!(
            "  put pipeline            {:>6.2} GiB/s   ratio to raw RS+BLAKE3 {:.2}, to min(raw, disk) {:.2}",
            gib_s(total, put),
            gib_s(total, put) / gib_s(s, raw),
            gib_s(total, put) / bound
        );
        println!(
            "  get pipeline            {:>6.2} GiB/s   ratio to raw BLAKE3 of data {:.2}",
            gib_s(total, get),
            gib_s(total, get) / gib_s(s, raw_get)
        );
    }
}

/// Best of `runs` timings of `f`, each given a fresh bench directory (made before and removed
/// after the timing), in seconds.
fn best_in_dir(runs: usize, mut f: impl FnMut(&std::path::Path)) -> f64 {
    (0..runs)
        .map(|_| {
            let dir = bench_dir();
            let t = Instant::now();
            f(dir.path());
            t.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
}

/// A fresh directory under `CAIRN_BENCH_DIR` (default: the system temp dir). Pointing it at a
/// tmpfs (`/dev/shm`) separates the pipeline's own cost from the disk's.
fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("CAIRN_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .expect("temporary bench directory")
}

/// A 1 MiB buffer aligned for `O_DIRECT`.
struct AlignedChunk {
    buf: Vec<u8>,
    at: usize,
}

impl AlignedChunk {
    const LEN: usize = 1 << 20;
    const ALIGN: usize = 4096;

    fn new() -> Self {
        let buf = vec![0u8; Self::LEN + Self::ALIGN];
        let at = buf.as_ptr().align_offset(Self::ALIGN);
        Self { buf, at }
    }

    /// Write `data` to a new file at `path` with `O_DIRECT`, cut it to length, sync it.
    fn write_file(&mut self, path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)?;
        let buf = &mut self.buf[self.at..self.at + Self::LEN];
        for piece in data.chunks(Self::LEN) {
            let aligned = piece.len().next_multiple_of(Self::ALIGN);
            buf[..piece.len()].copy_from_slice(piece);
            buf[piece.len()..aligned].fill(0);
            f.write_all(&buf[..aligned])?;
        }
        f.set_len(data.len() as u64)?;
        f.sync_data()
    }
}

/// Whether the bench directory's filesystem takes `O_DIRECT` writes.
fn direct_supported() -> bool {
    let dir = bench_dir();
    AlignedChunk::new()
        .write_file(&dir.path().join("probe"), &[0; 4096])
        .is_ok()
}

/// `left` bytes cycling over `data`, changed on every round so that no shard repeats (the
/// store would deduplicate it).
struct Repeat {
    data: Vec<u8>,
    left: u64,
    pos: usize,
    round: u64,
}

impl Repeat {
    fn new(data: &[u8], left: u64) -> Self {
        Self {
            data: data.to_vec(),
            left,
            pos: 0,
            round: 0,
        }
    }
}

impl std::io::Read for Repeat {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == 0 {
            self.round += 1;
            for block in self.data.chunks_mut(64 << 10) {
                block[..8].copy_from_slice(&self.round.to_le_bytes());
            }
        }
        let n = buf
            .len()
            .min(self.data.len() - self.pos)
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos = (self.pos + n) % self.data.len();
        self.left -= n as u64;
        Ok(n)
    }
}
