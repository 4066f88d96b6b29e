#!/usr/bin/env bash
# Puts the benchmark corpora listed in manifest.tsv under corpora/files/ and verifies them.
#
# Source, in order: $LMZIP_CORPORA or ../shared/corpora beside the checkout (verified copies),
# else the public archives named in the manifest. Every file is checked against the size and
# sha256 in the manifest; a mismatch is an error, never a silent substitute.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$here/files"
shared="${LMZIP_CORPORA:-$here/../../shared/corpora}"
mkdir -p "$out"

verify() { # path size sha
  [ -f "$1" ] && [ "$(stat -c %s "$1")" = "$2" ] && echo "$3  $1" | sha256sum -c --status
}

fetch_public() { # rel
  local rel="$1" dir tmp
  dir="$(dirname "$rel")"
  tmp="$(mktemp -d)"
  case "$dir" in
    canterbury) curl -fsSL https://corpus.canterbury.ac.nz/resources/cantrbry.tar.gz | tar -xz -C "$tmp" ;;
    calgary) curl -fsSL https://corpus.canterbury.ac.nz/resources/calgary.tar.gz | tar -xz -C "$tmp" ;;
    canterbury-large) curl -fsSL https://corpus.canterbury.ac.nz/resources/large.tar.gz | tar -xz -C "$tmp" ;;
    enwik8)
      curl -fsSL -o "$tmp/enwik8.zip" http://mattmahoney.net/dc/enwik8.zip
      unzip -p "$tmp/enwik8.zip" enwik8 | head -c 1000000 > "$tmp/enwik6" ;;
    *) echo "corpora/fetch.sh: $rel has no public source; it is only in ../shared/corpora" >&2; rm -rf "$tmp"; return 1 ;;
  esac
  mkdir -p "$out/$dir"
  cp "$tmp/$(basename "$rel")" "$out/$rel"
  rm -rf "$tmp"
}

status=0
while IFS=$'\t' read -r rel size sha _src; do
  case "$rel" in ''|\#*) continue ;; esac
  dest="$out/$rel"
  if verify "$dest" "$size" "$sha"; then continue; fi
  mkdir -p "$(dirname "$dest")"
  if [ -f "$shared/$rel" ]; then
    cp "$shared/$rel" "$dest"
  else
    fetch_public "$rel" || { status=1; continue; }
  fi
  if ! verify "$dest" "$size" "$sha"; then
    echo "corpora/fetch.sh: $rel does not match the manifest (size $size, sha256 $sha)" >&2
    rm -f "$dest"
    status=1
  fi
done < "$here/manifest.tsv"
[ $status -eq 0 ] && echo "corpora ready in $out" >&2
exit $status
