import type * as grpc from '@grpc/grpc-js';
import type { EnumTypeDefinition, MessageTypeDefinition } from '@grpc/proto-loader';

import type { AdRankerAdminClient as _adrank_v1_AdRankerAdminClient, AdRankerAdminDefinition as _adrank_v1_AdRankerAdminDefinition } from './adrank/v1/AdRankerAdmin.js';
import type { AdState as _adrank_v1_AdState, AdState__Output as _adrank_v1_AdState__Output } from './adrank/v1/AdState.js';
import type { AdStateUpdate as _adrank_v1_AdStateUpdate, AdStateUpdate__Output as _adrank_v1_AdStateUpdate__Output } from './adrank/v1/AdStateUpdate.js';
import type { GetAdStatesRequest as _adrank_v1_GetAdStatesRequest, GetAdStatesRequest__Output as _adrank_v1_GetAdStatesRequest__Output } from './adrank/v1/GetAdStatesRequest.js';
import type { GetAdStatesResponse as _adrank_v1_GetAdStatesResponse, GetAdStatesResponse__Output as _adrank_v1_GetAdStatesResponse__Output } from './adrank/v1/GetAdStatesResponse.js';
import type { ListModelsRequest as _adrank_v1_ListModelsRequest, ListModelsRequest__Output as _adrank_v1_ListModelsRequest__Output } from './adrank/v1/ListModelsRequest.js';
import type { ListModelsResponse as _adrank_v1_ListModelsResponse, ListModelsResponse__Output as _adrank_v1_ListModelsResponse__Output } from './adrank/v1/ListModelsResponse.js';
import type { ModelVersionStatus as _adrank_v1_ModelVersionStatus, ModelVersionStatus__Output as _adrank_v1_ModelVersionStatus__Output } from './adrank/v1/ModelVersionStatus.js';
import type { ReloadModelsRequest as _adrank_v1_ReloadModelsRequest, ReloadModelsRequest__Output as _adrank_v1_ReloadModelsRequest__Output } from './adrank/v1/ReloadModelsRequest.js';
import type { ReloadModelsResponse as _adrank_v1_ReloadModelsResponse, ReloadModelsResponse__Output as _adrank_v1_ReloadModelsResponse__Output } from './adrank/v1/ReloadModelsResponse.js';
import type { UpdateAdStatesRequest as _adrank_v1_UpdateAdStatesRequest, UpdateAdStatesRequest__Output as _adrank_v1_UpdateAdStatesRequest__Output } from './adrank/v1/UpdateAdStatesRequest.js';
import type { UpdateAdStatesResponse as _adrank_v1_UpdateAdStatesResponse, UpdateAdStatesResponse__Output as _adrank_v1_UpdateAdStatesResponse__Output } from './adrank/v1/UpdateAdStatesResponse.js';

type SubtypeConstructor<Constructor extends new (...args: any) => any, Subtype> = {
  new(...args: ConstructorParameters<Constructor>): Subtype;
};

export interface ProtoGrpcType {
  adrank: {
    v1: {
      AdRankerAdmin: SubtypeConstructor<typeof grpc.Client, _adrank_v1_AdRankerAdminClient> & { service: _adrank_v1_AdRankerAdminDefinition }
      AdState: MessageTypeDefinition<_adrank_v1_AdState, _adrank_v1_AdState__Output>
      AdStateUpdate: MessageTypeDefinition<_adrank_v1_AdStateUpdate, _adrank_v1_AdStateUpdate__Output>
      GetAdStatesRequest: MessageTypeDefinition<_adrank_v1_GetAdStatesRequest, _adrank_v1_GetAdStatesRequest__Output>
      GetAdStatesResponse: MessageTypeDefinition<_adrank_v1_GetAdStatesResponse, _adrank_v1_GetAdStatesResponse__Output>
      ListModelsRequest: MessageTypeDefinition<_adrank_v1_ListModelsRequest, _adrank_v1_ListModelsRequest__Output>
      ListModelsResponse: MessageTypeDefinition<_adrank_v1_ListModelsResponse, _adrank_v1_ListModelsResponse__Output>
      ModelVersionState: EnumTypeDefinition
      ModelVersionStatus: MessageTypeDefinition<_adrank_v1_ModelVersionStatus, _adrank_v1_ModelVersionStatus__Output>
      ReloadModelsRequest: MessageTypeDefinition<_adrank_v1_ReloadModelsRequest, _adrank_v1_ReloadModelsRequest__Output>
      ReloadModelsResponse: MessageTypeDefinition<_adrank_v1_ReloadModelsResponse, _adrank_v1_ReloadModelsResponse__Output>
      UpdateAdStatesRequest: MessageTypeDefinition<_adrank_v1_UpdateAdStatesRequest, _adrank_v1_UpdateAdStatesRequest__Output>
      UpdateAdStatesResponse: MessageTypeDefinition<_adrank_v1_UpdateAdStatesResponse, _adrank_v1_UpdateAdStatesResponse__Output>
    }
  }
}

