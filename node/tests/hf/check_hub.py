"""What huggingface_hub itself sees of a Cairn node's HF-compatible endpoint.

Run by node/tests/hf.rs with each venv's python (ops/hf-venvs.sh makes one per hub version):

    <venv>/bin/python node/tests/hf/check_hub.py online|offline

Environment (set by the test): HF_ENDPOINT (.../hf), HF_HUB_CACHE (one fresh dir per venv, the same
for both phases), HF_HUB_DISABLE_TELEMETRY=1, CAIRN_REPO (org/name), CAIRN_ROOT (the root CID),
CAIRN_MODEL_DIR (the folder that was put), CAIRN_WORK (scratch dir).

online: model_info (sha, siblings, by sha and by root CID), hf_hub_download (top level and nested),
EntryNotFound with its .no_exist marker, RevisionNotFound and RepositoryNotFound, snapshot_download
by name, by sha and to a local_dir, exact Content-Length on HEAD and no Xet header, the download
CLI, and a tensor read back with safetensors. Writes the commit sha to CAIRN_WORK/sha.
offline (the nodes are stopped): hf_hub_download by sha without opening a connection, and
snapshot_download under HF_HUB_OFFLINE=1 in a child process.

Prints one line and exits 0 when every check passed; otherwise names each failed check and the hub
version on stderr and exits 1.
"""

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import traceback
import urllib.error
import urllib.request

ENDPOINT = os.environ["HF_ENDPOINT"].rstrip("/")
CACHE = os.environ["HF_HUB_CACHE"]
REPO = os.environ["CAIRN_REPO"]
ROOT = os.environ["CAIRN_ROOT"]
MODEL_DIR = os.environ["CAIRN_MODEL_DIR"]
WORK = os.environ["CAIRN_WORK"]

import huggingface_hub  # noqa: E402  (after reading the environment, as a user's program would)
from huggingface_hub import (  # noqa: E402
    HfApi,
    get_hf_file_metadata,
    hf_hub_download,
    hf_hub_url,
    snapshot_download,
)
from packaging.version import Version  # noqa: E402  (a dependency of every hub version)

HUB = huggingface_hub.__version__
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
REPO_CACHE = os.path.join(CACHE, "models--" + REPO.replace("/", "--"))


def _error_class(name):
    """The error classes live in huggingface_hub.errors from 0.24 on, in .utils before (and after)."""
    for mod in ("huggingface_hub.errors", "huggingface_hub.utils"):
        try:
            m = __import__(mod, fromlist=[name])
        except ImportError:
            continue
        cls = getattr(m, name, None)
        if cls is not None:
            return cls
    return None


EntryNotFoundError = _error_class("EntryNotFoundError")
LocalEntryNotFoundError = _error_class("LocalEntryNotFoundError")
RemoteEntryNotFoundError = _error_class("RemoteEntryNotFoundError")  # hub >= 1.0 only
RevisionNotFoundError = _error_class("RevisionNotFoundError")
RepositoryNotFoundError = _error_class("RepositoryNotFoundError")

try:  # quiet: no progress bars in the test's output
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()
except ImportError:
    pass


class CheckFailed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise CheckFailed(what)


FAILED = []
PASSED = []


def step(name):
    """Runs a named check; a failure or an unexpected exception is recorded and the next one runs."""

    def run(fn):
        try:
            fn()
        except CheckFailed as e:
            FAILED.append(name)
            print(f"FAIL [huggingface_hub {HUB}] {name}: {e}", file=sys.stderr)
        except Exception:
            FAILED.append(name)
            print(
                f"FAIL [huggingface_hub {HUB}] {name}: unexpected exception\n{traceback.format_exc()}",
                file=sys.stderr,
            )
        else:
            PASSED.append(name)
        return fn

    return run


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def files_under(root, skip_top=()):
    """{relative posix path: absolute path} of every file under root (symlinks followed), less the
    top-level folders skip_top."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if os.path.samefile(dirpath, root):
            dirnames[:] = [d for d in dirnames if d not in skip_top]
        for f in filenames:
            full = os.path.join(dirpath, f)
            out[os.path.relpath(full, root).replace(os.sep, "/")] = full
    return out


SOURCE = files_under(MODEL_DIR)
# What the client keeps in a local_dir beside the files: .cache/huggingface/ (hub >= 0.23), or
# .huggingface/ (0.23 itself).
LOCAL_DIR_META = tuple(d for d in (".cache", ".huggingface") if not any(r.startswith(d + "/") for r in SOURCE))
SOURCE_SHA = {rel: sha256_file(p) for rel, p in SOURCE.items()}


def read(path):
    with open(path, "rb") as f:
        return f.read()


def same_files(folder, what, skip_top=()):
    """Every source file is in folder with the same sha256, and nothing else is."""
    check(os.path.isdir(folder), f"{what}: {folder} is not a folder")
    got = files_under(folder, skip_top)
    missing = sorted(set(SOURCE) - set(got))
    extra = sorted(set(got) - set(SOURCE))
    check(not missing, f"{what}: files missing from {folder}: {missing}")
    check(not extra, f"{what}: unexpected files in {folder}: {extra}")
    bad = sorted(rel for rel in SOURCE if sha256_file(got[rel]) != SOURCE_SHA[rel])
    check(not bad, f"{what}: files whose sha256 differs from the source: {bad}")


def same_path(a, b):
    return os.path.normcase(os.path.abspath(a)) == os.path.normcase(os.path.abspath(b))


def expect_error(fn, cls, what):
    check(cls is not None, f"{what}: this hub version has no such error class")
    try:
        fn()
    except Exception as e:  # noqa: BLE001
        check(
            isinstance(e, cls),
            f"{what}: expected {cls.__name__}, got {type(e).__name__}: {e}",
        )
        if LocalEntryNotFoundError is not None:
            check(
                not isinstance(e, LocalEntryNotFoundError),
                f"{what}: got {type(e).__name__} (the server was not reached or its answer was not "
                f"understood): {e}",
            )
        return e
    raise CheckFailed(f"{what}: expected {cls.__name__}, but the call succeeded")


class NoNetwork:
    """Refuses (and records) every outgoing connection while active."""

    def __init__(self):
        self.attempts = []

    def __enter__(self):
        self._connect = socket.socket.connect
        self._connect_ex = socket.socket.connect_ex
        attempts = self.attempts

        def refuse(sock, address, *a):
            attempts.append(address)
            raise ConnectionRefusedError(f"check_hub: no network in this check (to {address})")

        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        return self

    def __exit__(self, *exc):
        socket.socket.connect = self._connect
        socket.socket.connect_ex = self._connect_ex


def nested_file():
    nested = sorted(rel for rel in SOURCE if "/" in rel)
    return nested[0] if nested else None


def online():
    api = HfApi()
    state = {}

    @step("model_info(repo): sha is 40 lowercase hex and siblings are the files that were put")
    def _():
        info = api.model_info(REPO)
        check(
            isinstance(info.sha, str) and COMMIT_RE.match(info.sha),
            f"sha {info.sha!r} is not 40 lowercase hex",
        )
        state["sha"] = info.sha
        check(info.siblings is not None, "siblings is None")
        names = [s.rfilename for s in info.siblings]
        check(len(names) == len(set(names)), f"siblings has duplicates: {sorted(names)}")
        missing = sorted(set(SOURCE) - set(names))
        extra = sorted(set(names) - set(SOURCE))
        check(not missing and not extra, f"siblings differ from the source: missing {missing}, extra {extra}")

    if "sha" not in state:
        return  # nothing else can be checked without the commit id
    sha = state["sha"]
    with open(os.path.join(WORK, "sha"), "w") as f:
        f.write(sha)

    @step("model_info(repo, revision=sha) gives the same sha")
    def _():
        got = api.model_info(REPO, revision=sha).sha
        check(got == sha, f"got {got!r}, want {sha}")

    @step("model_info(repo, revision=<root CID>) gives the same sha")
    def _():
        got = api.model_info(REPO, revision=ROOT).sha
        check(got == sha, f"revision={ROOT}: got {got!r}, want {sha}")

    def download_one(rel):
        path = hf_hub_download(REPO, rel)
        want = os.path.join("snapshots", sha, *rel.split("/"))
        check(
            os.path.normpath(path).endswith(os.sep + want),
            f"hf_hub_download({rel!r}) returned {path}, not under snapshots/{sha}/",
        )
        check(read(path) == read(SOURCE[rel]), f"hf_hub_download({rel!r}): bytes differ from the source")

    @step("hf_hub_download(repo, 'config.json'): bytes and snapshots/<sha>/ path")
    def _():
        check("config.json" in SOURCE, "the source folder has no config.json")
        download_one("config.json")

    nested = nested_file()
    if nested is not None:

        @step(f"hf_hub_download(repo, {nested!r}) (a file in a subfolder)")
        def _():
            download_one(nested)

    @step("hf_hub_download of a missing file: EntryNotFoundError and a .no_exist/<sha>/ marker")
    def _():
        missing = "no-such-file.json"
        check(missing not in SOURCE, "pick another missing name")
        e = expect_error(lambda: hf_hub_download(REPO, missing), EntryNotFoundError, "missing file")
        if RemoteEntryNotFoundError is not None:
            check(isinstance(e, RemoteEntryNotFoundError), f"missing file: got {type(e).__name__}: {e}")
        marker = os.path.join(REPO_CACHE, ".no_exist", sha, missing)
        check(
            os.path.isfile(marker),
            f"{marker} was not written (does the 404 EntryNotFound carry X-Repo-Commit?)",
        )

    @step("a bad revision: RevisionNotFoundError (model_info and hf_hub_download)")
    def _():
        expect_error(lambda: api.model_info(REPO, revision="nope"), RevisionNotFoundError, "model_info(revision='nope')")
        expect_error(
            lambda: hf_hub_download(REPO, "config.json", revision="nope"),
            RevisionNotFoundError,
            "hf_hub_download(revision='nope')",
        )

    @step("an unknown repo: RepositoryNotFoundError (model_info and hf_hub_download)")
    def _():
        other = "cairn-no-such-org/no-such-model"
        expect_error(lambda: api.model_info(other), RepositoryNotFoundError, f"model_info({other!r})")
        expect_error(
            lambda: hf_hub_download(other, "config.json"),
            RepositoryNotFoundError,
            f"hf_hub_download({other!r})",
        )

    snapshot = os.path.join(REPO_CACHE, "snapshots", sha)

    @step("snapshot_download(repo): every file, in snapshots/<sha>")
    def _():
        path = snapshot_download(REPO)
        check(same_path(path, snapshot), f"returned {path}, want {snapshot}")
        same_files(path, "snapshot_download(repo)")
        ref = os.path.join(REPO_CACHE, "refs", "main")
        check(os.path.isfile(ref) and read(ref).decode().strip() == sha, f"{ref} does not hold {sha}")

    @step("snapshot_download(repo, revision=sha): every file, in snapshots/<sha>")
    def _():
        path = snapshot_download(REPO, revision=sha)
        check(same_path(path, snapshot), f"returned {path}, want {snapshot}")
        same_files(path, "snapshot_download(repo, revision=sha)")

    @step("snapshot_download(repo, local_dir=...): every file, then again (re-verified)")
    def _():
        # A cache of its own: with the blobs already in HF_HUB_CACHE the client would copy them
        # from there instead of downloading into the local_dir.
        out = os.path.join(WORK, "local-dir")
        cache = os.path.join(WORK, "local-dir-cache")
        for _ in range(2):  # the second call checks the files it finds against the server's answers
            path = snapshot_download(REPO, local_dir=out, cache_dir=cache)
            check(same_path(path, out), f"returned {path}, want {out}")
            same_files(out, "snapshot_download(local_dir)", skip_top=LOCAL_DIR_META)

    @step("HEAD: exact Content-Length, X-Repo-Commit, no Xet header")
    def _():
        rel = "model.safetensors"
        check(rel in SOURCE, "the source folder has no model.safetensors")
        size = os.path.getsize(SOURCE[rel])
        meta = get_hf_file_metadata(hf_hub_url(REPO, rel))
        check(meta.size == size, f"get_hf_file_metadata(...).size = {meta.size}, want {size}")
        check(meta.commit_hash == sha, f"get_hf_file_metadata(...).commit_hash = {meta.commit_hash}, want {sha}")
        check(bool(meta.etag), f"get_hf_file_metadata(...).etag is {meta.etag!r}")
        xet = getattr(meta, "xet_file_data", None)
        check(xet is None, f"get_hf_file_metadata(...).xet_file_data = {xet!r}: the server triggers Xet")

        url = f"{ENDPOINT}/{REPO}/resolve/main/{rel}"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        req = urllib.request.Request(url, method="HEAD")
        with opener.open(req, timeout=10) as resp:
            status = resp.status
            headers = {k.lower(): v for k, v in resp.headers.items()}
        check(status == 200, f"HEAD {url}: status {status}, want 200 (no redirect on HEAD)")
        check(
            headers.get("content-length") == str(size),
            f"HEAD {url}: Content-Length {headers.get('content-length')!r}, want {size}",
        )
        xet_headers = sorted(k for k in headers if k.startswith("x-xet"))
        check(not xet_headers, f"HEAD {url}: Xet headers {xet_headers}")
        check("xet" not in headers.get("link", "").lower(), f"HEAD {url}: Link {headers.get('link')!r} names Xet")
        check(
            headers.get("x-repo-commit") == sha,
            f"HEAD {url}: X-Repo-Commit {headers.get('x-repo-commit')!r}, want {sha}",
        )

    @step("GET with a Range header: 206, Content-Range and those bytes")
    def _():
        rel = "model.safetensors"
        data = read(SOURCE[rel])
        a, b = 1000, 1999
        url = f"{ENDPOINT}/{REPO}/resolve/{sha}/{rel}"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        req = urllib.request.Request(url, headers={"Range": f"bytes={a}-{b}"})
        with opener.open(req, timeout=10) as resp:
            status, headers, body = resp.status, resp.headers, resp.read()
        check(status == 206, f"GET {url} Range bytes={a}-{b}: status {status}, want 206")
        want = f"bytes {a}-{b}/{len(data)}"
        check(headers.get("Content-Range") == want, f"Content-Range {headers.get('Content-Range')!r}, want {want!r}")
        check(body == data[a : b + 1], "the bytes differ from the source's")

    if Version(HUB) < Version("1.18"):

        @step("hf_hub_download resumes a partial blob (.incomplete) with a Range request")
        def _():
            # Before 1.18 the client appends to blobs/<etag>.incomplete from where it stopped.
            rel = "model.safetensors"
            data = read(SOURCE[rel])
            meta = get_hf_file_metadata(hf_hub_url(REPO, rel))
            cache = os.path.join(WORK, "resume-cache")
            blobs = os.path.join(cache, "models--" + REPO.replace("/", "--"), "blobs")
            os.makedirs(blobs, exist_ok=True)
            with open(os.path.join(blobs, meta.etag + ".incomplete"), "wb") as f:
                f.write(data[: len(data) // 3])
            path = hf_hub_download(REPO, rel, cache_dir=cache)
            check(os.path.getsize(path) == len(data), f"resumed file is {os.path.getsize(path)} bytes, want {len(data)}")
            check(read(path) == data, "the resumed file differs from the source")

    @step("the download CLI (hf download / huggingface-cli download) to a --local-dir")
    def _():
        bindir = os.path.dirname(sys.executable)
        new_cli = Version(HUB) >= Version("0.34")
        exe = os.path.join(bindir, "hf" if new_cli else "huggingface-cli")
        check(os.path.isfile(exe), f"{exe} does not exist")
        out = os.path.join(WORK, "cli-dir")
        # A cache of its own, as above, so that it downloads (hub >= 1.x refuses --cache-dir with
        # --local-dir); no progress bars, and no look-up of newer versions on PyPI (hub >= 1.x).
        env = dict(
            os.environ,
            HF_HUB_CACHE=os.path.join(WORK, "cli-cache"),
            HF_HUB_DISABLE_PROGRESS_BARS="1",
            HF_HUB_DISABLE_UPDATE_CHECK="1",
            NO_COLOR="1",
        )
        p = subprocess.run(
            [exe, "download", REPO, "--local-dir", out],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        check(
            p.returncode == 0,
            f"{os.path.basename(exe)} download exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}",
        )
        same_files(out, f"{os.path.basename(exe)} download --local-dir", skip_top=LOCAL_DIR_META)

    @step("safetensors reads a tensor from the downloaded model.safetensors")
    def _():
        import numpy as np
        from safetensors import safe_open

        path = os.path.join(snapshot, "model.safetensors")
        with safe_open(path, framework="numpy") as got, safe_open(SOURCE["model.safetensors"], framework="numpy") as src:
            keys = sorted(got.keys())
            check(keys == sorted(src.keys()), "tensor names differ from the source")
            check(keys, "no tensors")
            a, b = got.get_tensor(keys[0]), src.get_tensor(keys[0])
            check(
                a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b),
                f"tensor {keys[0]} differs from the source",
            )


OFFLINE_CHILD = r"""
import os, socket, sys
def refuse(sock, address, *a):
    raise ConnectionRefusedError(f"check_hub: HF_HUB_OFFLINE=1 yet a connection to {address}")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
from huggingface_hub import snapshot_download
print(snapshot_download(os.environ["CAIRN_REPO"]))
"""


def offline():
    ref = os.path.join(REPO_CACHE, "refs", "main")
    state = {}

    @step("the online phase left the commit in the cache")
    def _():
        check(os.path.isfile(ref), f"{ref} does not exist (did the online phase run with this HF_HUB_CACHE?)")
        sha = read(ref).decode().strip()
        check(COMMIT_RE.match(sha), f"{ref} holds {sha!r}")
        written = os.path.join(WORK, "sha")
        if os.path.isfile(written):
            check(read(written).decode().strip() == sha, f"{written} and {ref} disagree")
        state["sha"] = sha

    if "sha" not in state:
        return
    sha = state["sha"]
    snapshot = os.path.join(REPO_CACHE, "snapshots", sha)

    @step("hf_hub_download(repo, 'config.json', revision=sha) from the cache without any connection")
    def _():
        with NoNetwork() as guard:
            path = hf_hub_download(REPO, "config.json", revision=sha)
        check(not guard.attempts, f"connections attempted: {guard.attempts}")
        check(same_path(path, os.path.join(snapshot, "config.json")), f"returned {path}")
        check(read(path) == read(SOURCE["config.json"]), "bytes differ from the source")

    @step("HF_HUB_OFFLINE=1 snapshot_download(repo) returns the cached snapshot")
    def _():
        env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_DISABLE_PROGRESS_BARS="1")
        p = subprocess.run(
            [sys.executable, "-c", OFFLINE_CHILD], env=env, capture_output=True, text=True, timeout=300
        )
        check(p.returncode == 0, f"child exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
        lines = p.stdout.strip().splitlines()
        check(lines, f"child printed nothing; stderr:\n{p.stderr}")
        path = lines[-1]
        check(same_path(path, snapshot), f"returned {path}, want {snapshot}")
        same_files(path, "offline snapshot_download")


def main():
    if len(sys.argv) != 2 or sys.argv[1] not in ("online", "offline"):
        sys.exit("usage: check_hub.py online|offline")
    phase = sys.argv[1]
    os.makedirs(WORK, exist_ok=True)
    online() if phase == "online" else offline()
    if FAILED:
        print(
            f"huggingface_hub {HUB} {phase}: these checks failed ({len(FAILED)} of "
            f"{len(FAILED) + len(PASSED)}): {json.dumps(FAILED)}",
            file=sys.stderr,
        )
        sys.exit(1)
    check_count = len(PASSED)
    if check_count == 0:
        print(f"huggingface_hub {HUB} {phase}: no check ran", file=sys.stderr)
        sys.exit(1)
    print(f"huggingface_hub {HUB} {phase}: all {check_count} checks ok")


if __name__ == "__main__":
    main()
