/**
 * Writes the requests bench/wire-native/compare.cc parses: RankRequest bytes of the demo config
 * (docs/design.md §4) as a client sends them (protobufjs, packed repeated fields), with 10, 1,000
 * and 10,000 candidates, and the validation schema of that config (a line per field).
 *
 *   node --import tsx bench/wire-native/requests.ts DIR
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeDemoConfig } from '../../src/model/demo.js';
import { loadProto } from '../../src/wire/proto.js';
import { modelShape, sampleRank } from '../../src/handlers/sample.js';
import { Rng } from '../../src/model/random.js';

const dir = process.argv[2];
if (!dir) throw new Error('usage: requests.ts DIR');
mkdirSync(dir, { recursive: true });
const c = makeDemoConfig();
const shape = modelShape(c);
const type = loadProto().root.lookupType('adrank.v1.RankRequest');
const rng = new Rng(11);
for (const n of [10, 1000, 10000]) {
  // random int64 ids, positive and negative, as an ad server's ids are (the reader does not look them up)
  const ids = Array.from({ length: n }, () => ((BigInt(rng.u32()) << 31n) ^ BigInt(rng.u32())) * (rng.uniform() < 0.5 ? -1n : 1n));
  const req = sampleRank(shape, ids.map(String), 10, 7);
  // a full sequence, as a logged-in user's
  const L = c.sequence.max_len;
  req.user!.sequence = { itemIds: Array.from({ length: L }, (_, i) => String(1000 + i * 7919)), actions: Array.from({ length: L }, (_, i) => i % c.sequence.actions) };
  const bytes = type.encode(type.fromObject(req)).finish();
  writeFileSync(join(dir, `rank${n}.bin`), bytes);
  console.log(`rank${n}.bin: ${bytes.length} bytes`);
}
const schema = [
  `surfaces ${c.surfaces.join(' ')}`,
  `tasks ${c.tasks.join(' ')}`,
  `user_sparse ${c.user_sparse.map((f) => f.name).join(' ')}`,
  `user_dense ${c.user_dense}`,
  `user_embedding_dim ${c.user_embedding_dim}`,
  `targeting_dims ${c.targeting_dims.length}`,
  `seq_max_len ${c.sequence.max_len}`,
  `seq_actions ${c.sequence.actions}`,
  `reserve_price ${c.reserve_price ?? 0}`,
  `model_name ${c.name}`,
];
writeFileSync(join(dir, 'schema.txt'), schema.join('\n') + '\n');
