#!/usr/bin/env bash
# Builds mproc's libFuzzer targets with clang-14 (in a separate Bazel output base, so the g++
# cache survives, and no bazel-* links in the tree point at it: the next plain `bazel test
# //...` would load the clang output base through them) and runs each for a bounded time on
# a copy of its seed corpus.
#
#   tools/run_fuzzers.sh [SECONDS] [TOTALS_FILE]
#
# A fuzzer fails on a finding (non-zero exit: crash, sanitizer report, leak) or when it ran
# fewer than 100000 inputs. Adds "passed failed skipped" counts to TOTALS_FILE when given.
set -uo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-30}
TOTALS=${2:-}
MIN_RUNS=100000
OB="$HOME/.cache/mproc-clang-output-base"
FUZZERS=(//serialize:frame_fuzzer //serialize:codec_fuzzer //serialize:handshake_fuzzer
         //ipc:connection_fuzzer //ipc:queue_record_fuzzer //ipc:pipe_ring_fuzzer)

bazel --output_base="$OB" build --config=fuzz --symlink_prefix=/ "${FUZZERS[@]}" || { echo "fuzz build failed"; exit 1; }
BIN=$(bazel --output_base="$OB" info --config=fuzz bazel-bin 2>/dev/null)
WORK=$(mktemp -d)
passed=0
failed=0
for target in "${FUZZERS[@]}"; do
  pkg=${target#//}; pkg=${pkg%%:*}; name=${target##*:}
  corpus="$WORK/$name"
  mkdir -p "$corpus"
  cp "$pkg/fuzz/corpus/$name/"* "$corpus/"
  log="$WORK/$name.log"
  "$BIN/$pkg/$name" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="$WORK/$name-" "$corpus" >"$log" 2>&1
  rc=$?
  runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -n1)
  runs=${runs:-0}
  if [[ $rc -ne 0 ]]; then
    echo "[fuzz] FAILED $name: exit $rc after $runs runs"
    tail -n 40 "$log"
    ls "$WORK" | grep -E "^$name-(crash|leak|timeout|oom)" | sed 's/^/[fuzz]   artifact: /'
    failed=$((failed + 1))
  elif [[ $runs -lt $MIN_RUNS ]]; then
    echo "[fuzz] FAILED $name: only $runs runs in ${SECONDS_EACH}s (need $MIN_RUNS)"
    failed=$((failed + 1))
  else
    echo "[fuzz] ok $name: $runs runs in ${SECONDS_EACH}s, no finding"
    passed=$((passed + 1))
  fi
done
bazel --output_base="$OB" shutdown >/dev/null 2>&1
rm -rf "$WORK"
echo "[fuzz] $passed passed, $failed failed"
if [[ -n "$TOTALS" ]]; then
  read -r P F S < "$TOTALS"
  echo "$((P + passed)) $((F + failed)) $S" > "$TOTALS"
fi
[[ $failed -eq 0 ]]
