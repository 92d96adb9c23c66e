//! A synthetic model folder for demos, tests and benchmarks: a real safetensors file (valid
//! header, tensors of random f32 data) plus the small JSON files a checkpoint carries.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;

/// Fill `buf` with pseudo-random bytes from `state` (xorshift64*; fast, not cryptographic).
pub fn fill_random(state: &mut u64, buf: &mut [u8]) {
    for chunk in buf.chunks_mut(8) {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        let v = state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// Write a model folder of about `weights_bytes` of tensor data into `dir`. Returns the total
/// number of bytes written.
pub fn write_sample(dir: &Path, weights_bytes: u64, seed: u64) -> std::io::Result<u64> {
    fs::create_dir_all(dir.join("tokenizer"))?;
    const COLS: u64 = 1024;
    let tensor_bytes = 16 << 20; // 16 MiB per tensor
    let tensors = weights_bytes.div_ceil(tensor_bytes).max(1);
    let mut header = serde_json::Map::new();
    header.insert(
        "__metadata__".into(),
        serde_json::json!({"format": "pt", "generator": "cairn sample"}),
    );
    let mut offset = 0u64;
    let mut sizes = Vec::new();
    for t in 0..tensors {
        let len = tensor_bytes
            .min(weights_bytes.saturating_sub(offset))
            .max(4 * COLS);
        let len = len / (4 * COLS) * (4 * COLS);
        header.insert(
            format!("model.layers.{t}.mlp.weight"),
            serde_json::json!({"dtype": "F32", "shape": [len / (4 * COLS), COLS], "data_offsets": [offset, offset + len]}),
        );
        sizes.push(len);
        offset += len;
    }
    let mut header =
        serde_json::to_vec(&serde_json::Value::Object(header)).map_err(std::io::Error::other)?;
    while header.len() % 8 != 0 {
        header.push(b' ');
    }
    let mut total = 0u64;
    let mut w = BufWriter::with_capacity(1 << 20, File::create(dir.join("model.safetensors"))?);
    w.write_all(&(header.len() as u64).to_le_bytes())?;
    w.write_all(&header)?;
    total += 8 + header.len() as u64;
    let mut state = seed | 1;
    let mut buf = vec![0u8; 1 << 20];
    for len in sizes {
        let mut left = len;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            fill_random(&mut state, &mut buf[..n]);
            w.write_all(&buf[..n])?;
            left -= n as u64;
        }
        total += len;
    }
    w.flush()?;
    let small = [
        (
            "config.json",
            serde_json::json!({"architectures": ["CairnSample"], "hidden_size": COLS, "num_hidden_layers": tensors, "torch_dtype": "float32"}),
        ),
        (
            "generation_config.json",
            serde_json::json!({"max_new_tokens": 256, "temperature": 0.7}),
        ),
        (
            "tokenizer/tokenizer.json",
            serde_json::json!({"version": "1.0", "model": {"type": "BPE", "vocab": {"<s>": 0, "</s>": 1, "cairn": 2}}}),
        ),
    ];
    for (name, value) in small {
        let bytes = serde_json::to_vec_pretty(&value).map_err(std::io::Error::other)?;
        fs::write(dir.join(name), &bytes)?;
        total += bytes.len() as u64;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_has_valid_safetensors_header() {
        let dir = tempfile::tempdir().expect("tempdir");
        let total = write_sample(dir.path(), 3 << 20, 1).expect("write");
        let st = fs::read(dir.path().join("model.safetensors")).expect("read");
        let n = u64::from_le_bytes(st[..8].try_into().expect("8 bytes")) as usize;
        let header: serde_json::Value = serde_json::from_slice(&st[8..8 + n]).expect("json header");
        let t = &header["model.layers.0.mlp.weight"];
        let end = t["data_offsets"][1].as_u64().expect("offset");
        let data_len = st.len() - 8 - n;
        assert!(end as usize <= data_len);
        assert!(total > 3 << 20);
        assert!(dir.path().join("tokenizer/tokenizer.json").exists());
    }
}
