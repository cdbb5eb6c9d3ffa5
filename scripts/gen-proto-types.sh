#!/usr/bin/env bash
# Generates the TypeScript types of proto/adrank/v1/adrank.proto and admin.proto into src/generated, with the
# same proto-loader options the server loads the proto with (proto/loader-options.json).
# Run after changing the proto; the output is committed.
set -euo pipefail
cd "$(dirname "$0")/.."

flags=$(node -e '
  const o = JSON.parse(require("fs").readFileSync("proto/loader-options.json", "utf8"));
  const f = [];
  if (o.keepCase) f.push("--keepCase");
  if (o.longs) f.push("--longs=" + o.longs);
  if (o.enums) f.push("--enums=" + o.enums);
  if (o.defaults) f.push("--defaults");
  if (o.oneofs) f.push("--oneofs");
  console.log(f.join(" "));
')

rm -rf src/generated
# shellcheck disable=SC2086
npx --no-install proto-loader-gen-types $flags \
  --grpcLib=@grpc/grpc-js --includeComments --importFileExtension=.js \
  -I proto -O src/generated adrank/v1/adrank.proto adrank/v1/admin.proto
echo "generated src/generated with: $flags"
