/**
 * Float64 reference of the model math (docs/design.md §4), written from the spec, not from the engine.
 * Slow and plain on purpose: every layer is a loop over Float64Arrays.
 */
import type { LoadedBundle } from '../../src/model/bundle.js';
import { modelDims, type ModelConfig } from '../../src/model/config.js';
import type { EngineRequest } from '../../src/features/feature-bundle.js';

export type Vec = Float64Array;

const EPS_LN = 1e-5;

/** weights as float64 (ads.retrieval BF16 widened exactly) */
export class RefModel {
  readonly c: ModelConfig;
  readonly dims: ReturnType<typeof modelDims>;
  private cache = new Map<string, Float64Array>();
  constructor(readonly bundle: LoadedBundle) {
    this.c = bundle.config;
    this.dims = modelDims(this.c);
  }

  /** tensor `name` as float64 (cached) */
  w(name: string): Float64Array {
    let a = this.cache.get(name);
    if (!a) {
      const t = this.bundle.tensors[name];
      if (t === undefined) throw new Error(`reference: no tensor ${name}`);
      if (this.bundle.dtypes[name] === 'BF16') {
        const bits = new Uint32Array((t as Uint16Array).length);
        (t as Uint16Array).forEach((b, i) => (bits[i] = b << 16));
        a = Float64Array.from(new Float32Array(bits.buffer));
      } else a = Float64Array.from(t as Float32Array);
      this.cache.set(name, a);
    }
    return a;
  }
}

// ---- primitives ------------------------------------------------------------------------------

export function l2n(v: ArrayLike<number>): Vec {
  let s = 0;
  for (let i = 0; i < v.length; i++) s += v[i] * v[i];
  const n = Math.max(Math.sqrt(s), 1e-12);
  return Float64Array.from(v, (x) => x / n);
}

/** y = W x + b, W [out × in] row-major (an nn.Linear) */
export function linear(W: Vec, b: Vec | null, x: ArrayLike<number>, out: number): Vec {
  const inn = x.length;
  if (W.length !== out * inn) throw new Error(`linear: W has ${W.length}, expected ${out}×${inn}`);
  const y = new Float64Array(out);
  for (let o = 0; o < out; o++) {
    let s = b ? b[o] : 0;
    const base = o * inn;
    for (let i = 0; i < inn; i++) s += W[base + i] * x[i];
    y[o] = s;
  }
  return y;
}

export const relu = (v: Vec): Vec => v.map((x) => (x > 0 ? x : 0));

export function layerNorm(x: ArrayLike<number>, g: Vec, b: Vec): Vec {
  const n = x.length;
  let m = 0;
  for (let i = 0; i < n; i++) m += x[i];
  m /= n;
  let v = 0;
  for (let i = 0; i < n; i++) v += (x[i] - m) ** 2;
  v /= n;
  const r = 1 / Math.sqrt(v + EPS_LN);
  return Float64Array.from({ length: n }, (_, i) => (x[i] - m) * r * g[i] + b[i]);
}

export function softmax(s: ArrayLike<number>): Vec {
  const mx = Math.max(...Array.from(s));
  const e = Float64Array.from(s, (x) => Math.exp(x - mx));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / sum);
}

export const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

const concat = (parts: ArrayLike<number>[]): Vec => {
  const out = new Float64Array(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p as ArrayLike<number>, o);
    o += p.length;
  }
  return out;
};

/** mathematical id mod cardinality (0 ≤ bucket < cardinality) */
export function bucket(id: bigint, cardinality: number): number {
  const c = BigInt(cardinality);
  return Number(((id % c) + c) % c);
}

const row = (t: Vec, r: number, width: number) => t.subarray(r * width, (r + 1) * width);

function zscore(x: ArrayLike<number>, mean: Vec, std: Vec, clip: number): Vec {
  return Float64Array.from({ length: mean.length }, (_, i) => Math.min(clip, Math.max(-clip, (Number(x[i]) - mean[i]) / std[i])));
}

// ---- request side ----------------------------------------------------------------------------

export interface UserSide {
  u: Vec;
  /** H, n × d_s after sequence.norm (n = 0 when the sequence is empty) */
  H: Vec[];
  query: Vec;
  surface: number;
}

/** One torch.nn.TransformerEncoderLayer(norm_first=True, activation=relu, dropout=0). */
export function encoderLayer(m: RefModel, i: number, X: Vec[]): Vec[] {
  const s = m.c.sequence;
  const d = s.dim;
  const hd = d / s.heads;
  const p = `sequence.layers.${i}.`;
  const W = (k: string) => m.w(p + k);
  // self-attention block on LN1(x)
  const xn = X.map((x) => layerNorm(x, W('norm1.weight'), W('norm1.bias')));
  const qkv = xn.map((x) => linear(W('self_attn.in_proj_weight'), W('self_attn.in_proj_bias'), x, 3 * d));
  const attn = X.map(() => new Float64Array(d));
  for (let h = 0; h < s.heads; h++) {
    for (let a = 0; a < X.length; a++) {
      const scores = qkv.map((kv) => {
        let sum = 0;
        for (let j = 0; j < hd; j++) sum += qkv[a][h * hd + j] * kv[d + h * hd + j];
        return sum / Math.sqrt(hd);
      });
      const alpha = softmax(scores);
      for (let b = 0; b < X.length; b++) for (let j = 0; j < hd; j++) attn[a][h * hd + j] += alpha[b] * qkv[b][2 * d + h * hd + j];
    }
  }
  const X1 = X.map((x, a) => {
    const o = linear(W('self_attn.out_proj.weight'), W('self_attn.out_proj.bias'), attn[a], d);
    return x.map((v, j) => v + o[j]);
  });
  // feed-forward block on LN2(x)
  return X1.map((x) => {
    const f = linear(W('linear2.weight'), W('linear2.bias'), relu(linear(W('linear1.weight'), W('linear1.bias'), layerNorm(x, W('norm2.weight'), W('norm2.bias')), s.ffn_dim)), d);
    return x.map((v, j) => v + f[j]);
  });
}

export function sequenceEncoder(m: RefModel, items: ArrayLike<bigint>, actions: ArrayLike<number>): Vec[] {
  const s = m.c.sequence;
  const n = Math.min(items.length, s.max_len);
  let X: Vec[] = [];
  for (let j = 0; j < n; j++) {
    const it = row(m.w('sequence.item'), bucket(BigInt(items[j]), s.item_buckets), s.dim);
    const ac = row(m.w('sequence.action'), Number(actions[j]), s.dim);
    const po = row(m.w('sequence.position'), j, s.dim);
    X.push(Float64Array.from({ length: s.dim }, (_, k) => it[k] + ac[k] + po[k]));
  }
  for (let i = 0; i < s.layers; i++) X = encoderLayer(m, i, X);
  return X.map((x) => layerNorm(x, m.w('sequence.norm.weight'), m.w('sequence.norm.bias')));
}

export function userSide(m: RefModel, r: EngineRequest): UserSide {
  const c = m.c;
  const parts: ArrayLike<number>[] = [zscore(r.userDense, m.w('features.user_dense.mean'), m.w('features.user_dense.std'), c.dense_clip)];
  c.user_sparse.forEach((f, i) => {
    const ids = r.userSparse[i];
    const acc = new Float64Array(f.dim);
    const table = m.w(`features.user_sparse.${f.name}`);
    for (const id of ids) {
      const e = row(table, bucket(BigInt(id), f.cardinality), f.dim);
      for (let k = 0; k < f.dim; k++) acc[k] += e[k];
    }
    if (ids.length > 0) for (let k = 0; k < f.dim; k++) acc[k] /= ids.length;
    parts.push(l2n(acc));
  });
  parts.push(l2n(Array.from(r.userEmbedding, Number)));
  const H = sequenceEncoder(m, r.seqItems, r.seqActions);
  const mean = new Float64Array(c.sequence.dim);
  for (const h of H) for (let k = 0; k < mean.length; k++) mean[k] += h[k] / H.length;
  parts.push(H.length ? l2n(mean) : mean);
  parts.push(row(m.w('features.surface'), r.surface, c.surface_dim));
  const u = concat(parts);
  // retrieval user tower
  let x: Vec = u;
  const widths = [...c.retrieval.hidden, c.retrieval.dim];
  widths.forEach((w, k) => {
    x = linear(m.w(`user_tower.${k}.weight`), m.w(`user_tower.${k}.bias`), x, w);
    if (k < widths.length - 1) x = relu(x);
  });
  return { u, H, query: l2n(x), surface: r.surface };
}

// ---- per candidate ---------------------------------------------------------------------------

export interface CandidateOut {
  row: number;
  ad: Vec;
  targetAttention: Vec;
  input: Vec;
  masknet: Vec;
  cross: Vec;
  hidden: Vec;
  logits: Vec;
  probs: Vec;
  /** value = Σ_t w_t p_t */
  value: number;
  utility: number;
  retrievalScore: number;
}

export function adSide(m: RefModel, rowIdx: number): Vec {
  const c = m.c;
  const parts: ArrayLike<number>[] = [zscore(row(m.w('ads.dense'), rowIdx, c.ad_dense), m.w('features.ad_dense.mean'), m.w('features.ad_dense.std'), c.dense_clip)];
  const sp = m.bundle.tensors['ads.sparse'] as BigInt64Array;
  c.ad_sparse.forEach((f, i) => {
    const id = sp[rowIdx * c.ad_sparse.length + i];
    parts.push(l2n(row(m.w(`features.ad_sparse.${f.name}`), bucket(id, f.cardinality), f.dim)));
  });
  parts.push(l2n(row(m.w('ads.embedding'), rowIdx, c.ad_embedding_dim)));
  return concat(parts);
}

export function targetAttention(m: RefModel, rowIdx: number, H: Vec[]): Vec {
  const ds = m.c.sequence.dim;
  if (H.length === 0) return new Float64Array(ds);
  const e = l2n(row(m.w('ads.embedding'), rowIdx, m.c.ad_embedding_dim));
  const q = linear(m.w('target_attention.query.weight'), m.w('target_attention.query.bias'), e, ds);
  const alpha = softmax(H.map((h) => h.reduce((s, v, k) => s + v * q[k], 0) / Math.sqrt(ds)));
  const out = new Float64Array(ds);
  H.forEach((h, j) => h.forEach((v, k) => (out[k] += alpha[j] * v)));
  return out;
}

export function masknet(m: RefModel, x: Vec): Vec {
  const { blocks, output_dim } = m.c.masknet;
  const d = m.dims;
  const xh = layerNorm(x, m.w('masknet.input_norm.weight'), m.w('masknet.input_norm.bias'));
  const outs: Vec[] = [];
  for (let i = 0; i < blocks; i++) {
    const p = `masknet.blocks.${i}.`;
    const mask = linear(m.w(p + 'mask.2.weight'), m.w(p + 'mask.2.bias'), relu(linear(m.w(p + 'mask.0.weight'), m.w(p + 'mask.0.bias'), x, d.maskHidden)), d.input);
    const proj = linear(m.w(p + 'proj.weight'), null, xh.map((v, j) => v * mask[j]), output_dim);
    outs.push(relu(layerNorm(proj, m.w(p + 'norm.weight'), m.w(p + 'norm.bias'))));
  }
  return concat(outs);
}

/** DCNv2: x_{l+1} = x0 ⊙ (W_l x_l + b_l) + x_l, W = U V when low rank */
export function dcn(m: RefModel, x0: Vec): Vec {
  const D = m.dims.cross;
  const { layers, rank } = m.c.dcn;
  let x = x0;
  for (let l = 0; l < layers; l++) {
    const p = `dcn.layers.${l}.`;
    const wx = rank > 0 ? linear(m.w(p + 'u'), m.w(p + 'bias'), linear(m.w(p + 'v'), null, x, rank), D) : linear(m.w(p + 'weight'), m.w(p + 'bias'), x, D);
    const xl = x;
    x = x0.map((v, j) => v * wx[j] + xl[j]);
  }
  return x;
}

export function mlp(m: RefModel, x: Vec): Vec {
  let h = x;
  m.c.mlp.forEach((w, k) => (h = relu(linear(m.w(`mlp.${k}.weight`), m.w(`mlp.${k}.bias`), h, w))));
  return h;
}

/** surface defaults or the request's override */
export function taskWeights(m: RefModel, r: EngineRequest): Vec {
  const T = m.dims.tasks;
  return r.taskWeights ? Float64Array.from(r.taskWeights as ArrayLike<number>) : Float64Array.from(row(m.w('utility.task_weights'), r.surface, T));
}

export function candidate(m: RefModel, us: UserSide, r: EngineRequest, rowIdx: number): CandidateOut {
  const T = m.dims.tasks;
  const ad = adSide(m, rowIdx);
  const ta = targetAttention(m, rowIdx, us.H);
  const input = concat([us.u, ad, ta]);
  const x0 = masknet(m, input);
  const cross = dcn(m, x0);
  const hidden = mlp(m, cross);
  const logits = linear(m.w('heads.weight'), m.w('heads.bias'), hidden, T);
  const sc = row(m.w('calibration.scale'), r.surface, T);
  const sb = row(m.w('calibration.bias'), r.surface, T);
  const probs = logits.map((l, t) => sigmoid(sc[t] * l + sb[t]));
  const w = taskWeights(m, r);
  const value = probs.reduce((s, p, t) => s + w[t] * p, 0);
  const bid = m.w('ads.bid')[rowIdx];
  return { row: rowIdx, ad, targetAttention: ta, input, masknet: x0, cross, hidden, logits, probs, value, utility: bid * value, retrievalScore: retrievalScore(m, us, rowIdx) };
}

export function retrievalScore(m: RefModel, us: UserSide, rowIdx: number): number {
  const dr = m.c.retrieval.dim;
  const e = row(m.w('ads.retrieval'), rowIdx, dr);
  let s = 0;
  for (let k = 0; k < dr; k++) s += us.query[k] * e[k];
  return s;
}
