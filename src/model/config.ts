/**
 * The model configuration carried in a bundle's `__metadata__["adrank.config"]` (docs/design.md §3),
 * and the shapes it implies. This is the one place that turns a config into dimensions.
 */

export interface SparseField {
  name: string;
  cardinality: number;
  dim: number;
}

export interface SequenceConfig {
  max_len: number;
  item_buckets: number;
  actions: number;
  dim: number;
  heads: number;
  ffn_dim: number;
  layers: number;
}

export interface ModelConfig {
  name: string;
  version: string;
  tasks: string[];
  surfaces: string[];
  targeting_dims: string[];
  user_dense: number;
  ad_dense: number;
  dense_clip: number;
  user_sparse: SparseField[];
  ad_sparse: SparseField[];
  user_embedding_dim: number;
  ad_embedding_dim: number;
  surface_dim: number;
  sequence: SequenceConfig;
  /** `hidden`, when given, is the mask hidden width h; otherwise h = ⌊projection_ratio · d + ½⌋. */
  masknet: { blocks: number; projection_ratio: number; output_dim: number; hidden?: number };
  dcn: { layers: number; rank: number };
  mlp: number[];
  retrieval: { dim: number; hidden: number[] };
  /** Auction reserve price in bid units used when a request gives none (default 0). */
  reserve_price?: number;
}

/** Derived widths of the model of docs/design.md §4. */
export interface ModelDims {
  /** u = [z_ud ; user sparse ; L2n(user_embedding) ; seq ; surface] */
  user: number;
  /** a_c = [z(ad dense) ; ad sparse rows ; L2n(ad embedding)] */
  ad: number;
  /** ta_c, the target-attention output (= sequence dim) */
  targetAttention: number;
  /** d = dim([u ; a_c ; ta_c]) */
  input: number;
  /** h, the MaskNet mask hidden width: masknet.hidden, else ⌊projection_ratio · d + ½⌋ (maskHiddenRule) */
  maskHidden: number;
  /** D = blocks · output_dim, the DCN width */
  cross: number;
  /** width of the last MLP layer (the heads' input) */
  last: number;
  tasks: number;
  surfaces: number;
}

export function modelDims(c: ModelConfig): ModelDims {
  const sum = (fs: SparseField[]) => fs.reduce((s, f) => s + f.dim, 0);
  const user = c.user_dense + sum(c.user_sparse) + c.user_embedding_dim + c.sequence.dim + c.surface_dim;
  const ad = c.ad_dense + sum(c.ad_sparse) + c.ad_embedding_dim;
  const targetAttention = c.sequence.dim;
  const input = user + ad + targetAttention;
  const cross = c.masknet.blocks * c.masknet.output_dim;
  return {
    user,
    ad,
    targetAttention,
    input,
    maskHidden: c.masknet.hidden ?? maskHiddenFromRatio(c.masknet.projection_ratio, input),
    cross,
    last: c.mlp.length > 0 ? c.mlp[c.mlp.length - 1] : cross,
    tasks: c.tasks.length,
    surfaces: c.surfaces.length,
  };
}

/**
 * h = ⌊ratio · d + ½⌋: half rounds up. Python's round() rounds half to even (round(1.5 · 311) is
 * 466, this gives 467): exporters should write `masknet.hidden` or use this rule.
 */
export function maskHiddenFromRatio(ratio: number, input: number): number {
  return Math.floor(ratio * input + 0.5);
}

/** How h was obtained, for shape errors on the mask tensors. */
export function maskHiddenRule(c: ModelConfig): string {
  const d = modelDims(c);
  return c.masknet.hidden !== undefined
    ? `h = masknet.hidden = ${c.masknet.hidden}`
    : `h = ⌊masknet.projection_ratio · d + ½⌋ = ⌊${c.masknet.projection_ratio} · ${d.input} + ½⌋ = ${d.maskHidden} (half rounds up; set masknet.hidden to give h explicitly)`;
}

export type DType = 'F32' | 'BF16' | 'I64' | 'U64';

export interface TensorSpec {
  name: string;
  shape: number[];
  /** Allowed dtypes; the first is what the writer produces by default. */
  dtypes: DType[];
  /** how the shape follows from the config, added to shape errors */
  derivation?: string;
}

/**
 * Every tensor the config implies, with its shape (docs/design.md §3). `numAds` is N, the ad count
 * (taken from `ads.id`). `mlp.<k>` and `user_tower.<k>` count linear layers 0, 1, 2, ...
 * (a ModuleList of nn.Linear with ReLU applied between them, no ReLU after the user tower's last).
 */
export function expectedTensors(c: ModelConfig, numAds: number): TensorSpec[] {
  const d = modelDims(c);
  const f32 = (name: string, ...shape: number[]): TensorSpec => ({ name, shape, dtypes: ['F32'] });
  const out: TensorSpec[] = [
    f32('features.user_dense.mean', c.user_dense),
    f32('features.user_dense.std', c.user_dense),
    f32('features.ad_dense.mean', c.ad_dense),
    f32('features.ad_dense.std', c.ad_dense),
  ];
  for (const f of c.user_sparse) out.push(f32(`features.user_sparse.${f.name}`, f.cardinality, f.dim));
  for (const f of c.ad_sparse) out.push(f32(`features.ad_sparse.${f.name}`, f.cardinality, f.dim));
  out.push(f32('features.surface', d.surfaces, c.surface_dim));
  const s = c.sequence;
  out.push(f32('sequence.item', s.item_buckets, s.dim), f32('sequence.action', s.actions, s.dim), f32('sequence.position', s.max_len, s.dim));
  for (let i = 0; i < s.layers; i++) {
    const p = `sequence.layers.${i}.`;
    out.push(
      f32(p + 'self_attn.in_proj_weight', 3 * s.dim, s.dim),
      f32(p + 'self_attn.in_proj_bias', 3 * s.dim),
      f32(p + 'self_attn.out_proj.weight', s.dim, s.dim),
      f32(p + 'self_attn.out_proj.bias', s.dim),
      f32(p + 'linear1.weight', s.ffn_dim, s.dim),
      f32(p + 'linear1.bias', s.ffn_dim),
      f32(p + 'linear2.weight', s.dim, s.ffn_dim),
      f32(p + 'linear2.bias', s.dim),
      f32(p + 'norm1.weight', s.dim),
      f32(p + 'norm1.bias', s.dim),
      f32(p + 'norm2.weight', s.dim),
      f32(p + 'norm2.bias', s.dim),
    );
  }
  out.push(f32('sequence.norm.weight', s.dim), f32('sequence.norm.bias', s.dim));
  out.push(f32('target_attention.query.weight', s.dim, c.ad_embedding_dim), f32('target_attention.query.bias', s.dim));
  out.push(f32('masknet.input_norm.weight', d.input), f32('masknet.input_norm.bias', d.input));
  for (let i = 0; i < c.masknet.blocks; i++) {
    const p = `masknet.blocks.${i}.`;
    const derivation = maskHiddenRule(c);
    out.push(
      { ...f32(p + 'mask.0.weight', d.maskHidden, d.input), derivation },
      { ...f32(p + 'mask.0.bias', d.maskHidden), derivation },
      { ...f32(p + 'mask.2.weight', d.input, d.maskHidden), derivation },
      f32(p + 'mask.2.bias', d.input),
      f32(p + 'proj.weight', c.masknet.output_dim, d.input),
      f32(p + 'norm.weight', c.masknet.output_dim),
      f32(p + 'norm.bias', c.masknet.output_dim),
    );
  }
  for (let l = 0; l < c.dcn.layers; l++) {
    const p = `dcn.layers.${l}.`;
    if (c.dcn.rank > 0) out.push(f32(p + 'u', d.cross, c.dcn.rank), f32(p + 'v', c.dcn.rank, d.cross));
    else out.push(f32(p + 'weight', d.cross, d.cross));
    out.push(f32(p + 'bias', d.cross));
  }
  let width = d.cross;
  c.mlp.forEach((w, k) => {
    out.push(f32(`mlp.${k}.weight`, w, width), f32(`mlp.${k}.bias`, w));
    width = w;
  });
  out.push(f32('heads.weight', d.tasks, width), f32('heads.bias', d.tasks));
  out.push(f32('calibration.scale', d.surfaces, d.tasks), f32('calibration.bias', d.surfaces, d.tasks));
  out.push(f32('utility.task_weights', d.surfaces, d.tasks));
  width = d.user;
  [...c.retrieval.hidden, c.retrieval.dim].forEach((w, k) => {
    out.push(f32(`user_tower.${k}.weight`, w, width), f32(`user_tower.${k}.bias`, w));
    width = w;
  });
  const n = numAds;
  out.push(
    { name: 'ads.id', shape: [n], dtypes: ['I64'] },
    { name: 'ads.advertiser', shape: [n], dtypes: ['I64'] },
    f32('ads.bid', n),
    f32('ads.dense', n, c.ad_dense),
    { name: 'ads.sparse', shape: [n, c.ad_sparse.length], dtypes: ['I64'] },
    f32('ads.embedding', n, c.ad_embedding_dim),
    { name: 'ads.retrieval', shape: [n, c.retrieval.dim], dtypes: ['F32', 'BF16'] },
    { name: 'ads.targeting', shape: [n, c.targeting_dims.length], dtypes: ['U64'] },
  );
  return out;
}
