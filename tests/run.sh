#!/usr/bin/env bash
# The test command: installs what the tests need (the model, the corpora), then runs them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash models/fetch.sh
bash corpora/fetch.sh
cargo fmt --all -- --check
cargo clippy --release --all-targets -- -D warnings
cargo test --release
