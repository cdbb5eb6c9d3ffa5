/**
 * adrank as a library: start the gRPC server in-process, or use the engine directly.
 * The command line (src/cli/main.ts) is built on the same exports.
 */
export { AdrankServer, type ServerOptions, DEFAULT_PORT, DEFAULT_HOST } from './server/server.js';
export { jsonLogger, silentLogger, type Logger } from './log.js';
export { loadProto, PROTO_DIR, SERVICE_NAME } from './wire/proto.js';
export { Engine, EngineError, type EngineOptions, type EngineRequest, type NativeResult } from './engine/index.js';
export { loadBundle, type LoadedBundle } from './model/bundle.js';
export type { ModelConfig } from './model/config.js';
export type { ProtoGrpcType } from './generated/adrank.js';
export { RouterServer, type RouterOptions } from './router/router.js';
export { writeShards, shardOf, shardMeta, type ShardMeta } from './model/shard.js';
