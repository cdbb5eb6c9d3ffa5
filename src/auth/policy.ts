/**
 * Who may call what, keyed on the gRPC method path, so that a service registered later (the
 * admin service) is covered without touching this file:
 *
 * | path                          | access | needs                                                  |
 * | ----------------------------- | ------ | ------------------------------------------------------ |
 * | /grpc.health.v1.Health/*      | open   | nothing (probes)                                       |
 * | /adrank.v1.AdRankerAdmin/*    | admin  | an admin token; refused without --admin-token-file     |
 * |                               |        | unless --admin-insecure                                |
 * | anything else (AdRanker, ...) | data   | a data or admin token when --auth-token-file is given  |
 */
import { status } from '@grpc/grpc-js';
import type { TokenFile } from './tokens.js';

export type Access = 'open' | 'data' | 'admin';

export const ADMIN_PREFIX = '/adrank.v1.AdRankerAdmin/';
const OPEN_PREFIXES = ['/grpc.health.v1.Health/'];

export interface AuthConfig {
  /** --auth-token-file: tokens for the data plane */
  dataTokens?: TokenFile;
  /** --admin-token-file: tokens for the admin service (they also pass the data plane) */
  adminTokens?: TokenFile;
  /** --admin-insecure: the admin service without a token (trusted networks only) */
  adminInsecure?: boolean;
}

export interface Refusal {
  code: status;
  details: string;
}

export function accessOf(path: string): Access {
  if (path.startsWith(ADMIN_PREFIX)) return 'admin';
  for (const p of OPEN_PREFIXES) if (path.startsWith(p)) return 'open';
  return 'data';
}

/** Whether a call to `path` needs looking at its metadata at all under `cfg`. */
export function needsCheck(cfg: AuthConfig, path: string): boolean {
  const access = accessOf(path);
  if (access === 'open') return false;
  if (access === 'data') return cfg.dataTokens !== undefined;
  return !(cfg.adminInsecure && !cfg.adminTokens);
}

/** The bearer token in an `authorization` value, or why there is none. */
function bearer(value: unknown): { token: string } | { problem: string } {
  if (value === undefined) return { problem: 'no authorization metadata' };
  const m = typeof value === 'string' ? /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(value) : null;
  return m ? { token: m[1] } : { problem: 'an authorization value that is not "Bearer <token>"' };
}

/** null = allowed; otherwise the status to answer with. `authorization` is the metadata value. */
export function authorize(cfg: AuthConfig, path: string, authorization: unknown): Refusal | null {
  const access = accessOf(path);
  if (access === 'open') return null;
  if (access === 'data') {
    if (!cfg.dataTokens) return null;
    const b = bearer(authorization);
    if ('problem' in b) return { code: status.UNAUTHENTICATED, details: `expected authorization: Bearer <token> for ${path}, got ${b.problem}` };
    // both files are checked, whatever the first says, so timing does not tell which one matched
    const data = cfg.dataTokens.has(b.token);
    const admin = cfg.adminTokens?.has(b.token) ?? false;
    return data || admin ? null : { code: status.UNAUTHENTICATED, details: `expected a valid bearer token for ${path}, got a token that is not in --auth-token-file` };
  }
  if (!cfg.adminTokens) {
    if (cfg.adminInsecure) return null;
    return { code: status.PERMISSION_DENIED, details: `the admin service is off: start the server with --admin-token-file FILE (or --admin-insecure on a trusted network) to call ${path}` };
  }
  const b = bearer(authorization);
  if ('problem' in b) return { code: status.UNAUTHENTICATED, details: `expected authorization: Bearer <admin token> for ${path}, got ${b.problem}` };
  const admin = cfg.adminTokens.has(b.token);
  const data = cfg.dataTokens?.has(b.token) ?? false;
  if (admin) return null;
  if (data) return { code: status.PERMISSION_DENIED, details: `expected an admin token for ${path}, got a data token` };
  return { code: status.UNAUTHENTICATED, details: `expected a valid admin token for ${path}, got a token that is not in --admin-token-file` };
}
