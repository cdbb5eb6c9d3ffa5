/**
 * Bearer tokens from a file (one a line; blank lines and lines starting with '#' are skipped),
 * compared in constant time, reread on demand (the CLI rereads on SIGHUP).
 *
 * Each token is kept as its SHA-256 digest. A presented token is hashed and compared with every
 * stored digest by crypto.timingSafeEqual, without stopping at a match: the time taken does not
 * depend on how much of a token matched, on its length, or on which token it matched.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';

const digest = (token: string) => createHash('sha256').update(token, 'utf8').digest();

/** Parses a token file's text; throws if it holds no token. */
export function parseTokens(text: string, path: string): string[] {
  const tokens = text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  if (tokens.length === 0) throw new Error(`expected at least one token (one a line) in ${path}, got none`);
  for (const t of tokens) if (/\s/.test(t)) throw new Error(`expected tokens without spaces in ${path}, got a line with a space`);
  return tokens;
}

export class TokenFile {
  private digests: Buffer[] = [];

  /** Reads the file now; throws with the path if it cannot be read or holds no token. */
  constructor(readonly path: string) {
    this.reload();
  }

  /** Rereads the file; on failure keeps the tokens it had and throws. Returns the token count. */
  reload(): number {
    let text: string;
    try {
      text = readFileSync(this.path, 'utf8');
    } catch (e) {
      throw new Error(`cannot read token file ${this.path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    this.digests = parseTokens(text, this.path).map(digest);
    return this.digests.length;
  }

  get size(): number {
    return this.digests.length;
  }

  /** Whether `token` is one of the file's tokens (constant time in the token's content). */
  has(token: string): boolean {
    const d = digest(token);
    let found = false;
    for (const k of this.digests) found = timingSafeEqual(d, k) || found;
    return found;
  }
}
