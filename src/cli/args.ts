/** Argument parsers shared by the CLI's commands. */
import { InvalidArgumentError } from 'commander';

/** An integer in min..max, digits only. */
export function int(min: number, max = Number.MAX_SAFE_INTEGER) {
  return (v: string): number => {
    // digits only: Number() would also take '' and ' ' (as 0), '0x10', '1e3'
    const n = /^\d+$/.test(v) ? Number(v) : NaN;
    if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`expected an integer in ${min}..${max}, got ${JSON.stringify(v)}`);
    return n;
  };
}

/** A non-negative decimal number at most `max` (e.g. 0.05). */
export function decimal(max = Infinity) {
  return (v: string): number => {
    const n = /^(\d+(\.\d*)?|\.\d+)$/.test(v) ? Number(v) : NaN;
    if (!(n >= 0 && n <= max)) throw new InvalidArgumentError(`expected a number in 0..${max}, got ${JSON.stringify(v)}`);
    return n;
  };
}

/** A boolean written out: true or false. */
export function trueFalse(v: string): boolean {
  if (v === 'true' || v === 'false') return v === 'true';
  throw new InvalidArgumentError(`expected true or false, got ${JSON.stringify(v)}`);
}

/** A fraction in 0..1: 0, 1, 0.25, .25, 1.0. */
export function fraction(v: string): number {
  const n = /^(0|1|0?\.\d+|1\.0*)$/.test(v) ? Number(v) : NaN;
  if (!(n >= 0 && n <= 1)) throw new InvalidArgumentError(`expected a fraction in 0..1, got ${JSON.stringify(v)}`);
  return n;
}

/** A comma-separated list of integers in min..max ("2,4,8"). */
export function intList(min: number, max: number) {
  const one = int(min, max);
  return (v: string): number[] => v.split(',').map((s) => one(s.trim()));
}
