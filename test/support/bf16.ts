/**
 * The bf16 tolerance, one for the CUDA path and for the CPU backend at precision bf16 (test/32,
 * test/40; docs/cpu-bf16.md), so a bundle behaves the same on both.
 */
import { expect } from 'chai';

/** every calibrated probability within this, absolute; the value Σ_t w_t p_t within this · Σ_t |w_t| */
export const BF16_PROB_ATOL = 2e-2;

/**
 * Winner agreement in bf16: the engine's winners are the reference's, except that a reference
 * winner may give its place to an ad whose reference utility is within the bf16 value tolerance of
 * its own (BF16_PROB_ATOL · Σ|w| · bid, the larger of the two ads' bids): bf16 may reorder ads it
 * cannot tell apart, nothing else. Missing reference winners and extra engine winners are paired
 * in order of reference utility. Returns how many reference winners the engine also picked.
 */
export function bf16WinnersAgree(
  field: string,
  gotRows: ArrayLike<number>,
  wantRows: ArrayLike<number>,
  refUtility: (row: number) => number,
  tolerance: (row: number) => number,
): { overlap: number; total: number } {
  expect(gotRows.length, `${field}: winner count`).to.equal(wantRows.length);
  const got = new Set(Array.from(gotRows));
  const want = new Set(Array.from(wantRows));
  const byUtility = (a: number, b: number) => refUtility(b) - refUtility(a);
  const missing = Array.from(wantRows).filter((r) => !got.has(r)).sort(byUtility);
  const extra = Array.from(gotRows).filter((r) => !want.has(r)).sort(byUtility);
  missing.forEach((m, i) => {
    const e = extra[i];
    const gap = Math.abs(refUtility(m) - refUtility(e));
    const tol = Math.max(tolerance(m), tolerance(e));
    if (!(gap <= tol))
      expect.fail(`${field}: reference winner row ${m} (utility ${refUtility(m)}) lost its place to row ${e} (utility ${refUtility(e)}), a gap of ${gap} > the bf16 tolerance ${tol}`);
  });
  return { overlap: wantRows.length - missing.length, total: wantRows.length };
}
