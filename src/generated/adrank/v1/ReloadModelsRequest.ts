// Original file: proto/adrank/v1/admin.proto


export interface ReloadModelsRequest {
}

export interface ReloadModelsRequest__Output {
}
