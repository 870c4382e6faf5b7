/**
 * Small helpers shared by the comparison bench: statistics, probes, payloads, process memory.
 *
 * Nothing here opens a long-lived resource; every wait has a deadline.
 *
 * @module
 */

import { connect } from 'node:net';
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';

/** Milliseconds since an arbitrary origin, sub-millisecond resolution. */
export const now = (): number => performance.now();

/** Resolve after `ms` milliseconds. */
export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Try a TCP connection to `host:port` and close it again.
 *
 * @returns `null` when something accepted the connection, else the reason (for a `skipped` line).
 */
export function probeTcp(port: number, host = '127.0.0.1', timeoutMs = 1000): Promise<string | null> {
  return new Promise((resolve) => {
    const socket = connect({ port, host });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(`no answer from ${host}:${port} within ${timeoutMs} ms`);
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.end();
      socket.destroy();
      resolve(null);
    });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(`${host}:${port} unreachable (${err.code ?? err.message})`);
    });
  });
}

/** Race `promise` against a deadline; rejects with `what` in the message when it runs out. */
export async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Median of a non-empty list (mean of the two middle values for an even count). */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  if (sorted.length === 0) return Number.NaN;
  if (sorted.length % 2 === 1) return sorted[mid] ?? Number.NaN;
  return ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}

/** Smallest and largest of a list. */
export function spread(values: readonly number[]): { min: number; max: number } {
  let min = Number.POSITIVE_INFINITY;
  let max = Number.NEGATIVE_INFINITY;
  for (const v of values) {
    if (v < min) min = v;
    if (v > max) max = v;
  }
  return { min, max };
}

/**
 * Nearest-rank percentile of the first `count` samples of `samples` (sorted in place).
 *
 * @param q - between 0 and 1, e.g. 0.999
 */
export function percentile(sortedSamples: Float64Array, q: number): number {
  const n = sortedSamples.length;
  if (n === 0) return Number.NaN;
  const rank = Math.min(n - 1, Math.max(0, Math.ceil(q * n) - 1));
  return sortedSamples[rank] ?? Number.NaN;
}

/** Round to `digits` significant decimals, keeping integers as they are above 100. */
export function round(value: number, digits = 3): number {
  if (!Number.isFinite(value)) return value;
  if (Math.abs(value) >= 100) return Math.round(value);
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

/**
 * A benchmark value: `<run>:<index>:<sentAtMs>:` padded with `.` to `size` characters.
 * Warm-up values use index -1. Every system carries the same text, so decoding costs the same.
 */
export function encodeValue(run: number, index: number, sentAt: number, size: number): string {
  const head = `${run}:${index}:${sentAt.toFixed(4)}:`;
  return head.length >= size ? head : head + PAD.slice(0, size - head.length);
}

const PAD = '.'.repeat(1024);

/** Parsed form of {@link encodeValue}; `null` for a value of another shape. */
export interface DecodedValue {
  run: number;
  index: number;
  sentAt: number;
}

/** Decode a value made by {@link encodeValue}; tolerant of a key prefix ending in a tab. */
export function decodeValue(text: string): DecodedValue | null {
  const start = text.indexOf('\t') + 1;
  const a = text.indexOf(':', start);
  const b = text.indexOf(':', a + 1);
  const c = text.indexOf(':', b + 1);
  if (a < 0 || b < 0 || c < 0) return null;
  const run = Number(text.slice(start, a));
  const index = Number(text.slice(a + 1, b));
  const sentAt = Number(text.slice(b + 1, c));
  if (!Number.isFinite(run) || !Number.isFinite(index) || !Number.isFinite(sentAt)) return null;
  return { run, index, sentAt };
}

/**
 * The value stored under join key number `i`: exactly `size` characters, deterministic, so a
 * joiner can verify every entry it loaded without any other channel.
 */
export function joinValue(i: number, size: number): string {
  const head = `v${i}:`;
  return head + PAD.slice(0, size - head.length);
}

/** Key number `i` of a join data set, without any system prefix. */
export function joinKey(i: number): string {
  return `j${i}`;
}

/** Peak resident set size of this process so far (VmHWM), in MiB; falls back to current RSS. */
export function peakRssMiB(): number {
  try {
    const status = readFileSync('/proc/self/status', 'utf8');
    const match = /^VmHWM:\s+(\d+)\s+kB/m.exec(status);
    if (match?.[1] !== undefined) return Number(match[1]) / 1024;
  } catch {
    // not Linux: fall through
  }
  return process.memoryUsage().rss / 1048576;
}

/** A promise with its resolve function exposed (a one-shot wake-up). */
export interface Waker {
  promise: Promise<void>;
  wake: () => void;
}

/** Make a {@link Waker}. */
export function waker(): Waker {
  let wake: () => void = () => undefined;
  const promise = new Promise<void>((resolve) => {
    wake = resolve;
  });
  return { promise, wake };
}

/** Format a number for a table cell: integers with thin grouping, small values with 3 digits. */
export function fmt(value: number): string {
  if (!Number.isFinite(value)) return '–';
  if (Math.abs(value) >= 1000) return Math.round(value).toLocaleString('en-US');
  if (Math.abs(value) >= 100) return String(Math.round(value));
  if (Math.abs(value) >= 10) return value.toFixed(1);
  return value.toFixed(2);
}
