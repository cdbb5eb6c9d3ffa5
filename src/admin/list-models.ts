/** ListModels: every model version the server knows, its state, the default, the shadow, load time, sha256. */
import type { ListModelsResponse } from '../generated/adrank/v1/ListModelsResponse.js';
import type { ModelVersionStatus } from '../generated/adrank/v1/ModelVersionStatus.js';
import type { ModelRegistry } from '../lifecycle/registry.js';
import type { AdminContext } from './context.js';

export function versionStatuses(models: ModelRegistry): ModelVersionStatus[] {
  const def = models.defaultVersion();
  return models.all().map((v) => ({
    version: v.version,
    state: v.state,
    reason: v.reason,
    isDefault: v.version === def,
    loadTimeUnixMs: String(v.loadedAt),
    loadMs: v.loadMs,
    sha256: v.sha256,
    modelName: v.engine?.config.name ?? '',
    configVersion: v.engine?.config.version ?? '',
    path: v.path,
    numAds: String(v.engine?.numAds ?? 0),
    isShadow: v.version === models.shadowVersion,
  }));
}

export function listModels(ctx: AdminContext): ListModelsResponse {
  return { models: versionStatuses(ctx.models), defaultVersion: ctx.models.defaultVersion() ?? '', repository: ctx.repository()?.dir ?? '', shadowVersion: ctx.models.shadowVersion ?? '' };
}
