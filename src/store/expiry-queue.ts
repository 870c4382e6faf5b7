/**
 * A min-heap of (deadline, key, sequence) used to expire ttl values in deadline order without
 * scanning the whole map. Entries are not removed when a key is overwritten: its old heap entry
 * is recognised as stale (the sequence no longer matches) when it comes due, and the owner
 * drops stale entries in bulk with {@link ExpiryQueue.retain} when they pile up (a hot key
 * rewritten with a ttl would otherwise grow the heap for as long as its ttl).
 *
 * @module
 */

interface Slot {
  readonly at: number;
  readonly key: string;
  readonly seq: number;
}

/** Deadline-ordered queue of keys. */
export class ExpiryQueue {
  #heap: Slot[] = [];

  /** Number of queued deadlines (including stale ones). */
  get size(): number {
    return this.#heap.length;
  }

  /** Queues `key` (at sequence `seq`) to expire at `at` (ms). */
  push(at: number, key: string, seq: number): void {
    const h = this.#heap;
    h.push({ at, key, seq });
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (h[p]!.at <= h[i]!.at) break;
      [h[p], h[i]] = [h[i]!, h[p]!];
      i = p;
    }
  }

  /** The earliest deadline, or `undefined`. */
  peek(): number | undefined {
    return this.#heap[0]?.at;
  }

  /** Removes and returns every slot due at or before `now`. */
  popDue(now: number): Array<{ key: string; seq: number }> {
    const out: Array<{ key: string; seq: number }> = [];
    const h = this.#heap;
    while (h.length > 0 && h[0]!.at <= now) {
      const top = h[0]!;
      const last = h.pop()!;
      if (h.length > 0) {
        h[0] = last;
        siftDown(h, 0);
      }
      out.push({ key: top.key, seq: top.seq });
    }
    return out;
  }

  /** Keeps only the slots `keep` accepts and rebuilds the heap, in O(n). */
  retain(keep: (key: string, seq: number) => boolean): void {
    const h = this.#heap.filter((slot) => keep(slot.key, slot.seq));
    for (let i = (h.length >> 1) - 1; i >= 0; i--) siftDown(h, i);
    this.#heap = h;
  }

  /** Drops everything. */
  clear(): void {
    this.#heap = [];
  }
}

/** Moves the slot at `i` down until neither child is earlier. */
function siftDown(h: Slot[], i: number): void {
  for (;;) {
    const l = 2 * i + 1;
    const r = l + 1;
    let m = i;
    if (l < h.length && h[l]!.at < h[m]!.at) m = l;
    if (r < h.length && h[r]!.at < h[m]!.at) m = r;
    if (m === i) return;
    [h[m], h[i]] = [h[i]!, h[m]!];
    i = m;
  }
}
