#!/usr/bin/env bash
# Fuzz the wire protocol's decoders with property tests: random frames, and valid frames with
# bytes (length fields included) overwritten and cut short. CAIRN_FUZZ_CASES sets the number
# of cases per test (default 40 million: a few minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
cases=${CAIRN_FUZZ_CASES:-40000000}
PROPTEST_CASES=$cases cargo test --release -p cairn-node --lib -- \
  net::wire::tests::random_bytes_never_panic \
  net::wire::tests::mutated_frames_never_panic_or_exceed_limits \
  net::wire::tests::truncated_requests_are_errors
