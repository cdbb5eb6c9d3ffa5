/**
 * Loads the API contract (proto/adrank/v1/adrank.proto) once, with the proto-loader options of
 * proto/loader-options.json — the same options scripts/gen-proto-types.sh generates
 * src/generated with, so the handlers' types match what the server decodes.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import protobuf from 'protobufjs';
import type { ProtoGrpcType } from '../generated/adrank.js';

export const PROTO_FILE = 'adrank/v1/adrank.proto';
export const SERVICE_NAME = 'adrank.v1.AdRanker';

function packageRoot(): string {
  // src/server (tsx) or dist/src/server (compiled)
  for (let dir = dirname(fileURLToPath(import.meta.url)), i = 0; i < 5; i++, dir = dirname(dir)) {
    if (existsSync(join(dir, 'proto', PROTO_FILE))) return dir;
  }
  throw new Error(`adrank: cannot find proto/${PROTO_FILE} above ${fileURLToPath(import.meta.url)}`);
}

export const PROTO_DIR = join(packageRoot(), 'proto');

export type LoaderOptions = { keepCase: boolean; longs: typeof String; enums: typeof String; defaults: boolean; oneofs: boolean };

/** proto/loader-options.json with the type names turned into the constructors proto-loader takes. */
export const LOADER_OPTIONS: LoaderOptions = (() => {
  const o = JSON.parse(readFileSync(join(PROTO_DIR, 'loader-options.json'), 'utf8'));
  if (o.longs !== 'String' || o.enums !== 'String') throw new Error('adrank: the front end expects longs and enums as String (proto/loader-options.json)');
  return { keepCase: !!o.keepCase, longs: String, enums: String, defaults: !!o.defaults, oneofs: !!o.oneofs };
})();

export interface LoadedProto {
  packageDefinition: protoLoader.PackageDefinition;
  grpcObject: ProtoGrpcType;
  /** protobufjs reflection of the same file, for the hand-tuned request and response codecs */
  root: protobuf.Root;
}

let cached: LoadedProto | undefined;

/** A new protobufjs reflection of `file` (its imports resolved under proto/), field names as
 *  `keepCase` says. */
export function protoRoot(file = PROTO_FILE, keepCase = LOADER_OPTIONS.keepCase): protobuf.Root {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => (existsSync(target) ? target : join(PROTO_DIR, target));
  root.loadSync(file, { keepCase });
  root.resolveAll();
  return root;
}

export function loadProto(): LoadedProto {
  if (cached) return cached;
  const packageDefinition = protoLoader.loadSync(PROTO_FILE, { ...LOADER_OPTIONS, includeDirs: [PROTO_DIR] });
  const grpcObject = grpc.loadPackageDefinition(packageDefinition) as unknown as ProtoGrpcType;
  cached = { packageDefinition, grpcObject, root: protoRoot() };
  return cached;
}
