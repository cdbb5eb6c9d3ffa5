/**
 * The scrape endpoint: GET /metrics on its own HTTP port (`--metrics-port`, bound to `--host`),
 * in the Prometheus text format. Anything else is 404.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Metrics } from './index.js';

export interface MetricsEndpoint {
  readonly port: number;
  close(): Promise<void>;
}

/** Listens on host:port (0 = any free port) and resolves once bound; rejects if it cannot bind. */
export async function serveMetrics(metrics: Metrics, host: string, port: number): Promise<MetricsEndpoint> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/metrics' || (req.method !== 'GET' && req.method !== 'HEAD')) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: the metrics are at GET /metrics\n');
      return;
    }
    metrics.text().then(
      (body) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(req.method === 'HEAD' ? undefined : body),
      (e: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${e.message}\n`),
    );
  });
  server.keepAliveTimeout = 65_000; // longer than Prometheus's scrape interval, so connections are reused
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => reject(new Error(`cannot listen for metrics on ${host}:${port}: ${e.code ?? e.message} (--metrics-port; 0 turns the endpoint off)`)));
    server.listen(port, host, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
