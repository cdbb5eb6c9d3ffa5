/**
 * A front-end worker thread (src/server/threads.ts): a grpc-js server on the shared port that
 * serves the owner thread's engines. Started by FrontEndThreads with ThreadData.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { TokenFile } from '../auth/tokens.js';
import { AdrankServer } from './server.js';
import { ThreadLink, type ThreadData } from './threads.js';

const data = workerData as ThreadData;
const link = new ThreadLink(parentPort!, data.index, data.options.metrics);
const { auth, metrics: _metrics, ...options } = data.options;
const tokens = {
  data: auth?.dataTokenFile ? new TokenFile(auth.dataTokenFile) : undefined,
  admin: auth?.adminTokenFile ? new TokenFile(auth.adminTokenFile) : undefined,
};

try {
  const server = await AdrankServer.start({
    ...options,
    port: data.port,
    log: link.log,
    auth: { dataTokens: tokens.data, adminTokens: tokens.admin, adminInsecure: auth?.adminInsecure },
    thread: link,
  });
  link.on((m) => {
    if (m.type === 'reload-auth') {
      for (const t of [tokens.data, tokens.admin]) {
        try {
          t?.reload();
        } catch (e) {
          link.log.error('auth_reload_failed', { file: t?.path, error: e, tokensKept: t?.size });
        }
      }
    } else if (m.type === 'shutdown') {
      server.shutdown(m.reason).then(
        () => {
          // with native runs still in flight the thread stays: the process ends without waiting for them
          const nativeRunsLeft = server.nativeRunsLeft;
          link.post({ type: 'stopped', nativeRunsLeft });
          if (nativeRunsLeft === 0) process.exit(0);
        },
        (e: Error) => {
          link.log.error('shutdown_failed', { error: e });
          process.exit(1);
        },
      );
    }
  });
  link.post({ type: 'listening' });
  server.ready.then(
    () => link.post({ type: 'ready' }),
    () => {},
  );
} catch (e) {
  link.post({ type: 'failed', message: (e as Error).message, code: (e as { code?: string }).code });
  process.exit(1);
}
