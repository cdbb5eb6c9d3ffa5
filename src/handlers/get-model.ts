/** GetModel: the loaded model's name, version, config, ad count and backend. */
import { status, type sendUnaryData, type ServerUnaryCall } from '@grpc/grpc-js';
import type { Engine } from '../engine/index.js';
import type { GetModelRequest__Output } from '../generated/adrank/v1/GetModelRequest.js';
import type { GetModelResponse, GetModelResponse__Output } from '../generated/adrank/v1/GetModelResponse.js';
import type { HandlerContext } from './context.js';
import { serviceError } from './engine-rpc.js';
import { modelShape } from './sample.js';
import { shardMeta } from '../model/shard-meta.js';

/** `version`: the served version's name (repository directory; config.version for one bundle). */
export function describeModel(engine: Engine, version = engine.config.version): GetModelResponse__Output {
  const c = engine.config;
  return {
    name: c.name,
    version,
    backend: engine.backend,
    device: engine.description,
    deviceReason: engine.deviceReason,
    numAds: String(engine.numAds),
    configJson: JSON.stringify(c),
    tasks: c.tasks,
    ...modelShape(c),
    bundleSha256: engine.bundle.sha256,
    shard: (() => {
      const s = shardMeta(engine.bundle);
      return s ? { index: s.index, count: s.count, sourceSha256: s.source_sha256 } : null;
    })(),
    shardVersions: [],
  };
}

export function getModelHandler(ctx: HandlerContext) {
  return (_call: ServerUnaryCall<GetModelRequest__Output, GetModelResponse>, callback: sendUnaryData<GetModelResponse>): void => {
    const engine = ctx.engine();
    if (!engine) return callback(serviceError(status.UNAVAILABLE, 'the model is not loaded yet (health: NOT_SERVING)'));
    ctx.stats.outcome('GetModel', 'OK');
    callback(null, describeModel(engine, ctx.models.defaultVersion()));
  };
}
