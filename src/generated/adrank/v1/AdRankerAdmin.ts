// Original file: proto/adrank/v1/admin.proto

import type * as grpc from '@grpc/grpc-js'
import type { MethodDefinition } from '@grpc/proto-loader'
import type { ExplainRequest as _adrank_v1_ExplainRequest, ExplainRequest__Output as _adrank_v1_ExplainRequest__Output } from '../../adrank/v1/ExplainRequest.js';
import type { ExplainResponse as _adrank_v1_ExplainResponse, ExplainResponse__Output as _adrank_v1_ExplainResponse__Output } from '../../adrank/v1/ExplainResponse.js';

export interface AdRankerAdminClient extends grpc.Client {
  /**
   * Runs a Rank, Retrieve or RetrieveAndRank request and says, for each asked ad, where and why
   * it left the funnel (docs/explain.md).
   */
  Explain(argument: _adrank_v1_ExplainRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_adrank_v1_ExplainResponse__Output>): grpc.ClientUnaryCall;
  Explain(argument: _adrank_v1_ExplainRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_adrank_v1_ExplainResponse__Output>): grpc.ClientUnaryCall;
  Explain(argument: _adrank_v1_ExplainRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_adrank_v1_ExplainResponse__Output>): grpc.ClientUnaryCall;
  Explain(argument: _adrank_v1_ExplainRequest, callback: grpc.requestCallback<_adrank_v1_ExplainResponse__Output>): grpc.ClientUnaryCall;
  /**
   * Runs a Rank, Retrieve or RetrieveAndRank request and says, for each asked ad, where and why
   * it left the funnel (docs/explain.md).
   */
  explain(argument: _adrank_v1_ExplainRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_adrank_v1_ExplainResponse__Output>): grpc.ClientUnaryCall;
  explain(argument: _adrank_v1_ExplainRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_adrank_v1_ExplainResponse__Output>): grpc.ClientUnaryCall;
  explain(argument: _adrank_v1_ExplainRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_adrank_v1_ExplainResponse__Output>): grpc.ClientUnaryCall;
  explain(argument: _adrank_v1_ExplainRequest, callback: grpc.requestCallback<_adrank_v1_ExplainResponse__Output>): grpc.ClientUnaryCall;
  
}

export interface AdRankerAdminHandlers extends grpc.UntypedServiceImplementation {
  /**
   * Runs a Rank, Retrieve or RetrieveAndRank request and says, for each asked ad, where and why
   * it left the funnel (docs/explain.md).
   */
  Explain: grpc.handleUnaryCall<_adrank_v1_ExplainRequest__Output, _adrank_v1_ExplainResponse>;
  
}

export interface AdRankerAdminDefinition extends grpc.ServiceDefinition {
  Explain: MethodDefinition<_adrank_v1_ExplainRequest, _adrank_v1_ExplainResponse, _adrank_v1_ExplainRequest__Output, _adrank_v1_ExplainResponse__Output>
}
