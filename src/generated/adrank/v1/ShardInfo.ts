// Original file: proto/adrank/v1/adrank.proto


/**
 * One shard of a sharded corpus: it holds the ads whose splitmix64(ad_id) mod count == index.
 */
export interface ShardInfo {
  'index'?: (number);
  'count'?: (number);
  'sourceSha256'?: (string);
}

/**
 * One shard of a sharded corpus: it holds the ads whose splitmix64(ad_id) mod count == index.
 */
export interface ShardInfo__Output {
  'index': (number);
  'count': (number);
  'sourceSha256': (string);
}
