#!/usr/bin/env bash
# Compiles every library (cc_library) of mproc with clang-14's thread-safety analysis as an error
# (--config=tsa, .bazelrc): a member declared ABSL_GUARDED_BY(mu) read or written without mu
# held, or a function that needs a lock called without it, fails the build. Uses the clang
# output base of tools/run_fuzzers.sh (so the g++ cache survives and no bazel-* link in the
# tree points at it). Tests and binaries are left out: clang-14 cannot compile some of their
# C++20 (lambdas capturing structured bindings), and the locks they would check are the
# libraries'.
set -uo pipefail
cd "$(dirname "$0")/.."
OB="$HOME/.cache/mproc-clang-output-base"
# The packages git knows (not //...: from this output base, the tree's bazel-* links are not
# recognised as convenience links and would be walked into).
mapfile -t PKGS < <(git ls-files 'BUILD' '*/BUILD' '*/BUILD.bazel' | grep -v '^tests/consumer/' |
                    xargs -n1 dirname | sed 's|^\.$||; s|^|//|; s|$|:all|' | sort -u)
mapfile -t LIBS < <(bazel --output_base="$OB" query "kind('cc_library', set(${PKGS[*]}))" 2>/dev/null)
if [[ ${#LIBS[@]} -eq 0 ]]; then echo "no targets found"; exit 1; fi
bazel --output_base="$OB" build --config=tsa --symlink_prefix=/ --keep_going "${LIBS[@]}"
rc=$?
bazel --output_base="$OB" shutdown >/dev/null 2>&1
exit $rc
