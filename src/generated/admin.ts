import type * as grpc from '@grpc/grpc-js';
import type { EnumTypeDefinition, MessageTypeDefinition } from '@grpc/proto-loader';

import type { AdExplanation as _adrank_v1_AdExplanation, AdExplanation__Output as _adrank_v1_AdExplanation__Output } from './adrank/v1/AdExplanation.js';
import type { AdRankerClient as _adrank_v1_AdRankerClient, AdRankerDefinition as _adrank_v1_AdRankerDefinition } from './adrank/v1/AdRanker.js';
import type { AdRankerAdminClient as _adrank_v1_AdRankerAdminClient, AdRankerAdminDefinition as _adrank_v1_AdRankerAdminDefinition } from './adrank/v1/AdRankerAdmin.js';
import type { AdState as _adrank_v1_AdState, AdState__Output as _adrank_v1_AdState__Output } from './adrank/v1/AdState.js';
import type { AdStateUpdate as _adrank_v1_AdStateUpdate, AdStateUpdate__Output as _adrank_v1_AdStateUpdate__Output } from './adrank/v1/AdStateUpdate.js';
import type { DropCounts as _adrank_v1_DropCounts, DropCounts__Output as _adrank_v1_DropCounts__Output } from './adrank/v1/DropCounts.js';
import type { EngagementSequence as _adrank_v1_EngagementSequence, EngagementSequence__Output as _adrank_v1_EngagementSequence__Output } from './adrank/v1/EngagementSequence.js';
import type { Exclusions as _adrank_v1_Exclusions, Exclusions__Output as _adrank_v1_Exclusions__Output } from './adrank/v1/Exclusions.js';
import type { ExplainRequest as _adrank_v1_ExplainRequest, ExplainRequest__Output as _adrank_v1_ExplainRequest__Output } from './adrank/v1/ExplainRequest.js';
import type { ExplainResponse as _adrank_v1_ExplainResponse, ExplainResponse__Output as _adrank_v1_ExplainResponse__Output } from './adrank/v1/ExplainResponse.js';
import type { GetAdStatesRequest as _adrank_v1_GetAdStatesRequest, GetAdStatesRequest__Output as _adrank_v1_GetAdStatesRequest__Output } from './adrank/v1/GetAdStatesRequest.js';
import type { GetAdStatesResponse as _adrank_v1_GetAdStatesResponse, GetAdStatesResponse__Output as _adrank_v1_GetAdStatesResponse__Output } from './adrank/v1/GetAdStatesResponse.js';
import type { GetModelRequest as _adrank_v1_GetModelRequest, GetModelRequest__Output as _adrank_v1_GetModelRequest__Output } from './adrank/v1/GetModelRequest.js';
import type { GetModelResponse as _adrank_v1_GetModelResponse, GetModelResponse__Output as _adrank_v1_GetModelResponse__Output } from './adrank/v1/GetModelResponse.js';
import type { IdList as _adrank_v1_IdList, IdList__Output as _adrank_v1_IdList__Output } from './adrank/v1/IdList.js';
import type { ListModelsRequest as _adrank_v1_ListModelsRequest, ListModelsRequest__Output as _adrank_v1_ListModelsRequest__Output } from './adrank/v1/ListModelsRequest.js';
import type { ListModelsResponse as _adrank_v1_ListModelsResponse, ListModelsResponse__Output as _adrank_v1_ListModelsResponse__Output } from './adrank/v1/ListModelsResponse.js';
import type { ModelRef as _adrank_v1_ModelRef, ModelRef__Output as _adrank_v1_ModelRef__Output } from './adrank/v1/ModelRef.js';
import type { ModelVersionStatus as _adrank_v1_ModelVersionStatus, ModelVersionStatus__Output as _adrank_v1_ModelVersionStatus__Output } from './adrank/v1/ModelVersionStatus.js';
import type { RankRequest as _adrank_v1_RankRequest, RankRequest__Output as _adrank_v1_RankRequest__Output } from './adrank/v1/RankRequest.js';
import type { RankResponse as _adrank_v1_RankResponse, RankResponse__Output as _adrank_v1_RankResponse__Output } from './adrank/v1/RankResponse.js';
import type { RankingMode as _adrank_v1_RankingMode, RankingMode__Output as _adrank_v1_RankingMode__Output } from './adrank/v1/RankingMode.js';
import type { ReloadModelsRequest as _adrank_v1_ReloadModelsRequest, ReloadModelsRequest__Output as _adrank_v1_ReloadModelsRequest__Output } from './adrank/v1/ReloadModelsRequest.js';
import type { ReloadModelsResponse as _adrank_v1_ReloadModelsResponse, ReloadModelsResponse__Output as _adrank_v1_ReloadModelsResponse__Output } from './adrank/v1/ReloadModelsResponse.js';
import type { RetrieveAndRankRequest as _adrank_v1_RetrieveAndRankRequest, RetrieveAndRankRequest__Output as _adrank_v1_RetrieveAndRankRequest__Output } from './adrank/v1/RetrieveAndRankRequest.js';
import type { RetrieveAndRankResponse as _adrank_v1_RetrieveAndRankResponse, RetrieveAndRankResponse__Output as _adrank_v1_RetrieveAndRankResponse__Output } from './adrank/v1/RetrieveAndRankResponse.js';
import type { RetrieveRequest as _adrank_v1_RetrieveRequest, RetrieveRequest__Output as _adrank_v1_RetrieveRequest__Output } from './adrank/v1/RetrieveRequest.js';
import type { RetrieveResponse as _adrank_v1_RetrieveResponse, RetrieveResponse__Output as _adrank_v1_RetrieveResponse__Output } from './adrank/v1/RetrieveResponse.js';
import type { ServerTimings as _adrank_v1_ServerTimings, ServerTimings__Output as _adrank_v1_ServerTimings__Output } from './adrank/v1/ServerTimings.js';
import type { ShardInfo as _adrank_v1_ShardInfo, ShardInfo__Output as _adrank_v1_ShardInfo__Output } from './adrank/v1/ShardInfo.js';
import type { SourceCounts as _adrank_v1_SourceCounts, SourceCounts__Output as _adrank_v1_SourceCounts__Output } from './adrank/v1/SourceCounts.js';
import type { UpdateAdStatesRequest as _adrank_v1_UpdateAdStatesRequest, UpdateAdStatesRequest__Output as _adrank_v1_UpdateAdStatesRequest__Output } from './adrank/v1/UpdateAdStatesRequest.js';
import type { UpdateAdStatesResponse as _adrank_v1_UpdateAdStatesResponse, UpdateAdStatesResponse__Output as _adrank_v1_UpdateAdStatesResponse__Output } from './adrank/v1/UpdateAdStatesResponse.js';
import type { UserFeatures as _adrank_v1_UserFeatures, UserFeatures__Output as _adrank_v1_UserFeatures__Output } from './adrank/v1/UserFeatures.js';
import type { Winner as _adrank_v1_Winner, Winner__Output as _adrank_v1_Winner__Output } from './adrank/v1/Winner.js';

type SubtypeConstructor<Constructor extends new (...args: any) => any, Subtype> = {
  new(...args: ConstructorParameters<Constructor>): Subtype;
};

export interface ProtoGrpcType {
  adrank: {
    v1: {
      AdExplanation: MessageTypeDefinition<_adrank_v1_AdExplanation, _adrank_v1_AdExplanation__Output>
      AdRanker: SubtypeConstructor<typeof grpc.Client, _adrank_v1_AdRankerClient> & { service: _adrank_v1_AdRankerDefinition }
      AdRankerAdmin: SubtypeConstructor<typeof grpc.Client, _adrank_v1_AdRankerAdminClient> & { service: _adrank_v1_AdRankerAdminDefinition }
      AdState: MessageTypeDefinition<_adrank_v1_AdState, _adrank_v1_AdState__Output>
      AdStateUpdate: MessageTypeDefinition<_adrank_v1_AdStateUpdate, _adrank_v1_AdStateUpdate__Output>
      CandidateSource: EnumTypeDefinition
      DropCounts: MessageTypeDefinition<_adrank_v1_DropCounts, _adrank_v1_DropCounts__Output>
      EngagementSequence: MessageTypeDefinition<_adrank_v1_EngagementSequence, _adrank_v1_EngagementSequence__Output>
      Exclusions: MessageTypeDefinition<_adrank_v1_Exclusions, _adrank_v1_Exclusions__Output>
      ExplainRequest: MessageTypeDefinition<_adrank_v1_ExplainRequest, _adrank_v1_ExplainRequest__Output>
      ExplainResponse: MessageTypeDefinition<_adrank_v1_ExplainResponse, _adrank_v1_ExplainResponse__Output>
      FallbackReason: EnumTypeDefinition
      GetAdStatesRequest: MessageTypeDefinition<_adrank_v1_GetAdStatesRequest, _adrank_v1_GetAdStatesRequest__Output>
      GetAdStatesResponse: MessageTypeDefinition<_adrank_v1_GetAdStatesResponse, _adrank_v1_GetAdStatesResponse__Output>
      GetModelRequest: MessageTypeDefinition<_adrank_v1_GetModelRequest, _adrank_v1_GetModelRequest__Output>
      GetModelResponse: MessageTypeDefinition<_adrank_v1_GetModelResponse, _adrank_v1_GetModelResponse__Output>
      IdList: MessageTypeDefinition<_adrank_v1_IdList, _adrank_v1_IdList__Output>
      ListModelsRequest: MessageTypeDefinition<_adrank_v1_ListModelsRequest, _adrank_v1_ListModelsRequest__Output>
      ListModelsResponse: MessageTypeDefinition<_adrank_v1_ListModelsResponse, _adrank_v1_ListModelsResponse__Output>
      ModelRef: MessageTypeDefinition<_adrank_v1_ModelRef, _adrank_v1_ModelRef__Output>
      ModelVersionState: EnumTypeDefinition
      ModelVersionStatus: MessageTypeDefinition<_adrank_v1_ModelVersionStatus, _adrank_v1_ModelVersionStatus__Output>
      RankRequest: MessageTypeDefinition<_adrank_v1_RankRequest, _adrank_v1_RankRequest__Output>
      RankResponse: MessageTypeDefinition<_adrank_v1_RankResponse, _adrank_v1_RankResponse__Output>
      RankingMode: MessageTypeDefinition<_adrank_v1_RankingMode, _adrank_v1_RankingMode__Output>
      ReloadModelsRequest: MessageTypeDefinition<_adrank_v1_ReloadModelsRequest, _adrank_v1_ReloadModelsRequest__Output>
      ReloadModelsResponse: MessageTypeDefinition<_adrank_v1_ReloadModelsResponse, _adrank_v1_ReloadModelsResponse__Output>
      RetrieveAndRankRequest: MessageTypeDefinition<_adrank_v1_RetrieveAndRankRequest, _adrank_v1_RetrieveAndRankRequest__Output>
      RetrieveAndRankResponse: MessageTypeDefinition<_adrank_v1_RetrieveAndRankResponse, _adrank_v1_RetrieveAndRankResponse__Output>
      RetrieveRequest: MessageTypeDefinition<_adrank_v1_RetrieveRequest, _adrank_v1_RetrieveRequest__Output>
      RetrieveResponse: MessageTypeDefinition<_adrank_v1_RetrieveResponse, _adrank_v1_RetrieveResponse__Output>
      ServerTimings: MessageTypeDefinition<_adrank_v1_ServerTimings, _adrank_v1_ServerTimings__Output>
      ShardInfo: MessageTypeDefinition<_adrank_v1_ShardInfo, _adrank_v1_ShardInfo__Output>
      SourceCounts: MessageTypeDefinition<_adrank_v1_SourceCounts, _adrank_v1_SourceCounts__Output>
      UpdateAdStatesRequest: MessageTypeDefinition<_adrank_v1_UpdateAdStatesRequest, _adrank_v1_UpdateAdStatesRequest__Output>
      UpdateAdStatesResponse: MessageTypeDefinition<_adrank_v1_UpdateAdStatesResponse, _adrank_v1_UpdateAdStatesResponse__Output>
      UserFeatures: MessageTypeDefinition<_adrank_v1_UserFeatures, _adrank_v1_UserFeatures__Output>
      Winner: MessageTypeDefinition<_adrank_v1_Winner, _adrank_v1_Winner__Output>
    }
  }
}

