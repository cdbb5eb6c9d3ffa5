/**
 * A bare grpc-js server for `npm run bench:frontend -- --served`: the AdRanker engine methods
 * (Retrieve, Rank, RetrieveAndRank) answered with fixed response bytes, no decoding, no engine,
 * so that its CPU per call is grpc-js's own cost for the same client and the same messages.
 *
 *   node --import tsx bench/bare-server.ts RESPONSE_FILE [PORT]
 *
 * Prints {"event":"serving","address":"localhost:PORT"} once it serves (src/bench/server-proc.ts).
 */
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';

const response = readFileSync(process.argv[2]);
const identity = (b: Buffer) => b;
const method = (name: string): grpc.MethodDefinition<Buffer, Buffer> => ({
  path: `/adrank.v1.AdRanker/${name}`,
  requestStream: false,
  responseStream: false,
  requestSerialize: identity,
  requestDeserialize: identity,
  responseSerialize: identity,
  responseDeserialize: identity,
});
const names = ['Retrieve', 'Rank', 'RetrieveAndRank'];
const service = Object.fromEntries(names.map((n) => [n, method(n)])) as grpc.ServiceDefinition;
const answer: grpc.handleUnaryCall<Buffer, Buffer> = (_call, callback) => callback(null, response);
const server = new grpc.Server({ 'grpc.max_receive_message_length': 8 * 1024 * 1024 });
server.addService(service, Object.fromEntries(names.map((n) => [n, answer])));
server.bindAsync(`localhost:${process.argv[3] ?? 0}`, grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) throw err;
  console.log(JSON.stringify({ event: 'serving', address: `localhost:${port}` }));
});
process.on('SIGTERM', () => server.tryShutdown(() => process.exit(0)));
