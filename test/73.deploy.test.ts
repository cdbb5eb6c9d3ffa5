/**
 * deploy/: every Kubernetes manifest the kustomization lists validates against the Kubernetes
 * OpenAPI schemas (kubernetes-models, offline), and the manifests agree with each other and with
 * the server: one Deployment per shard serving shard-<i>, the router's --shard i-th naming shard
 * i's headless Service, gRPC probes, GPU requests, non-root, terminationGracePeriodSeconds that
 * covers preStop + --shutdown-grace-ms, PDBs and HPAs that select real Deployments.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'chai';
import { parseAllDocuments } from 'yaml';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { Service } from 'kubernetes-models/v1/Service';
import { PersistentVolumeClaim } from 'kubernetes-models/v1/PersistentVolumeClaim';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler';

const DIR = join(process.cwd(), 'deploy', 'k8s');
const S = 3;

interface Validating {
  validate(): void;
}
type Ctor = new (data: never) => Validating;
const MODELS: Record<string, Ctor> = {
  'apps/v1 Deployment': Deployment as unknown as Ctor,
  'v1 Service': Service as unknown as Ctor,
  'v1 PersistentVolumeClaim': PersistentVolumeClaim as unknown as Ctor,
  'policy/v1 PodDisruptionBudget': PodDisruptionBudget as unknown as Ctor,
  'autoscaling/v2 HorizontalPodAutoscaler': HorizontalPodAutoscaler as unknown as Ctor,
};

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Doc = Record<string, any>;

function load(file: string): Doc[] {
  return parseAllDocuments(readFileSync(join(DIR, file), 'utf8')).map((d) => {
    if (d.errors.length > 0) throw new Error(`${file}: ${d.errors[0].message}`);
    return d.toJS() as Doc;
  });
}

/** Validates one manifest against its schema; throws with the file and the schema's complaint. */
function validate(doc: Doc, where: string): void {
  const Model = MODELS[`${doc.apiVersion} ${doc.kind}`];
  if (!Model) throw new Error(`${where}: no schema for ${doc.apiVersion} ${doc.kind}`);
  new Model(doc as never).validate();
}

const matches = (selector: Record<string, string>, labels: Record<string, string>) => Object.entries(selector).every(([k, v]) => labels?.[k] === v);

describe('73 deploy manifests (offline, Kubernetes schemas)', () => {
  const kustomization = load('kustomization.yaml')[0];
  const files: string[] = kustomization.resources;
  const docs = files.flatMap((f) => load(f).map((d) => ({ file: f, doc: d })));
  const of = (kind: string) => docs.filter((d) => d.doc.kind === kind).map((d) => d.doc);

  it('the kustomization lists files that exist and hold only known kinds', () => {
    expect(kustomization.kind).to.equal('Kustomization');
    expect(files.length).to.be.greaterThan(3);
    expect(docs.length).to.be.greaterThan(files.length);
  });

  it('every manifest validates against its schema', () => {
    for (const { file, doc } of docs) validate(doc, `${file} ${doc.kind} ${doc.metadata?.name}`);
  });

  it('the validator refuses what the API server would (a probe port as text, a list where a number goes)', () => {
    const d = structuredClone(of('Deployment')[0]);
    d.spec.template.spec.containers[0].readinessProbe.grpc.port = 'grpc';
    expect(() => validate(d, 'mutated')).to.throw(/port/);
    const p = structuredClone(of('PodDisruptionBudget')[0]);
    p.spec.maxUnavailable = [1];
    expect(() => validate(p, 'mutated')).to.throw();
  });

  it('one GPU Deployment per shard, serving shard-<i>, each behind a headless Service, a PDB and an HPA', () => {
    const deployments = of('Deployment');
    for (let i = 0; i < S; i++) {
      const d = deployments.find((x) => x.metadata.name === `adrank-shard-${i}`);
      expect(d, `shard ${i}`).to.exist;
      const c = d!.spec.template.spec.containers[0];
      const env = Object.fromEntries(c.env.map((e: Doc) => [e.name, e.value]));
      expect(env.ADRANK_BUNDLE).to.match(new RegExp(`/shard-${i}\\.safetensors$`));
      expect(c.resources.requests['nvidia.com/gpu']).to.equal(1);
      expect(c.resources.limits['nvidia.com/gpu']).to.equal(1);
      expect(d!.spec.template.spec.volumes.some((v: Doc) => v.persistentVolumeClaim?.claimName === 'adrank-models')).to.equal(true);
      const labels = d!.spec.template.metadata.labels;
      const svc = of('Service').find((s) => s.metadata.name === `adrank-shard-${i}`);
      expect(svc?.spec.clusterIP).to.equal('None');
      expect(matches(svc!.spec.selector, labels)).to.equal(true);
      expect(of('PodDisruptionBudget').some((p) => matches(p.spec.selector.matchLabels, labels))).to.equal(true);
      expect(of('HorizontalPodAutoscaler').some((h) => h.spec.scaleTargetRef.name === d!.metadata.name)).to.equal(true);
    }
    expect(of('PersistentVolumeClaim').map((p) => p.metadata.name)).to.include('adrank-models');
  });

  it('the router names shard i\'s Service i-th, and has its own headless Service and PDB', () => {
    const r = of('Deployment').find((x) => x.metadata.name === 'adrank-router')!;
    const args: string[] = r.spec.template.spec.containers[0].args;
    expect(args[0]).to.equal('route');
    const shards = args.filter((a) => a.startsWith('--shard='));
    expect(shards).to.have.length(S);
    shards.forEach((a, i) => expect(a).to.match(new RegExp(`^--shard=dns:///adrank-shard-${i}\\.`)));
    const labels = r.spec.template.metadata.labels;
    expect(of('Service').find((s) => s.metadata.name === 'adrank-router')?.spec.clusterIP).to.equal('None');
    expect(of('PodDisruptionBudget').some((p) => matches(p.spec.selector.matchLabels, labels))).to.equal(true);
  });

  it('every pod: gRPC probes on grpc.health.v1, non-root, a termination grace that covers preStop + --shutdown-grace-ms', () => {
    for (const d of of('Deployment')) {
      const spec = d.spec.template.spec;
      const c = spec.containers[0];
      for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) expect(c[probe]?.grpc?.port, `${d.metadata.name} ${probe}`).to.equal(50051);
      expect(c.readinessProbe.grpc.service).to.equal('adrank.v1.AdRanker');
      expect(spec.securityContext.runAsNonRoot).to.equal(true);
      expect(spec.securityContext.runAsUser).to.be.greaterThan(0);
      const env = Object.fromEntries(c.env.map((e: Doc) => [e.name, e.value]));
      const graceMs = Number(env.ADRANK_SHUTDOWN_GRACE_MS);
      expect(graceMs, `${d.metadata.name} ADRANK_SHUTDOWN_GRACE_MS`).to.be.greaterThan(0);
      const preStopS = c.lifecycle?.preStop?.sleep?.seconds ?? 0;
      const total = spec.terminationGracePeriodSeconds;
      expect(total * 1000, `${d.metadata.name} terminationGracePeriodSeconds`).to.be.at.least(preStopS * 1000 + graceMs + 5000);
      expect(total * 1000, `${d.metadata.name} terminationGracePeriodSeconds (not far above the drain)`).to.be.at.most(preStopS * 1000 + graceMs + 30_000);
    }
  });

  it('the Dockerfile: multi-stage, CUDA runtime final stage, non-root, the demo bundle by default', () => {
    const text = readFileSync(join(process.cwd(), 'deploy', 'Dockerfile'), 'utf8');
    const froms = text.split('\n').filter((l) => /^FROM /.test(l));
    expect(froms.length).to.be.at.least(3);
    expect(froms[froms.length - 1]).to.match(/^FROM nvidia\/cuda:\$\{CUDA_VERSION\}-runtime-/);
    const user = /^USER (\d+)(:\d+)?$/m.exec(text);
    expect(Number(user?.[1])).to.be.greaterThan(0);
    expect(text).to.match(/^CMD \["serve", "--demo"\]$/m);
  });
});
