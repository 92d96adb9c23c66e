#!/usr/bin/env bash
# Compile the contract with the pinned solc-js and write proofs/artifacts/. With --check,
# fail if the committed artifacts differ from a fresh compile (CI runs that).
set -euo pipefail
cd "$(dirname "$0")/.."
./ops/install.sh
node proofs/contracts/compile.js "$@"
