"""Pause an advertiser on a running adrank server through the admin API, from Python (grpcio).

The admin service (adrank.v1.AdRankerAdmin) needs an admin token, or a server started with
--admin-insecure on a trusted network:
    npm start -- --admin-insecure
    bash examples/python/gen-stubs.sh
    python3 examples/python/pause_advertiser.py [host:port] [admin-token]

It finds the advertiser of the best ad for a request, pauses that advertiser (every one of its
ads), shows that the same request no longer returns its ads, and un-pauses it.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "generated"))

import grpc  # noqa: E402
from adrank.v1 import adrank_pb2 as pb, adrank_pb2_grpc as rpc  # noqa: E402
from adrank.v1 import admin_pb2 as admin, admin_pb2_grpc as admin_rpc  # noqa: E402


def main(address: str, token: str) -> int:
    metadata = [("authorization", f"Bearer {token}")] if token else []
    with grpc.insecure_channel(address) as channel:
        stub, admin_stub = rpc.AdRankerStub(channel), admin_rpc.AdRankerAdminStub(channel)
        model = stub.GetModel(pb.GetModelRequest(), timeout=5)
        request = pb.RetrieveRequest(
            request_id="pv-pause-example",
            surface=model.surfaces[0],
            user=pb.UserFeatures(dense=[0.1] * model.user_dense, embedding=[0.05] * model.user_embedding_dim),
            targeting=[0] * len(model.targeting_dims),
            k=10,
        )
        before = stub.Retrieve(request, timeout=5)
        advertiser = before.winners[0].advertiser_id
        print(f"best ad {before.winners[0].ad_id} of advertiser {advertiser}; "
              f"{sum(w.advertiser_id == advertiser for w in before.winners)} of its ads in the top 10")

        paused = admin_stub.UpdateAdStates(admin.UpdateAdStatesRequest(
            updates=[admin.AdStateUpdate(advertiser_id=advertiser, active=False)]), timeout=5, metadata=metadata)
        print(f"paused advertiser {advertiser}: {paused.applied} applied, {paused.unknown} unknown")
        after = stub.Retrieve(request, timeout=5)
        still = [w.ad_id for w in after.winners if w.advertiser_id == advertiser]
        print(f"after the pause: {len(still)} of its ads in the top 10; counts.inactive = {after.counts.inactive}")

        admin_stub.UpdateAdStates(admin.UpdateAdStatesRequest(
            updates=[admin.AdStateUpdate(advertiser_id=advertiser, active=True)]), timeout=5, metadata=metadata)
        restored = stub.Retrieve(request, timeout=5)
        print(f"un-paused: best ad {restored.winners[0].ad_id} again")
        ok = not still and after.counts.inactive > 0 and restored.winners[0].ad_id == before.winners[0].ad_id
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "localhost:50051", sys.argv[2] if len(sys.argv) > 2 else ""))
