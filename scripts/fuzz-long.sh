#!/usr/bin/env bash
# A long fuzzing run on any x86-64 Linux machine, from the pack scripts/fuzz-pack.sh makes: unpacks it
# into WORKDIR and runs every target at once, one process each, for SECONDS, then prints a table:
# per target the executions, seconds, exec/s and the crashes, leaks, timeouts and out-of-memory inputs
# found. A target that finds one stops, keeps the input in WORKDIR/artifacts/ and starts again for the
# time left (a new seed, the corpus it grew so far), so one finding does not end its run.
#   scripts/fuzz-long.sh SECONDS [PACK (default .fuzz-pack.tar.xz beside scripts/)] [WORKDIR (default ./fuzz-long)]
# PROCESSES="TARGET=N ..." gives a slow target N processes (default 1 each; 0 leaves it out) on one shared corpus: each
# reads what the others found (libFuzzer's -reload), and the table sums their executions. A WORKDIR kept
# from an earlier run continues from the corpus it grew.
# Each run's log is in WORKDIR/logs/; the inputs that add coverage in WORKDIR/found/TARGET/.
# Reproduce a finding with the build it came from: build/fuzz/bin/fuzz_TARGET WORKDIR/artifacts/FILE
set -euo pipefail
seconds=${1:?usage: scripts/fuzz-long.sh SECONDS [PACK] [WORKDIR]}
pack=$(realpath "${2:-$(dirname "$0")/../.fuzz-pack.tar.xz}")
work=${3:-fuzz-long}
mkdir -p "$work"
cd "$work"
tar -xJf "$pack"
mkdir -p artifacts logs
rm -f logs/*.total
export LD_LIBRARY_PATH="$PWD/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" SSM_FUZZ_SOURCE_DIR=$PWD

# One process of a target until its time is spent; writes "executions seconds" to logs/TARGET.PROCESS.total.
fuzz_for() {
  local target=$1 process=$2 deadline=$((SECONDS + seconds)) executions=0 started=$SECONDS run=0
  mkdir -p "found/$target"
  local dict=()
  [[ -f fuzz/$target.dict ]] && dict=(-dict="fuzz/$target.dict")
  while ((SECONDS < deadline)); do
    run=$((run + 1))
    # -timeout: an input that takes 10 s is a hang; -rss_limit_mb: libFuzzer's default, stated.
    "bin/fuzz_$target" -max_total_time=$((deadline - SECONDS)) -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="artifacts/$target-" "${dict[@]}" "found/$target" "corpus/$target" \
      > "logs/$target.$process.$run.log" 2>&1 || true
    executions=$((executions + $(awk '/^stat::number_of_executed_units:/ {n = $2} END {print n + 0}' \
      "logs/$target.$process.$run.log")))
    # A target that stops before it has read its corpus (a seed that crashes, a missing library) would
    # only do so again.
    grep -q INITED "logs/$target.$process.$run.log" || break
  done
  echo "$executions $((SECONDS - started))" > "logs/$target.$process.total"
}

processes_of() {
  local entry
  for entry in ${PROCESSES:-}; do [[ ${entry%%=*} == "$1" ]] && { echo "${entry#*=}"; return; }; done
  echo 1
}

targets=$(ls bin | sed -n 's/^fuzz_//p')
for target in $targets; do
  for ((process = 1; process <= $(processes_of "$target"); process++)); do fuzz_for "$target" "$process" & done
done
wait

found() { find artifacts -name "$1-$2-*" | wc -l; }
printf '%-20s %14s %8s %10s %8s %6s %9s %5s\n' target executions seconds exec/s crashes leaks timeouts ooms
status=0
for target in $targets; do
  (($(processes_of "$target") > 0)) || continue
  # Executions summed over the target's processes; seconds: the longest process's.
  read -r executions elapsed < <(cat logs/"$target".*.total | awk '{n += $1; if ($2 > s) s = $2} END {print n, s}')
  crashes=$(found "$target" crash) leaks=$(found "$target" leak) timeouts=$(found "$target" timeout)
  ooms=$(found "$target" oom)
  printf '%-20s %14d %8d %10d %8d %6d %9d %5d\n' "$target" "$executions" "$elapsed" \
    $((executions / (elapsed > 0 ? elapsed : 1))) "$crashes" "$leaks" "$timeouts" "$ooms"
  ((crashes + leaks + timeouts + ooms == 0)) || status=1
done
exit $status
