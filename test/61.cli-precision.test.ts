/**
 * `adrank serve --precision auto|fp32|bf16` (env ADRANK_PRECISION): a bad value is refused naming
 * the flag, and GetModel's device / device_reason name the precision the CPU backend runs at and
 * why (flag or environment; `auto` picks bf16 where the CPU has AVX512-BF16, fp32 elsewhere).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { expect } from 'chai';
import { capabilities } from '../src/engine/index.js';
import { call, connect } from '../src/cli/client.js';
import { addonBuilt } from './support/index.js';
import { writeSmallBundle } from './50.server.helpers.js';

const cli = join(process.cwd(), 'src', 'cli', 'main.ts');

interface ModelInfo {
  device: string;
  deviceReason: string;
}

/** Starts `adrank serve` with `args` and `env`, returns GetModel's answer, stops the server. */
async function getModel(args: string[], env: Record<string, string>): Promise<ModelInfo> {
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', cli, 'serve', '--port', '0', '--metrics-port', '0', '--threads', '1', ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, ...env },
  });
  try {
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no serving event within 60 s')), 60_000);
      let listening = 0;
      createInterface({ input: child.stdout! }).on('line', (line) => {
        const e = JSON.parse(line) as { event: string; address?: string };
        if (e.event === 'listening') listening = Number(String(e.address).split(':').pop());
        if (e.event === 'serving') {
          clearTimeout(timer);
          resolve(listening);
        }
      });
      child.on('exit', (code) => reject(new Error(`adrank serve exited with ${code}`)));
    });
    const client = connect(`localhost:${port}`);
    try {
      return await call<object, ModelInfo>(client, 'GetModel', {});
    } finally {
      client.close();
    }
  } finally {
    child.kill('SIGKILL');
  }
}

describe('61 CLI --precision', function () {
  this.timeout(120_000);
  let dir = '';
  let bundle = '';
  before(async function () {
    if (!addonBuilt()) this.skip();
    dir = mkdtempSync(join(tmpdir(), 'adrank-precision-'));
    bundle = join(dir, 'small.safetensors');
    await writeSmallBundle(bundle, 200);
  });
  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('refuses a value other than auto, fp32 or bf16, naming the flag', () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', cli, 'serve', '--bundle', bundle, '--precision', 'fp16'], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status).to.not.equal(0);
    expect(r.stderr).to.match(/--precision <p>' argument 'fp16' is invalid\. expected auto, fp32 or bf16, got "fp16"/);
  });

  it('GetModel names the precision and why: ADRANK_PRECISION=fp32, and the default auto', async () => {
    const fp32 = await getModel(['--bundle', bundle, '--device', 'cpu'], { ADRANK_PRECISION: 'fp32' });
    expect(fp32.device).to.match(/^cpu (avx512|avx2|scalar) fp32 x1 threads$/);
    expect(fp32.deviceReason).to.equal('requested; precision fp32: requested');
    const env: Record<string, string> = {};
    if (process.env.ADRANK_PRECISION) env.ADRANK_PRECISION = 'auto';
    const auto = await getModel(['--bundle', bundle, '--device', 'cpu'], env);
    const cpu = capabilities().cpu;
    expect(auto.device).to.equal(`cpu ${cpu.simd} ${cpu.bf16Auto ? 'bf16' : 'fp32'} x1 threads`);
    expect(auto.deviceReason).to.equal(`requested; precision ${cpu.bf16Auto ? 'bf16' : 'fp32'}: auto, ${cpu.bf16AutoReason}`);
  });
});
