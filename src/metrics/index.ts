/**
 * Prometheus metrics (prom-client). The names and labels are an interface: dashboards and alerts
 * are written against them (docs/observability.md lists them with example PromQL).
 *
 * One `Metrics` object per server, with its own registry (several servers can live in one
 * process, e.g. in tests). Per-request values go through the cheap collectors of
 * ./collectors.ts; rare events (model loads, ad-state updates, batches) through prom-client's
 * own Counter/Gauge/Histogram.
 */
import { AggregatorRegistry, collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { status } from '@grpc/grpc-js';
import type { NativeResult } from '../engine/index.js';
import type { ModelConfig } from '../model/config.js';
import type { ServerTimings } from '../generated/adrank/v1/ServerTimings.js';
import { CallbackFamily, CallbackGauge, FastCounter, FastHistogram, type CounterChild, type HistogramChild } from './collectors.js';

/** --metrics-port default (the port OpenTelemetry's Prometheus exporter uses) */
export const DEFAULT_METRICS_PORT = 9464;

/** adrank_request_duration_seconds: 100 µs .. 10 s */
export const REQUEST_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** adrank_stage_duration_seconds: stages take µs to ms */
export const STAGE_BUCKETS = [0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1];
/** adrank_prediction: calibrated probabilities; fine where click and conversion rates live */
export const PREDICTION_BUCKETS = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1];
/** adrank_batch_candidates: candidates in one engine batch */
export const BATCH_BUCKETS = [1, 10, 100, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000, 100_000, 200_000];

/** adrank_shadow_overlap: overlap@K in 0..1 */
export const OVERLAP_BUCKETS = [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1];
/** adrank_shadow_prediction_delta: |Δp| of one common winner and task */
export const DELTA_BUCKETS = [0, 0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1];
/** adrank_shadow_price_shift: relative, both signs */
export const PRICE_SHIFT_BUCKETS = [-0.5, -0.2, -0.1, -0.05, -0.02, -0.01, -0.001, 0, 0.001, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5];

/** The `stage` label values and the ServerTimings field each is read from. */
export const STAGES = [
  ['decode', 'decodeUs'],
  ['validate', 'validateUs'],
  ['queue', 'queueUs'],
  ['user', 'userUs'],
  ['retrieve', 'retrieveUs'],
  ['gather', 'gatherUs'],
  ['masknet', 'masknetUs'],
  ['dcn', 'dcnUs'],
  ['mlp', 'mlpUs'],
  ['select', 'selectUs'],
  ['encode', 'encodeUs'],
] as const satisfies readonly (readonly [string, keyof ServerTimings])[];

/** The `outcome` label values of adrank_candidates_total, in funnel order, and the count each is read from. */
export const OUTCOMES = [
  ['received', 'received'],
  ['unknown', 'unknown'],
  ['duplicate', 'duplicate'],
  ['inactive', 'inactive'],
  ['out_of_budget', 'outOfBudget'],
  ['paced', 'paced'],
  ['targeting', 'targeting'],
  ['excluded_ad', 'excludedAd'],
  ['excluded_advertiser', 'excludedAdvertiser'],
  ['capped', 'capped'],
  ['eligible', 'eligible'],
] as const satisfies readonly (readonly [string, keyof NativeResult['counts']])[];

function stage(h: HistogramChild, us: number | string | undefined): void {
  if (typeof us === 'number' && us > 0) h.observe(us * 1e-6);
}

/** What the request path records for one gRPC method (resolved once per method). */
export class MethodMetrics {
  private readonly byCode: (CounterChild | undefined)[] = [];
  constructor(
    readonly rpc: string,
    private readonly requests: FastCounter,
    readonly duration: HistogramChild,
  ) {}
  finished(code: number, seconds: number): void {
    let c = this.byCode[code];
    if (!c) c = this.byCode[code] = this.requests.child({ rpc: this.rpc, code: status[code] ?? String(code) });
    c.value++;
    this.duration.observe(seconds);
  }
}

export interface MetricsOptions {
  /** prom-client's process and Node.js metrics (default true) */
  defaults?: boolean;
}

/** seconds: a state file append and fsync, a copy-on-write apply (100 µs to 2.5 s) */
const STATE_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

export class Metrics {
  readonly registry = new Registry();
  readonly requests: FastCounter;
  readonly requestDuration: FastHistogram;
  readonly stageDuration: FastHistogram;
  readonly inflight: CallbackGauge;
  readonly queueDepth: CallbackGauge;
  /** the default version's engine: CUDA graphs held, failed graph captures, streams lost to the watchdog */
  readonly deviceGraphs: CallbackGauge;
  readonly deviceCaptureFailures: CallbackGauge;
  readonly deviceLostStreams: CallbackGauge;
  readonly candidates: FastCounter;
  readonly prediction: FastHistogram;
  readonly modelInfo: Gauge<'version' | 'backend' | 'device'>;
  readonly modelLoadFailures: Counter;
  readonly adStateUpdates: Counter;
  readonly adStateWrite: Histogram;
  readonly adStateApply: Histogram;
  /** the live ad state store (src/state/store.ts): writable, and failed writes by reason */
  readonly adStateWritable: CallbackGauge;
  readonly adStateWriteFailures: CallbackFamily;
  /** the feature log (src/featurelog/): bytes of its files, files deleted for the budget,
   *  records dropped by reason */
  readonly featureLogBytes: CallbackGauge;
  readonly featureLogFilesDeleted: CallbackFamily;
  readonly featureLogDropped: CallbackFamily;
  readonly batchCandidates: Histogram;
  readonly fallbacks: Counter<'rpc' | 'reason'>;
  readonly deviceFailovers: Counter<'from' | 'outcome'>;
  readonly shadowRequests: FastCounter;
  readonly shadowDropped: FastCounter;
  readonly shadowInflight: CallbackGauge;
  readonly shadowOverlap: FastHistogram;
  readonly shadowPredictionDelta: FastHistogram;
  readonly shadowPriceShift: FastHistogram;
  readonly shadowDuration: FastHistogram;

  private readonly methods = new Map<string, MethodMetrics | null>();
  private readonly stages: HistogramChild[];
  private readonly outcomes = new Map<string, CounterChild[]>();
  /** prediction children for the config last seen: [surface][task] */
  private predictionFor: { config: ModelConfig; children: HistogramChild[][] } | undefined;

  constructor(opts: MetricsOptions = {}) {
    const r = this.registry;
    this.requests = new FastCounter('adrank_requests_total', 'gRPC calls to the adrank services, by method and final status code', ['rpc', 'code']).register(r);
    this.requestDuration = new FastHistogram('adrank_request_duration_seconds', 'time from the call arriving to its status being sent, by method', ['rpc'], REQUEST_BUCKETS).register(r);
    this.stageDuration = new FastHistogram('adrank_stage_duration_seconds', 'time per request in each stage of the engine RPCs (the response timings)', ['stage'], STAGE_BUCKETS).register(r);
    this.inflight = new CallbackGauge('adrank_inflight_requests', 'engine RPCs admitted and not yet answered (bounded by --max-inflight)', () => undefined).register(r);
    this.queueDepth = new CallbackGauge('adrank_queue_depth', 'engine runs submitted and not yet finished (waiting for or on a worker)', () => undefined).register(r);
    this.candidates = new FastCounter('adrank_candidates_total', 'candidates through the funnel of the engine RPCs, by outcome (received ... eligible, won)', ['rpc', 'outcome']).register(r);
    this.prediction = new FastHistogram('adrank_prediction', 'calibrated probabilities served to winners, by task and surface', ['task', 'surface'], PREDICTION_BUCKETS).register(r);
    this.deviceGraphs = new CallbackGauge('adrank_device_graphs', 'CUDA graphs the default version holds (captured and instantiated)', () => undefined).register(r);
    this.deviceCaptureFailures = new CallbackGauge('adrank_device_graph_capture_failures', 'graph captures of the default version that failed (that request shape then runs eagerly)', () => undefined).register(r);
    this.deviceLostStreams = new CallbackGauge('adrank_device_lost_streams', 'CUDA streams of the default version abandoned by the watchdog (work that never finished)', () => undefined).register(r);
    this.modelInfo = new Gauge({ name: 'adrank_model_info', help: '1 for each loaded model version', labelNames: ['version', 'backend', 'device'], registers: [r] });
    this.modelLoadFailures = new Counter({ name: 'adrank_model_load_failures_total', help: 'model bundles that failed to load or validate', registers: [r] });
    this.adStateUpdates = new Counter({ name: 'adrank_ad_state_updates_total', help: 'ad and advertiser state updates applied through the admin API', registers: [r] });
    this.adStateWrite = new Histogram({ name: 'adrank_ad_state_write_seconds', help: 'UpdateAdStates batches: time to append the record to the state file and fsync it', buckets: STATE_BUCKETS, registers: [r] });
    this.adStateApply = new Histogram({ name: 'adrank_ad_state_apply_seconds', help: 'UpdateAdStates batches: time to apply a written batch to the live state and every engine (copy-on-write)', buckets: STATE_BUCKETS, registers: [r] });
    this.adStateWritable = new CallbackGauge('adrank_ad_state_writable', '1 when ad state updates are accepted, 0 while they are refused after a failed state file write', () => undefined).register(r);
    this.adStateWriteFailures = new CallbackFamily('adrank_ad_state_write_failures_total', 'failed state file writes (batch appends, background retries, compactions), by reason (the error code: enospc, eio, ...)', 'counter', () => []).register(r);
    this.featureLogBytes = new CallbackGauge('adrank_feature_log_bytes', 'bytes of feature log files in the log directory (complete files and the one being written)', () => undefined).register(r);
    this.featureLogFilesDeleted = new CallbackFamily('adrank_feature_log_files_deleted_total', 'complete feature log files deleted, oldest first, to keep under --feature-log-max-total-bytes', 'counter', () => []).register(r);
    this.featureLogDropped = new CallbackFamily('adrank_feature_log_dropped_total', 'sampled records not written, by reason (queue_full, low_disk, write_error)', 'counter', () => []).register(r);
    this.batchCandidates = new Histogram({ name: 'adrank_batch_candidates', help: 'candidates per engine batch', buckets: BATCH_BUCKETS, registers: [r] });
    this.fallbacks = new Counter({ name: 'adrank_fallback_answers_total', help: 'answers served from the fallback instead of the model, by method and reason', labelNames: ['rpc', 'reason'], registers: [r] });
    this.deviceFailovers = new Counter({ name: 'adrank_device_failovers_total', help: 'engines replaced after a sticky device error, by the failed backend and the outcome (rebuilt, failed)', labelNames: ['from', 'outcome'], registers: [r] });
    this.shadowRequests = new FastCounter('adrank_shadow_requests_total', 'sampled shadow copies that were not dropped, by method and outcome (compared, failed, unavailable, same_version, primary_fallback)', ['rpc', 'outcome']).register(r);
    this.shadowDropped = new FastCounter('adrank_shadow_dropped_total', 'sampled shadow copies dropped before running, by reason (inflight_full, primary_busy, no_idle_gap, shutting_down)', ['reason']).register(r);
    this.shadowInflight = new CallbackGauge('adrank_shadow_inflight', 'shadow runs in flight (bounded by --shadow-max-inflight)', () => undefined).register(r);
    this.shadowOverlap = new FastHistogram('adrank_shadow_overlap', 'overlap@K of the shadow answer with the primary answer, per compared request', ['rpc'], OVERLAP_BUCKETS).register(r);
    this.shadowPredictionDelta = new FastHistogram('adrank_shadow_prediction_delta', '|p_shadow - p_primary| per winner common to both answers, by task', ['task'], DELTA_BUCKETS).register(r);
    this.shadowPriceShift = new FastHistogram('adrank_shadow_price_shift', 'mean relative price shift (shadow - primary) / primary over the common priced winners, per compared request', ['rpc'], PRICE_SHIFT_BUCKETS).register(r);
    this.shadowDuration = new FastHistogram('adrank_shadow_duration_seconds', 'time of a shadow run from validation to the engine answer', ['rpc'], REQUEST_BUCKETS).register(r);
    this.stages = STAGES.map(([stage]) => this.stageDuration.child({ stage }));
    if (opts.defaults ?? true) collectDefaultMetrics({ register: r });
  }

  /** The recorder for a method path ("/adrank.v1.AdRanker/Rank"); null for services not
   *  counted (health, reflection): they would dilute the error rate. */
  method(path: string): MethodMetrics | null {
    let m = this.methods.get(path);
    if (m === undefined) {
      const slash = path.lastIndexOf('/');
      const counted = path.startsWith('/adrank.');
      const rpc = path.slice(slash + 1);
      m = counted ? new MethodMetrics(rpc, this.requests, this.requestDuration.child({ rpc })) : null;
      this.methods.set(path, m);
    }
    return m;
  }

  /**
   * One engine RPC's result: its funnel counts, winners, served probabilities and stage times.
   * `surface` is the index into config.surfaces.
   */
  engineResult(rpc: string, result: NativeResult, timings: ServerTimings, config: ModelConfig, surface: number): void {
    let oc = this.outcomes.get(rpc);
    if (!oc) {
      oc = [...OUTCOMES.map(([outcome]) => this.candidates.child({ rpc, outcome })), this.candidates.child({ rpc, outcome: 'won' })];
      this.outcomes.set(rpc, oc);
    }
    const counts = result.counts;
    for (let i = 0; i < OUTCOMES.length; i++) oc[i].value += counts[OUTCOMES[i][1]];
    const n = result.adIds.length;
    oc[OUTCOMES.length].value += n;

    // field by field (monomorphic loads), in STAGES order; a stage the RPC did not run reads 0
    const st = this.stages;
    stage(st[0], timings.decodeUs);
    stage(st[1], timings.validateUs);
    stage(st[2], timings.queueUs);
    stage(st[3], timings.userUs);
    stage(st[4], timings.retrieveUs);
    stage(st[5], timings.gatherUs);
    stage(st[6], timings.masknetUs);
    stage(st[7], timings.dcnUs);
    stage(st[8], timings.mlpUs);
    stage(st[9], timings.selectUs);
    stage(st[10], timings.encodeUs);

    const probs = result.probs;
    if (probs.length === 0 || surface < 0 || surface >= config.surfaces.length) return;
    const byTask = this.predictionChildren(config)[surface];
    const tasks = byTask.length;
    for (let t = 0; t < tasks; t++) byTask[t].observeStrided(probs, t, tasks, n);
  }

  private predictionChildren(config: ModelConfig): HistogramChild[][] {
    if (this.predictionFor?.config !== config) {
      this.predictionFor = { config, children: config.surfaces.map((surface) => config.tasks.map((task) => this.prediction.child({ task, surface }))) };
    }
    return this.predictionFor.children;
  }

  /** One compared shadow run (src/shadow/). */
  shadowCompared(rpc: string, c: { overlap: number; deltas: Record<string, Float64Array>; priceShift?: number }, seconds: number): void {
    this.shadowOverlap.child({ rpc }).observe(c.overlap);
    for (const [task, d] of Object.entries(c.deltas)) {
      const h = this.shadowPredictionDelta.child({ task });
      for (let i = 0; i < d.length; i++) h.observe(d[i]);
    }
    if (c.priceShift !== undefined) this.shadowPriceShift.child({ rpc }).observe(c.priceShift);
    this.shadowDuration.child({ rpc }).observe(seconds);
  }

  /** adrank_model_info: this version is loaded (1) */
  modelLoaded(m: { version: string; backend: string; device: string }): void {
    this.modelInfo.set({ version: m.version, backend: m.backend, device: m.device }, 1);
  }

  /** adrank_model_info: this version is no longer loaded (the series goes away) */
  modelUnloaded(m: { version: string; backend: string; device: string }): void {
    this.modelInfo.remove({ version: m.version, backend: m.backend, device: m.device });
  }

  /** The text exposition (what GET /metrics returns). */
  /**
   * Where the other front-end threads' metrics come from (--front-end-threads): each thread's
   * registry as JSON. Set on the thread that serves /metrics; the text is then the sum over the
   * threads (prom-client's AggregatorRegistry.aggregate; every adrank collector sums, and only
   * this thread has the process and Node.js metrics and the owner's gauges).
   */
  peers: (() => Promise<object[][]>) | undefined;

  /** This thread's metrics, as another thread's `peers` reads them. */
  json(): Promise<object[]> {
    return this.registry.getMetricsAsJSON();
  }

  async text(): Promise<string> {
    if (!this.peers) return this.registry.metrics();
    const all = [await this.json(), ...(await this.peers())];
    return AggregatorRegistry.aggregate(all).metrics();
  }
}
