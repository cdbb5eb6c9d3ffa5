/**
 * Server credentials: plaintext (the default), TLS (`--tls-cert`, `--tls-key`), or mTLS
 * (`--tls-client-ca`: clients must present a certificate signed by that CA, checked in the
 * handshake).
 */
import { readFileSync } from 'node:fs';
import { ServerCredentials } from '@grpc/grpc-js';

export interface TlsFiles {
  /** PEM certificate chain (--tls-cert) */
  cert: string;
  /** PEM private key (--tls-key) */
  key: string;
  /** PEM CA bundle that client certificates must chain to (--tls-client-ca) */
  clientCa?: string;
}

function read(path: string, flag: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new Error(`cannot read ${flag} ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

export function serverCredentials(tls: TlsFiles | undefined): ServerCredentials {
  if (!tls) return ServerCredentials.createInsecure();
  const cert = read(tls.cert, '--tls-cert');
  const key = read(tls.key, '--tls-key');
  const ca = tls.clientCa ? read(tls.clientCa, '--tls-client-ca') : null;
  return ServerCredentials.createSsl(ca, [{ cert_chain: cert, private_key: key }], ca !== null);
}
