// Original file: proto/adrank/v1/adrank.proto


export interface GetModelRequest {
}

export interface GetModelRequest__Output {
}
