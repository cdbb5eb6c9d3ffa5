/**
 * A server the load generator starts itself (`adrank bench --server NAME=FLAGS`): a child
 * `adrank serve --port 0 ...` process, so the generator and the server never share an event
 * loop, and several server configurations (batching on / off) can be compared in one run.
 * Its CPU time is read from /proc (Linux) to report server core time per request.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';

export interface ServerProc {
  name: string;
  flags: string[];
  address: string;
  child: ChildProcess;
  /** user + system CPU seconds so far (NaN where /proc is missing) */
  cpuSeconds(): number;
  /** calls `fn` with every JSON log line of this event the server prints from now on */
  onEvent(event: string, fn: (fields: Record<string, unknown>) => void): void;
  /** the last JSON log line of this event printed so far, start-up included (`model_loaded`) */
  lastEvent(event: string): Record<string, unknown> | undefined;
  stop(): Promise<void>;
}

/** The `adrank` entry point to serve from: ADRANK_BENCH_CLI (another checkout's, to measure a
 *  baseline in the same run), else this checkout's. */
function cliMain(): string {
  if (process.env.ADRANK_BENCH_CLI) return process.env.ADRANK_BENCH_CLI;
  const here = dirname(fileURLToPath(import.meta.url));
  for (const f of ['../cli/main.js', '../cli/main.ts']) {
    const p = join(here, f);
    if (existsSync(p)) return p;
  }
  throw new Error(`bench: cannot find cli/main next to ${here}`);
}

/** Splits a flag string on whitespace (no quoting: flags take no spaces). */
export function splitFlags(s: string): string[] {
  return s.split(/\s+/).filter(Boolean);
}

/** `name=flags` → { name, flags }. */
export function parseServerSpec(spec: string): { name: string; flags: string[] } {
  const i = spec.indexOf('=');
  if (i <= 0) throw new Error(`expected NAME=FLAGS for --server, got ${JSON.stringify(spec)}`);
  return { name: spec.slice(0, i), flags: splitFlags(spec.slice(i + 1)) };
}

export async function startServer(name: string, flags: string[], baseFlags: string[], timeoutMs = 300_000): Promise<ServerProc> {
  const args = [cliMain(), 'serve', '--host', 'localhost', '--port', '0', '--metrics-port', '0', '--log-level', 'info', ...baseFlags, ...flags];
  return startProcess(name, args, flags, timeoutMs);
}

/** A node child running `args` (a script and its arguments, under this process's node options)
 *  that prints a JSON line `{"event":"serving","address":...}` once it serves, as `adrank serve` does. */
export async function startProcess(name: string, scriptArgs: string[], flags: string[] = [], timeoutMs = 300_000): Promise<ServerProc> {
  const args = [...process.execArgv, ...scriptArgs];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  const listeners = new Map<string, ((fields: Record<string, unknown>) => void)[]>();
  const seen = new Map<string, Record<string, unknown>>();
  const address = await new Promise<string>((resolve, reject) => {
    let addr: string | undefined;
    const timer = setTimeout(() => reject(new Error(`bench: server ${name} not serving after ${timeoutMs} ms`)), timeoutMs);
    const rl = createInterface({ input: child.stdout! });
    rl.on('line', (line) => {
      lines.push(line);
      if (lines.length > 200) lines.splice(0, 100); // the last lines, for an error message
      try {
        const j = JSON.parse(line) as { event?: string; msg?: string; address?: string };
        const ev = j.event ?? j.msg;
        if (ev !== undefined) {
          seen.set(ev, j);
          for (const fn of listeners.get(ev) ?? []) fn(j);
        }
        if (ev === 'listening' && j.address) addr = j.address;
        if (ev === 'serving' && (j.address ?? addr)) {
          clearTimeout(timer);
          resolve((j.address ?? addr)!);
        }
      } catch {
        /* not JSON */
      }
    });
    child.stderr!.on('data', (d: Buffer) => lines.push(d.toString()));
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`bench: server ${name} exited with ${code} before serving:\n${lines.slice(-20).join('\n')}`));
    });
  });
  const tick = 100; // USER_HZ on Linux
  return {
    name,
    flags,
    address,
    child,
    onEvent(event, fn) {
      listeners.set(event, [...(listeners.get(event) ?? []), fn]);
    },
    lastEvent(event) {
      return seen.get(event);
    },
    cpuSeconds() {
      try {
        const stat = readFileSync(`/proc/${child.pid}/stat`, 'utf8');
        const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        return (Number(f[11]) + Number(f[12])) / tick; // utime, stime (fields 14, 15)
      } catch {
        return NaN;
      }
    },
    stop() {
      return new Promise((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
        setTimeout(() => child.kill('SIGKILL'), 15_000).unref();
      });
    },
  };
}
