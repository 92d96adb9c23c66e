//! Tensors on demand over a real cluster: one tensor of a real safetensors file by name,
//! byte-identical to the original, and only the shard pieces it covers cross the wire.

mod common;

use cairn_erasure::Layout;
use common::ok;

const K: u8 = 3;
const M: u8 = 2;
/// Small stripes: the tensor spans several stripes, and every shard of them.
const STRIPE: u64 = 1 << 20;

#[test]
fn one_tensor_by_name_moves_only_its_pieces() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("model");
    // Two tensors: 16 MiB, then 4 MiB.
    cairn_node::sample::write_sample(&src, 20 << 20, 11).expect("sample");
    let erasure = format!("[erasure]\nk = {K}\nm = {M}\nstripe_size = {STRIPE}\n");
    let nodes = common::cluster(tmp.path(), 5, &erasure, |_| Vec::new());
    let gw = &nodes[0];
    let root = ok(gw.cli(&["put", src.to_str().expect("utf-8")]));

    // The listing reads the header once; it names the tensors where the file has them.
    let listing = gw.json(&format!(
        "/v1/checkpoints/{root}/files/model.safetensors/tensors"
    ));
    let original = std::fs::read(src.join("model.safetensors")).expect("read");
    let name = "model.layers.1.mlp.weight";
    let t = listing["tensors"]
        .as_array()
        .expect("tensors")
        .iter()
        .find(|t| t["name"] == name)
        .expect("the tensor is listed")
        .clone();
    let (start, end) = common::tensor_span(gw, &root, "model.safetensors", name);
    assert_eq!(t["shape"], serde_json::json!([1024, 1024]));
    assert_eq!(t["dtype"], "F32");
    let n = u64::from_le_bytes(original[..8].try_into().expect("8 bytes"));
    let header: serde_json::Value =
        serde_json::from_slice(&original[8..8 + n as usize]).expect("header json");
    let offsets = &header[name]["data_offsets"];
    assert_eq!(start, 8 + n + offsets[0].as_u64().expect("offset"));
    assert_eq!(end, 8 + n + offsets[1].as_u64().expect("offset"));

    let before = common::net_bytes_in(gw);
    let out = tmp.path().join("tensor.bin");
    ok(gw.cli(&[
        "get",
        &root,
        "--tensor",
        name,
        "-o",
        out.to_str().expect("utf-8"),
    ]));
    let moved = common::net_bytes_in(gw) - before;
    let got = std::fs::read(&out).expect("read tensor");
    assert!(
        got == original[start as usize..end as usize],
        "tensor bytes differ"
    );

    // Bytes on the wire: at most 1.1x the tensor plus one verification group per shard.
    let size = original.len() as u64;
    let layout = Layout::new(K, M, STRIPE).expect("layout");
    common::assert_tensor_bytes_moved(&layout, size, (start, end), moved);
    // The whole file is 5x the tensor: a read that fetched more than its pieces shows.
    assert!(moved < size / 2);

    // Several tensors into a folder; a missing one is a clear error.
    let dir = tmp.path().join("tensors");
    ok(gw.cli(&[
        "get",
        &root,
        "--tensor",
        name,
        "--tensor",
        "model.layers.0.mlp.weight",
        "-o",
        dir.to_str().expect("utf-8"),
    ]));
    assert_eq!(std::fs::read(dir.join(name)).expect("read"), got);
    let missing = gw.cli(&["get", &root, "--tensor", "nope", "-o", "/dev/null"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("has a tensor \"nope\""));
    // Not a safetensors file: 422 with the reason.
    let not = gw.json(&format!("/v1/checkpoints/{root}/files/config.json/tensors"));
    assert_eq!(not["error"]["code"], "not_safetensors", "{not}");
}
