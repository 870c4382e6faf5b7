/**
 * The retained history: the last sequenced updates, in sequence order, bounded by count and by
 * bytes; the oldest are compacted away first. It serves peers that catch up by difference
 * (a delta instead of a full snapshot), `watch({ since })` and `history(key)`. No I/O.
 *
 * Records are held by reference, never copied: the forwarder hands in records whose buffers
 * are immutable (its stored entries), so appending costs one array slot.
 *
 * @module
 */
import type { UpdateRecord } from './update-record.ts';

/** Bytes counted per record on top of its key and buffers (the record object, the array slot). */
export const RECORD_OVERHEAD_BYTES = 96;

/** Bounds of an {@link UpdateHistory}. */
export interface HistoryBounds {
  /** Most records held. */
  readonly maxEntries: number;
  /** Most bytes held (key, uuid, properties and body of each record, plus {@link RECORD_OVERHEAD_BYTES}). */
  readonly maxBytes: number;
}

/**
 * A record that knows the total length of its uuid, properties and body (the forwarder's
 * records do, without making a view of each).
 */
export interface SizedRecord extends UpdateRecord {
  readonly dataLength: number;
}

/** What one record counts toward `maxBytes`. */
export function recordBytes(r: UpdateRecord): number {
  const data = (r as Partial<SizedRecord>).dataLength ?? r.uuid.length + r.properties.length + r.body.length;
  return RECORD_OVERHEAD_BYTES + r.key.length + data;
}

/** Thrown by an iteration of {@link UpdateHistory.since} that fell behind compaction. */
export class HistoryCompactedError extends Error {
  /** {@link UpdateHistory.oldest} when it was thrown. */
  readonly oldest: number;

  constructor(oldest: number) {
    super(`history compacted past the iteration (oldest held: ${oldest})`);
    this.oldest = oldest;
  }
}

/**
 * A bounded, in-memory log of {@link UpdateRecord}s in sequence order.
 *
 * **`oldest`** is the sequence S such that every update with a sequence above S (up to the
 * newest appended) is held: the sequence of the last record compacted away, or the sequence the
 * history started after ({@link reset}); 0 for a history that has never dropped anything.
 * So a peer that holds the state at sequence S can catch up from here exactly when
 * `S >= oldest` (and S is not above the newest sequence).
 */
export class UpdateHistory {
  readonly #bounds: HistoryBounds;
  /** Records from index `#head` on; the slots before it were compacted and are cleared. */
  #records: UpdateRecord[] = [];
  #head = 0;
  /** Records compacted away since the start: the absolute position of `#records[#head]`. */
  #dropped = 0;
  #bytes = 0;
  #oldest = 0;

  constructor(bounds: HistoryBounds) {
    this.#bounds = bounds;
  }

  /** See the class description: every update after it is held. */
  get oldest(): number {
    return this.#oldest;
  }

  /** The sequence of the newest record, or {@link oldest} when none is held. */
  get newest(): number {
    const n = this.#records.length;
    return n > this.#head ? this.#records[n - 1]!.seq : this.#oldest;
  }

  /** Records held. */
  get size(): number {
    return this.#records.length - this.#head;
  }

  /** Bytes held, as counted against `maxBytes`. */
  get bytes(): number {
    return this.#bytes;
  }

  /**
   * Appends one record, then compacts the oldest past either bound. Its sequence must be above
   * {@link newest} (a record out of order is a bug in the caller and throws). One that skips
   * sequences (the map moved on without this history: a store restored from elsewhere) starts
   * the history again after the skipped ones, so {@link oldest} never vouches for an update
   * that is not held.
   */
  append(record: UpdateRecord): void {
    const newest = this.newest;
    if (record.seq <= newest) throw new RangeError(`history: sequence ${record.seq} is not above ${newest}`);
    if (record.seq !== newest + 1) this.reset(record.seq - 1);
    this.#records.push(record);
    this.#bytes += recordBytes(record);
    const { maxEntries, maxBytes } = this.#bounds;
    while (this.size > maxEntries || (this.#bytes > maxBytes && this.size > 0)) this.#dropOldest();
    // Compacted slots are cut off in one go once they are half the array: O(1) amortized.
    if (this.#head > 1024 && this.#head * 2 > this.#records.length) {
      this.#records = this.#records.slice(this.#head);
      this.#head = 0;
    }
  }

  /**
   * Drops everything and starts again after sequence `oldest` (a history refilled from disk, or
   * one that cannot vouch for what came before).
   */
  reset(oldest: number): void {
    this.#dropped += this.size;
    this.#records = [];
    this.#head = 0;
    this.#bytes = 0;
    this.#oldest = oldest;
  }

  /**
   * The records after sequence `seq` whose key starts with `prefix` (a latin1 string of bytes),
   * oldest first. Lazy: records appended during the iteration are included. An iteration that
   * falls behind compaction throws {@link HistoryCompactedError}; so does one that starts with
   * `seq` below {@link oldest}.
   */
  *since(seq: number, prefix = ''): Generator<UpdateRecord> {
    if (seq < this.#oldest) throw new HistoryCompactedError(this.#oldest);
    let pos = this.#dropped + this.#firstAfter(seq); // absolute position
    for (;;) {
      if (pos < this.#dropped) throw new HistoryCompactedError(this.#oldest);
      const r = this.#records[this.#head + pos - this.#dropped];
      if (r === undefined) return;
      pos++;
      if (prefix.length === 0 || r.key.startsWith(prefix)) yield r;
    }
  }

  /**
   * The retained updates of `key` (latin1), newest first, at most `limit`. Scans from the newest
   * record back (O(records held) at worst): meant for inspection, not for a hot path.
   */
  forKey(key: string, limit: number): UpdateRecord[] {
    const out: UpdateRecord[] = [];
    for (let i = this.#records.length - 1; i >= this.#head && out.length < limit; i--) {
      const r = this.#records[i]!;
      if (r.key === key) out.push(r);
    }
    return out;
  }

  /** Index relative to `#head` of the first record with a sequence above `seq`. */
  #firstAfter(seq: number): number {
    let lo = this.#head;
    let hi = this.#records.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.#records[mid]!.seq <= seq) lo = mid + 1;
      else hi = mid;
    }
    return lo - this.#head;
  }

  #dropOldest(): void {
    const r = this.#records[this.#head]!;
    (this.#records as Array<UpdateRecord | undefined>)[this.#head] = undefined;
    this.#head++;
    this.#dropped++;
    this.#bytes -= recordBytes(r);
    this.#oldest = r.seq;
  }
}
