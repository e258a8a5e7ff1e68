#!/usr/bin/env bash
# docs/reproductions.md: five byte-level models of about 0.5M parameters (Mamba-2, attention, RAT
# L 16, RAT-SWA, Mamba-2 + attention hybrid) trained one after another on the default corpus with
# the same recipe (seq-len 512, batch 8, lr 4e-3 with 50 warmup steps and a cosine to lr/10 over
# the run, one seed, the same number of steps), each evaluated on the same 262,144 validation bytes
# every 500 steps and at the end. Prints one markdown row per model from OUT/NAME/train_summary.json.
#   scripts/reproduce-layers.sh        # SSM=path/to/ssm, STEPS=n (default 1500), THREADS=n (default 1),
#                                      # OUT=dir (default runs/reproduce-layers), MODELS="mamba2 rat ...", SEED=n (default 0)
#   scripts/reproduce-layers.sh speed  # training tokens/s only: ROUNDS (default 3) interleaved rounds of 40 steps
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
ssm="${SSM:-build/release/bin/ssm}"
[ -x "$ssm" ] || { echo "reproduce-layers: '$ssm' is not an executable ssm binary (build first)" >&2; exit 1; }
steps="${STEPS:-1500}"
threads="${THREADS:-1}"
out="${OUT:-runs/reproduce-layers}"
models="${MODELS:-mamba2 attention rat rat-swa hybrid}"

config_of() {
  case "$1" in
    mamba2) echo configs/demo-byte.json ;;
    attention) echo configs/attention-bytes.json ;;
    rat) echo configs/rat-bytes.json ;;
    rat-swa) echo configs/rat-swa-bytes.json ;;
    hybrid) echo configs/hybrid-bytes.json ;;
    *) echo "reproduce-layers: unknown model '$1'" >&2; exit 1 ;;
  esac
}

corpus="$(scripts/fetch-corpus.sh)"
"$ssm" data prepare --input "$corpus" --out .cache/corpus/default

if [ "${1:-}" = speed ]; then
  # Training speed only: ROUNDS (default 3) rounds of 40-step runs, the models interleaved in each
  # round (a busy machine slows them alike), then each model's median tokens/s.
  rounds="${ROUNDS:-3}"
  for round in $(seq "$rounds"); do
    for name in $models; do
      "$ssm" train --model-config "$(config_of "$name")" --data .cache/corpus/default --out "$out-speed/$round/$name" \
        --steps 40 --batch-size 8 --seq-len 512 --lr 4e-3 --warmup 50 --seed 0 --threads "$threads" --progress 0 \
        --quiet --eval-tokens 512 >/dev/null
      echo "round $round $name $(python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))['tokens_per_second']))" \
        "$out-speed/$round/$name/train_summary.json") tok/s, load $(cut -d' ' -f1 /proc/loadavg)"
    done
  done | tee "$out-speed.txt"
  echo
  for name in $models; do
    echo "$name median $(grep " $name " "$out-speed.txt" | awk '{print $4}' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}') tok/s"
  done
  exit 0
fi

for name in $models; do
  config="$(config_of "$name")"
  mkdir -p "$out/$name"
  echo "=== $name ($config), $steps steps, $threads thread(s), $(date -u +%H:%M:%S) UTC" >&2
  "$ssm" train --model-config "$config" --data .cache/corpus/default --out "$out/$name" \
    --steps "$steps" --batch-size 8 --seq-len 512 --lr "${LR:-4e-3}" --warmup 50 --decay-steps "$steps" \
    --eval-every "${EVAL_EVERY:-500}" --eval-tokens 262144 --seed "${SEED:-0}" --threads "$threads" --progress 0 \
    2>&1 | tee "$out/$name/train.log"
  "$ssm" inspect --model "$out/$name" > "$out/$name/inspect.txt" 2>&1 || true
done

echo
echo "| model | config | parameters | final val bits/byte | train tokens/s | train seconds |"
echo "| --- | --- | --- | --- | --- | --- |"
for name in $models; do
  python3 - "$name" "$(config_of "$name")" "$out/$name" <<'EOF'
import json, re, sys
name, config, run = sys.argv[1:]
s = json.load(open(f"{run}/train_summary.json"))
params = "?"
for line in open(f"{run}/inspect.txt"):
    m = re.match(r"parameters\s+(\d+)", line)
    if m: params = f"{int(m.group(1)):,}"; break
print(f"| {name} | {config} | {params} | {s['val_bpb']:.4f} | {s['tokens_per_second']:.0f} | {s['train_seconds']:.0f} |")
EOF
done
