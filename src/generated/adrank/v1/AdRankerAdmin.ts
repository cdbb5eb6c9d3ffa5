// Original file: proto/adrank/v1/admin.proto

import type * as grpc from '@grpc/grpc-js'
import type { MethodDefinition } from '@grpc/proto-loader'
import type { ExplainRequest as _adrank_v1_ExplainRequest, ExplainRequest__Output as _adrank_v1_ExplainRequest__Output } from '../../adrank/v1/ExplainRequest.js';
import type { ExplainResponse as _adrank_v1_ExplainResponse, ExplainResponse__Output as _adrank_v1_ExplainResponse__Output } from '../../adrank/v1/ExplainResponse.js';
import type { GetAdStatesRequest as _adrank_v1_GetAdStatesRequest, GetAdStatesRequest__Output as _adrank_v1_GetAdStatesRequest__Output } from '../../adrank/v1/GetAdStatesRequest.js';
import type { GetAdStatesResponse as _adrank_v1_GetAdStatesResponse, GetAdStatesResponse__Output as _adrank_v1_GetAdStatesResponse__Output } from '../../adrank/v1/GetAdStatesResponse.js';
import type { ListModelsRequest as _adrank_v1_ListModelsRequest, ListModelsRequest__Output as _adrank_v1_ListModelsRequest__Output } from '../../adrank/v1/ListModelsRequest.js';
import type { ListModelsResponse as _adrank_v1_ListModelsResponse, ListModelsResponse__Output as _adrank_v1_ListModelsResponse__Output } from '../../adrank/v1/ListModelsResponse.js';
import type { ReloadModelsRequest as _adrank_v1_ReloadModelsRequest, ReloadModelsRequest__Output as _adrank_v1_ReloadModelsRequest__Output } from '../../adrank/v1/ReloadModelsRequest.js';
import type { ReloadModelsResponse as _adrank_v1_ReloadModelsResponse, ReloadModelsResponse__Output as _adrank_v1_ReloadModelsResponse__Output } from '../../adrank/v1/ReloadModelsResponse.js';
import type { UpdateAdStatesRequest as _adrank_v1_UpdateAdStatesRequest, UpdateAdStatesRequest__Output as _adrank_v1_UpdateAdStatesRequest__Output } from '../../adrank/v1/UpdateAdStatesRequest.js';
import type { UpdateAdStatesResponse as _adrank_v1_UpdateAdStatesResponse, UpdateAdStatesResponse__Output as _adrank_v1_UpdateAdStatesResponse__Output } from '../../adrank/v1/UpdateAdStatesResponse.js';

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
  
  /**
   * The effective state of each asked ad in the default model version.
   */
  GetAdStates(argument: _adrank_v1_GetAdStatesRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_adrank_v1_GetAdStatesResponse__Output>): grpc.ClientUnaryCall;
  GetAdStates(argument: _adrank_v1_GetAdStatesRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_adrank_v1_GetAdStatesResponse__Output>): grpc.ClientUnaryCall;
  GetAdStates(argument: _adrank_v1_GetAdStatesRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_adrank_v1_GetAdStatesResponse__Output>): grpc.ClientUnaryCall;
  GetAdStates(argument: _adrank_v1_GetAdStatesRequest, callback: grpc.requestCallback<_adrank_v1_GetAdStatesResponse__Output>): grpc.ClientUnaryCall;
  /**
   * The effective state of each asked ad in the default model version.
   */
  getAdStates(argument: _adrank_v1_GetAdStatesRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_adrank_v1_GetAdStatesResponse__Output>): grpc.ClientUnaryCall;
  getAdStates(argument: _adrank_v1_GetAdStatesRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_adrank_v1_GetAdStatesResponse__Output>): grpc.ClientUnaryCall;
  getAdStates(argument: _adrank_v1_GetAdStatesRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_adrank_v1_GetAdStatesResponse__Output>): grpc.ClientUnaryCall;
  getAdStates(argument: _adrank_v1_GetAdStatesRequest, callback: grpc.requestCallback<_adrank_v1_GetAdStatesResponse__Output>): grpc.ClientUnaryCall;
  
  /**
   * Every model version known to the server, with its state.
   */
  ListModels(argument: _adrank_v1_ListModelsRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_adrank_v1_ListModelsResponse__Output>): grpc.ClientUnaryCall;
  ListModels(argument: _adrank_v1_ListModelsRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_adrank_v1_ListModelsResponse__Output>): grpc.ClientUnaryCall;
  ListModels(argument: _adrank_v1_ListModelsRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_adrank_v1_ListModelsResponse__Output>): grpc.ClientUnaryCall;
  ListModels(argument: _adrank_v1_ListModelsRequest, callback: grpc.requestCallback<_adrank_v1_ListModelsResponse__Output>): grpc.ClientUnaryCall;
  /**
   * Every model version known to the server, with its state.
   */
  listModels(argument: _adrank_v1_ListModelsRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_adrank_v1_ListModelsResponse__Output>): grpc.ClientUnaryCall;
  listModels(argument: _adrank_v1_ListModelsRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_adrank_v1_ListModelsResponse__Output>): grpc.ClientUnaryCall;
  listModels(argument: _adrank_v1_ListModelsRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_adrank_v1_ListModelsResponse__Output>): grpc.ClientUnaryCall;
  listModels(argument: _adrank_v1_ListModelsRequest, callback: grpc.requestCallback<_adrank_v1_ListModelsResponse__Output>): grpc.ClientUnaryCall;
  
  /**
   * Rescans the model repository now; answers when the rescan's loads have finished or failed.
   */
  ReloadModels(argument: _adrank_v1_ReloadModelsRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_adrank_v1_ReloadModelsResponse__Output>): grpc.ClientUnaryCall;
  ReloadModels(argument: _adrank_v1_ReloadModelsRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_adrank_v1_ReloadModelsResponse__Output>): grpc.ClientUnaryCall;
  ReloadModels(argument: _adrank_v1_ReloadModelsRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_adrank_v1_ReloadModelsResponse__Output>): grpc.ClientUnaryCall;
  ReloadModels(argument: _adrank_v1_ReloadModelsRequest, callback: grpc.requestCallback<_adrank_v1_ReloadModelsResponse__Output>): grpc.ClientUnaryCall;
  /**
   * Rescans the model repository now; answers when the rescan's loads have finished or failed.
   */
  reloadModels(argument: _adrank_v1_ReloadModelsRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_adrank_v1_ReloadModelsResponse__Output>): grpc.ClientUnaryCall;
  reloadModels(argument: _adrank_v1_ReloadModelsRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_adrank_v1_ReloadModelsResponse__Output>): grpc.ClientUnaryCall;
  reloadModels(argument: _adrank_v1_ReloadModelsRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_adrank_v1_ReloadModelsResponse__Output>): grpc.ClientUnaryCall;
  reloadModels(argument: _adrank_v1_ReloadModelsRequest, callback: grpc.requestCallback<_adrank_v1_ReloadModelsResponse__Output>): grpc.ClientUnaryCall;
  
  /**
   * Sets the live state of ads or of all ads of advertisers. The batch is validated whole
   * (INVALID_ARGUMENT naming the index and the field refuses all of it), written to the state
   * file and fsync'd, then applied atomically: no request sees half of it, and every request
   * that starts after the call returns sees all of it.
   */
  UpdateAdStates(argument: _adrank_v1_UpdateAdStatesRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_adrank_v1_UpdateAdStatesResponse__Output>): grpc.ClientUnaryCall;
  UpdateAdStates(argument: _adrank_v1_UpdateAdStatesRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_adrank_v1_UpdateAdStatesResponse__Output>): grpc.ClientUnaryCall;
  UpdateAdStates(argument: _adrank_v1_UpdateAdStatesRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_adrank_v1_UpdateAdStatesResponse__Output>): grpc.ClientUnaryCall;
  UpdateAdStates(argument: _adrank_v1_UpdateAdStatesRequest, callback: grpc.requestCallback<_adrank_v1_UpdateAdStatesResponse__Output>): grpc.ClientUnaryCall;
  /**
   * Sets the live state of ads or of all ads of advertisers. The batch is validated whole
   * (INVALID_ARGUMENT naming the index and the field refuses all of it), written to the state
   * file and fsync'd, then applied atomically: no request sees half of it, and every request
   * that starts after the call returns sees all of it.
   */
  updateAdStates(argument: _adrank_v1_UpdateAdStatesRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_adrank_v1_UpdateAdStatesResponse__Output>): grpc.ClientUnaryCall;
  updateAdStates(argument: _adrank_v1_UpdateAdStatesRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_adrank_v1_UpdateAdStatesResponse__Output>): grpc.ClientUnaryCall;
  updateAdStates(argument: _adrank_v1_UpdateAdStatesRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_adrank_v1_UpdateAdStatesResponse__Output>): grpc.ClientUnaryCall;
  updateAdStates(argument: _adrank_v1_UpdateAdStatesRequest, callback: grpc.requestCallback<_adrank_v1_UpdateAdStatesResponse__Output>): grpc.ClientUnaryCall;
  
}

export interface AdRankerAdminHandlers extends grpc.UntypedServiceImplementation {
  /**
   * Runs a Rank, Retrieve or RetrieveAndRank request and says, for each asked ad, where and why
   * it left the funnel (docs/explain.md).
   */
  Explain: grpc.handleUnaryCall<_adrank_v1_ExplainRequest__Output, _adrank_v1_ExplainResponse>;
  
  /**
   * The effective state of each asked ad in the default model version.
   */
  GetAdStates: grpc.handleUnaryCall<_adrank_v1_GetAdStatesRequest__Output, _adrank_v1_GetAdStatesResponse>;
  
  /**
   * Every model version known to the server, with its state.
   */
  ListModels: grpc.handleUnaryCall<_adrank_v1_ListModelsRequest__Output, _adrank_v1_ListModelsResponse>;
  
  /**
   * Rescans the model repository now; answers when the rescan's loads have finished or failed.
   */
  ReloadModels: grpc.handleUnaryCall<_adrank_v1_ReloadModelsRequest__Output, _adrank_v1_ReloadModelsResponse>;
  
  /**
   * Sets the live state of ads or of all ads of advertisers. The batch is validated whole
   * (INVALID_ARGUMENT naming the index and the field refuses all of it), written to the state
   * file and fsync'd, then applied atomically: no request sees half of it, and every request
   * that starts after the call returns sees all of it.
   */
  UpdateAdStates: grpc.handleUnaryCall<_adrank_v1_UpdateAdStatesRequest__Output, _adrank_v1_UpdateAdStatesResponse>;
  
}

export interface AdRankerAdminDefinition extends grpc.ServiceDefinition {
  Explain: MethodDefinition<_adrank_v1_ExplainRequest, _adrank_v1_ExplainResponse, _adrank_v1_ExplainRequest__Output, _adrank_v1_ExplainResponse__Output>
  GetAdStates: MethodDefinition<_adrank_v1_GetAdStatesRequest, _adrank_v1_GetAdStatesResponse, _adrank_v1_GetAdStatesRequest__Output, _adrank_v1_GetAdStatesResponse__Output>
  ListModels: MethodDefinition<_adrank_v1_ListModelsRequest, _adrank_v1_ListModelsResponse, _adrank_v1_ListModelsRequest__Output, _adrank_v1_ListModelsResponse__Output>
  ReloadModels: MethodDefinition<_adrank_v1_ReloadModelsRequest, _adrank_v1_ReloadModelsResponse, _adrank_v1_ReloadModelsRequest__Output, _adrank_v1_ReloadModelsResponse__Output>
  UpdateAdStates: MethodDefinition<_adrank_v1_UpdateAdStatesRequest, _adrank_v1_UpdateAdStatesResponse, _adrank_v1_UpdateAdStatesRequest__Output, _adrank_v1_UpdateAdStatesResponse__Output>
}
