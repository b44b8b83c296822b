#!/usr/bin/env bash
# tools/bootstrap.sh — install exactly the Debian 12 packages mproc needs that are missing.
#
# Idempotent: a second run installs nothing and does not touch the network. Runs
# `apt-get update` only when a package is missing and the package lists are absent
# or cannot provide it. Works as root or through sudo. Prints what it installed;
# fails loudly, naming the package, when an install fails.
set -euo pipefail

PACKAGES=(
  # Build: Debian's Bazel 4.2.3 (brings OpenJDK), its @platforms, the C++ toolchain.
  bazel-bootstrap bazel-platforms g++ pkg-config git
  # Libraries mproc links (dynamically in tests, statically in -c opt binaries).
  liburing-dev libabsl-dev libprotobuf-dev protobuf-compiler
  libgtest-dev libgmock-dev libbenchmark-dev libssl-dev
  # clang-14 + its runtimes: libFuzzer targets and clang sanitizer builds.
  clang-14 libclang-rt-14-dev
  # Boost.Interprocess: a peer in the benchmark report.
  libboost-dev
  # spdlog (brings fmt): the logging library behind //log.
  libspdlog-dev
  # CPython: the benchmark peer and the wire-interop tests.
  python3
  # Open MPI: the MPI executor (//mpi) and its tests; mpi4py: its benchmark peer.
  openmpi-bin libopenmpi-dev python3-mpi4py
)

log() { printf 'bootstrap: %s\n' "$*" >&2; }

if [[ $(id -u) -eq 0 ]]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo -n)
  if ! sudo -n true 2>/dev/null; then SUDO=(sudo); fi
else
  SUDO=()
fi

is_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

missing=()
for p in "${PACKAGES[@]}"; do
  is_installed "$p" || missing+=("$p")
done

if [[ ${#missing[@]} -eq 0 ]]; then
  log "all ${#PACKAGES[@]} packages present; nothing to install"
  exit 0
fi

if [[ $(id -u) -ne 0 && ${#SUDO[@]} -eq 0 ]]; then
  log "missing packages: ${missing[*]}"
  log "not root and no sudo: install them as root, or run this script with sudo"
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
APT=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Use-Pty=0)

# apt-get update only when some missing package has no candidate in the current lists.
need_update=0
for p in "${missing[@]}"; do
  cand=$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ {print $2}')
  if [[ -z "$cand" || "$cand" == "(none)" ]]; then need_update=1; break; fi
done
if [[ $need_update -eq 1 ]]; then
  log "refreshing package lists (apt-get update)"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null \
    || { log "apt-get update failed"; exit 1; }
fi

log "installing: ${missing[*]}"
if ! "${APT[@]}" install --no-install-recommends "${missing[@]}" >/tmp/mproc-bootstrap.$$.log 2>&1; then
  # Retry one at a time to name the package that fails.
  for p in "${missing[@]}"; do
    is_installed "$p" && continue
    if ! "${APT[@]}" install --no-install-recommends "$p" >>/tmp/mproc-bootstrap.$$.log 2>&1; then
      tail -n 20 /tmp/mproc-bootstrap.$$.log >&2
      log "FAILED to install package: $p (full log: /tmp/mproc-bootstrap.$$.log)"
      exit 1
    fi
  done
fi
for p in "${missing[@]}"; do
  if ! is_installed "$p"; then
    log "FAILED: package $p is still not installed"
    exit 1
  fi
done
rm -f /tmp/mproc-bootstrap.$$.log
log "installed ${#missing[@]} package(s): ${missing[*]}"
