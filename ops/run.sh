#!/usr/bin/env bash
# The main job on a local default: install what is needed, build, start a node, put a sample
# model checkpoint, get it back verified, print the root CID and throughput.
set -euo pipefail
cd "$(dirname "$0")/.."
./ops/install.sh
cargo build --release -p cairn-node --bin cairn
exec ./target/release/cairn demo "$@"
