//! Raw building blocks: Reed-Solomon encode, BLAKE3, and a whole stripe's coding with shard
//! hashing and outboards. `cargo bench -p cairn-erasure`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

use cairn_erasure::{Coder, Layout, Outboard, Stripe};

fn coding(c: &mut Criterion) {
    let layout = Layout::new(10, 4, 16 << 20).expect("valid");
    let coder = Coder::new(&layout);
    let mut state = 1u64;
    let data: Vec<u8> = (0..layout.stripe_size())
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let shard_len = layout.max_shard_len() as usize;
    let mut g = c.benchmark_group("stripe-16MiB-10+4");
    g.throughput(Throughput::Bytes(layout.stripe_size()));
    g.sample_size(20);
    let mut padded = data.clone();
    padded.resize(shard_len * 10, 0);
    let mut parity = vec![vec![0u8; shard_len]; 4];
    g.bench_function("rs-encode", |b| {
        b.iter(|| {
            coder
                .encode(black_box(&padded), &mut parity)
                .expect("encode")
        })
    });
    g.bench_function("blake3", |b| b.iter(|| blake3::hash(black_box(&data))));
    g.bench_function("blake3-outboard", |b| {
        b.iter(|| Outboard::compute(black_box(&data)))
    });
    g.bench_function("code-stripe", |b| {
        b.iter(|| {
            let s = Stripe::new(&layout, data.clone());
            black_box(s.code(&coder, &layout, Vec::new()));
        })
    });
    g.finish();
}

criterion_group!(benches, coding);
criterion_main!(benches);
