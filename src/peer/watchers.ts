/**
 * The watch registry of a peer: `watch()` replays the current entries, then every change the
 * peer emits goes to each watcher whose prefix matches.
 *
 * @module
 */
import { intOption } from '../options.ts';
import type { WatchEntry, WatchOptions } from '../types.ts';
import type { LocalEntry } from './local-map.ts';
import { WatchQueue } from './watch-queue.ts';

/** What a watch needs from the peer. */
export interface WatchSource {
  /** Whether the peer is closing (a new watch then ends at once). */
  readonly closing: boolean;
  /** Whether the first snapshot is still to come (the replay then waits for `ready`). */
  readonly syncing: boolean;
  /** Resolves when the first snapshot is applied; rejects when the peer closes first. */
  readonly ready: Promise<void>;
  /**
   * The current entries, for the replay. Iterated lazily while changes go on: the iteration must
   * follow the map object of the moment it starts (a resync swaps in a new one).
   */
  entries(): Iterable<[string, LocalEntry]>;
  /** The last sequence applied: every entry of `entries()` is at or below it when the watch starts. */
  readonly sequence: number;
}

/**
 * The entries under `prefix` as they were when the replay started (the peer's map at sequence
 * `upTo`), read lazily from the live map: an entry changed since (a version above `upTo`) is
 * skipped, as is one deleted since (the map no longer has it); either way its change is queued
 * behind the replay. A resync swaps in a new map object; this iteration stays on the old one,
 * which no longer changes, and the resync's differences are queued as changes. So replaying the
 * replay and the queued changes on an empty map always gives the current map.
 */
function* replayEntries<V>(entries: Iterable<[string, LocalEntry]>, prefix: string, upTo: number): Generator<WatchEntry<V>> {
  for (const [key, e] of entries) {
    if (e.version <= upTo && key.startsWith(prefix)) {
      yield { key, operation: 'put', value: e.value as V, previous: undefined, version: e.version, isUpdate: false, fromResync: false };
    }
  }
}

interface Watcher {
  push(e: WatchEntry): void;
  end(): void;
}

/** Every live watch of one peer. */
export class Watchers {
  readonly #watchers = new Set<Watcher>();
  readonly #listeners: () => boolean;
  readonly #onChange: (e: WatchEntry) => void;

  /**
   * @param listeners - whether anyone else (the peer's `update` event) wants changes
   * @param onChange - called with every change after the watchers got it
   */
  constructor(listeners: () => boolean, onChange: (e: WatchEntry) => void) {
    this.#listeners = listeners;
    this.#onChange = onChange;
  }

  /** Whether anyone listens for changes (if not, no change object need be built). */
  get observed(): boolean {
    return this.#watchers.size > 0 || this.#listeners();
  }

  /** Hands a change to every watcher (each filters by its prefix) and to the listeners. */
  emit(e: WatchEntry): void {
    for (const w of this.#watchers) w.push(e);
    if (this.#listeners()) this.#onChange(e);
  }

  /** Ends every watch (the peer closes). */
  endAll(): void {
    for (const w of [...this.#watchers]) w.end();
  }

  /** See {@link Peer.watch}. */
  watch<V>(source: WatchSource, prefix: string, options: WatchOptions): AsyncIterableIterator<WatchEntry<V>> {
    const max = intOption('maxPending', options.maxPending, 100_000, 1);
    const onAbort = (): void => queue.end();
    const watcher: Watcher = {
      push: (e) => {
        if (e.key.startsWith(prefix)) queue.push(e as WatchEntry<V>);
      },
      end: () => queue.end(),
    };
    const queue = new WatchQueue<WatchEntry<V>>(max, () => {
      this.#watchers.delete(watcher);
      options.signal?.removeEventListener('abort', onAbort);
    });
    if (source.closing || options.signal?.aborted) {
      queue.end();
      return queue;
    }
    options.signal?.addEventListener('abort', onAbort, { once: true });
    const start = (): void => {
      if (queue.done) return;
      // The replay is pulled as the consumer reads (never pushed into the bounded queue, which a
      // store larger than maxPending would overflow); changes from now on queue behind it.
      if (!options.updatesOnly) {
        const entries = source.entries()[Symbol.iterator]();
        queue.replayFirst(replayEntries<V>({ [Symbol.iterator]: () => entries }, prefix, source.sequence));
      }
      this.#watchers.add(watcher);
    };
    if (source.syncing) source.ready.then(start, () => queue.end());
    else start();
    return queue;
  }
}
