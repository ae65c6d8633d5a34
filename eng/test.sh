#!/usr/bin/env bash
# Runs every test of the solution: the one test command of the README, and what .ci/run calls.
# Installs what the tests need first (Debian's prometheus package: promtool and the server for the end-to-end
# test; Debian's python3-prometheus-client, the OpenMetrics parser; dotnet-counters; from npm the k6 type definitions and the OTLP decoder of OpenTelemetry JS), type-checks the k6 scripts, then builds in Release and runs the xunit
# suites, then packs the libraries and uses them from a fresh app (JIT and Native AOT), then runs the k6 scripts with the real k6 against the sample where k6 is found. Exits non-zero on any build error or failed test; the last line is "N passed, N failed, N skipped".
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
# The Prometheus Python client's OpenMetrics parser (Debian's python3-prometheus-client) checks the OpenMetrics text,
# which promtool 2.42 does not read.
if [ ! -d /usr/lib/python3/dist-packages/prometheus_client ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "installing Debian's python3-prometheus-client (OpenMetrics parser)..."
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-prometheus-client >/dev/null) \
      || { echo "could not install python3-prometheus-client with apt-get" >&2; exit 1; }
  else
    echo "python3-prometheus-client not found and not root: run 'sudo apt-get install python3-prometheus-client' first" >&2
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

# The packages as a user gets them: pack both (deterministic, Source Link), a fresh `dotnet new web` app on the local
# feed with the README's quick start, then the same app under Native AOT; exact counts in both (eng/package-check.sh).
package_failed=0
if [ "$status" -eq 0 ] && [ "${PERCPU_SKIP_PACKAGE_CHECK:-0}" != "1" ]; then
  bash eng/package-check.sh || package_failed=1
fi

# The real k6, where there is one (PERCPU_K6, then k6 on PATH, then ../shared/tools/k6): smoke from the repository
# root, a 10 s load at 200/s from inside k6/, and smoke through a proxy that loses one request, which must fail.
k6_bin="${PERCPU_K6:-$(command -v k6 || true)}"
[ -n "$k6_bin" ] || { [ -x ../shared/tools/k6 ] && k6_bin="$(cd .. && pwd)/shared/tools/k6"; }
k6_failed=0
if [ "$status" -eq 0 ] && [ -n "$k6_bin" ] && [ -x "$k6_bin" ]; then
  echo "k6: $("$k6_bin" version) against the sample"
  free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
  port=$(free_port); proxy_port=$(free_port)
  Sample__ConsoleExport=false Logging__LogLevel__Default=Warning dotnet samples/WebApi/bin/Release/net10.0/WebApi.dll --urls "http://127.0.0.1:$port" > /tmp/percpu-k6-sample.log 2>&1 &
  sample_pid=$!
  node k6/test/drop-one-count.js "$proxy_port" "$port" &
  proxy_pid=$!
  trap 'rm -f "$log"; kill $sample_pid $proxy_pid 2>/dev/null || true' EXIT
  for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
  run_k6() { # expected-exit-code description args...
    local want=$1 what=$2; shift 2
    local got=0
    "$@" > /tmp/percpu-k6.log 2>&1 || got=$?
    tail -n 3 /tmp/percpu-k6.log
    if [ "$got" -eq "$want" ]; then echo "k6 $what: exit $got as expected"; else echo "k6 $what: exit $got, expected $want" >&2; cat /tmp/percpu-k6.log >&2; k6_failed=1; fi
  }
  run_k6 0 "smoke (repository root)" "$k6_bin" run --quiet -e BASE_URL="http://127.0.0.1:$port" k6/smoke.js
  run_k6 0 "load 10 s at 200/s (from k6/)" bash -c "cd k6 && '$k6_bin' run --quiet -e BASE_URL=http://127.0.0.1:$port -e RATE=200 -e DURATION=10s -e VUS=50 load.js"
  [ -f k6/summary-load.json ] || { echo "k6 load: k6/summary-load.json was not written" >&2; k6_failed=1; }
  run_k6 99 "smoke through a proxy that loses one request (must fail)" "$k6_bin" run --quiet -e BASE_URL="http://127.0.0.1:$proxy_port" k6/smoke.js
  grep -q "nothing lost: GET /items/{id:int} 200" /tmp/percpu-k6.log || { echo "k6: the failing run did not name the lost series" >&2; k6_failed=1; }
  kill $sample_pid $proxy_pid 2>/dev/null || true
elif [ -z "$k6_bin" ]; then
  echo "k6 not found (PERCPU_K6, PATH, ../shared/tools/k6): the scripts were type-checked only"
fi
[ "$k6_failed" -eq 0 ] || status=1
[ "$package_failed" -eq 0 ] || status=1

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
