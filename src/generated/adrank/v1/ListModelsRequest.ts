// Original file: proto/adrank/v1/admin.proto


export interface ListModelsRequest {
}

export interface ListModelsRequest__Output {
}
