#!/usr/bin/env bash
# The main job on a local default: install what is needed, build, start an 8-node devnet, put a
# sample model checkpoint through one node, get it back verified through another, print the root
# CID and throughput, stop the devnet.
set -euo pipefail
cd "$(dirname "$0")/.."
./ops/install.sh
cargo build --release -p cairn-node --bin cairn
exec ./target/release/cairn demo "$@"
