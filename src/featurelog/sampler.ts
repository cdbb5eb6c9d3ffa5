/**
 * Which requests the feature log keeps: a deterministic function of the request id, so every
 * replica (and every rerun) logs the same requests (docs/feature-log.md "Sampling").
 *
 * u = fmix32(FNV-1a 32 of the id's UTF-16 code units) / 2^32 ∈ [0, 1); sampled iff u < rate.
 * Unrelated to the pacing hash (FNV-1a 64 + splitmix64), so the logged sample is not biased
 * towards ads that passed pacing. A `salt` (XORed into FNV's offset basis) gives another sample of
 * the same ids, independent of this one (shadow traffic, src/shadow/); 0 is the feature log's.
 */
export function sampleDraw(requestId: string, salt = 0): number {
  let h = (0x811c9dc5 ^ salt) >>> 0;
  for (let i = 0; i < requestId.length; i++) {
    h ^= requestId.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  // murmur3 finaliser: FNV's low bits alone are poorly mixed for short ids
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return (h >>> 0) / 4294967296;
}

export function sampled(requestId: string, rate: number, salt = 0): boolean {
  return rate >= 1 || (rate > 0 && sampleDraw(requestId, salt) < rate);
}
