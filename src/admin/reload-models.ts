/** ReloadModels: rescan the model repository now; answer when the rescan's loads have finished. */
import { status } from '@grpc/grpc-js';
import type { ReloadModelsResponse } from '../generated/adrank/v1/ReloadModelsResponse.js';
import { RequestError } from '../handlers/validate.js';
import type { AdminContext } from './context.js';
import { versionStatuses } from './list-models.js';

export async function reloadModels(ctx: AdminContext): Promise<ReloadModelsResponse> {
  const repo = ctx.repository();
  if (!repo) throw new RequestError(status.FAILED_PRECONDITION, 'this server serves one --bundle; ReloadModels needs --model-repository');
  const r = await repo.rescan('ReloadModels');
  await ctx.threadsSynced?.();
  return { models: versionStatuses(ctx.models), defaultVersion: ctx.models.defaultVersion() ?? '', loaded: r.loaded, failed: r.failed };
}
