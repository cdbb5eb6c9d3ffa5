/**
 * UpdateAdStates: validate the whole batch (one bad value refuses all of it, naming the index
 * and the field), then persist and apply it atomically (src/state/store.ts).
 *
 * The request is read into columns (AdStateBatch) by protobufjs's own decoder, not turned into
 * proto-loader's objects (an int64 as a string, then a BigInt): a batch of 1,000 updates decodes
 * in about a quarter of the time, and a front-end thread that forwards it to the owner thread
 * copies a few typed arrays instead of cloning 1,000 objects (docs/operations.md "Live ad state").
 */
import type Long from 'long';
import protobuf from 'protobufjs';
import type { UpdateAdStatesResponse } from '../generated/adrank/v1/UpdateAdStatesResponse.js';
import { invalid } from '../handlers/validate.js';
import type { AdStateChange } from '../state/store.js';
import { protoRoot } from '../wire/proto.js';
import type { AdminContext } from './context.js';

/** updates per call */
export const MAX_UPDATES = 1_000_000;

/** An UpdateAdStatesRequest as columns, one entry per update. */
export interface AdStateBatch {
  n: number;
  /** 0: no target, 1: ad_id, 2: advertiser_id */
  target: Uint8Array;
  id: BigInt64Array;
  /** bits: 1 active set, 2 in_budget set, 4 pacing_rate set, 8 bid set, 16 active's value, 32 in_budget's */
  flags: Uint8Array;
  pacingRate: Float64Array;
  bid: Float64Array;
}

const F_ACTIVE = 1, F_IN_BUDGET = 2, F_RATE = 4, F_BID = 8, V_ACTIVE = 16, V_IN_BUDGET = 32;

type DecodedUpdate = { adId?: Long | number; advertiserId?: Long | number; active?: boolean; inBudget?: boolean; pacingRate?: number; bid?: number };
let requestType: ReturnType<protobuf.Root['lookupType']> | undefined;
const has = (o: object, k: string) => Object.prototype.hasOwnProperty.call(o, k) && (o as Record<string, unknown>)[k] != null;

/** An int64 as protobufjs reads it (a Long, or a number without the long package) → its value. */
function int64Of(v: Long | number, words: Uint32Array, at: number): void {
  if (typeof v === 'number') {
    new BigInt64Array(words.buffer, words.byteOffset + 8 * at, 1)[0] = BigInt(v);
    return;
  }
  words[2 * at] = v.low >>> 0;
  words[2 * at + 1] = v.high >>> 0;
}

/**
 * The gRPC deserializer of UpdateAdStates: protobufjs's decoder (the data RPCs' requests are read
 * by the same library), so a field is present when it is on the wire, and of the oneof target the
 * member last on the wire is kept (the decoder clears the other). test/58 holds these columns and
 * validateUpdates to the request's objects and the validation written against them.
 */
export function decodeUpdateBatch(buf: Uint8Array): AdStateBatch {
  requestType ??= protoRoot('adrank/v1/admin.proto', false).lookupType('adrank.v1.UpdateAdStatesRequest');
  // unknown fields are skipped, not kept on the messages (protobufjs keeps them unless asked)
  const reader = protobuf.Reader.create(buf);
  reader.discardUnknown = true;
  const updates = (requestType.decode(reader) as unknown as { updates: DecodedUpdate[] }).updates;
  const n = updates.length;
  const b: AdStateBatch = { n, target: new Uint8Array(n), id: new BigInt64Array(n), flags: new Uint8Array(n), pacingRate: new Float64Array(n), bid: new Float64Array(n) };
  const words = new Uint32Array(b.id.buffer);
  for (let i = 0; i < n; i++) {
    const u = updates[i];
    if (has(u, 'advertiserId')) {
      b.target[i] = 2;
      int64Of(u.advertiserId!, words, i);
    } else if (has(u, 'adId')) {
      b.target[i] = 1;
      int64Of(u.adId!, words, i);
    }
    let f = 0;
    if (has(u, 'active')) f |= F_ACTIVE | (u.active ? V_ACTIVE : 0);
    if (has(u, 'inBudget')) f |= F_IN_BUDGET | (u.inBudget ? V_IN_BUDGET : 0);
    if (has(u, 'pacingRate')) {
      f |= F_RATE;
      b.pacingRate[i] = u.pacingRate!;
    }
    if (has(u, 'bid')) {
      f |= F_BID;
      b.bid[i] = u.bid!;
    }
    b.flags[i] = f;
  }
  return b;
}

export function validateUpdates(b: AdStateBatch): AdStateChange[] {
  if (b.n > MAX_UPDATES) throw invalid('updates', `at most ${MAX_UPDATES} updates`, `${b.n} updates`);
  const out: AdStateChange[] = new Array(b.n);
  for (let i = 0; i < b.n; i++) {
    const t = b.target[i];
    if (t === 0) throw invalid(`updates[${i}].target`, 'ad_id or advertiser_id', null);
    const change: AdStateChange = { target: t === 1 ? 'ad' : 'advertiser', id: b.id[i] };
    const f = b.flags[i];
    if (f & F_ACTIVE) change.active = (f & V_ACTIVE) !== 0;
    if (f & F_IN_BUDGET) change.inBudget = (f & V_IN_BUDGET) !== 0;
    if (f & F_RATE) {
      const r = b.pacingRate[i];
      if (!(r >= 0 && r <= 1)) throw invalid(`updates[${i}].pacing_rate`, 'a rate in [0, 1]', r);
      change.pacingRate = r;
    }
    if (f & F_BID) {
      const v = b.bid[i];
      if (!(Number.isFinite(v) && v >= 0)) throw invalid(`updates[${i}].bid`, 'a finite bid >= 0', v);
      change.bid = v;
    }
    if (!(f & (F_ACTIVE | F_IN_BUDGET | F_RATE | F_BID))) throw invalid(`updates[${i}]`, 'at least one of active, in_budget, pacing_rate, bid', 'none');
    out[i] = change;
  }
  return out;
}

export async function updateAdStates(ctx: AdminContext, req: AdStateBatch): Promise<UpdateAdStatesResponse> {
  const changes = validateUpdates(req);
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
