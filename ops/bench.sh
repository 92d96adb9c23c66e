#!/usr/bin/env bash
# Benchmarks, in one run on this machine: raw coding and hashing against the put and get
# pipelines (ratios; stores on disk, then in memory), then the node's peak RSS during a
# 4 GiB put and get, then the network: raw quinn against libp2p streams and a Cairn get
# from an 8-node devnet (ratios), and the gateway's peak RSS during a 4 GiB get, puts with one
# node hung or killed against a healthy put
# (CAIRN_BENCH_RSS_MIB, 0 skips); a year of churn over 10,000 simulated nodes with the
# node's own repair decisions (durability as nines, repair traffic); the proof tree's build
# speed against plain hashing, and the gas of proofs on anvil.
# CAIRN_BENCH_GIB sets the RSS run's size (default 4).
set -euo pipefail
cd "$(dirname "$0")/.."
./ops/install.sh
cargo build --release -p cairn-node --bin cairn
# The pipeline bench twice: stores on the disk, then on a memory filesystem where there is
# one (the put's own speed, with no device under it setting the pace).
cargo bench -p cairn-node --bench pipeline
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
  echo "--- again, stores on /dev/shm (memory):"
  CAIRN_BENCH_DIR=/dev/shm cargo bench -p cairn-node --bench pipeline
fi
cargo bench -p cairn-node --bench cluster
cargo bench -p cairn-node --bench put_faults
cargo bench -p cairn-node --bench durability
cargo bench -p cairn-proofs --bench tree
cargo bench -p cairn-node --bench gas

gib=${CAIRN_BENCH_GIB:-4}
work=$(mktemp -d)
trap 'kill $node_pid 2>/dev/null || true; rm -rf "$work"' EXIT
cairn=./target/release/cairn
printf '[node]\ndata_dir = "%s/node"\nhttp_listen = "127.0.0.1:0"\n[network]\nlisten = "/ip4/127.0.0.1/udp/0/quic-v1"\n' "$work" > "$work/node.toml"
$cairn node run --config "$work/node.toml" > "$work/node.out" 2> "$work/node.log" &
node_pid=$!
until grep -q 'listening on' "$work/node.out"; do sleep 0.1; done
url=$(sed -n 's/^cairn node listening on //p' "$work/node.out")
head -c $((gib << 30)) /dev/urandom > "$work/big.bin"
start=$(date +%s.%N)
root=$($cairn --quiet --node "$url" put "$work/big.bin")
mid=$(date +%s.%N)
$cairn --quiet --node "$url" get "$root" --file big.bin -o /dev/null
end=$(date +%s.%N)
hwm=$(awk '/VmHWM/ {print $2}' /proc/$node_pid/status)
echo "node, ${gib} GiB file over HTTP on loopback:"
awk -v s="$start" -v m="$mid" -v e="$end" -v g="$gib" \
  'BEGIN { printf "  put %.2f GiB/s, get %.2f GiB/s\n", g/(m-s), g/(e-m) }'
echo "  node peak RSS (VmHWM): $((hwm / 1024)) MiB (target <= 256 MiB)"
