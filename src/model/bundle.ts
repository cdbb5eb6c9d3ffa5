/**
 * Model bundle loading (DESIGN §3): a safetensors file whose metadata carries the adrank config.
 * PLACEHOLDER SIGNATURES — implemented in the bundle work (reader, validation, writer).
 */
import type { TensorArray } from '../engine/binding.js';
import type { DType, ModelConfig } from './config.js';

export interface LoadedBundle {
  path: string;
  config: ModelConfig;
  /** tensors by name, as typed arrays (F32 → Float32Array, I64 → BigInt64Array, U64 → BigUint64Array, BF16 → Uint16Array) */
  tensors: Record<string, TensorArray>;
  shapes: Record<string, number[]>;
  dtypes: Record<string, DType>;
  numAds: number;
  /** sha256 of the file, hex */
  sha256: string;
  fileSize: number;
}

export async function loadBundle(path: string): Promise<LoadedBundle> {
  throw new Error(`loadBundle(${path}): not implemented yet`);
}
