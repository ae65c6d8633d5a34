#!/usr/bin/env bash
# Adds every symbol that the PublicApiAnalyzers report as undeclared (RS0016) to PublicAPI.Unshipped.txt of
# the project named in $1 (e.g. src/PerCpu.Core). Review the diff: it is the public API change.
set -euo pipefail
proj=${1:?usage: eng/update-public-api.sh src/PROJECT}
out=$(dotnet build "$proj" -p:TreatWarningsAsErrors=false 2>&1 || true)
printf '%s\n' "$out" | grep -o "error RS0016: Symbol '.*' is not part\|warning RS0016: Symbol '.*' is not part" \
  | sed -E "s/.*Symbol '(.*)' is not part/\1/" | sort -u >> "$proj/PublicAPI.Unshipped.txt"
{ head -1 "$proj/PublicAPI.Unshipped.txt"; tail -n +2 "$proj/PublicAPI.Unshipped.txt" | sort -u; } > "$proj/PublicAPI.tmp"
mv "$proj/PublicAPI.tmp" "$proj/PublicAPI.Unshipped.txt"
