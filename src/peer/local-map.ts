/**
 * The peer's local map: what reads see. Replacing it with a new snapshot yields the differences
 * as ordinary changes, so watchers of a resynced peer see puts and deletes, not a jump.
 *
 * @module
 */
import type { WatchEntry } from '../types.ts';

/** A value held locally. */
export interface LocalEntry {
  readonly value: unknown;
  readonly version: number;
}

/** The keys a peer holds, with their values and versions. */
export class LocalMap {
  #map = new Map<string, LocalEntry>();

  /** Number of keys held. */
  get size(): number {
    return this.#map.size;
  }

  get(key: string): LocalEntry | undefined {
    return this.#map.get(key);
  }

  has(key: string): boolean {
    return this.#map.has(key);
  }

  set(key: string, entry: LocalEntry): void {
    this.#map.set(key, entry);
  }

  delete(key: string): boolean {
    return this.#map.delete(key);
  }

  /** Every entry, in insertion order. */
  [Symbol.iterator](): IterableIterator<[string, LocalEntry]> {
    return this.#map[Symbol.iterator]();
  }

  /**
   * Replaces the whole map with `next` (taken over, not copied). With `notify`, `emit` receives
   * every difference: a put for each new or re-versioned key, a delete (at sequence `seq`) for
   * each key gone. The first snapshot is not a change: watches replay it instead.
   */
  replace(next: Map<string, LocalEntry>, seq: number, notify: boolean, emit: (e: WatchEntry) => void): void {
    const old = this.#map;
    this.#map = next;
    if (!notify) return;
    for (const [key, e] of next) {
      const before = old.get(key);
      if (before && before.version === e.version) continue;
      emit({ key, operation: 'put', value: e.value, previous: before?.value, version: e.version, isUpdate: true, fromResync: true });
    }
    for (const [key, before] of old) {
      if (!next.has(key)) {
        emit({ key, operation: 'delete', value: undefined, previous: before.value, version: seq, isUpdate: true, reason: 'deleted', fromResync: true });
      }
    }
  }
}
