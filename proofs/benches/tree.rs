//! What building the proof tree costs off chain, next to plain hashing of the same bytes:
//! the tree as chosen (SHA-256 leaves and low levels, Keccak above 1 KiB), an all-SHA-256
//! tree and an all-Keccak tree, and plain SHA-256 / Keccak-256 / BLAKE3 over the data.
//! `cargo bench -p cairn-proofs`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

use cairn_proofs::tree::{CHUNK_SIZE, LEAF_SIZE, Node, chunk_root};

/// A 64 KiB chunk's root with one hash for every level and `leaf`-byte leaves (the
/// alternatives measured).
fn uniform_root(data: &[u8], keccak: bool, leaf: usize) -> Node {
    let h = |parts: &[&[u8]]| -> Node {
        let full: [u8; 32] = if keccak {
            let mut k = <sha3::Keccak256 as sha3::Digest>::new();
            for p in parts {
                sha3::Digest::update(&mut k, p);
            }
            sha3::Digest::finalize(k).into()
        } else {
            let mut k = <sha2::Sha256 as sha2::Digest>::new();
            for p in parts {
                sha2::Digest::update(&mut k, p);
            }
            sha2::Digest::finalize(k).into()
        };
        let mut n = [0u8; 16];
        n.copy_from_slice(&full[..16]);
        n
    };
    let mut level: Vec<Node> = data.chunks(leaf).map(|l| h(&[&[0], l])).collect();
    while level.len() > 1 {
        level = level.chunks(2).map(|p| h(&[&[1], &p[0], &p[1]])).collect();
    }
    level[0]
}

fn tree(c: &mut Criterion) {
    let mut state = 7u64;
    let data: Vec<u8> = (0..64 * CHUNK_SIZE)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let mut g = c.benchmark_group("proof-tree-4MiB");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    g.bench_function("chosen-tree", |b| {
        b.iter(|| data.chunks(CHUNK_SIZE).map(chunk_root).collect::<Vec<_>>())
    });
    for (name, keccak, leaf) in [
        ("all-sha256-tree", false, LEAF_SIZE),
        ("all-sha256-tree-32B-leaves", false, 32),
        ("all-keccak-tree", true, LEAF_SIZE),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                data.chunks(CHUNK_SIZE)
                    .map(|c| uniform_root(c, keccak, leaf))
                    .collect::<Vec<_>>()
            })
        });
    }
    g.bench_function("sha256", |b| {
        b.iter(|| <sha2::Sha256 as sha2::Digest>::digest(black_box(&data)))
    });
    g.bench_function("keccak256", |b| {
        b.iter(|| <sha3::Keccak256 as sha3::Digest>::digest(black_box(&data)))
    });
    g.bench_function("blake3", |b| b.iter(|| blake3::hash(black_box(&data))));
    g.finish();
}

criterion_group!(benches, tree);
criterion_main!(benches);
