#!/usr/bin/env bash
# End-to-end benchmark against the peers: builds the benchmark app and the driver once, then runs every variant
# (none, percpu, otel, promnet) in a fresh process per measurement, driven by wrk on 127.0.0.1 in interleaved rounds,
# for two load shapes (one route; mixed routes and statuses). Extra arguments go to the driver, for example
#   benchmarks/endtoend/run.sh --rounds 10 --seconds 5 --connections 64
# Results: a table on stdout and BenchmarkDotNet.Artifacts/endtoend.csv; `plots` turns them into docs/*.svg.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v wrk >/dev/null || { echo "wrk is required: apt-get install wrk" >&2; exit 1; }
dotnet build -c Release benchmarks/EndToEndApp >/dev/null
dotnet build -c Release benchmarks/PerCpu.Benchmarks >/dev/null
exec dotnet benchmarks/PerCpu.Benchmarks/bin/Release/net10.0/PerCpu.Benchmarks.dll endtoend \
  --app benchmarks/EndToEndApp/bin/Release/net10.0/EndToEndApp.dll --lua benchmarks/endtoend/mixed.lua "$@"
