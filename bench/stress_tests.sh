#!/usr/bin/env bash
# Runs the whole test suite several times while other processes keep every core busy,
# then lists each test that failed at least once (with how many runs it failed in) and how
# many runs did not exit 0 (a process that aborts after its tests passed fails CI too).
# A test that depends on how fast something runs or how threads interleave shows up here.
#
#   bash bench/stress_tests.sh [RUNS] [extra pytest args...]     (default: 5 runs)
set -uo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"; shift || true
python="${PYTHON:-.venv/bin/python}"
out="$(mktemp -d)"

burners=()
for _ in $(seq "$(nproc)"); do
  ( while :; do :; done ) &
  burners+=("$!")
done
trap 'kill "${burners[@]}" 2>/dev/null' EXIT
echo "load: ${#burners[@]} busy-loop processes on $(nproc) cores"

failed_runs=0
for run in $(seq "$runs"); do
  start=$(date +%s)
  "$python" -m pytest -q -p no:cacheprovider -rf "$@" >"$out/run$run.log" 2>&1
  status=$?
  [ "$status" -eq 0 ] || failed_runs=$((failed_runs + 1))
  echo "run $run: exit $status in $(( $(date +%s) - start )) s: $(grep -E '(passed|failed|error)' "$out/run$run.log" | tail -n 1)"
done

echo "tests that failed at least once:"
grep -h '^FAILED ' "$out"/run*.log | sed 's/^FAILED \([^ ]*\).*/\1/' | sort | uniq -c | sort -rn \
  | awk '{print "  " $2 ": failed in " $1 " run(s)"} END {if (NR == 0) print "  none"}'
echo "runs that did not exit 0 (a crash at exit counts): $failed_runs of $runs"
echo "logs: $out"
exit $(( failed_runs > 0 ))
