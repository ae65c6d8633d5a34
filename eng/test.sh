#!/usr/bin/env bash
# Runs every test of the solution: the one test command of the README, and what .ci/run calls.
# Installs what the tests need first (Debian's prometheus package: promtool and the server for the end-to-end
# test; dotnet-counters; from npm the k6 type definitions and the OTLP decoder of OpenTelemetry JS), type-checks the k6 scripts, then builds in Release and runs the xunit
# suites. Exits non-zero on any build error or failed test; the last line is "N passed, N failed, N skipped".
set -euo pipefail
cd "$(dirname "$0")/.."

# promtool checks real scrape output in the exposition tests.
if ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "installing Debian's prometheus package (promtool)..."
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null) \
      || { echo "could not install prometheus (promtool) with apt-get" >&2; exit 1; }
  else
    echo "promtool not found and not root: run 'sudo apt-get install prometheus' first" >&2
    exit 1
  fi
fi
# dotnet-counters (a NuGet global tool) reads the sample's PerCpu.AspNetCore meter in the end-to-end stage.
counters_version=10.0.750501
if [ ! -x .tools/dotnet-counters/dotnet-counters ]; then
  dotnet tool install dotnet-counters --tool-path .tools/dotnet-counters --version "$counters_version" >/dev/null
fi
export PERCPU_DOTNET_COUNTERS="$PWD/.tools/dotnet-counters/dotnet-counters"
export PERCPU_REQUIRE_TOOLS=1

# The k6 scripts are type-checked against the k6 v0.49 API (k6 itself is not installed here).
echo "type-checking the k6 scripts (TypeScript, @types/k6 0.49.3)..."
npm ci --prefix k6 --no-audit --no-fund --silent
npm run --prefix k6 --silent typecheck
echo "k6 scripts: typecheck passed"

# OpenTelemetry JS's generated OTLP definitions decode what PerCpu's OTLP exporter sends, in the exporter tests.
npm ci --prefix tests/otlp-decoder --no-audit --no-fund --silent

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
