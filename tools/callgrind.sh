#!/usr/bin/env bash
# Instructions per operation of each case of benches/callgrind.rs, under
# valgrind's callgrind: a run of N operations minus a run of none (the
# setup), divided by N. Deterministic, unlike timings on a shared machine.
#
#   bash tools/callgrind.sh              # every case
#   bash tools/callgrind.sh rollout_by_key staged_by_key
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
probe=$(cargo bench --bench callgrind --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "callgrind" and m.get("executable"):
        print(m["executable"])')
cases=("$@")
if [ ${#cases[@]} -eq 0 ]; then
  cases=(rollout_by_key rollout_by_handle kill_switch_by_key kill_switch_by_handle unknown_by_key
         staged_by_key staged_by_handle migration_check_by_handle migration_read migration_write
         rotating_by_key_100000 apply_10000 reapply_10000)
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
irs() { # the total instructions of one run
  valgrind --tool=callgrind --callgrind-out-file="$out/cg" "$probe" "$1" "$2" 2>&1 >/dev/null |
    sed -n 's/.*refs: *//p' | tr -d ,
}
printf '%-28s %s\n' case "instructions per operation"
for case in "${cases[@]}"; do
  # Checks 200,000 times; an apply (millions of instructions) twice.
  case $case in *apply_*) n=2 ;; *) n=200000 ;; esac
  base=$(irs "$case" 0)
  full=$(irs "$case" "$n")
  printf '%-28s %s\n' "$case" "$(( (full - base + n / 2) / n ))"
done
