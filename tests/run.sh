#!/usr/bin/env bash
# The test command: installs what the tests need (the models, the corpora, qemu-user for the
# portability tests, GNU parallel for the sharding test, Chromium for the report's
# screenshot), then runs them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash models/fetch.sh
bash corpora/fetch.sh

# Portability: tests/determinism.rs decodes under `qemu-x86_64 -cpu Nehalem` (an x86-64
# CPU without AVX2/F16C) and tests/aarch64.rs runs an aarch64 build of lmzip under
# `qemu-aarch64`; both fail rather than skip under CI when what they need is missing. The
# CI machine is Debian as root: install qemu-user, the aarch64 cross linker and C library
# (liblzma is built from source) and the Rust target there; elsewhere, say what to install.
need=()
# tests/cli_fast.rs runs shares as GNU parallel jobs (fails under CI without it).
command -v parallel >/dev/null || need+=(parallel)
# tests/cli.rs renders `lmzip bench --report`'s page in headless Chromium.
command -v chromium >/dev/null || need+=(chromium)
if [ "$(uname -m)" = x86_64 ]; then
  command -v "${LMZIP_QEMU:-qemu-x86_64}" >/dev/null || need+=(qemu-user)
  command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
  command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${need[*]} for the portability, sharding and report tests…" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 && apt-get install -y -qq "${need[@]}" >&2 ||
      { echo "run.sh: could not install ${need[*]} with apt-get" >&2; exit 1; }
  else
    echo "run.sh: missing ${need[*]} and cannot install them here (needs root and" \
      "apt-get); the tests that need them will skip (fail under CI). Debian:" \
      "sudo apt-get install ${need[*]}" >&2
  fi
fi
if [ "$(uname -m)" = x86_64 ]; then
  if command -v aarch64-linux-gnu-gcc >/dev/null; then
    rustup target list --installed | grep -qx aarch64-unknown-linux-gnu ||
      rustup target add aarch64-unknown-linux-gnu
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
    export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
    # The binary tests/aarch64.rs runs, and the kernels' unit tests (NEON against the
    # portable definition, bit for bit) run on the emulated CPU.
    cargo clippy --release --target aarch64-unknown-linux-gnu --lib -- -D warnings
    cargo build --release --target aarch64-unknown-linux-gnu --bin lmzip
    cargo test --release --target aarch64-unknown-linux-gnu --lib -- engine::int8 engine::half
  fi
fi

cargo fmt --all -- --check
cargo clippy --release --all-targets -- -D warnings
cargo test --release
