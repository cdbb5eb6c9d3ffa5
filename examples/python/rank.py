"""Rank three candidates on a running adrank server, from Python (grpcio).

Run from the repository root, with a server started by `npm start`:
    bash examples/python/gen-stubs.sh          # once: writes examples/python/generated/
    python3 examples/python/rank.py [host:port]
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "generated"))

import grpc  # noqa: E402
from adrank.v1 import adrank_pb2 as pb, adrank_pb2_grpc as rpc  # noqa: E402


def main(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = rpc.AdRankerStub(channel)
        # The model says what a request must carry: surfaces, vector sizes, sparse fields, targeting.
        model = stub.GetModel(pb.GetModelRequest(), timeout=5)
        user = pb.UserFeatures(
            dense=[0.1] * model.user_dense,
            embedding=[0.05] * model.user_embedding_dim,
            sparse={model.user_sparse_fields[0]: pb.IdList(ids=[42, 7])},
            sequence=pb.EngagementSequence(item_ids=[9001, 9002], actions=[1, 0]),  # most recent first
        )
        targeting = [0] * len(model.targeting_dims)
        # Any three ads of the bundle: a Retrieve of the top 3 supplies real ids for the Rank below.
        retrieved = stub.Retrieve(
            pb.RetrieveRequest(request_id="pv-123-r", surface=model.surfaces[0], user=user, targeting=targeting, k=3),
            timeout=5,
        )
        request = pb.RankRequest(
            request_id="pv-123",
            surface=model.surfaces[0],
            user=user,
            targeting=targeting,
            candidate_ad_ids=[w.ad_id for w in retrieved.winners],
            k=2,
            per_advertiser_cap=1,
            price=True,
        )
        try:
            response = stub.Rank(request, timeout=1.0)  # on a GPU a few ms; the CPU backend is slower
        except grpc.RpcError as e:
            print(f"{e.code().name}: {e.details()}", file=sys.stderr)
            return 1
        for w in response.winners:
            print(w.ad_id, w.advertiser_id, w.score, list(w.task_probabilities), w.price)
        print(response.counts, response.timings)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "localhost:50051"))
