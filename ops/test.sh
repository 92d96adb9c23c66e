#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit/property/integration/end-to-end tests.
# Everything builds with the release profile so RocksDB's C++ compiles once.
set -euo pipefail
cd "$(dirname "$0")/.."
./ops/install.sh
cargo fmt --all -- --check
cargo clippy --release --workspace --all-targets -- -D warnings
cargo test --release --workspace
