/**
 * What a newcomer sees from `adrank serve` when something is off: one JSON log line that says what
 * happened and what to do, a non-zero exit, no stray grpc-js line, and nothing bound when the
 * bundle or the device cannot be had. Also `--version` and the demo bundle's ad count.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { capabilities, cudaUnavailable } from '../src/engine/index.js';
import { writeSmallBundle } from './50.server.helpers.js';

const CLI = join(process.cwd(), 'src', 'cli', 'main.ts');
/** tsx by URL, so that the CLI also starts from another working directory */
const TSX = import.meta.resolve('tsx');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  /** the JSON log lines of stdout */
  events: { event: string; level: string; [k: string]: unknown }[];
}

/** Runs the CLI until it exits, or until a log line has event `until` (then SIGTERM), within 60 s. */
function run(args: string[], opts: { cwd?: string; until?: string } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', TSX, CLI, ...args], { cwd: opts.cwd ?? process.cwd(), stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ADRANK_METRICS_PORT: '0' } });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.stdout.on('data', (d) => {
      stdout += d;
      if (opts.until && stdout.includes(`"event":"${opts.until}"`)) child.kill('SIGTERM');
    });
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(timer);
      const events = stdout
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l));
      resolve({ code, stdout, stderr, events });
    });
  });
}

describe('60 cli first run', function () {
  this.timeout(120_000);
  let dir: string;
  let bundle: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'adrank-cli-'));
    bundle = join(dir, 'small.safetensors');
    await writeSmallBundle(bundle, 200);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('--version prints the package version', async () => {
    const r = await run(['--version']);
    const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { version: string };
    expect(r.code).to.equal(0);
    expect(r.stdout.trim()).to.equal(pkg.version);
  });

  describe('port in use', () => {
    let blocker: Server;
    let port: number;
    beforeEach(async () => {
      blocker = createServer();
      await new Promise<void>((ok) => blocker.listen(0, 'localhost', ok));
      port = (blocker.address() as { port: number }).port;
    });
    afterEach(() => new Promise<void>((ok) => blocker.close(() => ok())));

    it('one JSON line naming the port and suggesting --port; no grpc-js line; exit 1', async () => {
      const r = await run(['serve', '--bundle', bundle, '--port', String(port), '--device', 'cpu']);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.equal('');
      expect(r.stdout).to.not.include('No address added');
      const errors = r.events.filter((e) => e.level === 'error');
      expect(errors).to.have.length(1);
      expect(errors[0].event).to.equal('port_in_use');
      expect(errors[0].port).to.equal(port);
      expect(errors[0].hint).to.include('--port');
      expect(r.events.map((e) => e.event)).to.not.include('listening');
    });
  });

  it('a missing bundle fails before the port is bound', async () => {
    const r = await run(['serve', '--bundle', join(dir, 'nope.safetensors'), '--port', '0', '--device', 'cpu']);
    expect(r.code).to.equal(1);
    expect(r.events.map((e) => e.event)).to.deep.equal(['model_load_failed']);
    expect(JSON.stringify(r.events[0].error)).to.include('cannot read bundle').and.include('ENOENT');
  });

  it('a file that is not safetensors says so, before the port is bound', async () => {
    const notBundle = join(dir, 'model.onnx');
    writeFileSync(notBundle, Buffer.concat([Buffer.from('0800120a6f6e6e78', 'hex'), Buffer.alloc(1000, 7)]));
    const r = await run(['serve', '--bundle', notBundle, '--port', '0', '--device', 'cpu']);
    expect(r.code).to.equal(1);
    expect(r.events.map((e) => e.event)).to.deep.equal(['model_load_failed']);
    const msg = JSON.stringify(r.events[0].error);
    expect(msg).to.include('not a safetensors file');
    expect(msg).to.not.match(/header length \d/);
  });

  describe('the device', () => {
    const caps = capabilities();

    it('--device auto without a GPU says why in words, and keeps the raw CUDA status for debug', async function () {
      if (caps.cuda.usable) {
        console.log('      [53.cli] skipped: a usable CUDA device is present, so auto chooses it');
        this.skip();
      }
      const r = await run(['serve', '--bundle', bundle, '--port', '0', '--log-level', 'debug'], { until: 'serving' });
      const loaded = r.events.find((e) => e.event === 'model_loaded')!;
      expect(loaded.backend).to.equal('cpu');
      // the device part, then the precision's ("; precision bf16: ...")
      expect(String(loaded.deviceReason).split('; precision')[0]).to.equal(`auto: ${cudaUnavailable(caps)}; using the CPU backend`);
      expect(String(loaded.deviceReason)).to.not.include('cudaError');
      if (caps.cuda.compiled) {
        expect(String(loaded.deviceReason).split('; precision')[0]).to.equal('auto: no NVIDIA GPU/driver found; using the CPU backend');
        const detail = r.events.find((e) => e.event === 'device_detail');
        expect(detail?.level).to.equal('debug');
        expect(detail?.cuda).to.equal(caps.cuda.reason);
      }
    });

    it('--device cuda without a GPU fails before binding and suggests --device auto or cpu', async function () {
      if (caps.cuda.usable) {
        console.log('      [53.cli] skipped: a usable CUDA device is present');
        this.skip();
      }
      const r = await run(['serve', '--bundle', bundle, '--port', '0', '--device', 'cuda']);
      expect(r.code).to.equal(1);
      expect(r.events.map((e) => e.event)).to.deep.equal(['device_unavailable']);
      const msg = JSON.stringify(r.events[0].error);
      expect(msg).to.include('--device auto').and.include('--device cpu').and.include(cudaUnavailable(caps));
    });

    it('maps CUDA statuses to words a user acts on', () => {
      const cuda = (reason: string, compiled = true) => ({ cpu: caps.cpu, cuda: { compiled, usable: false, devices: 0, reason, targets: '' } });
      expect(cudaUnavailable(cuda('CUDA runtime: cudaErrorInsufficientDriver (CUDA driver version is insufficient)'))).to.equal('no NVIDIA GPU/driver found');
      expect(cudaUnavailable(cuda('CUDA runtime: cudaErrorNoDevice (no CUDA-capable device is detected)'))).to.equal('no NVIDIA GPU/driver found');
      expect(cudaUnavailable(cuda('not compiled with CUDA', false))).to.include('no CUDA backend');
      expect(cudaUnavailable(cuda('device 0 is sm_75; this build has code for sm_80, sm_89, sm_90a'))).to.equal(
        'no usable NVIDIA GPU (device 0 is sm_75; this build has code for sm_80, sm_89, sm_90a)',
      );
    });
  });

  it('--demo-ads: another count rewrites the demo bundle; the default keeps it and says how to rewrite', async () => {
    const cwd = mkdtempSync(join(dir, 'demo-'));
    const first = await run(['serve', '--demo', '--demo-ads', '50', '--port', '0', '--device', 'cpu'], { cwd, until: 'serving' });
    expect(first.events.find((e) => e.event === 'demo_bundle_written')?.ads).to.equal(50);
    expect(first.events.find((e) => e.event === 'model_loaded')?.ads).to.equal(50);

    const kept = await run(['serve', '--demo', '--port', '0', '--device', 'cpu'], { cwd, until: 'serving' });
    const note = kept.events.find((e) => e.event === 'demo_bundle_kept');
    expect(note?.ads).to.equal(50);
    expect(note?.hint).to.include('--demo-ads');
    expect(kept.events.find((e) => e.event === 'model_loaded')?.ads).to.equal(50);

    const rewritten = await run(['serve', '--demo', '--demo-ads', '60', '--port', '0', '--device', 'cpu'], { cwd, until: 'serving' });
    expect(rewritten.events.find((e) => e.event === 'demo_bundle_rewriting')?.had).to.equal(50);
    expect(rewritten.events.find((e) => e.event === 'model_loaded')?.ads).to.equal(60);
  });
});
