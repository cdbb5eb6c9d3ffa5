/**
 * adrank.v1.AdRankerAdmin (proto/adrank/v1/admin.proto) on the server's port: the service
 * definition, and the one wrapper every admin RPC goes through (outcome counters, errors →
 * gRPC status). Each RPC is one file beside this one (Explain runs the data RPC it explains, so it
 * gets the data handlers' context).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { ProtoGrpcType } from '../generated/admin.js';
import { serviceError, toServiceError } from '../handlers/engine-rpc.js';
import { LOADER_OPTIONS, PROTO_DIR, PROTO_FILE } from '../wire/proto.js';
import { StateUnavailableError } from '../state/store.js';
import type { HandlerContext } from '../handlers/context.js';
import type { AdminContext } from './context.js';
import { explainHandler } from './explain.js';
import { getAdStates } from './get-ad-states.js';
import { listModels } from './list-models.js';
import { reloadModels } from './reload-models.js';
import { decodeUpdateBatch, updateAdStates } from './update-ad-states.js';

export const ADMIN_PROTO_FILE = 'adrank/v1/admin.proto';
export const ADMIN_SERVICE_NAME = 'adrank.v1.AdRankerAdmin';

let cached: protoLoader.PackageDefinition | undefined;

/** admin.proto with the server's proto-loader options (for the service and for reflection). */
export function adminPackageDefinition(): protoLoader.PackageDefinition {
  if (!existsSync(join(PROTO_DIR, ADMIN_PROTO_FILE))) throw new Error(`adrank: cannot find proto/${ADMIN_PROTO_FILE}`);
  cached ??= protoLoader.loadSync(ADMIN_PROTO_FILE, { ...LOADER_OPTIONS, includeDirs: [PROTO_DIR] });
  return cached;
}

/** adrank.proto and admin.proto loaded together, for server reflection: proto-loader merges the
 *  files of one package into one descriptor, and reflection keeps only the first descriptor of a
 *  name, so two separate loads would hide the admin service. */
export function reflectionPackageDefinition(): protoLoader.PackageDefinition {
  return protoLoader.loadSync([PROTO_FILE, ADMIN_PROTO_FILE], { ...LOADER_OPTIONS, includeDirs: [PROTO_DIR] });
}

/** One admin RPC: request → response (or a thrown RequestError / StateUnavailableError). */
export type AdminRpc<Req, Res> = (ctx: AdminContext, request: Req) => Res | Promise<Res>;

function handler<Req, Res>(ctx: AdminContext, name: string, rpc: AdminRpc<Req, Res>) {
  return (call: grpc.ServerUnaryCall<Req, Res>, callback: grpc.sendUnaryData<Res>): void => {
    Promise.resolve()
      .then(() => rpc(ctx, call.request))
      .then(
        (res) => {
          ctx.stats.outcome(name, 'OK');
          callback(null, res);
        },
        (e: unknown) => {
          const err = e instanceof StateUnavailableError ? serviceError(grpc.status.UNAVAILABLE, e.message) : toServiceError(e);
          ctx.stats.outcome(name, grpc.status[err.code]);
          if (err.code === grpc.status.INTERNAL || err.code === grpc.status.UNAVAILABLE) ctx.log.warn('rpc_failed', { rpc: name, code: grpc.status[err.code], details: err.details });
          else ctx.log.debug('rpc_refused', { rpc: name, code: grpc.status[err.code], details: err.details });
          callback(err);
        },
      );
  };
}

function adminProto(): ProtoGrpcType {
  return grpc.loadPackageDefinition(adminPackageDefinition()) as unknown as ProtoGrpcType;
}

/** The AdRankerAdmin handlers; `data` is the data RPCs' context, for Explain. */
function adminImplementation(ctx: AdminContext, data: HandlerContext): Record<string, grpc.handleUnaryCall<unknown, unknown>> {
  return {
    UpdateAdStates: handler(ctx, 'UpdateAdStates', updateAdStates),
    GetAdStates: handler(ctx, 'GetAdStates', getAdStates),
    ListModels: handler(ctx, 'ListModels', listModels),
    ReloadModels: handler(ctx, 'ReloadModels', reloadModels),
    Explain: explainHandler(data),
  } as Record<string, grpc.handleUnaryCall<unknown, unknown>>;
}

/** The service as served: UpdateAdStates reads its request into columns (update-ad-states.ts),
 *  not proto-loader's objects, on every front-end thread (a forwarded batch is a few typed arrays). */
function servedDefinition(): grpc.ServiceDefinition {
  const service = adminProto().adrank.v1.AdRankerAdmin.service;
  return { ...service, UpdateAdStates: { ...service.UpdateAdStates, requestDeserialize: decodeUpdateBatch } } as grpc.ServiceDefinition;
}

/** Registers AdRankerAdmin on `server`; `data` is the data RPCs' context, for Explain. */
export function addAdminService(server: grpc.Server, ctx: AdminContext, data: HandlerContext): void {
  server.addService(servedDefinition(), adminImplementation(ctx, data) as grpc.UntypedServiceImplementation);
}

/** An admin call forwarded from another front-end thread, and its answer: a response or a status. */
export type AdminAnswer = { response: unknown } | { code: grpc.status; details: string };

/** Runs one admin call for another front-end thread (the owner of the state and the models answers
 *  every thread's admin calls: src/server/threads.ts). */
export function adminRunner(ctx: AdminContext, data: HandlerContext): (method: string, request: unknown) => Promise<AdminAnswer> {
  const impl = adminImplementation(ctx, data);
  return (method, request) =>
    new Promise((resolve) => {
      const h = impl[method];
      if (!h) return resolve({ code: grpc.status.UNIMPLEMENTED, details: `unknown admin method ${method}` });
      h({ request } as grpc.ServerUnaryCall<unknown, unknown>, (err, response) =>
        resolve(err ? { code: (err as grpc.ServiceError).code ?? grpc.status.INTERNAL, details: (err as grpc.ServiceError).details ?? (err as Error).message } : { response }),
      );
    });
}

/** Registers AdRankerAdmin on a front-end thread that does not own the state: each call is
 *  answered by `forward` (the owner thread), with the owner's status on refusal. */
export function addForwardedAdminService(server: grpc.Server, forward: (method: string, request: unknown) => Promise<AdminAnswer>): void {
  const service = servedDefinition();
  const impl: grpc.UntypedServiceImplementation = {};
  for (const method of Object.keys(service)) {
    impl[method] = ((call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      forward(method, call.request).then(
        (a) => ('response' in a ? callback(null, a.response) : callback(serviceError(a.code, a.details))),
        (e: unknown) => callback(serviceError(grpc.status.UNAVAILABLE, `the owner thread did not answer: ${(e as Error).message}`)),
      );
    }) as grpc.handleUnaryCall<unknown, unknown>;
  }
  server.addService(service, impl);
}

/** A client of AdRankerAdmin (CLI, tests). */
export function connectAdmin(address: string, credentials = grpc.credentials.createInsecure()) {
  return new (adminProto().adrank.v1.AdRankerAdmin)(address, credentials);
}
