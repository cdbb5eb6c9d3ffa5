// Original file: proto/adrank/v1/adrank.proto

import type * as grpc from '@grpc/grpc-js'
import type { MethodDefinition } from '@grpc/proto-loader'
import type { GetModelRequest as _adrank_v1_GetModelRequest, GetModelRequest__Output as _adrank_v1_GetModelRequest__Output } from '../../adrank/v1/GetModelRequest.js';
import type { GetModelResponse as _adrank_v1_GetModelResponse, GetModelResponse__Output as _adrank_v1_GetModelResponse__Output } from '../../adrank/v1/GetModelResponse.js';
import type { RankRequest as _adrank_v1_RankRequest, RankRequest__Output as _adrank_v1_RankRequest__Output } from '../../adrank/v1/RankRequest.js';
import type { RankResponse as _adrank_v1_RankResponse, RankResponse__Output as _adrank_v1_RankResponse__Output } from '../../adrank/v1/RankResponse.js';
import type { RetrieveAndRankRequest as _adrank_v1_RetrieveAndRankRequest, RetrieveAndRankRequest__Output as _adrank_v1_RetrieveAndRankRequest__Output } from '../../adrank/v1/RetrieveAndRankRequest.js';
import type { RetrieveAndRankResponse as _adrank_v1_RetrieveAndRankResponse, RetrieveAndRankResponse__Output as _adrank_v1_RetrieveAndRankResponse__Output } from '../../adrank/v1/RetrieveAndRankResponse.js';
import type { RetrieveRequest as _adrank_v1_RetrieveRequest, RetrieveRequest__Output as _adrank_v1_RetrieveRequest__Output } from '../../adrank/v1/RetrieveRequest.js';
import type { RetrieveResponse as _adrank_v1_RetrieveResponse, RetrieveResponse__Output as _adrank_v1_RetrieveResponse__Output } from '../../adrank/v1/RetrieveResponse.js';

export interface AdRankerClient extends grpc.Client {
  /**
   * The loaded model: name, version, config, ad count, backend.
   */
  GetModel(argument: _adrank_v1_GetModelRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_adrank_v1_GetModelResponse__Output>): grpc.ClientUnaryCall;
  GetModel(argument: _adrank_v1_GetModelRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_adrank_v1_GetModelResponse__Output>): grpc.ClientUnaryCall;
  GetModel(argument: _adrank_v1_GetModelRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_adrank_v1_GetModelResponse__Output>): grpc.ClientUnaryCall;
  GetModel(argument: _adrank_v1_GetModelRequest, callback: grpc.requestCallback<_adrank_v1_GetModelResponse__Output>): grpc.ClientUnaryCall;
  /**
   * The loaded model: name, version, config, ad count, backend.
   */
  getModel(argument: _adrank_v1_GetModelRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_adrank_v1_GetModelResponse__Output>): grpc.ClientUnaryCall;
  getModel(argument: _adrank_v1_GetModelRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_adrank_v1_GetModelResponse__Output>): grpc.ClientUnaryCall;
  getModel(argument: _adrank_v1_GetModelRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_adrank_v1_GetModelResponse__Output>): grpc.ClientUnaryCall;
  getModel(argument: _adrank_v1_GetModelRequest, callback: grpc.requestCallback<_adrank_v1_GetModelResponse__Output>): grpc.ClientUnaryCall;
  
  /**
   * Scores the caller's candidate ad ids with the ranking model and returns the top K by
   * utility with calibrated per-task probabilities (and GSP prices when `price` is set).
   */
  Rank(argument: _adrank_v1_RankRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_adrank_v1_RankResponse__Output>): grpc.ClientUnaryCall;
  Rank(argument: _adrank_v1_RankRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_adrank_v1_RankResponse__Output>): grpc.ClientUnaryCall;
  Rank(argument: _adrank_v1_RankRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_adrank_v1_RankResponse__Output>): grpc.ClientUnaryCall;
  Rank(argument: _adrank_v1_RankRequest, callback: grpc.requestCallback<_adrank_v1_RankResponse__Output>): grpc.ClientUnaryCall;
  /**
   * Scores the caller's candidate ad ids with the ranking model and returns the top K by
   * utility with calibrated per-task probabilities (and GSP prices when `price` is set).
   */
  rank(argument: _adrank_v1_RankRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_adrank_v1_RankResponse__Output>): grpc.ClientUnaryCall;
  rank(argument: _adrank_v1_RankRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_adrank_v1_RankResponse__Output>): grpc.ClientUnaryCall;
  rank(argument: _adrank_v1_RankRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_adrank_v1_RankResponse__Output>): grpc.ClientUnaryCall;
  rank(argument: _adrank_v1_RankRequest, callback: grpc.requestCallback<_adrank_v1_RankResponse__Output>): grpc.ClientUnaryCall;
  
  /**
   * Two-tower dot-product retrieval over the whole ad corpus, with eligibility filters,
   * per-advertiser cap and top K (K up to 10,000). Winners carry the retrieval score.
   */
  Retrieve(argument: _adrank_v1_RetrieveRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_adrank_v1_RetrieveResponse__Output>): grpc.ClientUnaryCall;
  Retrieve(argument: _adrank_v1_RetrieveRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_adrank_v1_RetrieveResponse__Output>): grpc.ClientUnaryCall;
  Retrieve(argument: _adrank_v1_RetrieveRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_adrank_v1_RetrieveResponse__Output>): grpc.ClientUnaryCall;
  Retrieve(argument: _adrank_v1_RetrieveRequest, callback: grpc.requestCallback<_adrank_v1_RetrieveResponse__Output>): grpc.ClientUnaryCall;
  /**
   * Two-tower dot-product retrieval over the whole ad corpus, with eligibility filters,
   * per-advertiser cap and top K (K up to 10,000). Winners carry the retrieval score.
   */
  retrieve(argument: _adrank_v1_RetrieveRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_adrank_v1_RetrieveResponse__Output>): grpc.ClientUnaryCall;
  retrieve(argument: _adrank_v1_RetrieveRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_adrank_v1_RetrieveResponse__Output>): grpc.ClientUnaryCall;
  retrieve(argument: _adrank_v1_RetrieveRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_adrank_v1_RetrieveResponse__Output>): grpc.ClientUnaryCall;
  retrieve(argument: _adrank_v1_RetrieveRequest, callback: grpc.requestCallback<_adrank_v1_RetrieveResponse__Output>): grpc.ClientUnaryCall;
  
  /**
   * The whole funnel on the device: retrieve the top R, rank them, select K, price them (GSP).
   */
  RetrieveAndRank(argument: _adrank_v1_RetrieveAndRankRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_adrank_v1_RetrieveAndRankResponse__Output>): grpc.ClientUnaryCall;
  RetrieveAndRank(argument: _adrank_v1_RetrieveAndRankRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_adrank_v1_RetrieveAndRankResponse__Output>): grpc.ClientUnaryCall;
  RetrieveAndRank(argument: _adrank_v1_RetrieveAndRankRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_adrank_v1_RetrieveAndRankResponse__Output>): grpc.ClientUnaryCall;
  RetrieveAndRank(argument: _adrank_v1_RetrieveAndRankRequest, callback: grpc.requestCallback<_adrank_v1_RetrieveAndRankResponse__Output>): grpc.ClientUnaryCall;
  /**
   * The whole funnel on the device: retrieve the top R, rank them, select K, price them (GSP).
   */
  retrieveAndRank(argument: _adrank_v1_RetrieveAndRankRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_adrank_v1_RetrieveAndRankResponse__Output>): grpc.ClientUnaryCall;
  retrieveAndRank(argument: _adrank_v1_RetrieveAndRankRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_adrank_v1_RetrieveAndRankResponse__Output>): grpc.ClientUnaryCall;
  retrieveAndRank(argument: _adrank_v1_RetrieveAndRankRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_adrank_v1_RetrieveAndRankResponse__Output>): grpc.ClientUnaryCall;
  retrieveAndRank(argument: _adrank_v1_RetrieveAndRankRequest, callback: grpc.requestCallback<_adrank_v1_RetrieveAndRankResponse__Output>): grpc.ClientUnaryCall;
  
}

export interface AdRankerHandlers extends grpc.UntypedServiceImplementation {
  /**
   * The loaded model: name, version, config, ad count, backend.
   */
  GetModel: grpc.handleUnaryCall<_adrank_v1_GetModelRequest__Output, _adrank_v1_GetModelResponse>;
  
  /**
   * Scores the caller's candidate ad ids with the ranking model and returns the top K by
   * utility with calibrated per-task probabilities (and GSP prices when `price` is set).
   */
  Rank: grpc.handleUnaryCall<_adrank_v1_RankRequest__Output, _adrank_v1_RankResponse>;
  
  /**
   * Two-tower dot-product retrieval over the whole ad corpus, with eligibility filters,
   * per-advertiser cap and top K (K up to 10,000). Winners carry the retrieval score.
   */
  Retrieve: grpc.handleUnaryCall<_adrank_v1_RetrieveRequest__Output, _adrank_v1_RetrieveResponse>;
  
  /**
   * The whole funnel on the device: retrieve the top R, rank them, select K, price them (GSP).
   */
  RetrieveAndRank: grpc.handleUnaryCall<_adrank_v1_RetrieveAndRankRequest__Output, _adrank_v1_RetrieveAndRankResponse>;
  
}

export interface AdRankerDefinition extends grpc.ServiceDefinition {
  GetModel: MethodDefinition<_adrank_v1_GetModelRequest, _adrank_v1_GetModelResponse, _adrank_v1_GetModelRequest__Output, _adrank_v1_GetModelResponse__Output>
  Rank: MethodDefinition<_adrank_v1_RankRequest, _adrank_v1_RankResponse, _adrank_v1_RankRequest__Output, _adrank_v1_RankResponse__Output>
  Retrieve: MethodDefinition<_adrank_v1_RetrieveRequest, _adrank_v1_RetrieveResponse, _adrank_v1_RetrieveRequest__Output, _adrank_v1_RetrieveResponse__Output>
  RetrieveAndRank: MethodDefinition<_adrank_v1_RetrieveAndRankRequest, _adrank_v1_RetrieveAndRankResponse, _adrank_v1_RetrieveAndRankRequest__Output, _adrank_v1_RetrieveAndRankResponse__Output>
}
