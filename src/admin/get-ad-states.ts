/** GetAdStates: the effective live state of each asked ad in the default model version. */
import type { AdState } from '../generated/adrank/v1/AdState.js';
import type { GetAdStatesRequest__Output } from '../generated/adrank/v1/GetAdStatesRequest.js';
import type { GetAdStatesResponse } from '../generated/adrank/v1/GetAdStatesResponse.js';
import { adRows } from '../model/bundle.js';
import { ids } from '../handlers/validate.js';
import type { AdminContext } from './context.js';

export const MAX_AD_IDS = 100_000;

export function getAdStates(ctx: AdminContext, req: GetAdStatesRequest__Output): GetAdStatesResponse {
  const asked = ids('ad_ids', req.adIds, MAX_AD_IDS);
  const lease = ctx.models.acquire('');
  try {
    const engine = lease.engine;
    const t = engine.bundle.tensors;
    const rows = adRows(engine.bundle);
    const states: AdState[] = Array.from(asked, (id) => {
      const row = rows.get(id);
      const s = ctx.state.effective(engine, id);
      if (row === undefined || !s) return { adId: String(id), known: false };
      const bundleBid = (t['ads.bid'] as Float32Array)[row];
      return {
        adId: String(id),
        known: true,
        advertiserId: String((t['ads.advertiser'] as BigInt64Array)[row]),
        active: s.active,
        inBudget: s.inBudget,
        pacingRate: s.pacingRate,
        bundleBid,
        bidOverride: s.bidOverride,
        effectiveBid: s.bidOverride ?? bundleBid,
      };
    });
    return { states, modelVersion: lease.version };
  } finally {
    lease.release();
  }
}
