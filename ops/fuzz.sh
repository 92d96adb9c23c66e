#!/usr/bin/env bash
# Fuzz, for minutes each, every decoder fed by peers or clients: CIDs, outboards and manifests
# (erasure/tests/fuzz.rs), proof blobs (proofs/tests/fuzz.rs), wire frames
# (node/src/net/wire.rs), tar uploads (node/tests/fuzz.rs) and HTTP Range headers (node's API).
# Each target is a property test named `fuzz_*`, fed random input and valid encodings with
# bytes overwritten, inserted and cut: no panic, nothing beyond the declared limits, nothing
# accepted that is not what it claims to be.
#
# CI runs the same tests at their small default case counts (`cargo test` in ops/test.sh, a few
# seconds in all). This script finds every `fuzz_` test of the workspace and runs each on its
# own with PROPTEST_CASES set:
#
#   CAIRN_FUZZ_CASES   cases for every target (default: per target below, about 2 minutes
#                      each on 2 cores, about 40 minutes in all)
#   CAIRN_FUZZ_FILTER  only the targets whose name contains this
#
# It fails if any target fails; a failing target prints its minimal failing input (and proptest
# saves its seed next to the test, replayed first by later runs).
set -euo pipefail
cd "$(dirname "$0")/.."

# Default cases per target: about 2 minutes each on 2 cores (release build).
declare -A default_cases=(
  [fuzz_cid_valid_round_trip]=30000000
  [fuzz_cid_text_random]=3000000
  [fuzz_cid_text_mutated]=9000000
  [fuzz_cid_bytes]=7500000
  [fuzz_outboard_random]=2400000
  [fuzz_outboard_mutated]=8000000
  [fuzz_manifest_random]=1300000
  [fuzz_manifest_mutated]=1100000
  [fuzz_manifest_over_the_limit_is_refused]=1
  [fuzz_proof_blob_random]=2100000
  [fuzz_proof_blob_mutated]=5500000
  [fuzz_wire_random_bytes_never_panic]=40000000
  [fuzz_wire_mutated_frames_never_panic_or_exceed_limits]=40000000
  [fuzz_wire_truncated_requests_are_errors]=40000000
  [fuzz_wire_mutated_shard_headers]=40000000
  [fuzz_tar_random]=500000
  [fuzz_tar_mutated]=70000
  [fuzz_range_header]=2200000
)
# A target not in the table yet.
fallback_cases=1000000

# Build once, then list the tests (`path::to::name: test` lines of every test binary).
cargo test --release --workspace --tests --no-run
targets=$(cargo test --release --workspace --tests -- --list 2>/dev/null |
  sed -n 's/: test$//p' | grep -E '(^|::)fuzz_' | sort -u)
if [[ -z $targets ]]; then
  echo "no fuzz_ tests found" >&2
  exit 1
fi
for name in "${!default_cases[@]}"; do
  grep -Eq "(^|::)$name\$" <<<"$targets" || echo "note: no test named $name (in the table only)"
done

failed=()
ran=0
total_start=$SECONDS
for target in $targets; do
  if [[ -n ${CAIRN_FUZZ_FILTER:-} && $target != *"$CAIRN_FUZZ_FILTER"* ]]; then
    continue
  fi
  short=${target##*::}
  cases=${CAIRN_FUZZ_CASES:-${default_cases[$short]:-$fallback_cases}}
  [[ -n ${default_cases[$short]:-} ]] || echo "note: $short is not in the table of case counts"
  echo "=== $target: $cases cases"
  start=$SECONDS
  # Every test binary runs; those without the target print only an empty result: dropped.
  if PROPTEST_CASES=$cases cargo test --release --workspace --tests -q -- --exact "$target" 2>&1 |
    { grep -Ev '^(running 0 tests|test result: ok\. 0 passed.*|)$' || true; }; then
    echo "=== $target: ok in $((SECONDS - start)) s"
  else
    echo "=== $target: FAILED after $((SECONDS - start)) s"
    failed+=("$target")
  fi
  ran=$((ran + 1))
done

echo "=== $ran targets in $((SECONDS - total_start)) s"
if ((ran == 0)); then
  echo "no target matches CAIRN_FUZZ_FILTER=${CAIRN_FUZZ_FILTER:-}" >&2
  exit 1
fi
if ((${#failed[@]} > 0)); then
  printf 'FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
