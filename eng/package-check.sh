#!/usr/bin/env bash
# Packs PerCpu.Core and PerCpu.AspNetCore as a team would publish them, then uses them as a new user would:
#   1. packs both from two copies of the working tree in different folders, with a GitHub origin, and checks that
#      the DLLs and PDBs are byte-identical (deterministic whoever packs, CI or not), that each .nupkg carries its
#      README, license, URLs, tags and (Core) the buildTransitive AOT targets, and each .snupkg a PDB with Source Link;
#   2. creates a fresh `dotnet new web` app that references only the packed packages from a local folder feed, puts the
#      README's quick start into it, runs it (JIT), sends requests and checks the exact count on /metrics;
#   3. publishes the same app with Native AOT (Debian's clang and zlib1g-dev, the ILCompiler package from NuGet), fails
#      on any IL2xxx/IL3xxx warning that names PerCpu, checks that the package bound libc directly, runs the binary,
#      checks the exact count, and reports the CPU-id strategy each build chose, startup time and RSS.
# Called by eng/test.sh; runs alone too. Prints "package-check: passed" last, exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
requests=${PERCPU_PACKAGE_CHECK_REQUESTS:-250}
work=$(mktemp -d /tmp/percpu-package-check.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "package-check: FAILED: $*" >&2; exit 1; }

if ! command -v clang >/dev/null 2>&1 || [ ! -e /usr/include/zlib.h ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "installing Debian's clang and zlib1g-dev (Native AOT linker)..."
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends clang zlib1g-dev >/dev/null) \
      || fail "could not install clang and zlib1g-dev with apt-get"
  else
    fail "Native AOT needs clang and zlib1g-dev: run 'sudo apt-get install clang zlib1g-dev' first"
  fi
fi

# 1. Two copies, two packs. The copies get a GitHub origin so that Source Link has a URL to map to (the real
#    clone's origin may be a local path); the commit is whatever the working tree's HEAD is.
origin_url=$(sed -n 's:.*<PerCpuRepositoryUrl>\(.*\)</PerCpuRepositoryUrl>.*:\1:p' Directory.Build.props)
[ -n "$origin_url" ] || fail "PerCpuRepositoryUrl not found in Directory.Build.props"
for copy in a bb; do
  mkdir -p "$work/$copy"
  tar --exclude=./.tools --exclude='*/bin' --exclude='*/obj' --exclude='*/node_modules' --exclude=./BenchmarkDotNet.Artifacts -cf - . \
    | tar -xf - -C "$work/$copy"
  git -C "$work/$copy" remote remove origin 2>/dev/null || true
  git -C "$work/$copy" remote add origin "$origin_url.git"
  echo "packing from $work/$copy ..."
  dotnet pack "$work/$copy/src/PerCpu.AspNetCore" -c Release -o "$work/feed-$copy" -nologo -v quiet > "$work/pack-$copy.log" 2>&1 \
    || { cat "$work/pack-$copy.log" >&2; fail "dotnet pack failed"; }
  dotnet pack "$work/$copy/src/PerCpu.Core" -c Release -o "$work/feed-$copy" -nologo -v quiet >> "$work/pack-$copy.log" 2>&1 \
    || { cat "$work/pack-$copy.log" >&2; fail "dotnet pack failed"; }
  if grep -q "warning" "$work/pack-$copy.log"; then cat "$work/pack-$copy.log" >&2; fail "dotnet pack warned"; fi
done
feed="$work/feed-a"
version=$(basename "$(ls "$feed"/PerCpu.Core.*.nupkg)" .nupkg); version=${version#PerCpu.Core.}
echo "packed version $version"
for id in PerCpu.Core PerCpu.AspNetCore; do
  nupkg="$feed/$id.$version.nupkg"; snupkg="$feed/$id.$version.snupkg"
  [ -f "$nupkg" ] && [ -f "$snupkg" ] || fail "$id: .nupkg or .snupkg missing"
  files=$(unzip -Z1 "$nupkg")
  for f in README.md "lib/net10.0/$id.dll" "lib/net10.0/$id.xml"; do
    grep -qx "$f" <<< "$files" || fail "$id.nupkg lacks $f"
  done
  nuspec=$(unzip -p "$nupkg" "$id.nuspec")
  for want in '<license type="expression">MIT</license>' '<readme>README.md</readme>' "<projectUrl>$origin_url</projectUrl>" \
      "<repository type=\"git\" url=\"$origin_url\"" '<tags>metrics' "<version>$version</version>"; do
    grep -qF "$want" <<< "$nuspec" || fail "$id.nuspec lacks $want"
  done
  # Byte-identical output from both folders.
  for f in "lib/net10.0/$id.dll"; do
    cmp -s <(unzip -p "$nupkg" "$f") <(unzip -p "$work/feed-bb/$id.$version.nupkg" "$f") \
      || fail "$id: $f differs between two packs of the same tree in different folders (not deterministic)"
  done
  cmp -s <(unzip -p "$snupkg" "lib/net10.0/$id.pdb") <(unzip -p "$work/feed-bb/$id.$version.snupkg" "lib/net10.0/$id.pdb") \
    || fail "$id: the PDB differs between two packs of the same tree in different folders"
  pdb=$(unzip -p "$snupkg" "lib/net10.0/$id.pdb" | strings -n 8)
  commit=$(git -C "$work/a" rev-parse HEAD)
  grep -qF "https://raw.githubusercontent.com/${origin_url#https://github.com/}/$commit/*" <<< "$pdb" \
    || fail "$id.pdb carries no Source Link map to $origin_url at $commit"
  if grep -q "/tmp/percpu-package-check" <<< "$pdb"; then fail "$id.pdb embeds the build folder's path"; fi
  echo "$id $version: README, MIT, URLs, tags, .snupkg with Source Link to $commit; DLL and PDB identical from two folders"
done
# The listing is read whole (grep -q would exit at the first match and, under pipefail, unzip's SIGPIPE would fail the check).
unzip -Z1 "$feed/PerCpu.Core.$version.nupkg" | grep -x "buildTransitive/PerCpu.Core.targets" >/dev/null || fail "PerCpu.Core lacks buildTransitive/PerCpu.Core.targets"

# 2. A fresh app on the packages only. Our own package ids leave the NuGet cache first: a re-pack of one version
#    must not be shadowed by an older copy there.
packages_dir=${NUGET_PACKAGES:-$HOME/.nuget/packages}
rm -rf "$packages_dir/percpu.core" "$packages_dir/percpu.aspnetcore"
app="$work/QuickStart"
dotnet new web -o "$app" -n QuickStart --no-restore > /dev/null
dotnet new nugetconfig -o "$app" > /dev/null
dotnet nuget add source "$feed" -n percpu-local --configfile "$app/nuget.config" > /dev/null
dotnet add "$app" package PerCpu.AspNetCore --version "$version" --no-restore > /dev/null
# The README's quick start, verbatim: the three lines of the first csharp block under "## Quick start".
quick=$(awk '/^## Quick start/{q=1} q&&/^```csharp/{c=1;next} c&&/^```/{exit} c{print}' README.md)
grep -q "AddPerCpuMetrics" <<< "$quick" && grep -q "UsePerCpuMetrics" <<< "$quick" && grep -q "MapPerCpuMetrics" <<< "$quick" \
  || fail "README's quick start block not found"
{
  echo 'using PerCpu;'
  echo 'var builder = WebApplication.CreateSlimBuilder(args);'
  grep "builder\." <<< "$quick"
  echo 'var app = builder.Build();'
  grep "app\." <<< "$quick"
  echo 'app.MapGet("/hello", () => "hello");'
  echo 'app.MapGet("/selection", () => ProcessorId.Selection.ToString());'
  echo 'app.Run();'
} > "$app/Program.cs"
echo "--- the app's Program.cs (README quick start inside)"; cat "$app/Program.cs"; echo "---"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# run_app <label> <command...>: starts it, times the first answer, sends $requests requests, checks the exact count.
run_app() {
  local label=$1; shift
  local port; port=$(free_port)
  local t0; t0=$(date +%s%N)
  ASPNETCORE_URLS="http://127.0.0.1:$port" Logging__LogLevel__Default=Warning "$@" > "$work/$label.log" 2>&1 &
  local pid=$!; pids+=("$pid")
  local up=0
  for _ in $(seq 1 3000); do
    if curl -fs "http://127.0.0.1:$port/hello" > /dev/null 2>&1; then up=1; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.01
  done
  [ "$up" -eq 1 ] || { cat "$work/$label.log" >&2; fail "$label: the app did not answer"; }
  local startup_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  # $requests - 1 more in parallel (the first answered above).
  seq 2 "$requests" | xargs -P 8 -I{} curl -fs -o /dev/null "http://127.0.0.1:$port/hello"
  local scrape; scrape=$(curl -fs "http://127.0.0.1:$port/metrics")
  local counted; counted=$(grep '^http_server_request_duration_seconds_count{' <<< "$scrape" | grep 'http_route="/hello"' | awk '{s+=$2} END {print s+0}')
  [ "$counted" = "$requests" ] || { echo "$scrape" | head -40 >&2; fail "$label: /metrics counts $counted requests to /hello, sent $requests"; }
  local rss_kb; rss_kb=$(awk '/^VmRSS/{print $2}' "/proc/$pid/status")
  local selection; selection=$(curl -fs "http://127.0.0.1:$port/selection")
  local strategy; strategy=$(grep -o -m1 '^percpu_processor_id_strategy{[^}]*}' <<< "$scrape")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "$label: $counted of $requests requests counted; first answer after ${startup_ms} ms; RSS after the requests $((rss_kb / 1024)) MB"
  echo "$label: $strategy"
  echo "$label: selection: $selection"
}

echo "building the app (JIT) from the local feed..."
dotnet build "$app" -c Release -nologo -v quiet > "$work/build.log" 2>&1 || { cat "$work/build.log" >&2; fail "the app did not build"; }
grep -q "percpu-local\|$feed" "$app/obj/project.assets.json" || fail "the app did not restore PerCpu from the local feed"

# 3. Native AOT.
echo "publishing the app with Native AOT (linux-x64)..."
dotnet publish "$app" -c Release -r linux-x64 -p:PublishAot=true -o "$work/aot" -nologo > "$work/aot.log" 2>&1 \
  || { cat "$work/aot.log" >&2; fail "AOT publish failed"; }
if grep -E "warning IL[23][0-9]{3}" "$work/aot.log" | grep -i "percpu"; then fail "trim/AOT warnings from PerCpu (above)"; fi
echo "AOT publish: $(grep -cE 'warning IL[23][0-9]{3}' "$work/aot.log" || true) trim/AOT warnings in all, none from PerCpu"
rsp=$(find "$app/obj" -name 'QuickStart.ilc.rsp' -print -quit)
[ -n "$rsp" ] && grep -qx -- "--directpinvoke:libc.so.6" "$rsp" || fail "the package's buildTransitive targets did not bind libc.so.6 directly ($rsp)"
echo "AOT: PerCpu.Core's buildTransitive targets passed --directpinvoke:libc.so.6 to ILC"
echo "AOT binary: $(( $(stat -c %s "$work/aot/QuickStart") / 1024 / 1024 )) MB"
# PERCPU_PACKAGE_CHECK_LAZY=1: also publish without the package's direct binding, to show what it changes.
if [ "${PERCPU_PACKAGE_CHECK_LAZY:-0}" = "1" ]; then
  dotnet publish "$app" -c Release -r linux-x64 -p:PublishAot=true -p:PerCpuDirectPInvoke=false -o "$work/aot-lazy" -nologo \
    > "$work/aot-lazy.log" 2>&1 || { cat "$work/aot-lazy.log" >&2; fail "AOT publish (lazy) failed"; }
fi
# PERCPU_PACKAGE_CHECK_ROUNDS=N runs each build N times, interleaved (the README's startup and RSS figures).
for round in $(seq 1 "${PERCPU_PACKAGE_CHECK_ROUNDS:-1}"); do
  echo "round $round"
  run_app jit dotnet "$app/bin/Release/net10.0/QuickStart.dll"
  run_app aot "$work/aot/QuickStart"
  if [ -x "$work/aot-lazy/QuickStart" ]; then run_app aot-lazy-pinvoke "$work/aot-lazy/QuickStart"; fi
done
echo "package-check: passed"
