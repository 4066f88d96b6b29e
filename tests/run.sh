#!/usr/bin/env bash
# The test command: installs what the tests need (the models, the corpora, qemu-user for the
# portability tests), then runs them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash models/fetch.sh
bash corpora/fetch.sh

# tests/determinism.rs decodes under `qemu-x86_64 -cpu Nehalem` (an x86-64 CPU without
# AVX2/F16C), and fails rather than skips under CI when qemu is missing. The CI machine is
# Debian as root; elsewhere, say what to install.
if [ "$(uname -m)" = x86_64 ] && ! command -v "${LMZIP_QEMU:-qemu-x86_64}" >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing qemu-user (qemu-x86_64) for the portability tests…" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 && apt-get install -y -qq qemu-user >&2 ||
      { echo "run.sh: could not install qemu-user with apt-get" >&2; exit 1; }
  else
    echo "run.sh: qemu-x86_64 is missing and cannot be installed here (needs root and" \
      "apt-get); the portability tests will skip it (fail under CI). Debian:" \
      "sudo apt-get install qemu-user" >&2
  fi
fi

cargo fmt --all -- --check
cargo clippy --release --all-targets -- -D warnings
cargo test --release
