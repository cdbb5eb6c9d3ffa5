/** Retrieve: two-tower retrieval over the whole corpus, eligibility, cap, top K (docs/design.md §2). */
import { requestDecoder, responseEncoder } from '../wire/codec.js';
import type { RetrieveResponse } from '../generated/adrank/v1/RetrieveResponse.js';
import type { EngineRpc } from './engine-rpc.js';
import { validateRetrieve, type RetrieveInput } from './validate.js';

const encode = responseEncoder<RetrieveResponse>('adrank.v1.RetrieveResponse');

export const retrieve: EngineRpc<RetrieveInput> = {
  name: 'Retrieve',
  op: 1,
  decode: requestDecoder('adrank.v1.RetrieveRequest', []),
  validate: (r, c) => validateRetrieve(r, c),
  run: (engine, r, deadline) => engine.retrieve(r, deadline),
  encode,
  fallbackOp: 'retrieve',
  size: (_r) => 1,
};
