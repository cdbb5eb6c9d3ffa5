/**
 * The floor under the bare grpc-js server, for `npm run bench:frontend -- --served`: the engine
 * methods answered over plain node:http2 with fixed response bytes (the gRPC framing and trailers
 * written by hand, nothing else: no metadata objects, no deadline, no size limit), so that its CPU
 * per call is what Node's HTTP/2 itself costs for the same client and the same messages.
 *
 *   node --import tsx bench/bare-http2.ts RESPONSE_FILE [PORT]
 *
 * Prints {"event":"serving","address":"localhost:PORT"} once it serves (src/bench/server-proc.ts).
 */
import { readFileSync } from 'node:fs';
import { createServer, type ServerHttp2Stream } from 'node:http2';

const response = readFileSync(process.argv[2]);
const framed = Buffer.alloc(5 + response.length);
framed.writeUInt32BE(response.length, 1);
response.copy(framed, 5);
const server = createServer();
server.on('stream', (stream: ServerHttp2Stream) => {
  stream.on('data', () => {});
  stream.on('end', () => {
    stream.respond({ ':status': 200, 'content-type': 'application/grpc+proto' }, { waitForTrailers: true });
    stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
    stream.end(framed);
  });
});
server.listen(Number(process.argv[3] ?? 0), 'localhost', () => {
  const { port } = server.address() as { port: number };
  console.log(JSON.stringify({ event: 'serving', address: `localhost:${port}` }));
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
