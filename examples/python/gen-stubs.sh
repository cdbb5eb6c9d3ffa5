#!/usr/bin/env bash
# Generates the Python gRPC stubs for the adrank API into examples/python/generated/ (ignored by git).
# Uses Debian's protoc and grpc_python_plugin:
#   apt-get install protobuf-compiler protobuf-compiler-grpc python3-grpcio python3-protobuf
# Alternative where pip is used: python -m grpc_tools.protoc -I proto --python_out=OUT --grpc_python_out=OUT adrank/v1/adrank.proto
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="$root/examples/python/generated"
mkdir -p "$out"
protoc -I "$root/proto" --python_out="$out" --grpc_out="$out" \
  --plugin=protoc-gen-grpc="$(command -v grpc_python_plugin)" $(cd "$root/proto" && ls adrank/v1/*.proto)
echo "stubs written to $out"
