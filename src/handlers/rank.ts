/** Rank: score the caller's candidate ids and return the top K by utility (docs/design.md §2). */
import { requestDecoder, responseEncoder } from '../wire/codec.js';
import type { RankResponse } from '../generated/adrank/v1/RankResponse.js';
import type { EngineRpc } from './engine-rpc.js';
import { validateRank, type RankInput } from './validate.js';
import { BATCH_OP } from '../batcher/batcher.js';

const encode = responseEncoder<RankResponse>('adrank.v1.RankResponse');

export const rank: EngineRpc<RankInput> = {
  name: 'Rank',
  op: 0,
  emptyAtZero: true,
  decode: requestDecoder('adrank.v1.RankRequest', ['candidateAdIds']),
  validate: validateRank,
  // An empty candidate list is OK with no winners and needs no engine work.
  run: (engine, r, deadline) => (r.candidates.length === 0 ? undefined : engine.rank(r, deadline)),
  batch: { op: BATCH_OP.rank },
  encode,
  fallbackOp: 'rank',
  size: (r) => r.candidates.length,
};
