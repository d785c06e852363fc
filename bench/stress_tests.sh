#!/usr/bin/env bash
# Runs the whole test suite several times while other processes keep every core busy,
# then lists each test that failed at least once (with how many runs it failed in).
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

for run in $(seq "$runs"); do
  start=$(date +%s)
  "$python" -m pytest -q -p no:cacheprovider -rf "$@" >"$out/run$run.log" 2>&1
  status=$?
  echo "run $run: exit $status in $(( $(date +%s) - start )) s: $(tail -n 1 "$out/run$run.log")"
done

echo "tests that failed at least once:"
grep -h '^FAILED ' "$out"/run*.log | sed 's/^FAILED \([^ ]*\).*/\1/' | sort | uniq -c | sort -rn \
  | awk '{print "  " $2 ": failed in " $1 " run(s)"} END {if (NR == 0) print "  none"}'
echo "logs: $out"
