/**
 * JSON logs through pino: one line per event, `{"level","ts","event",...fields}`, to stdout.
 * The `Logger` interface (`log.info(event, fields)`) is what the rest of the code uses; pino is
 * the writer behind it (levels, fast serialisation, synchronous writes so that the last lines
 * before `process.exit` are not lost).
 */
import { pino, stdSerializers } from 'pino';

export type Level = 'debug' | 'info' | 'warn' | 'error';
const LEVELS: readonly Level[] = ['debug', 'info', 'warn', 'error'];

export interface Logger {
  debug(event: string, fields?: Record<string, unknown>): void;
  info(event: string, fields?: Record<string, unknown>): void;
  warn(event: string, fields?: Record<string, unknown>): void;
  error(event: string, fields?: Record<string, unknown>): void;
}

/** A logger writing JSON lines at `level` and above to `write` (default: stdout). */
export function jsonLogger(level: Level = 'info', write?: (line: string) => void): Logger {
  const p = pino(
    {
      level,
      base: null, // no pid/hostname on every line
      messageKey: 'event',
      timestamp: () => `,"ts":"${new Date().toISOString()}"`,
      formatters: { level: (label) => ({ level: label }) },
      // errors as {type, message, stack}; ids (bigint) as strings, as the API writes them
      serializers: { error: stdSerializers.err, err: stdSerializers.err },
      hooks: { logMethod(args, method) {
        const fields = args[0] as Record<string, unknown>;
        for (const k in fields) if (typeof fields[k] === 'bigint') fields[k] = String(fields[k]);
        method.apply(this, args);
      } },
    },
    write ? { write } : pino.destination({ dest: 1, sync: true }),
  );
  return {
    debug: (event, fields) => p.debug({ ...fields }, event),
    info: (event, fields) => p.info({ ...fields }, event),
    warn: (event, fields) => p.warn({ ...fields }, event),
    error: (event, fields) => p.error({ ...fields }, event),
  };
}

/** Discards everything (tests, benchmarks). */
export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };

export function parseLevel(s: string): Level {
  if ((LEVELS as readonly string[]).includes(s)) return s as Level;
  throw new Error(`expected debug, info, warn or error for log level, got ${JSON.stringify(s)}`);
}
