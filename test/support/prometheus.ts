/**
 * A real Prometheus server for the metrics test: Debian's `prometheus` package (.ci/run
 * installs it), started on a free loopback port with a 1 s scrape interval against the given
 * targets, queried through its HTTP API. Tests skip, saying why, when the binary is missing.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';

export function findPrometheus(): { path: string } | { reason: string } {
  const candidates = [process.env.ADRANK_PROMETHEUS, '/usr/bin/prometheus', '/usr/local/bin/prometheus'].filter((p): p is string => !!p);
  for (const p of candidates) if (existsSync(p)) return { path: p };
  return { reason: `no prometheus binary (tried ${candidates.join(', ')}); install it with \`apt-get install prometheus\` or set ADRANK_PROMETHEUS` };
}

export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as AddressInfo).port;
  await new Promise((resolve) => s.close(resolve));
  return port;
}

export interface Sample {
  metric: Record<string, string>;
  value: number;
}

export class Prometheus {
  private constructor(
    private readonly child: ChildProcess,
    readonly url: string,
    private readonly stderr: () => string,
  ) {}

  static async start(binary: string, dir: string, targets: string[]): Promise<Prometheus> {
    mkdirSync(join(dir, 'tsdb'), { recursive: true });
    const config = join(dir, 'prometheus.yml');
    writeFileSync(
      config,
      ['global:', '  scrape_interval: 1s', '  scrape_timeout: 1s', 'scrape_configs:', '  - job_name: adrank', '    static_configs:', `      - targets: [${targets.map((t) => `'${t}'`).join(', ')}]`, ''].join('\n'),
    );
    const port = await freePort();
    const child = spawn(binary, [`--config.file=${config}`, `--storage.tsdb.path=${join(dir, 'tsdb')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr!.on('data', (d) => (err = (err + d).slice(-4000)));
    const p = new Prometheus(child, `http://127.0.0.1:${port}`, () => err);
    const until = Date.now() + 60_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`prometheus exited ${child.exitCode}: ${err}`);
      const ok = await fetch(`${p.url}/-/ready`).then((r) => r.ok, () => false);
      if (ok) return p;
      if (Date.now() > until) {
        p.stop();
        throw new Error(`prometheus not ready after 60 s: ${err}`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  /** An instant query; the samples of the resulting vector. */
  async query(expr: string): Promise<Sample[]> {
    const r = await fetch(`${this.url}/api/v1/query?query=${encodeURIComponent(expr)}`);
    const body = (await r.json()) as { status: string; error?: string; data: { resultType: string; result: { metric: Record<string, string>; value: [number, string] }[] } };
    if (body.status !== 'success') throw new Error(`query ${expr}: ${body.error} (${this.stderr()})`);
    return body.data.result.map((s) => ({ metric: s.metric, value: Number(s.value[1]) }));
  }

  /** Polls `expr` until `ok(samples)` or the time runs out; returns the last samples. */
  async waitFor(expr: string, ok: (s: Sample[]) => boolean, timeoutMs = 30_000): Promise<Sample[]> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const s = await this.query(expr);
      if (ok(s) || Date.now() > until) return s;
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  stop(): void {
    if (this.child.exitCode === null) this.child.kill('SIGKILL');
  }
}
