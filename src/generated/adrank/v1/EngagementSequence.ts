// Original file: proto/adrank/v1/adrank.proto

import type { Long } from '@grpc/proto-loader';

/**
 * Engagements as two parallel packed arrays (cheaper to decode than one message each):
 * engagement j is (item_ids[j], actions[j]); j = 0 is the most recent.
 */
export interface EngagementSequence {
  /**
   * Item ids; any int64 (hashed: id mod config.sequence.item_buckets).
   */
  'itemIds'?: (number | string | Long)[];
  /**
   * Action type per engagement, 0 <= action < config.sequence.actions; same length as item_ids.
   */
  'actions'?: (number)[];
}

/**
 * Engagements as two parallel packed arrays (cheaper to decode than one message each):
 * engagement j is (item_ids[j], actions[j]); j = 0 is the most recent.
 */
export interface EngagementSequence__Output {
  /**
   * Item ids; any int64 (hashed: id mod config.sequence.item_buckets).
   */
  'itemIds': (string)[];
  /**
   * Action type per engagement, 0 <= action < config.sequence.actions; same length as item_ids.
   */
  'actions': (number)[];
}
