#!/usr/bin/env bash
# Runs the README's quick start and the examples as a user would, against `npm start`:
# the server on the demo bundle (on a free port), `adrank client`, examples/node/rank.mjs,
# examples/python/rank.py and examples/python/pause_advertiser.py (stubs from Debian's protoc; the server runs
# with --admin-insecure for the admin example). CI runs it after the tests.
#   bash scripts/examples-check.sh      (PYTHON=/usr/bin/python3 by default: Debian's grpcio)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-/usr/bin/python3}"
log="$(mktemp)"
# Free ports, so that a server already on 50051 or 9464 does not fail the check (the examples take
# the address as their first argument); the admin example needs the admin service: --admin-insecure
# (loopback only, as npm start binds).
free_port() { node -e "const s=require('net').createServer().listen(0,'localhost',()=>{console.log(s.address().port);s.close()})"; }
port=$(free_port)
address="localhost:$port"
# its own process group, so that stopping it also stops the node process npm started
setsid npm start -- --admin-insecure --port "$port" --metrics-port 0 > "$log" 2>&1 &
server=$!
trap 'kill -- -$server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  grep -q '"event":"serving"' "$log" && break
  kill -0 $server 2>/dev/null || { cat "$log"; echo "examples-check: the server exited"; exit 1; }
  sleep 1
done
grep -q '"event":"serving"' "$log" || { cat "$log"; echo "examples-check: the server did not become SERVING in 120 s"; exit 1; }

echo "::: adrank client"
node dist/src/cli/main.js client --address "$address" --rpc rank --k 3
echo "::: examples/node/rank.mjs"
node examples/node/rank.mjs "$address" | tee "$log.node"
echo "::: examples/python/rank.py"
bash examples/python/gen-stubs.sh
"$PYTHON" examples/python/rank.py "$address" | tee "$log.py"
# the two clients sent the same requests: the winners' ad ids must agree
node_ids=$(grep -Eo '^-?[0-9]+ -?[0-9]+ ' "$log.node" | awk '{print $1}')
py_ids=$(grep -Eo '^-?[0-9]+ -?[0-9]+ ' "$log.py" | awk '{print $1}')
[ -n "$node_ids" ] && [ "$node_ids" = "$py_ids" ] || { echo "examples-check: Node and Python winners differ: [$node_ids] vs [$py_ids]"; exit 1; }
echo "::: examples/python/pause_advertiser.py (admin API)"
"$PYTHON" examples/python/pause_advertiser.py "$address"
echo "examples-check: ok (winners $(echo $node_ids))"
