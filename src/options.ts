/**
 * Option checking shared by the constructors: every option is validated at once and a bad one
 * is named in the error.
 *
 * @module
 */
import { InvalidOptionError } from './errors.ts';

/** Returns `value` if it is an integer in [min, max], `fallback` if undefined; throws otherwise. */
export function intOption(name: string, value: unknown, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new InvalidOptionError(name, `expected an integer from ${min} to ${max}, got ${JSON.stringify(value)}`);
  }
  return value;
}

/** Returns `value` if it is a string, `fallback` if undefined; throws otherwise. */
export function stringOption(name: string, value: unknown, fallback: string): string {
  if (value === undefined) return fallback;
  if (typeof value !== 'string') throw new InvalidOptionError(name, `expected a string, got ${typeof value}`);
  return value;
}

/** Returns `value` if it is a boolean, `fallback` if undefined; throws otherwise. */
export function booleanOption(name: string, value: unknown, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') throw new InvalidOptionError(name, `expected true or false, got ${JSON.stringify(value)}`);
  return value;
}

/** Rejects option names that are not in `known` (catches typos such as `heartbeatIntervall`). */
export function rejectUnknown(options: object, known: readonly string[]): void {
  for (const name of Object.keys(options)) {
    if (!known.includes(name)) throw new InvalidOptionError(name, `unknown option; known options: ${known.join(', ')}`);
  }
}

/**
 * Longest duration any option or argument takes, in ms (2^31 − 1, about 24.8 days): the most
 * a Node.js timer can wait. A longer one would make a timer fire at once, again and again.
 */
export const MAX_DURATION_MS = 2_147_483_647;

/** Longest ttl a write may carry, in seconds (one year); the forwarder refuses longer ones. */
export const MAX_TTL_SECONDS = 365 * 24 * 3600;

/**
 * Returns `value` if it is a whole number of ms in [min, max] (max at most
 * {@link MAX_DURATION_MS}), `fallback` if undefined; throws naming the option otherwise
 * (NaN, negative, fractional and too large values included).
 */
export function durationOption(name: string, value: unknown, fallback: number, min: number, max = MAX_DURATION_MS): number {
  return intOption(name, value, fallback, min, Math.min(max, MAX_DURATION_MS));
}
