#!/usr/bin/env bash
# What `make devnet` needs before its build, on a fresh machine: a Rust toolchain, a C/C++
# compiler, protoc (prost-build compiles protocol/proto) and clang with libclang (bindgen for
# RocksDB). Missing Debian/Ubuntu packages are installed with apt-get, as .ci/run does (sudo when
# not root); elsewhere the script names what to install and fails. Then it says how long the
# build will take.
set -euo pipefail

missing_packages() {
  command -v cc >/dev/null 2>&1 || echo gcc
  command -v c++ >/dev/null 2>&1 || echo g++
  command -v protoc >/dev/null 2>&1 || echo protobuf-compiler
  command -v clang >/dev/null 2>&1 || echo clang
  have_libclang || echo libclang-dev
  command -v bwrap >/dev/null 2>&1 || echo bubblewrap
}

have_libclang() {
  [ -n "${LIBCLANG_PATH:-}" ] && return 0
  local f
  for f in /usr/lib/llvm-*/lib/libclang*.so* /usr/lib/*/libclang*.so* /usr/lib64/libclang*.so*; do
    [ -e "$f" ] && return 0
  done
  return 1
}

install_packages() {
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || {
      echo "make devnet: need root or sudo to install: $*" >&2
      return 1
    }
    sudo="sudo"
  fi
  echo "make devnet: installing $* (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "$@"
}

if ! command -v cargo >/dev/null 2>&1; then
  echo "make devnet: no cargo on PATH; install Rust from https://rustup.rs and run it again" >&2
  exit 1
fi

mapfile -t missing < <(missing_packages)
if [ "${#missing[@]}" -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "make devnet: the build needs ${missing[*]} (Debian package names: a C/C++ compiler, protoc, clang and libclang); install them and run it again" >&2
    exit 1
  fi
  install_packages "${missing[@]}"
  mapfile -t missing < <(missing_packages)
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "make devnet: still missing after apt-get: ${missing[*]}" >&2
    exit 1
  fi
fi
echo "make devnet: have cargo, a C/C++ compiler, protoc, clang and libclang"

# A rough figure, not a measurement of this machine: a clean release build compiles every crate of
# Cargo.lock, RocksDB's C++ the longest, in about 60 core-minutes.
target="${CARGO_TARGET_DIR:-target}"
if [ ! -x "$target/release/aitbc-cli" ]; then
  cores="$(nproc 2>/dev/null || echo 1)"
  crates="$(grep -c '^name = ' "$(dirname "$0")/../Cargo.lock" 2>/dev/null || echo 'about 500')"
  minutes=$((60 / cores + 3))
  echo "make devnet: first build: $crates crates including RocksDB in release mode, an estimated $minutes minutes on $cores cores (cargo shows its progress); later builds take seconds"
fi
