import type * as grpc from '@grpc/grpc-js';
import type { EnumTypeDefinition, MessageTypeDefinition } from '@grpc/proto-loader';

import type { AdRankerClient as _adrank_v1_AdRankerClient, AdRankerDefinition as _adrank_v1_AdRankerDefinition } from './adrank/v1/AdRanker.js';
import type { DropCounts as _adrank_v1_DropCounts, DropCounts__Output as _adrank_v1_DropCounts__Output } from './adrank/v1/DropCounts.js';
import type { EngagementSequence as _adrank_v1_EngagementSequence, EngagementSequence__Output as _adrank_v1_EngagementSequence__Output } from './adrank/v1/EngagementSequence.js';
import type { Exclusions as _adrank_v1_Exclusions, Exclusions__Output as _adrank_v1_Exclusions__Output } from './adrank/v1/Exclusions.js';
import type { GetModelRequest as _adrank_v1_GetModelRequest, GetModelRequest__Output as _adrank_v1_GetModelRequest__Output } from './adrank/v1/GetModelRequest.js';
import type { GetModelResponse as _adrank_v1_GetModelResponse, GetModelResponse__Output as _adrank_v1_GetModelResponse__Output } from './adrank/v1/GetModelResponse.js';
import type { IdList as _adrank_v1_IdList, IdList__Output as _adrank_v1_IdList__Output } from './adrank/v1/IdList.js';
import type { ModelRef as _adrank_v1_ModelRef, ModelRef__Output as _adrank_v1_ModelRef__Output } from './adrank/v1/ModelRef.js';
import type { RankRequest as _adrank_v1_RankRequest, RankRequest__Output as _adrank_v1_RankRequest__Output } from './adrank/v1/RankRequest.js';
import type { RankResponse as _adrank_v1_RankResponse, RankResponse__Output as _adrank_v1_RankResponse__Output } from './adrank/v1/RankResponse.js';
import type { RankingMode as _adrank_v1_RankingMode, RankingMode__Output as _adrank_v1_RankingMode__Output } from './adrank/v1/RankingMode.js';
import type { RetrieveAndRankRequest as _adrank_v1_RetrieveAndRankRequest, RetrieveAndRankRequest__Output as _adrank_v1_RetrieveAndRankRequest__Output } from './adrank/v1/RetrieveAndRankRequest.js';
import type { RetrieveAndRankResponse as _adrank_v1_RetrieveAndRankResponse, RetrieveAndRankResponse__Output as _adrank_v1_RetrieveAndRankResponse__Output } from './adrank/v1/RetrieveAndRankResponse.js';
import type { RetrieveRequest as _adrank_v1_RetrieveRequest, RetrieveRequest__Output as _adrank_v1_RetrieveRequest__Output } from './adrank/v1/RetrieveRequest.js';
import type { RetrieveResponse as _adrank_v1_RetrieveResponse, RetrieveResponse__Output as _adrank_v1_RetrieveResponse__Output } from './adrank/v1/RetrieveResponse.js';
import type { ServerTimings as _adrank_v1_ServerTimings, ServerTimings__Output as _adrank_v1_ServerTimings__Output } from './adrank/v1/ServerTimings.js';
import type { ShardInfo as _adrank_v1_ShardInfo, ShardInfo__Output as _adrank_v1_ShardInfo__Output } from './adrank/v1/ShardInfo.js';
import type { SourceCounts as _adrank_v1_SourceCounts, SourceCounts__Output as _adrank_v1_SourceCounts__Output } from './adrank/v1/SourceCounts.js';
import type { UserFeatures as _adrank_v1_UserFeatures, UserFeatures__Output as _adrank_v1_UserFeatures__Output } from './adrank/v1/UserFeatures.js';
import type { Winner as _adrank_v1_Winner, Winner__Output as _adrank_v1_Winner__Output } from './adrank/v1/Winner.js';

type SubtypeConstructor<Constructor extends new (...args: any) => any, Subtype> = {
  new(...args: ConstructorParameters<Constructor>): Subtype;
};

export interface ProtoGrpcType {
  adrank: {
    v1: {
      AdRanker: SubtypeConstructor<typeof grpc.Client, _adrank_v1_AdRankerClient> & { service: _adrank_v1_AdRankerDefinition }
      CandidateSource: EnumTypeDefinition
      DropCounts: MessageTypeDefinition<_adrank_v1_DropCounts, _adrank_v1_DropCounts__Output>
      EngagementSequence: MessageTypeDefinition<_adrank_v1_EngagementSequence, _adrank_v1_EngagementSequence__Output>
      Exclusions: MessageTypeDefinition<_adrank_v1_Exclusions, _adrank_v1_Exclusions__Output>
      FallbackReason: EnumTypeDefinition
      GetModelRequest: MessageTypeDefinition<_adrank_v1_GetModelRequest, _adrank_v1_GetModelRequest__Output>
      GetModelResponse: MessageTypeDefinition<_adrank_v1_GetModelResponse, _adrank_v1_GetModelResponse__Output>
      IdList: MessageTypeDefinition<_adrank_v1_IdList, _adrank_v1_IdList__Output>
      ModelRef: MessageTypeDefinition<_adrank_v1_ModelRef, _adrank_v1_ModelRef__Output>
      RankRequest: MessageTypeDefinition<_adrank_v1_RankRequest, _adrank_v1_RankRequest__Output>
      RankResponse: MessageTypeDefinition<_adrank_v1_RankResponse, _adrank_v1_RankResponse__Output>
      RankingMode: MessageTypeDefinition<_adrank_v1_RankingMode, _adrank_v1_RankingMode__Output>
      RetrieveAndRankRequest: MessageTypeDefinition<_adrank_v1_RetrieveAndRankRequest, _adrank_v1_RetrieveAndRankRequest__Output>
      RetrieveAndRankResponse: MessageTypeDefinition<_adrank_v1_RetrieveAndRankResponse, _adrank_v1_RetrieveAndRankResponse__Output>
      RetrieveRequest: MessageTypeDefinition<_adrank_v1_RetrieveRequest, _adrank_v1_RetrieveRequest__Output>
      RetrieveResponse: MessageTypeDefinition<_adrank_v1_RetrieveResponse, _adrank_v1_RetrieveResponse__Output>
      ServerTimings: MessageTypeDefinition<_adrank_v1_ServerTimings, _adrank_v1_ServerTimings__Output>
      ShardInfo: MessageTypeDefinition<_adrank_v1_ShardInfo, _adrank_v1_ShardInfo__Output>
      SourceCounts: MessageTypeDefinition<_adrank_v1_SourceCounts, _adrank_v1_SourceCounts__Output>
      UserFeatures: MessageTypeDefinition<_adrank_v1_UserFeatures, _adrank_v1_UserFeatures__Output>
      Winner: MessageTypeDefinition<_adrank_v1_Winner, _adrank_v1_Winner__Output>
    }
  }
}

