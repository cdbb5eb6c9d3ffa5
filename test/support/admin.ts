/** A client for adrank.v1.AdRankerAdmin (tests 53-55), with promise-form calls. */
import * as grpc from '@grpc/grpc-js';
import { adminPackageDefinition } from '../../src/admin/service.js';
import type { ProtoGrpcType } from '../../src/generated/admin.js';
import type { AdRankerAdminClient } from '../../src/generated/adrank/v1/AdRankerAdmin.js';
import type { AdStateUpdate } from '../../src/generated/adrank/v1/AdStateUpdate.js';
import type { AdState__Output } from '../../src/generated/adrank/v1/AdState.js';
import type { ListModelsResponse__Output } from '../../src/generated/adrank/v1/ListModelsResponse.js';
import type { ReloadModelsResponse__Output } from '../../src/generated/adrank/v1/ReloadModelsResponse.js';

export function adminClient(address: string): AdRankerAdminClient {
  const proto = grpc.loadPackageDefinition(adminPackageDefinition()) as unknown as ProtoGrpcType;
  return new proto.adrank.v1.AdRankerAdmin(address, grpc.credentials.createInsecure());
}

type Unary = (req: unknown, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: unknown) => void) => unknown;

function unary<Res>(client: AdRankerAdminClient, method: string, req: unknown, timeoutMs = 30_000): Promise<Res> {
  const fn = (client as unknown as Record<string, Unary>)[method].bind(client);
  return new Promise((resolve, reject) => fn(req, { deadline: Date.now() + timeoutMs }, (err, res) => (err ? reject(err) : resolve(res as Res))));
}

export const updateAdStates = (c: AdRankerAdminClient, updates: AdStateUpdate[]) => unary<{ applied: number; unknown: number }>(c, 'UpdateAdStates', { updates });
export const getAdStates = (c: AdRankerAdminClient, adIds: (string | bigint)[]) =>
  unary<{ states: AdState__Output[]; modelVersion: string }>(c, 'GetAdStates', { adIds: adIds.map(String) });
export const listModels = (c: AdRankerAdminClient) => unary<ListModelsResponse__Output>(c, 'ListModels', {});
export const reloadModels = (c: AdRankerAdminClient) => unary<ReloadModelsResponse__Output>(c, 'ReloadModels', {}, 120_000);
