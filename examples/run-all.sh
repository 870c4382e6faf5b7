#!/usr/bin/env bash
# Runs every example (CI: `npm run examples`). Each one starts its own forwarder on a free port
# (or uses CLONEKV_SERVER), checks its own outcome and exits non-zero on failure; each is also
# bounded here by a hard timeout. Prints the output of each, then one line per example.
set -uo pipefail
cd "$(dirname "$0")/.."

EXAMPLES=(shared-config-cache central-config late-join)
LIMIT=60
failed=0
summary=()

for name in "${EXAMPLES[@]}"; do
  echo "=== examples/$name/main.ts"
  start=$(date +%s%N)
  timeout --kill-after=5 "$LIMIT" node --import tsx "examples/$name/main.ts" 2>&1 | sed 's/^/    /'
  code=${PIPESTATUS[0]}
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  if [ "$code" -eq 0 ]; then
    summary+=("ok    $name (${ms} ms)")
  elif [ "$code" -eq 124 ] || [ "$code" -eq 137 ]; then
    summary+=("FAIL  $name: killed after ${LIMIT} s")
    failed=$((failed + 1))
  else
    summary+=("FAIL  $name: exit code $code (${ms} ms)")
    failed=$((failed + 1))
  fi
done

echo
printf '%s\n' "${summary[@]}"
if [ "$failed" -ne 0 ]; then
  echo "examples: $failed of ${#EXAMPLES[@]} failed"
  exit 1
fi
echo "examples: all ${#EXAMPLES[@]} passed"
