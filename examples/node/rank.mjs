// Rank three candidates on a running adrank server, from Node (@grpc/grpc-js + @grpc/proto-loader).
// Run from the repository root, with a server started by `npm start`:
//   node examples/node/rank.mjs [host:port]
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

const address = process.argv[2] ?? 'localhost:50051';
const def = protoLoader.loadSync('adrank/v1/adrank.proto', {
  includeDirs: ['proto'], longs: String, enums: String, defaults: true, oneofs: true,
});
const { AdRanker } = grpc.loadPackageDefinition(def).adrank.v1;
const client = new AdRanker(address, grpc.credentials.createInsecure());

const call = (method, request, timeoutMs) =>
  new Promise((resolve, reject) =>
    client[method](request, { deadline: Date.now() + timeoutMs }, (err, res) => (err ? reject(err) : resolve(res))));

try {
  // The model says what a request must carry: surfaces, vector sizes, sparse fields, targeting.
  const model = await call('GetModel', {}, 5000);
  // Any three ads of the bundle: a Retrieve of the top 3 supplies real ids for the Rank below.
  const user = {
    dense: new Array(model.userDense).fill(0.1),
    embedding: new Array(model.userEmbeddingDim).fill(0.05),
    sparse: { [model.userSparseFields[0]]: { ids: ['42', '7'] } },
    sequence: { itemIds: ['9001', '9002'], actions: [1, 0] }, // most recent first
  };
  const targeting = model.targetingDims.map(() => 0);
  const retrieved = await call('Retrieve', { requestId: 'pv-123-r', surface: model.surfaces[0], user, targeting, k: 3 }, 5000);

  const request = {
    requestId: 'pv-123',
    surface: model.surfaces[0],
    user,
    targeting,
    candidateAdIds: retrieved.winners.map((w) => w.adId),
    k: 2,
    perAdvertiserCap: 1,
    price: true,
  };
  const res = await call('Rank', request, 1000); // on a GPU a few ms; the CPU backend is slower
  for (const w of res.winners) console.log(w.adId, w.advertiserId, w.score, w.taskProbabilities, w.price);
  console.log(res.counts, res.timings);
} catch (err) {
  console.error(err.code !== undefined ? `${grpc.status[err.code]}: ${err.details}` : err);
  process.exitCode = 1;
} finally {
  client.close();
}
