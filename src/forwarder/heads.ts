/**
 * Subscription heads: for each prefix subscribed on the publisher, the sequence of the last
 * update under it. They feed the gap-detection properties (see protocol/gaps.ts): `prev` on each
 * KVPUB and `heads` in HUGZ. No I/O.
 *
 * A head must never be lower than the true sequence of the last update under its prefix, or a
 * peer that missed that update would see `prev`/`heads` agree with what it holds and never
 * notice. So when the last subscriber of a prefix goes (a dropped connection, say), its head is
 * kept, and kept current by later writes, for as long as the prefix stays among the most recent
 * {@link HeadsOptions.retain} unsubscribed ones; a prefix subscribed with no record starts at
 * the current global sequence, which is at least as high as any update under it (at worst a
 * reconnecting peer resyncs once for nothing; it never misses anything silently).
 *
 * @module
 */
import { LRUCache } from 'lru-cache';
import { addPrevious, encodeHeads, headId } from '../protocol/gaps.ts';

/** Options of {@link SubscriptionHeads}. */
export interface HeadsOptions {
  /** Unsubscribed prefixes whose heads are kept (most recently used first). */
  readonly retain: number;
}

/** Heads of subscribed (and recently unsubscribed) prefixes. Prefixes are latin1 strings. */
export class SubscriptionHeads {
  /** Subscribed prefix → last sequence under it. */
  readonly #subscribed = new Map<string, number>();
  /** Subscribed prefix → its id in `heads` (computed once: a long prefix's id is a hash). */
  readonly #ids = new Map<string, string>();
  /** Recently unsubscribed prefix → last sequence under it, still kept current. */
  readonly #retained: LRUCache<string, number>;
  /** Tracked (subscribed or retained) prefixes per length. */
  readonly #perLength = new Map<number, number>();
  /** Distinct lengths of tracked prefixes, ascending: the `prev` lookup tries each. */
  #lengths: number[] = [];

  constructor(options: HeadsOptions) {
    this.#retained = new LRUCache<string, number>({
      max: Math.max(1, options.retain),
      // Only an eviction forgets a prefix: a delete moves it back to the subscribed map.
      dispose: (_head, prefix, reason) => {
        if (reason === 'evict') this.#untrack(prefix.length);
      },
    });
  }

  /** Number of subscribed prefixes. */
  get size(): number {
    return this.#subscribed.size;
  }

  /** Subscribed prefixes and their heads. */
  entries(): IterableIterator<[string, number]> {
    return this.#subscribed.entries();
  }

  /** The `heads` properties of one heartbeat: one list per HUGZ, each within the byte budget. */
  headLists(budget?: number): string[] {
    const ids = this.#ids;
    function* pairs(heads: Map<string, number>): Generator<[string, number]> {
      for (const [prefix, seq] of heads) yield [ids.get(prefix)!, seq];
    }
    return encodeHeads(pairs(this.#subscribed), budget);
  }

  /**
   * A prefix's first subscriber arrived: its head is the kept one, or `current` (the global
   * sequence) when none is kept.
   */
  subscribe(prefix: string, current: number): void {
    if (this.#subscribed.has(prefix)) return;
    this.#ids.set(prefix, headId(prefix));
    const kept = this.#retained.peek(prefix);
    if (kept === undefined) {
      this.#track(prefix.length);
      this.#subscribed.set(prefix, current);
    } else {
      this.#retained.delete(prefix);
      this.#subscribed.set(prefix, kept);
    }
  }

  /** A prefix's last subscriber left: its head is kept (and kept current) for a while. */
  unsubscribe(prefix: string): void {
    const head = this.#subscribed.get(prefix);
    if (head === undefined) return;
    this.#subscribed.delete(prefix);
    this.#ids.delete(prefix);
    this.#retained.set(prefix, head);
  }

  /**
   * Moves the heads of `key`'s prefixes to `seq` and returns the `prev` list for the KVPUB
   * (subscribed prefixes only): `''` when no subscribed prefix matches, so nobody would get it.
   */
  advance(key: string, seq: number): string {
    let prev = '';
    for (const len of this.#lengths) {
      if (len > key.length) break;
      const prefix = len === key.length ? key : key.slice(0, len);
      const last = this.#subscribed.get(prefix);
      if (last !== undefined) {
        prev = addPrevious(prev, len, last);
        this.#subscribed.set(prefix, seq);
      } else if (this.#retained.has(prefix)) {
        this.#retained.set(prefix, seq);
      }
    }
    return prev;
  }

  #track(length: number): void {
    const n = this.#perLength.get(length) ?? 0;
    this.#perLength.set(length, n + 1);
    if (n === 0) this.#lengths = [...this.#perLength.keys()].sort((a, b) => a - b);
  }

  #untrack(length: number): void {
    const n = this.#perLength.get(length) ?? 0;
    if (n <= 1) {
      this.#perLength.delete(length);
      this.#lengths = [...this.#perLength.keys()].sort((a, b) => a - b);
    } else {
      this.#perLength.set(length, n - 1);
    }
  }
}
