#!/usr/bin/env bash
# The addon's request reader against libprotobuf on the same RankRequest bytes (bench/wire-native/
# compare.cc; docs/wire.md "Why a small reader, not libprotobuf"). Needs protoc and libprotobuf's
# headers (Debian: apt-get install protobuf-compiler libprotobuf-dev); the addon does not.
#
#   npm run bench:wire-native [-- ROUNDS [MS_PER_CELL]]     (default 15 rounds of 40 ms per cell)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
command -v protoc >/dev/null || { echo "bench:wire-native needs protoc (apt-get install protobuf-compiler)"; exit 2; }
cflags=$(pkg-config --cflags protobuf 2>/dev/null) && libs=$(pkg-config --libs protobuf 2>/dev/null) ||
  { echo "bench:wire-native needs libprotobuf's headers (apt-get install libprotobuf-dev)"; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/gen"
protoc -I "$root/proto" --cpp_out="$work/gen" "$root/proto/adrank/v1/adrank.proto"
node --import tsx "$root/bench/wire-native/requests.ts" "$work" >/dev/null
# the addon's flags (CMakeLists.txt): -O3 -fno-math-errno -ffp-contract=off
g++ -std=c++17 -O3 -fno-math-errno -ffp-contract=off -I "$work/gen" -I "$root/native" $cflags \
  "$root/bench/wire-native/compare.cc" "$work/gen/adrank/v1/adrank.pb.cc" "$root/native/addon/wire.cc" \
  -o "$work/wire-compare" $libs
echo "bench:wire-native: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(protoc --version), g++ $(g++ -dumpfullversion), $(date -u +%Y-%m-%dT%H:%MZ)"
"$work/wire-compare" "$work" "${1:-15}" "${2:-40}"
