#!/usr/bin/env bash
# Runs every test of the solution: the one test command of the README, and what .ci/run calls.
# Installs what the tests need first (nothing beyond the .NET SDK yet), then builds in Release and runs the
# xunit suites. Exits non-zero on any build error or failed test; the last line is "N passed, N failed, N skipped".
set -euo pipefail
cd "$(dirname "$0")/.."

log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
dotnet test Solution.sln -c Release 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

passed=0 failed=0 skipped=0
while read -r p f s; do
  passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
done < <(sed -nE 's/.*Failed: +([0-9]+), Passed: +([0-9]+), Skipped: +([0-9]+).*/\2 \1 \3/p' "$log")

if [ "$status" -eq 0 ] && [ "$passed" -eq 0 ]; then
  echo "no test ran" >&2
  status=1
fi
echo
echo "tests: $passed passed, $failed failed, $skipped skipped"
exit "$status"
