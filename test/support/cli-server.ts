/**
 * `adrank serve` in a child process (tests that kill it with SIGKILL): its JSON log lines,
 * a wait for one event (rejected, with stderr, if the process exits first), and its exit.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

export interface CliServer {
  proc: ChildProcess;
  events: Record<string, any>[];
  /** the first log line with this `event` (already seen or still to come) */
  event: (name: string) => Promise<Record<string, any>>;
  /** the exit code (null when killed by a signal) */
  exited: Promise<number | null>;
  stderr: () => string;
}

/** Starts `adrank serve ARGS` (src/cli/main.ts under tsx). */
export function serveCli(args: string[]): CliServer {
  const cli = join(process.cwd(), 'src', 'cli', 'main.ts');
  const proc = spawn(process.execPath, ['--import', 'tsx', cli, 'serve', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const events: Record<string, any>[] = [];
  let stderr = '';
  proc.stderr!.on('data', (d) => (stderr += d));
  const waiters: [string, (e: Record<string, any>) => void][] = [];
  createInterface({ input: proc.stdout! }).on('line', (line) => {
    const e = JSON.parse(line);
    events.push(e);
    for (const [name, fn] of waiters) if (e.event === name) fn(e);
  });
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  const event = (name: string) =>
    Promise.race([
      new Promise<Record<string, any>>((resolve) => {
        const found = events.find((e) => e.event === name);
        if (found) resolve(found);
        else waiters.push([name, resolve]);
      }),
      exited.then((code) => Promise.reject(new Error(`adrank exited (${code}) before ${name}: ${stderr}`))),
    ]);
  return { proc, events, event, exited, stderr: () => stderr };
}

/** The gRPC port from a `listening` log line. */
export const portOf = (listening: Record<string, any>) => Number(String(listening.address).split(':').pop());
