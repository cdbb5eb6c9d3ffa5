"""Unary gRPC calls from Python grpcio, for the token-auth tests (test/55.security.test.ts).

Reads JSON from stdin: {"address": "localhost:PORT", "calls": [{"method": "/pkg.Svc/M",
"request_hex": "...", "authorization": "Bearer x" or null}]}; writes a JSON list with the status
code name of each call ("OK", "UNAUTHENTICATED", ...) to stdout. Requests and responses are raw
bytes (no generated stubs needed).
"""
import json
import sys

import grpc


def main() -> None:
    spec = json.load(sys.stdin)
    out = []
    with grpc.insecure_channel(spec["address"]) as channel:
        for c in spec["calls"]:
            call = channel.unary_unary(c["method"], request_serializer=None, response_deserializer=None)
            metadata = [("authorization", c["authorization"])] if c.get("authorization") is not None else None
            try:
                call(bytes.fromhex(c.get("request_hex", "")), metadata=metadata, timeout=20)
                out.append("OK")
            except grpc.RpcError as e:
                out.append(e.code().name)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
