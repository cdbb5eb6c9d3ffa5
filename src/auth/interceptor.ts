/**
 * Token auth as a grpc-js server interceptor: the call's metadata is checked against the policy
 * (./policy.ts) before the handler sees it; a refused call is answered UNAUTHENTICATED or
 * PERMISSION_DENIED and never reaches a handler. Calls that need no check are passed through
 * without a wrapper.
 */
import { ServerInterceptingCall, status, type ServerInterceptor } from '@grpc/grpc-js';
import type { Logger } from '../log.js';
import { authorize, needsCheck, type AuthConfig } from './policy.js';

export function authInterceptor(cfg: AuthConfig, log: Logger): ServerInterceptor {
  return (method, call) => {
    if (!needsCheck(cfg, method.path)) return call as ServerInterceptingCall;
    return new ServerInterceptingCall(call, {
      start: (next) =>
        next({
          onReceiveMetadata: (metadata, pass) => {
            const refusal = authorize(cfg, method.path, metadata.get('authorization')[0]);
            if (!refusal) return pass(metadata);
            log.debug('auth_refused', { method: method.path, code: status[refusal.code], peer: call.getPeer() });
            call.sendStatus({ code: refusal.code, details: refusal.details });
          },
        }),
    });
  };
}
