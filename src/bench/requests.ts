/**
 * Request mixes for the load generator: which RPCs, in what proportion, and a pool of distinct
 * pre-encoded requests per entry (encoded once before the run, so the generator's per-call cost
 * is a buffer send, not protobuf work).
 *
 * Mix syntax: comma-separated `rpc[:n][=weight]`:
 *   rank:N              Rank of N candidate ids (default 10)
 *   retrieve            Retrieve
 *   retrieve-and-rank:R RetrieveAndRank retrieving R (default max(K, 100))
 * e.g. `rank:10=8,retrieve=1,retrieve-and-rank:200=1`.
 */
import type protobuf from 'protobufjs';
import { sampleRank, sampleRetrieve, sampleRetrieveAndRank, type ModelShape } from '../handlers/sample.js';

export type MixRpc = 'rank' | 'retrieve' | 'retrieve-and-rank';

export interface MixEntry {
  rpc: MixRpc;
  /** Rank: candidates; RetrieveAndRank: retrieve count; Retrieve: unused (0) */
  n: number;
  weight: number;
}

export const METHOD: Record<MixRpc, { path: string; request: string; response: string }> = {
  rank: { path: '/adrank.v1.AdRanker/Rank', request: 'adrank.v1.RankRequest', response: 'adrank.v1.RankResponse' },
  retrieve: { path: '/adrank.v1.AdRanker/Retrieve', request: 'adrank.v1.RetrieveRequest', response: 'adrank.v1.RetrieveResponse' },
  'retrieve-and-rank': {
    path: '/adrank.v1.AdRanker/RetrieveAndRank',
    request: 'adrank.v1.RetrieveAndRankRequest',
    response: 'adrank.v1.RetrieveAndRankResponse',
  },
};

/** Parses a mix; throws "expected ... for --mix, got ..." on bad input. */
export function parseMix(spec: string): MixEntry[] {
  const out: MixEntry[] = [];
  for (const part of spec.split(',').map((s) => s.trim()).filter(Boolean)) {
    const m = /^(rank|retrieve-and-rank|retrieve)(?::(\d+))?(?:=(\d+(?:\.\d+)?))?$/.exec(part);
    if (!m) throw new Error(`expected rank[:N][=W], retrieve[=W] or retrieve-and-rank[:R][=W] for --mix, got ${JSON.stringify(part)}`);
    const rpc = m[1] as MixRpc;
    const n = m[2] !== undefined ? Number(m[2]) : rpc === 'rank' ? 10 : 0;
    const weight = m[3] !== undefined ? Number(m[3]) : 1;
    if (rpc === 'rank' && (n < 1 || n > 100_000)) throw new Error(`expected 1..100000 candidates for --mix rank:N, got ${n}`);
    if (!(weight > 0)) throw new Error(`expected a positive weight in --mix, got ${JSON.stringify(part)}`);
    out.push({ rpc, n, weight });
  }
  if (out.length === 0) throw new Error(`expected at least one entry for --mix, got ${JSON.stringify(spec)}`);
  return out;
}

export function mixLabel(mix: MixEntry[]): string {
  return mix.map((e) => `${e.rpc === 'rank' ? `Rank(${e.n})` : e.rpc === 'retrieve' ? 'Retrieve' : `RetrieveAndRank(${e.n || 'K'})`}${mix.length > 1 ? `×${e.weight}` : ''}`).join(' + ');
}

export interface EncodedRequest {
  entry: number;
  rpc: MixRpc;
  bytes: Buffer;
}

/** A pool of `perEntry` distinct encoded requests for every mix entry; candidate ids drawn from `adIds`. */
export function buildPool(root: protobuf.Root, shape: ModelShape, mix: MixEntry[], adIds: string[], k: number, perEntry: number, seed = 1): EncodedRequest[][] {
  let s = seed >>> 0 || 1;
  const rnd = () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
  return mix.map((e, entry) => {
    const type = root.lookupType(METHOD[e.rpc].request);
    const pool: EncodedRequest[] = [];
    for (let i = 0; i < perEntry; i++) {
      const reqSeed = seed * 1000 + entry * 100 + i + 1;
      let msg: object;
      if (e.rpc === 'rank') {
        if (adIds.length === 0) throw new Error('the server returned no ad ids to rank (Retrieve found none)');
        const ids: string[] = [];
        for (let j = 0; j < e.n; j++) ids.push(adIds[Math.floor(rnd() * adIds.length)]);
        msg = { ...sampleRank(shape, ids, Math.min(k, e.n), reqSeed), perAdvertiserCap: 0 };
      } else if (e.rpc === 'retrieve') {
        msg = { ...sampleRetrieve(shape, k, reqSeed), perAdvertiserCap: 0 };
      } else {
        const r = sampleRetrieveAndRank(shape, k, reqSeed);
        msg = { ...r, perAdvertiserCap: 0, retrieveCount: e.n > 0 ? Math.max(e.n, k) : r.retrieveCount };
      }
      const err = type.verify(type.fromObject(msg));
      if (err) throw new Error(`bench: bad ${METHOD[e.rpc].request}: ${err}`);
      pool.push({ entry, rpc: e.rpc, bytes: Buffer.from(type.encode(type.fromObject(msg)).finish()) });
    }
    return pool;
  });
}

/** Picks mix entries by weight with a deterministic sequence. */
export function picker(mix: MixEntry[], seed = 7): () => number {
  const total = mix.reduce((a, e) => a + e.weight, 0);
  const cum: number[] = [];
  let acc = 0;
  for (const e of mix) cum.push((acc += e.weight / total));
  let s = seed >>> 0 || 1;
  return () => {
    if (mix.length === 1) return 0;
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    const x = s / 4294967296;
    for (let i = 0; i < cum.length; i++) if (x < cum[i]) return i;
    return cum.length - 1;
  };
}
