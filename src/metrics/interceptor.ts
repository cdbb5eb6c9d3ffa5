/**
 * adrank_requests_total{rpc,code} and adrank_request_duration_seconds{rpc} for every call to the
 * adrank services, whatever ends it: the handler's answer, a refusal by auth, a malformed
 * message, a deadline, a client cancel, or shutdown cutting the call (UNAVAILABLE). Installed
 * first in the server's interceptor list, i.e. nearest the wire, so it sees every status sent.
 */
import { ServerInterceptingCall, status, type ServerInterceptor } from '@grpc/grpc-js';
import type { Metrics } from './index.js';

export function metricsInterceptor(metrics: Metrics): ServerInterceptor {
  return (method, call) => {
    const m = metrics.method(method.path);
    if (!m) return call as ServerInterceptingCall; // health, reflection: passed through untouched
    const t0 = performance.now();
    let done = false;
    const finish = (code: number) => {
      if (done) return;
      done = true;
      m.finished(code, (performance.now() - t0) / 1000);
    };
    return new ServerInterceptingCall(call, {
      start: (next) =>
        next({
          // grpc-js ends a call whose deadline passed without a status through the interceptors
          onCancel: () => {
            finish(Number(call.getDeadline()) <= Date.now() ? status.DEADLINE_EXCEEDED : status.CANCELLED);
          },
        }),
      sendStatus: (s, next) => {
        finish(s.code);
        next(s);
      },
    });
  };
}
