/**
 * What the admin handlers (adrank.v1.AdRankerAdmin, one file per RPC) need from the server: the
 * model versions, the live ad state, the repository when there is one, the logger and counters.
 */
import type { Stats } from '../handlers/context.js';
import type { ModelRegistry } from '../lifecycle/registry.js';
import type { ModelRepository } from '../lifecycle/repository.js';
import type { Metrics } from '../metrics/index.js';
import type { Logger } from '../log.js';
import type { AdStateStore } from '../state/store.js';

export interface AdminContext {
  models: ModelRegistry;
  state: AdStateStore;
  /** undefined when serving one --bundle */
  repository(): ModelRepository | undefined;
  log: Logger;
  stats: Stats;
  /** the server's metrics (adrank_ad_state_updates_total), when on */
  metrics?: Metrics;
  /** Resolves once every front-end thread serves the current model versions (ReloadModels
   *  answers after it); absent with one thread. */
  threadsSynced?: () => Promise<void>;
}
