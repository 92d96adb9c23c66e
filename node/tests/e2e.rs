//! End-to-end tests over the real binary: node processes, RocksDB on disk, the CLI, curl.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;

use cairn_storage::{Backend, RocksBackend, RocksOptions};
use common::{NodeProc, assert_same_tree, manifest_of, ok};

/// Acceptance 2: a real model folder goes in with `cairn put` and comes back byte-identical
/// with `cairn get`; a range read matches `curl -r` and the source bytes.
#[test]
fn folder_round_trip_and_ranges() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("model");
    cairn_node::sample::write_sample(&src, 300 << 20, 42).expect("sample");
    let node = NodeProc::start(tmp.path(), "");
    let root = ok(node.cli(&["put", src.to_str().expect("utf-8")]));
    assert!(root.starts_with("bafy"), "root cid: {root}");

    let out = tmp.path().join("out");
    ok(node.cli(&["get", &root, "-o", out.to_str().expect("utf-8")]));
    assert_same_tree(&src, &out);

    // Range read: CLI, curl -r and the source agree.
    let weights = std::fs::read(src.join("model.safetensors")).expect("read");
    let (a, b) = (70_000_123u64, 70_500_000u64);
    let range_file = tmp.path().join("range.bin");
    ok(node.cli(&[
        "get",
        &root,
        "--file",
        "model.safetensors",
        "--range",
        &format!("{a}-{b}"),
        "-o",
        range_file.to_str().expect("utf-8"),
    ]));
    let via_cli = std::fs::read(&range_file).expect("read");
    let curl = Command::new("curl")
        .args(["-sS", "-f", "-r", &format!("{a}-{b}")])
        .arg(format!(
            "{}/v1/checkpoints/{root}/files/model.safetensors",
            node.url
        ))
        .output()
        .expect("curl");
    assert!(curl.status.success());
    assert_eq!(via_cli, &weights[a as usize..=b as usize]);
    assert_eq!(curl.stdout, via_cli);

    // HEAD: length and ETag = the file's BLAKE3.
    let head = Command::new("curl")
        .args(["-sS", "-I"])
        .arg(format!(
            "{}/v1/checkpoints/{root}/files/config.json",
            node.url
        ))
        .output()
        .expect("curl");
    let head = String::from_utf8_lossy(&head.stdout).to_lowercase();
    let config = std::fs::read(src.join("config.json")).expect("read");
    assert!(
        head.contains(&format!("content-length: {}", config.len())),
        "{head}"
    );
    assert!(
        head.contains(&blake3::hash(&config).to_hex().to_string()),
        "{head}"
    );

    // Listing, stat and delete.
    assert!(ok(node.cli(&["ls"])).contains(&root));
    let stat: serde_json::Value =
        serde_json::from_str(&ok(node.cli(&["stat", &root, "--verify"]))).expect("json");
    assert_eq!(stat["health"], "healthy");
    assert_eq!(stat["shards"]["missing"], 0);
    ok(node.cli(&["rm", &root]));
    let status = node.json("/v1/status");
    assert_eq!(status["used_bytes"], 0, "{status}");
    assert_eq!(status["checkpoints"], 0);
}

/// Acceptance 3: lose m shards of every stripe (deleted or flipped on disk): the get is still
/// byte-identical. Lose m+1 of one stripe: a clear error names it and no wrong byte is served.
#[test]
fn survives_m_lost_shards_and_refuses_m_plus_one() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("model");
    cairn_node::sample::write_sample(&src, 12 << 20, 7).expect("sample");
    let mut node = NodeProc::start(
        tmp.path(),
        "[erasure]\nk = 4\nm = 2\nstripe_size = 1048576\n",
    );
    let root = ok(node.cli(&["put", src.to_str().expect("utf-8")]));
    let manifest = manifest_of(&node, &root);
    node.stop();

    // Damage m = 2 shards of every stripe, at positions that move around so that data and
    // parity shards are both hit: one blob deleted, one with a byte flipped.
    {
        let backend =
            RocksBackend::open(&node.store_dir(), &RocksOptions::default()).expect("open store");
        let mut n = 0usize;
        for f in &manifest.files {
            for shards in &f.stripes {
                let first = n % 6;
                let second = (n + 1 + n % 5) % 6;
                let second = if second == first {
                    (first + 1) % 6
                } else {
                    second
                };
                backend
                    .delete_blob(&shards[first].to_bytes())
                    .expect("delete");
                let path = backend
                    .blob_file(&shards[second].to_bytes())
                    .expect("files mode");
                let mut bytes = std::fs::read(&path).expect("read shard file");
                let i = bytes.len() / 2;
                bytes[i] ^= 0xff;
                std::fs::write(&path, &bytes).expect("write shard file");
                n += 1;
            }
        }
        assert!(n > 12, "several stripes damaged: {n}");
    }
    let node = node.restart();
    let stat: serde_json::Value =
        serde_json::from_str(&ok(node.cli(&["stat", &root, "--verify"]))).expect("json");
    assert_eq!(stat["health"], "degraded", "{stat}");
    let out = tmp.path().join("out");
    ok(node.cli(&["get", &root, "-o", out.to_str().expect("utf-8")]));
    assert_same_tree(&src, &out);
    let status = node.json("/v1/status");
    assert!(
        status["corrupt_reads"].as_u64().expect("counter") > 0,
        "{status}"
    );

    // Now m + 1 = 3 shards of stripe 5 of the weights go missing.
    let mut node = node;
    node.stop();
    let weights = manifest.file("model.safetensors").expect("weights");
    {
        let backend =
            RocksBackend::open(&node.store_dir(), &RocksOptions::default()).expect("open store");
        for shard in &weights.stripes[5][..3] {
            backend.delete_blob(&shard.to_bytes()).expect("delete");
        }
    }
    let node = node.restart();
    let out2 = tmp.path().join("out2");
    let res = node.cli(&["get", &root, "-o", out2.to_str().expect("utf-8")]);
    assert!(!res.status.success());
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        err.contains("stripe 5") && err.contains("model.safetensors"),
        "{err}"
    );
    assert!(
        !out2.join("model.safetensors").exists(),
        "no unverified file is left in place"
    );
    // Files before it in order are complete and correct; nothing else was written.
    for (name, _) in [("config.json", 0), ("generation_config.json", 0)] {
        assert_eq!(
            std::fs::read(out2.join(name)).expect("read"),
            std::fs::read(src.join(name)).expect("read")
        );
    }
    let part = std::fs::read(out2.join("model.safetensors.cairn-part")).unwrap_or_default();
    let whole = std::fs::read(src.join("model.safetensors")).expect("read");
    assert!(part.len() < whole.len() && whole.starts_with(&part));
    // A range inside the lost stripe is refused with the stripe named; one outside it works.
    let curl = Command::new("curl")
        .args(["-sS", "-r", "5300000-5300010"])
        .arg(format!(
            "{}/v1/checkpoints/{root}/files/model.safetensors",
            node.url
        ))
        .output()
        .expect("curl");
    let body = String::from_utf8_lossy(&curl.stdout);
    assert!(
        body.contains("\"unrecoverable\"") && body.contains("stripe 5"),
        "{body}"
    );
    let curl = Command::new("curl")
        .args(["-sS", "-f", "-r", "100-200"])
        .arg(format!(
            "{}/v1/checkpoints/{root}/files/model.safetensors",
            node.url
        ))
        .output()
        .expect("curl");
    assert_eq!(curl.stdout, &whole[100..=200]);
}

/// Acceptance 4: kill -9 during a multi-GB put; the store reopens clean, lists nothing
/// partial, and the same data can then be put.
#[test]
fn kill9_during_put_leaves_a_clean_store() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut node = NodeProc::start(tmp.path(), "");
    const TOTAL: u64 = 2 << 30;
    let url = format!("{}/v1/checkpoints?path=big.bin", node.url);
    let bearer = format!("Authorization: Bearer {}", node.token());
    let upload = std::thread::spawn(move || {
        let mut child = Command::new("curl")
            .args([
                "-sS",
                "-H",
                &bearer,
                "-X",
                "POST",
                "-H",
                "content-type: application/octet-stream",
                "-T",
                "-",
                &url,
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("curl");
        let mut stdin = child.stdin.take().expect("stdin");
        let mut state = 99u64;
        let mut buf = vec![0u8; 1 << 20];
        let mut sent = 0u64;
        while sent < TOTAL {
            cairn_node::sample::fill_random(&mut state, &mut buf);
            if stdin.write_all(&buf).is_err() {
                break;
            }
            sent += buf.len() as u64;
        }
        drop(stdin);
        let _ = child.wait();
        sent
    });
    // Kill once shards are being written.
    node.wait_status(120, |s| s["used_bytes"].as_u64().unwrap_or(0) > 300 << 20);
    node.kill9();
    let sent = upload.join().expect("uploader");
    assert!(sent < TOTAL, "upload was cut short");

    let node = NodeProc::start(tmp.path(), "");
    let status = node.json("/v1/status");
    assert_eq!(status["checkpoints"], 0, "{status}");
    assert_eq!(status["used_bytes"], 0, "{status}");
    assert_eq!(status["shards"], 0, "{status}");
    let shard_files = walk_count(&node.store_dir().join("shards"));
    assert_eq!(shard_files, 0, "no stray shard files");

    // The same data, whole, now goes in.
    let file = tmp.path().join("big.bin");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file).expect("create"));
        let mut state = 99u64;
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..(TOTAL >> 20) {
            cairn_node::sample::fill_random(&mut state, &mut buf);
            f.write_all(&buf).expect("write");
        }
        f.flush().expect("flush");
    }
    let root = ok(node.cli(&["put", file.to_str().expect("utf-8")]));
    let list = ok(node.cli(&["ls"]));
    assert!(list.contains(&root));
    let stat: serde_json::Value =
        serde_json::from_str(&ok(node.cli(&["stat", &root]))).expect("json");
    assert_eq!(stat["health"], "healthy");
    assert_eq!(stat["size"], TOTAL);
}

fn walk_count(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        walk_count(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

fn curl_json(args: &[&str]) -> (u16, serde_json::Value) {
    let out = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').expect("status line");
    (
        code.trim().parse().expect("code"),
        serde_json::from_str(body).unwrap_or_default(),
    )
}

/// Acceptance 5: malformed and unknown CIDs, a truncated upload, a full store and a manifest
/// that does not decode each get their documented error, and nothing is lost or left over.
#[test]
fn bad_input_gets_documented_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let node = NodeProc::start(
        tmp.path(),
        "[storage]\ncapacity_bytes = 8388608\n[erasure]\nk = 4\nm = 2\nstripe_size = 1048576\n",
    );
    let u = &node.url;
    let bearer = format!("Authorization: Bearer {}", node.token());
    // A checkpoint that must survive everything below.
    let keep = tmp.path().join("keep.bin");
    std::fs::write(&keep, b"precious bytes").expect("write");
    let root = ok(node.cli(&["put", keep.to_str().expect("utf-8")]));

    let (code, v) = curl_json(&[&format!("{u}/v1/checkpoints/not-a-cid")]);
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (400, Some("malformed_cid")),
        "{v}"
    );
    let (code, v) = curl_json(&[&format!("{u}/v1/checkpoints/not-a-cid/files/x")]);
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (400, Some("malformed_cid"))
    );
    let unknown = cairn_erasure::manifest_cid(b"nobody stored this").to_string();
    let (code, v) = curl_json(&[&format!("{u}/v1/checkpoints/{unknown}")]);
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (code, v) = curl_json(&[&format!("{u}/v1/checkpoints/{root}/files/nope.bin")]);
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (404, Some("file_not_found"))
    );
    let (code, v) = curl_json(&[
        "-r",
        "999-",
        &format!("{u}/v1/checkpoints/{root}/files/keep.bin"),
    ]);
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (416, Some("range_not_satisfiable"))
    );
    let (code, v) = curl_json(&[
        "-H",
        &bearer,
        "-X",
        "POST",
        "--data-binary",
        "not cbor at all",
        &format!("{u}/v1/manifests"),
    ]);
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (400, Some("invalid_manifest")),
        "{v}"
    );
    let (code, v) = curl_json(&[
        "-H",
        &bearer,
        "-X",
        "POST",
        "-H",
        "content-type: application/x-tar",
        "--data-binary",
        "garbage that is not a tar archive at all, clearly",
        &format!("{u}/v1/checkpoints"),
    ]);
    assert_eq!(
        (code, v["error"]["code"].as_str().is_some()),
        (400, true),
        "{v}"
    );

    // A layout that would make the node allocate gigabytes per stripe is refused.
    let (code, v) = curl_json(&[
        "-H",
        &bearer,
        "-X",
        "POST",
        "--data-binary",
        "x",
        &format!("{u}/v1/checkpoints?path=x&k=1&m=63&stripe_size=1073741824"),
    ]);
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (400, Some("invalid_params")),
        "{v}"
    );

    // Store full: 8 MiB capacity, 20 MiB upload.
    let big = tmp.path().join("big.bin");
    let mut data = vec![0u8; 20 << 20];
    cairn_node::sample::fill_random(&mut 5, &mut data);
    std::fs::write(&big, &data).expect("write");
    let (code, v) = curl_json(&[
        "-H",
        &bearer,
        "-X",
        "POST",
        "--data-binary",
        &format!("@{}", big.display()),
        &format!("{u}/v1/checkpoints?path=big.bin"),
    ]);
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (507, Some("store_full")),
        "{v}"
    );

    // Truncated body: promise 4 MiB, send 1 MiB, hang up.
    let addr = u.strip_prefix("http://").expect("http url");
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(s, "POST /v1/checkpoints?path=cut.bin HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {}\r\ncontent-type: application/octet-stream\r\ncontent-length: 4194304\r\n\r\n", node.token()).expect("headers");
    s.write_all(&data[..1 << 20]).expect("body");
    s.shutdown(std::net::Shutdown::Write).expect("half close");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    if !answer.is_empty() {
        assert!(
            answer.contains("400") && answer.contains("upload_incomplete"),
            "{answer}"
        );
    }
    let status = node.wait_status(30, |s| s["active_puts"] == 0);
    // Only the first checkpoint remains, intact.
    assert_eq!(status["checkpoints"], 1, "{status}");
    let list = ok(node.cli(&["ls"]));
    assert!(list.contains(&root));
    let back = tmp.path().join("back.bin");
    ok(node.cli(&[
        "get",
        &root,
        "--file",
        "keep.bin",
        "-o",
        back.to_str().expect("utf-8"),
    ]));
    assert_eq!(std::fs::read(&back).expect("read"), b"precious bytes");
    let (code, v) = curl_json(&[&format!("{u}/v1/checkpoints/{root}/stat?verify=true")]);
    assert_eq!((code, v["health"].as_str()), (200, Some("healthy")));
    // Used bytes are exactly those of the kept checkpoint: nothing leaked from failed puts.
    ok(node.cli(&["rm", &root]));
    let status = node.json("/v1/status");
    assert_eq!(status["used_bytes"], 0, "{status}");
}

/// Writes need the node's token (401 with a JSON error without it), reads do not, and a
/// request naming a foreign Host is refused (403), on every route.
#[test]
fn writes_need_the_token_and_foreign_hosts_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let node = NodeProc::start(tmp.path(), "");
    let u = &node.url;
    let file = tmp.path().join("a.bin");
    std::fs::write(&file, b"some bytes").expect("write");
    let root = ok(node.cli(&["put", file.to_str().expect("utf-8")]));
    let data = format!("@{}", file.display());
    let writes: [(&str, String, &[&str]); 3] = [
        (
            "POST",
            format!("{u}/v1/checkpoints?path=b.bin"),
            &["--data-binary", &data],
        ),
        ("DELETE", format!("{u}/v1/checkpoints/{root}"), &[]),
        ("POST", format!("{u}/v1/manifests"), &["--data-binary", "x"]),
    ];
    for (method, url, extra) in &writes {
        for header in [None, Some("Authorization: Bearer not-the-token")] {
            let mut args = vec!["-X", method, url.as_str()];
            args.extend_from_slice(extra);
            if let Some(h) = header {
                args.extend(["-H", h]);
            }
            let (code, v) = curl_json(&args);
            assert_eq!(
                (code, v["error"]["code"].as_str()),
                (401, Some("unauthorized")),
                "{method} {url} with {header:?}: {v}"
            );
        }
    }
    // Nothing was written or removed.
    assert_eq!(node.json("/v1/status")["checkpoints"], 1);
    // Reads need no token.
    for path in [
        "/v1/status".to_owned(),
        "/v1/checkpoints".to_owned(),
        format!("/v1/checkpoints/{root}"),
        format!("/v1/checkpoints/{root}/files/a.bin"),
        format!("/v1/checkpoints/{root}/stat"),
        "/metrics".to_owned(),
    ] {
        let out = Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("{u}{path}"),
            ])
            .output()
            .expect("curl");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{path}");
    }
    // A page on another origin that resolves to this address (DNS rebinding) is refused,
    // on reads and writes alike; the node's own names are not.
    for (host, want) in [
        ("evil.example:7070", 403),
        ("localhost.evil.example", 403),
        ("localhost", 200),
        ("127.0.0.1", 200),
    ] {
        let (code, v) = curl_json(&["-H", &format!("Host: {host}"), &format!("{u}/v1/status")]);
        assert_eq!(code, want, "{host}: {v}");
        if want == 403 {
            assert_eq!(v["error"]["code"], "foreign_host", "{v}");
        }
    }
    let (code, _) = curl_json(&[
        "-H",
        "Host: evil.example",
        "-H",
        &format!("Authorization: Bearer {}", node.token()),
        "-X",
        "DELETE",
        &format!("{u}/v1/checkpoints/{root}"),
    ]);
    assert_eq!(code, 403);
    // With the token, writes work.
    let (code, v) = curl_json(&[
        "-H",
        &format!("Authorization: Bearer {}", node.token()),
        "-X",
        "DELETE",
        &format!("{u}/v1/checkpoints/{root}"),
    ]);
    assert_eq!(code, 200, "{v}");
}
