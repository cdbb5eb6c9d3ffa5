/** RetrieveAndRank: retrieve top R, rank them, select K, price (GSP), on the device (docs/design.md §2). */
import { requestDecoder, responseEncoder } from '../wire/codec.js';
import type { RetrieveAndRankResponse } from '../generated/adrank/v1/RetrieveAndRankResponse.js';
import type { EngineRpc } from './engine-rpc.js';
import { validateRetrieveAndRank, type RetrieveAndRankInput } from './validate.js';
import { BATCH_OP } from '../batcher/batcher.js';

const encode = responseEncoder<RetrieveAndRankResponse>('adrank.v1.RetrieveAndRankResponse');

export const retrieveAndRank: EngineRpc<RetrieveAndRankInput> = {
  name: 'RetrieveAndRank',
  op: 2,
  decode: requestDecoder('adrank.v1.RetrieveAndRankRequest', ['candidateAdIds']),
  validate: validateRetrieveAndRank,
  run: (engine, r, deadline) => engine.retrieveAndRank(r, deadline),
  batch: { op: BATCH_OP.retrieveAndRank },
  encode,
  fallbackOp: 'retrieveAndRank',
  // retrieval's R plus the caller's candidates: what the forward may rank
  size: (r) => r.retrieveCount + r.candidates.length,
  withRetrieved: true,
};
