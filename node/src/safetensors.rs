//! The safetensors header: where each tensor of a file lies. Pure parsing, no I/O: the
//! caller reads the first [`PREFIX_LEN`] bytes, then the header they announce.
//!
//! Format: `[n: u64 LE][n bytes of JSON][tensor data]`; the JSON maps each tensor's name to
//! `{"dtype", "shape", "data_offsets": [begin, end]}` (offsets into the data, after the
//! header), plus an optional `"__metadata__"` map of strings.

use std::collections::BTreeMap;

use serde::Serialize;
use thiserror::Error;

/// Bytes of the length prefix.
pub const PREFIX_LEN: u64 = 8;
/// Largest header read. Real ones are far smaller (a few hundred KiB for the largest models'
/// shards); the reference implementation refuses more than 100 MB. Parsing one costs up to
/// about 16x its size in memory for a moment.
pub const MAX_HEADER_LEN: u64 = 8 << 20;
/// Most dimensions a tensor's shape may have.
pub const MAX_DIMS: usize = 32;
/// Longest dtype name (the format's are at most 7 characters).
const MAX_DTYPE_LEN: usize = 16;
/// The key of the free-form metadata map.
const METADATA: &str = "__metadata__";

/// The header is not what a safetensors file has.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeaderError {
    #[error("file of {0} bytes is too short for a safetensors header")]
    Short(u64),
    #[error("header of {len} bytes is larger than the {max} bytes read")]
    TooLarge { len: u64, max: u64 },
    #[error("header of {len} bytes does not fit a file of {size} bytes")]
    BeyondFile { len: u64, size: u64 },
    #[error("header is not a json object: {0}")]
    Json(String),
    #[error("tensor {name:?}: {reason}")]
    Tensor { name: String, reason: String },
}

/// One tensor: its type, shape and bytes `[start, end)` of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tensor {
    pub dtype: String,
    pub shape: Vec<u64>,
    /// First byte in the file (not in the data section).
    pub start: u64,
    /// One past the last byte in the file.
    pub end: u64,
}

/// A parsed header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Header {
    /// Length of the JSON (the data section starts at `PREFIX_LEN + header_len`).
    pub header_len: u64,
    pub metadata: BTreeMap<String, String>,
    pub tensors: BTreeMap<String, Tensor>,
}

/// Bytes per element of the dtypes the format defines (`None`: unknown, size not checked).
fn dtype_bits(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 8,
        "I16" | "U16" | "F16" | "BF16" => 16,
        "I32" | "U32" | "F32" => 32,
        "I64" | "U64" | "F64" | "C64" => 64,
        "F4" => 4,
        "F6_E2M3" | "F6_E3M2" => 6,
        _ => return None,
    })
}

/// The header length a file's first [`PREFIX_LEN`] bytes announce, checked against the
/// file's size and [`MAX_HEADER_LEN`].
pub fn header_len(prefix: &[u8], file_size: u64) -> Result<u64, HeaderError> {
    let bytes: [u8; 8] = prefix
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or(HeaderError::Short(file_size))?;
    let len = u64::from_le_bytes(bytes);
    if len > MAX_HEADER_LEN {
        return Err(HeaderError::TooLarge {
            len,
            max: MAX_HEADER_LEN,
        });
    }
    if PREFIX_LEN + len > file_size {
        return Err(HeaderError::BeyondFile {
            len,
            size: file_size,
        });
    }
    Ok(len)
}

/// Parse the header JSON of a file of `file_size` bytes. Every tensor must lie inside the
/// file and, for known dtypes, have exactly the bytes its shape needs.
pub fn parse(json: &[u8], file_size: u64) -> Result<Header, HeaderError> {
    let header_len = json.len() as u64;
    let data_start = PREFIX_LEN + header_len;
    let value: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(json).map_err(|e| HeaderError::Json(e.to_string()))?;
    let mut out = Header {
        header_len,
        metadata: BTreeMap::new(),
        tensors: BTreeMap::new(),
    };
    for (name, v) in value {
        let bad = |reason: &str| HeaderError::Tensor {
            name: name.clone(),
            reason: reason.to_owned(),
        };
        if name == METADATA {
            let map = v
                .as_object()
                .ok_or_else(|| bad("metadata is not an object"))?;
            for (k, v) in map {
                let v = v
                    .as_str()
                    .ok_or_else(|| bad("metadata values are strings"))?;
                out.metadata.insert(k.clone(), v.to_owned());
            }
            continue;
        }
        let dtype = v["dtype"]
            .as_str()
            .ok_or_else(|| bad("no dtype"))?
            .to_owned();
        if dtype.is_empty()
            || dtype.len() > MAX_DTYPE_LEN
            || !dtype
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'_')
        {
            return Err(bad("dtype is not a short name of letters, digits and '_'"));
        }
        let dims = v["shape"].as_array().ok_or_else(|| bad("no shape"))?;
        if dims.len() > MAX_DIMS {
            return Err(bad("shape has too many dimensions"));
        }
        let shape = dims
            .iter()
            .map(|d| d.as_u64().ok_or_else(|| bad("shape has a non-integer")))
            .collect::<Result<Vec<u64>, _>>()?;
        let offsets = v["data_offsets"]
            .as_array()
            .filter(|a| a.len() == 2)
            .ok_or_else(|| bad("data_offsets is not [begin, end]"))?;
        let (Some(a), Some(b)) = (offsets[0].as_u64(), offsets[1].as_u64()) else {
            return Err(bad("data_offsets are not integers"));
        };
        if a > b {
            return Err(bad("data_offsets end before they begin"));
        }
        let (start, end) = (
            data_start
                .checked_add(a)
                .ok_or_else(|| bad("offset overflows"))?,
            data_start
                .checked_add(b)
                .ok_or_else(|| bad("offset overflows"))?,
        );
        if end > file_size {
            return Err(bad("data lies beyond the end of the file"));
        }
        if let Some(bits) = dtype_bits(&dtype) {
            let elements = shape
                .iter()
                .try_fold(1u64, |n, &d| n.checked_mul(d))
                .ok_or_else(|| bad("shape overflows"))?;
            let need = elements
                .checked_mul(bits)
                .ok_or_else(|| bad("shape overflows"))?
                .div_ceil(8);
            if need != b - a {
                return Err(bad(&format!(
                    "shape and dtype need {need} bytes, data_offsets give {}",
                    b - a
                )));
            }
        }
        out.tensors.insert(
            name,
            Tensor {
                dtype,
                shape,
                start,
                end,
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn file(json: &str, data_len: u64) -> (Vec<u8>, u64) {
        let mut f = (json.len() as u64).to_le_bytes().to_vec();
        f.extend_from_slice(json.as_bytes());
        let size = f.len() as u64 + data_len;
        (f, size)
    }

    #[test]
    fn parses_a_real_layout() {
        let json = r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"b":{"dtype":"BF16","shape":[4],"data_offsets":[24,32]}}"#;
        let (f, size) = file(json, 32);
        let n = header_len(&f, size).expect("length");
        let h = parse(&f[8..8 + n as usize], size).expect("parse");
        let base = 8 + json.len() as u64;
        assert_eq!(h.metadata["format"], "pt");
        assert_eq!(h.tensors["a"].start, base);
        assert_eq!(h.tensors["a"].end, base + 24);
        assert_eq!(h.tensors["b"].shape, vec![4]);
        assert_eq!(
            (h.tensors["b"].start, h.tensors["b"].end),
            (base + 24, base + 32)
        );
    }

    #[test]
    fn refuses_what_lies() {
        let cases = [
            (
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#,
                8,
                "shape",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
                2,
                "beyond",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#,
                8,
                "end before",
            ),
            (r#"{"a":{"shape":[1],"data_offsets":[0,4]}}"#, 8, "dtype"),
            (r#"[1,2]"#, 8, "object"),
            (
                r#"{"a":{"dtype":"U8","shape":[18446744073709551615,2],"data_offsets":[0,4]}}"#,
                8,
                "overflows",
            ),
            (r#"{"__metadata__":{"x":1}}"#, 0, "strings"),
            (
                r#"{"a":{"dtype":"F\n32","shape":[1],"data_offsets":[0,4]}}"#,
                8,
                "dtype is not",
            ),
            (
                r#"{"a":{"dtype":"U8","shape":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1],"data_offsets":[0,1]}}"#,
                8,
                "dimensions",
            ),
        ];
        for (json, data, why) in cases {
            let (f, size) = file(json, data);
            let err = parse(&f[8..], size).expect_err(json);
            assert!(err.to_string().contains(why), "{json}: {err}");
        }
        assert_eq!(header_len(&[1, 0], 10), Err(HeaderError::Short(10)));
        assert!(matches!(
            header_len(&(MAX_HEADER_LEN + 1).to_le_bytes(), u64::MAX),
            Err(HeaderError::TooLarge { .. })
        ));
        assert!(matches!(
            header_len(&100u64.to_le_bytes(), 50),
            Err(HeaderError::BeyondFile { .. })
        ));
    }

    /// The sample model's safetensors file parses, and its tensors tile the data section.
    #[test]
    fn sample_file_parses() {
        let dir = tempfile::tempdir().expect("tempdir");
        crate::sample::write_sample(dir.path(), 3 << 20, 7).expect("sample");
        let f = std::fs::read(dir.path().join("model.safetensors")).expect("read");
        let size = f.len() as u64;
        let n = header_len(&f, size).expect("length");
        let h = parse(&f[8..8 + n as usize], size).expect("parse");
        let mut spans: Vec<(u64, u64)> = h.tensors.values().map(|t| (t.start, t.end)).collect();
        spans.sort_unstable();
        assert_eq!(spans[0].0, 8 + n);
        assert!(spans.windows(2).all(|w| w[0].1 == w[1].0));
        assert_eq!(spans.last().expect("tensors").1, size);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any bytes: no panic, and every tensor parsed lies inside the file.
        #[test]
        fn fuzz_header(json in ".{0,200}", size in 0u64..1 << 40, edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4)) {
            let mut bytes = r#"{"t":{"dtype":"F16","shape":[3],"data_offsets":[0,6]}}"#.as_bytes().to_vec();
            for (at, b) in edits {
                let i = at.index(bytes.len());
                bytes[i] = b;
            }
            for input in [json.as_bytes(), &bytes] {
                if let Ok(h) = parse(input, size) {
                    for t in h.tensors.values() {
                        prop_assert!(t.start <= t.end && t.end <= size);
                    }
                }
            }
        }
    }
}
