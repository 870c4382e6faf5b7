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
  /** The current entries, for the replay. */
  entries(): Iterable<[string, LocalEntry]>;
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
      if (!options.updatesOnly) {
        for (const [key, e] of source.entries()) {
          if (key.startsWith(prefix)) {
            queue.push({ key, operation: 'put', value: e.value as V, previous: undefined, version: e.version, isUpdate: false, fromResync: false });
          }
        }
      }
      this.#watchers.add(watcher);
    };
    if (source.syncing) source.ready.then(start, () => queue.end());
    else start();
    return queue;
  }
}
