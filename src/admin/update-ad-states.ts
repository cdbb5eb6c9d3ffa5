/**
 * UpdateAdStates: validate the whole batch (one bad value refuses all of it, naming the index
 * and the field), then persist and apply it atomically (src/state/store.ts).
 */
import type { UpdateAdStatesRequest__Output } from '../generated/adrank/v1/UpdateAdStatesRequest.js';
import type { UpdateAdStatesResponse } from '../generated/adrank/v1/UpdateAdStatesResponse.js';
import type { AdStateUpdate__Output } from '../generated/adrank/v1/AdStateUpdate.js';
import { invalid } from '../handlers/validate.js';
import type { AdStateChange } from '../state/store.js';
import type { AdminContext } from './context.js';

/** updates per call */
export const MAX_UPDATES = 1_000_000;

export function validateUpdates(updates: AdStateUpdate__Output[]): AdStateChange[] {
  if (updates.length > MAX_UPDATES) throw invalid('updates', `at most ${MAX_UPDATES} updates`, `${updates.length} updates`);
  return updates.map((u, i) => {
    const at = `updates[${i}]`;
    if (u.target !== 'adId' && u.target !== 'advertiserId') throw invalid(`${at}.target`, 'ad_id or advertiser_id', null);
    const change: AdStateChange = u.target === 'adId' ? { target: 'ad', id: BigInt(u.adId!) } : { target: 'advertiser', id: BigInt(u.advertiserId!) };
    if (u._active === 'active') change.active = !!u.active;
    if (u._inBudget === 'inBudget') change.inBudget = !!u.inBudget;
    if (u._pacingRate === 'pacingRate') {
      const r = u.pacingRate!;
      if (!(r >= 0 && r <= 1)) throw invalid(`${at}.pacing_rate`, 'a rate in [0, 1]', r);
      change.pacingRate = r;
    }
    if (u._bid === 'bid') {
      const b = u.bid!;
      if (!(Number.isFinite(b) && b >= 0)) throw invalid(`${at}.bid`, 'a finite bid >= 0', b);
      change.bid = b;
    }
    if (change.active === undefined && change.inBudget === undefined && change.pacingRate === undefined && change.bid === undefined)
      throw invalid(at, 'at least one of active, in_budget, pacing_rate, bid', 'none');
    return change;
  });
}

export async function updateAdStates(ctx: AdminContext, req: UpdateAdStatesRequest__Output): Promise<UpdateAdStatesResponse> {
  const changes = validateUpdates(req.updates ?? []);
  const t0 = performance.now();
  const r = await ctx.state.update(changes);
  ctx.metrics?.adStateUpdates.inc(changes.length);
  if (r.applied > 0) {
    ctx.metrics?.adStateWrite.observe(r.writeMs / 1000);
    ctx.metrics?.adStateApply.observe(r.applyMs / 1000);
  }
  const ms = (x: number) => Math.round(x * 1000) / 1000;
  ctx.log.info('ad_states_updated', {
    updates: changes.length,
    applied: r.applied,
    unknown: r.unknown,
    advertiserTargets: changes.filter((c) => c.target === 'advertiser').length,
    ms: ms(performance.now() - t0),
    writeMs: ms(r.writeMs),
    applyMs: ms(r.applyMs),
  });
  return { applied: r.applied, unknown: r.unknown };
}
