/**
 * The part of the clonekv API the bench uses, declared here and loaded with a dynamic import so
 * the rest of the comparison runs (and type-checks) even while `src/index.ts` is not there yet.
 *
 * @module
 */

import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** The fields of a watch entry the bench reads. */
export interface BenchWatchEntry {
  readonly key: string;
  readonly value: unknown;
  readonly version: number;
  readonly isUpdate: boolean;
}

/** The peer surface used by the bench. */
export interface BenchPeer {
  ready(): Promise<void>;
  set(key: string, value: unknown, options?: { ttl?: number }): Promise<number>;
  get(key: string): unknown;
  readonly size: number;
  on(event: 'update', listener: (entry: BenchWatchEntry) => void): unknown;
  close(): Promise<void>;
}

/** The forwarder surface used by the bench. */
export interface BenchForwarder {
  readonly endpoint: string;
  load(entries: Iterable<[string, unknown]>): Promise<unknown>;
  close(): Promise<void>;
}

/** What `src/index.ts` must export for the bench. */
export interface ClonekvModule {
  Forwarder: { start(options: { port?: number; bind?: string }): Promise<BenchForwarder> };
  Peer: new (options: { server: string; subtree?: string }) => BenchPeer;
}

const INDEX = new URL('../../src/index.ts', import.meta.url);

/** `null` if the clonekv core can be imported, else why not. */
export async function clonekvMissing(): Promise<string | null> {
  if (!existsSync(fileURLToPath(INDEX))) return 'src/index.ts does not exist yet (core not built)';
  try {
    const mod = (await import(INDEX.href)) as Partial<ClonekvModule>;
    if (typeof mod.Forwarder?.start !== 'function' || typeof mod.Peer !== 'function') {
      return 'src/index.ts does not export Forwarder.start and Peer';
    }
    return null;
  } catch (err) {
    return `src/index.ts failed to import: ${err instanceof Error ? err.message : String(err)}`;
  }
}

/** Import the clonekv core (call {@link clonekvMissing} first). */
export async function loadClonekv(): Promise<ClonekvModule> {
  return (await import(INDEX.href)) as ClonekvModule;
}
