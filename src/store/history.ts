/**
 * The retained history: the last sequenced updates, in sequence order, bounded by count and by
 * bytes; the oldest are compacted away first. It serves peers that catch up by difference
 * (a delta instead of a full snapshot), `watch({ since })` and `history(key)`. No I/O.
 *
 * Why bytes are copied rather than referenced: holding a million updates by reference keeps a
 * million objects alive, and the garbage collector carrying them cost more than half a
 * microsecond per update (bench/history-append.ts). Here each update's key, uuid, properties
 * and body are copied (a few hundred bytes at most, typically) into large off-heap chunks, and
 * the rest (sequence, offsets, lengths, expiry) goes into typed arrays: the history holds no
 * object per update, and reading it back makes views into the chunks on demand. A chunk is
 * released once every update in it is compacted away; nothing in a chunk is ever overwritten,
 * so views handed out stay valid.
 *
 * @module
 */
import type { UpdateRecord } from './update-record.ts';

/**
 * Bytes counted per update on top of its key, uuid, properties and body: its slots in the
 * typed arrays (about 40 bytes) and a share of unused chunk space.
 */
export const RECORD_OVERHEAD_BYTES = 48;

/** Size of a chunk of update bytes (an update larger than this gets a chunk of its own size). */
const CHUNK_BYTES = 1024 * 1024;

/** Bounds of an {@link UpdateHistory}. */
export interface HistoryBounds {
  /** Most updates held. */
  readonly maxEntries: number;
  /** Most bytes held (key, uuid, properties and body of each update, plus {@link RECORD_OVERHEAD_BYTES}). */
  readonly maxBytes: number;
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

/** The per-update columns, as a ring indexed by absolute position modulo the capacity. */
class Columns {
  readonly cap: number;
  readonly seq: Float64Array;
  readonly expiresAt: Float64Array;
  /** Absolute chunk number. */
  readonly chunk: Float64Array;
  readonly offset: Uint32Array;
  readonly bodyLength: Uint32Array;
  readonly propsLength: Uint32Array;
  readonly keyLength: Uint8Array;
  readonly uuidLength: Uint8Array;
  /** Owners are rare (ephemeral writes): kept sparse, by absolute position. */
  readonly owner = new Map<number, string>();

  constructor(cap: number) {
    this.cap = cap;
    this.seq = new Float64Array(cap);
    this.expiresAt = new Float64Array(cap);
    this.chunk = new Float64Array(cap);
    this.offset = new Uint32Array(cap);
    this.bodyLength = new Uint32Array(cap);
    this.propsLength = new Uint32Array(cap);
    this.keyLength = new Uint8Array(cap);
    this.uuidLength = new Uint8Array(cap);
  }
}

/**
 * A bounded, in-memory log of updates in sequence order.
 *
 * **`oldest`** is the sequence S such that every update with a sequence above S (up to the
 * newest appended) is held: the sequence of the last update compacted away, or the sequence the
 * history started after ({@link reset}, or an append that skipped sequences); 0 for a history
 * that has never dropped anything. So a peer that holds the state at sequence S can catch up
 * from here exactly when `oldest <= S <= newest`.
 */
export class UpdateHistory {
  readonly #bounds: HistoryBounds;
  #cols = new Columns(1024);
  /** Absolute positions: `#first` is the oldest update held, `#end` one past the newest. */
  #first = 0;
  #end = 0;
  /** Chunks by absolute number, from `#chunkBase` on; the last one is being filled. */
  #chunks: Buffer[] = [];
  #chunkBase = 0;
  #fill = 0;
  #bytes = 0;
  #oldest = 0;

  constructor(bounds: HistoryBounds) {
    this.#bounds = bounds;
  }

  /** See the class description: every update after it is held. */
  get oldest(): number {
    return this.#oldest;
  }

  /** The sequence of the newest update held, or {@link oldest} when none is. */
  get newest(): number {
    return this.#end > this.#first ? this.#cols.seq[(this.#end - 1) % this.#cols.cap]! : this.#oldest;
  }

  /** Updates held. */
  get size(): number {
    return this.#end - this.#first;
  }

  /** Bytes held, as counted against `maxBytes`. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Appends one update given as a record (copied); see {@link appendParts}. */
  append(record: UpdateRecord): void {
    const key = Buffer.from(record.key, 'latin1');
    this.appendParts(record.seq, key, record.uuid, record.properties, record.body, record.expiresAt, record.owner);
  }

  /**
   * Appends one update, copying its bytes, then compacts the oldest past either bound. Its
   * sequence must be above {@link newest} (one out of order is a bug in the caller and throws).
   * One that skips sequences (the map moved on without this history: a store restored from
   * elsewhere) starts the history again after the skipped ones, so {@link oldest} never vouches
   * for an update that is not held.
   *
   * @param key - the key's bytes (at most 255)
   * @param body - empty for a delete
   * @param expiresAt - absolute expiry in ms, 0 for none
   */
  appendParts(seq: number, key: Uint8Array, uuid: Uint8Array, properties: Uint8Array, body: Uint8Array, expiresAt: number, owner: string | undefined): void {
    const newest = this.newest;
    if (seq <= newest) throw new RangeError(`history: sequence ${seq} is not above ${newest}`);
    if (seq !== newest + 1) this.reset(seq - 1);
    const length = key.length + uuid.length + properties.length + body.length;
    const cost = RECORD_OVERHEAD_BYTES + length;
    const { maxEntries, maxBytes } = this.#bounds;
    if (maxEntries === 0 || cost > maxBytes) {
      // Nothing can be held: the history now starts after this update.
      this.reset(seq);
      return;
    }
    while (this.size >= maxEntries || (this.size > 0 && this.#bytes + cost > maxBytes)) this.#dropOldest();
    if (this.size === this.#cols.cap) this.#grow();
    let chunk = this.#chunks[this.#chunks.length - 1];
    if (!chunk || this.#fill + length > chunk.length) {
      chunk = Buffer.allocUnsafeSlow(Math.max(CHUNK_BYTES, length));
      this.#chunks.push(chunk);
      this.#fill = 0;
    }
    const c = this.#cols;
    const i = this.#end % c.cap;
    c.seq[i] = seq;
    c.expiresAt[i] = expiresAt;
    c.chunk[i] = this.#chunkBase + this.#chunks.length - 1;
    c.offset[i] = this.#fill;
    c.keyLength[i] = key.length;
    c.uuidLength[i] = uuid.length;
    c.propsLength[i] = properties.length;
    c.bodyLength[i] = body.length;
    if (owner !== undefined) c.owner.set(this.#end, owner);
    let o = this.#fill;
    chunk.set(key, o);
    o += key.length;
    chunk.set(uuid, o);
    o += uuid.length;
    chunk.set(properties, o);
    o += properties.length;
    chunk.set(body, o);
    this.#fill = o + body.length;
    this.#end++;
    this.#bytes += cost;
  }

  /**
   * Drops everything and starts again after sequence `oldest` (a history refilled from disk, or
   * one that cannot vouch for what came before).
   */
  reset(oldest: number): void {
    this.#cols.owner.clear();
    this.#first = this.#end;
    this.#chunkBase += this.#chunks.length;
    this.#chunks = [];
    this.#fill = 0;
    this.#bytes = 0;
    this.#oldest = oldest;
  }

  /**
   * The updates after sequence `seq` whose key starts with `prefix` (a latin1 string of bytes),
   * oldest first, as records whose buffers are views (never written to again). Lazy: updates
   * appended during the iteration are included. An iteration that falls behind compaction
   * throws {@link HistoryCompactedError}; so does one that starts with `seq` below
   * {@link oldest}.
   */
  *since(seq: number, prefix = ''): Generator<UpdateRecord> {
    if (seq < this.#oldest) throw new HistoryCompactedError(this.#oldest);
    const want = Buffer.from(prefix, 'latin1');
    let pos = this.#firstAfter(seq);
    for (;;) {
      if (pos < this.#first) throw new HistoryCompactedError(this.#oldest);
      if (pos >= this.#end) return;
      const at = pos++;
      if (want.length === 0 || this.#keyStartsWith(at, want)) yield this.#record(at);
    }
  }

  /**
   * The retained updates of `key` (latin1), newest first, at most `limit`. Scans from the newest
   * update back (O(updates held) at worst): meant for inspection, not for a hot path.
   */
  forKey(key: string, limit: number): UpdateRecord[] {
    const want = Buffer.from(key, 'latin1');
    const c = this.#cols;
    const out: UpdateRecord[] = [];
    for (let pos = this.#end - 1; pos >= this.#first && out.length < limit; pos--) {
      if (c.keyLength[pos % c.cap] === want.length && this.#keyStartsWith(pos, want)) out.push(this.#record(pos));
    }
    return out;
  }

  /** Whether the key of the update at absolute position `pos` starts with `want`. */
  #keyStartsWith(pos: number, want: Buffer): boolean {
    const c = this.#cols;
    const i = pos % c.cap;
    if (c.keyLength[i]! < want.length) return false;
    const chunk = this.#chunks[c.chunk[i]! - this.#chunkBase]!;
    const o = c.offset[i]!;
    return chunk.compare(want, 0, want.length, o, o + want.length) === 0;
  }

  /** The update at absolute position `pos`, as a record of views into its chunk. */
  #record(pos: number): UpdateRecord {
    const c = this.#cols;
    const i = pos % c.cap;
    const chunk = this.#chunks[c.chunk[i]! - this.#chunkBase]!;
    let o = c.offset[i]!;
    const kl = c.keyLength[i]!;
    const ul = c.uuidLength[i]!;
    const pl = c.propsLength[i]!;
    const bl = c.bodyLength[i]!;
    const key = chunk.toString('latin1', o, o + kl);
    o += kl;
    const uuid = chunk.subarray(o, o + ul);
    o += ul;
    const properties = chunk.subarray(o, o + pl);
    o += pl;
    const body = chunk.subarray(o, o + bl);
    const owner = c.owner.get(pos);
    const record = { seq: c.seq[i]!, key, uuid, properties, body, expiresAt: c.expiresAt[i]! };
    return owner === undefined ? record : { ...record, owner };
  }

  /** Absolute position of the first update with a sequence above `seq` (`#end` if none). */
  #firstAfter(seq: number): number {
    const c = this.#cols;
    let lo = this.#first;
    let hi = this.#end;
    while (lo < hi) {
      const mid = lo + Math.floor((hi - lo) / 2);
      if (c.seq[mid % c.cap]! <= seq) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Doubles the column capacity, keeping absolute positions (copied slot by slot). */
  #grow(): void {
    const old = this.#cols;
    const next = new Columns(old.cap * 2);
    for (let pos = this.#first; pos < this.#end; pos++) {
      const a = pos % old.cap;
      const b = pos % next.cap;
      next.seq[b] = old.seq[a]!;
      next.expiresAt[b] = old.expiresAt[a]!;
      next.chunk[b] = old.chunk[a]!;
      next.offset[b] = old.offset[a]!;
      next.bodyLength[b] = old.bodyLength[a]!;
      next.propsLength[b] = old.propsLength[a]!;
      next.keyLength[b] = old.keyLength[a]!;
      next.uuidLength[b] = old.uuidLength[a]!;
    }
    for (const [pos, owner] of old.owner) next.owner.set(pos, owner);
    this.#cols = next;
  }

  #dropOldest(): void {
    const c = this.#cols;
    const pos = this.#first;
    const i = pos % c.cap;
    this.#bytes -= RECORD_OVERHEAD_BYTES + c.keyLength[i]! + c.uuidLength[i]! + c.propsLength[i]! + c.bodyLength[i]!;
    this.#oldest = c.seq[i]!;
    c.owner.delete(pos);
    this.#first++;
    // Chunks before the one the oldest held update is in are no longer needed.
    const keep = this.#first < this.#end ? c.chunk[this.#first % c.cap]! : this.#chunkBase + this.#chunks.length - 1;
    if (keep > this.#chunkBase) {
      this.#chunks = this.#chunks.slice(keep - this.#chunkBase);
      this.#chunkBase = keep;
    }
  }
}
