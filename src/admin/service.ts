/**
 * The admin service, adrank.v1.AdRankerAdmin (proto/adrank/v1/admin.proto), on the same server
 * as AdRanker. Its RPCs are one file each in this folder.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { HandlerContext } from '../handlers/context.js';
import type { ProtoGrpcType } from '../generated/admin.js';
import { LOADER_OPTIONS, PROTO_DIR } from '../server/proto.js';
import { explainHandler } from './explain.js';

export const ADMIN_PROTO_FILE = 'adrank/v1/admin.proto';
export const ADMIN_SERVICE_NAME = 'adrank.v1.AdRankerAdmin';

let cached: { packageDefinition: protoLoader.PackageDefinition; grpcObject: ProtoGrpcType } | undefined;

/** admin.proto (and what it imports) with the server's proto-loader options. */
export function loadAdminProto() {
  if (cached) return cached;
  const packageDefinition = protoLoader.loadSync(ADMIN_PROTO_FILE, { ...LOADER_OPTIONS, includeDirs: [PROTO_DIR] });
  cached = { packageDefinition, grpcObject: grpc.loadPackageDefinition(packageDefinition) as unknown as ProtoGrpcType };
  return cached;
}

/** Adds AdRankerAdmin to `server`. */
export function addAdminService(server: grpc.Server, ctx: HandlerContext): void {
  server.addService(loadAdminProto().grpcObject.adrank.v1.AdRankerAdmin.service, {
    Explain: explainHandler(ctx),
  } as grpc.UntypedServiceImplementation);
}

/** A client of AdRankerAdmin (CLI, tests). */
export function connectAdmin(address: string) {
  return new (loadAdminProto().grpcObject.adrank.v1.AdRankerAdmin)(address, grpc.credentials.createInsecure());
}
