//! The HF-compatible endpoint against the real `huggingface_hub` from PyPI, in several
//! versions (one virtual env each, made by `ops/hf-venvs.sh`): a devnet holds a real model
//! folder put with `--name`; each client version downloads it through `HF_ENDPOINT` (the
//! checks are in `hf/check_hub.py`), then again from its cache after the nodes stopped.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{STDERR_TO, ok};

const REPO: &str = "cairn-test/all-minilm-l6-v2";
const K: u8 = 3;
const M: u8 = 2;
const STRIPE: u64 = 4 << 20;

fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Where `ops/hf-venvs.sh` put the venvs and the model folder.
fn py_dir() -> PathBuf {
    std::env::var_os("CAIRN_PY_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_dir().join(".cairn/py"))
}

/// The hub versions `ops/hf-venvs.sh` installs (its `HUB_VERSIONS` line).
fn hub_versions() -> Vec<String> {
    let script = std::fs::read_to_string(repo_dir().join("ops/hf-venvs.sh")).expect("script");
    let line = script
        .lines()
        .find_map(|l| l.trim().strip_prefix("HUB_VERSIONS="))
        .expect("ops/hf-venvs.sh sets HUB_VERSIONS");
    line.trim_matches('"')
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

fn run_check(python: &Path, phase: &str, env: &[(&str, String)]) {
    let out = Command::new(python)
        .arg(repo_dir().join("node/tests/hf/check_hub.py"))
        .arg(phase)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("run check_hub.py");
    eprint!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "{} {phase} failed:\n{}\n{}",
        python.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn huggingface_hub_downloads_from_cairn() {
    let versions = hub_versions();
    let majors: std::collections::BTreeSet<&str> = versions
        .iter()
        .map(|v| v.split('.').next().expect("major"))
        .collect();
    assert!(
        versions.len() >= 3 && majors.contains("0") && majors.contains("1"),
        "an 0.x, a 1.x and the latest hub: {versions:?}"
    );
    let py = py_dir();
    let model = py.join("model");
    assert!(
        model.join("model.safetensors").is_file(),
        "{} has no model folder: run ./ops/install.sh",
        model.display()
    );
    let pythons: Vec<(String, PathBuf)> = versions
        .iter()
        .map(|v| {
            let p = py.join(format!("hub-{v}/bin/python"));
            assert!(
                p.exists(),
                "{} is missing: run ./ops/install.sh",
                p.display()
            );
            (v.clone(), p)
        })
        .collect();

    let tmp = tempfile::tempdir().expect("tempdir");
    let log = tmp.path().join("gateway.log");
    let log_s: &'static str = Box::leak(log.display().to_string().into_boxed_str());
    let erasure = format!("[erasure]\nk = {K}\nm = {M}\nstripe_size = {STRIPE}\n");
    let mut nodes = common::cluster(tmp.path(), 5, &erasure, |i| {
        if i == 0 {
            vec![
                ("RUST_LOG", "warn,cairn_node::api=debug"),
                (STDERR_TO, log_s),
            ]
        } else {
            Vec::new()
        }
    });
    let gw = &nodes[0];
    let root = ok(gw.cli(&["put", model.to_str().expect("utf-8"), "--name", REPO]));
    let endpoint = format!("{}/hf", gw.url);

    // HEAD: exact length, the commit, no Xet header (curl, beside the clients' own checks).
    let size = std::fs::metadata(model.join("model.safetensors"))
        .expect("stat")
        .len();
    let head = Command::new("curl")
        .args(["-sS", "-I"])
        .arg(format!("{endpoint}/{REPO}/resolve/main/model.safetensors"))
        .output()
        .expect("curl");
    let head = String::from_utf8_lossy(&head.stdout).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains(&format!("content-length: {size}\r\n")),
        "{head}"
    );
    assert!(head.contains("x-repo-commit: "), "{head}");
    assert!(!head.contains("x-xet"), "{head}");

    // A tensor read by name equals what safetensors itself reads from the original, and
    // moves at most 1.1x its bytes plus one verification group per shard it touches.
    let tensor = tmp.path().join("tensor.bin");
    let name = "embeddings.word_embeddings.weight";
    let (start, end) = common::tensor_span(gw, &root, "model.safetensors", name);
    let before = common::net_bytes_in(gw);
    ok(gw.cli(&[
        "get",
        &root,
        "--tensor",
        name,
        "-o",
        tensor.to_str().expect("utf-8"),
    ]));
    let (_, latest) = pythons.last().expect("a venv");
    let same = Command::new(latest)
        .args([
            "-c",
            "import sys; from safetensors import safe_open\n\
             with safe_open(sys.argv[1], framework='numpy') as f: t = f.get_tensor(sys.argv[2])\n\
             got = open(sys.argv[3], 'rb').read()\n\
             assert got == t.tobytes(), (len(got), t.nbytes)\n\
             print(t.dtype, t.shape)",
        ])
        .arg(model.join("model.safetensors"))
        .arg(name)
        .arg(&tensor)
        .output()
        .expect("python");
    assert!(
        same.status.success(),
        "tensor differs from safetensors' reading: {}",
        String::from_utf8_lossy(&same.stderr)
    );
    let moved = common::net_bytes_in(gw) - before;
    let layout = cairn_erasure::Layout::new(K, M, STRIPE).expect("layout");
    common::assert_tensor_bytes_moved(&layout, size, (start, end), moved);

    // `cairn tag` points the name's main at another root; the old commit id still resolves.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).expect("mkdir");
    std::fs::write(other.join("config.json"), b"{}").expect("write");
    let second = ok(gw.cli(&["put", other.to_str().expect("utf-8")]));
    let info = |rev: &str| gw.json(&format!("/hf/api/models/{REPO}/revision/{rev}"));
    let first_sha = info("main")["sha"].as_str().expect("sha").to_string();
    ok(gw.cli(&["tag", REPO, &second]));
    let moved_sha = info("main")["sha"].as_str().expect("sha").to_string();
    assert_ne!(moved_sha, first_sha, "main did not move with the tag");
    assert_eq!(info(&first_sha)["sha"], first_sha.as_str());
    assert_eq!(
        info(&second)["sha"].as_str(),
        Some(moved_sha.as_str()),
        "the root CID as a revision names the same commit"
    );
    ok(gw.cli(&["tag", REPO, &root]));
    assert_eq!(info("main")["sha"], first_sha.as_str());

    let env_of = |v: &str| -> Vec<(&'static str, String)> {
        let base = tmp.path().join(format!("hub-{v}"));
        vec![
            ("HF_ENDPOINT", endpoint.clone()),
            ("HF_HOME", base.join("home").display().to_string()),
            ("HF_HUB_CACHE", base.join("cache").display().to_string()),
            ("HF_HUB_DISABLE_TELEMETRY", "1".into()),
            ("CAIRN_REPO", REPO.into()),
            ("CAIRN_ROOT", root.clone()),
            ("CAIRN_MODEL_DIR", model.display().to_string()),
            ("CAIRN_WORK", base.join("work").display().to_string()),
        ]
    };
    for (v, python) in &pythons {
        std::fs::create_dir_all(tmp.path().join(format!("hub-{v}/work"))).expect("work dir");
        run_check(python, "online", &env_of(v));
    }
    for n in &mut nodes {
        n.stop();
    }
    for (v, python) in &pythons {
        run_check(python, "offline", &env_of(v));
    }

    // The gateway logged every request; none asked for a Xet token.
    let text = std::fs::read_to_string(&log).expect("gateway log");
    let requests: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("http request"))
        .collect();
    assert!(
        requests.iter().any(|l| l.contains("/resolve/")),
        "the gateway's log shows no file request: the log check would see nothing"
    );
    assert!(
        !requests.iter().any(|l| l.contains("xet-read-token")),
        "a client asked for a Xet token"
    );
}
