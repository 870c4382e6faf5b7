/**
 * De-duplication of retried writes: the outcome of each write is remembered by its uuid, so a
 * retry (same uuid) gets the first attempt's answer instead of being applied again, and a
 * conditional write does not conflict with its own first attempt.
 *
 * Outcomes are kept for a time (`ttl`), since that is what a retry needs: a peer retries for as
 * long as its write timeout, however many other writes go by meanwhile. A count would run out
 * in about a second at full speed. An entry cap guards memory; when it forces out an outcome
 * younger than `ttl`, that is counted ({@link WriteDedup.evictions}), because a retry of that
 * write would then be applied twice.
 *
 * @module
 */
import { LRUCache } from 'lru-cache';

/** Outcome of a write, remembered per uuid so a retry gets the same answer. */
export type WriteOutcome = { status: 'ok'; seq: number } | { status: 'conflict'; current: number } | { status: 'rejected'; detail: string };

/** Options of {@link WriteDedup}. */
export interface DedupOptions {
  /** How long an outcome is remembered, ms. */
  readonly ttl: number;
  /** Most outcomes held at once. */
  readonly max: number;
}

/** Recent write outcomes by uuid (a 16-byte uuid as a latin1 string). */
export class WriteDedup {
  /** A success is held as its sequence number alone: no object per write. */
  readonly #cache: LRUCache<string, WriteOutcome | number>;
  #evictions = 0;

  constructor(options: DedupOptions) {
    this.#cache = new LRUCache<string, WriteOutcome | number>({
      max: options.max,
      ttl: options.ttl,
      // Called with the entry still in place, so its age can be read: only an outcome that a
      // retry could still need is worth counting.
      dispose: (_value, uuid, reason) => {
        if (reason === 'evict' && this.#cache.getRemainingTTL(uuid) > 0) this.#evictions++;
      },
    });
  }

  /** The remembered outcome of the write with this uuid, if any. */
  get(uuid: string): WriteOutcome | undefined {
    const earlier = this.#cache.get(uuid);
    return typeof earlier === 'number' ? { status: 'ok', seq: earlier } : earlier;
  }

  /** Remembers a write's outcome (for `ttl` ms if given: an outcome recovered after a restart). */
  set(uuid: string, outcome: WriteOutcome, ttl?: number): void {
    const value = outcome.status === 'ok' ? outcome.seq : outcome;
    if (ttl === undefined) this.#cache.set(uuid, value);
    else if (ttl > 0) this.#cache.set(uuid, value, { ttl });
  }

  /** Forgets a write's outcome. */
  delete(uuid: string): void {
    this.#cache.delete(uuid);
  }

  /** Every outcome still held, with the ms left of its time: [uuid, outcome, remaining ms]. */
  *entries(): Generator<[string, WriteOutcome, number]> {
    for (const [uuid, value] of this.#cache.entries()) {
      const left = Math.floor(this.#cache.getRemainingTTL(uuid));
      if (left <= 0) continue;
      yield [uuid, typeof value === 'number' ? { status: 'ok', seq: value } : value, left];
    }
  }

  /** Outcomes forced out by the cap while still younger than the ttl. */
  get evictions(): number {
    return this.#evictions;
  }

  /** Outcomes held (some may have outlived the ttl and not yet been dropped). */
  get size(): number {
    return this.#cache.size;
  }
}
