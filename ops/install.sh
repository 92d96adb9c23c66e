#!/usr/bin/env bash
# Install what building and testing Cairn needs on a fresh Debian machine:
# libclang (bindgen, for RocksDB's bindings), curl (used by the end-to-end tests) and
# Prometheus with promtool (the metrics tests run a real Prometheus and check the alert rules),
# and, from the npm registry (versions pinned in proofs/package-lock.json), the Solidity
# compiler solc-js and the local chain anvil, under proofs/node_modules. Python's venv module
# too: ops/test.sh makes the HF endpoint's test environments with it (ops/hf-venvs.sh).
set -euo pipefail

need=()
dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v g++ >/dev/null 2>&1 || need+=(g++)
{ command -v prometheus && command -v promtool; } >/dev/null 2>&1 || need+=(prometheus)
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3 python3-venv)

if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
here="$(cd "$(dirname "$0")/.." && pwd)"
if ! (cd "$here/proofs" && npm ls --depth=0 >/dev/null 2>&1); then
  echo "installing solc-js and anvil (npm ci in proofs/)" >&2
  (cd "$here/proofs" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
command -v cargo >/dev/null 2>&1 || { echo "cargo (Rust toolchain) is required" >&2; exit 1; }
