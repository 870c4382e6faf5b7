/**
 * The forwarder's state: key → last update, one global sequence, and ttl deadlines. No I/O.
 * Keys are byte strings held as latin1 JavaScript strings, so any CHP key (not only UTF-8)
 * round-trips exactly and prefix tests are plain `startsWith`.
 *
 * @module
 */
import { ExpiryQueue } from './expiry-queue.ts';

/**
 * One stored key, as it goes into a snapshot. Immutable: an update replaces the object.
 *
 * uuid, properties and body are copied into one buffer (from Node's shared pool for small
 * values), so a stored key holds one small object instead of the three frames it arrived in:
 * far fewer objects for the garbage collector to carry, which is what long GC pauses (and
 * latency tails) are made of.
 */
export class StoredEntry {
  /** Sequence of the update that wrote it. */
  readonly seq: number;
  /** Absolute expiry time in ms (Date.now clock), or 0 for none. */
  readonly expiresAt: number;
  /** uuid, properties and body, back to back. */
  readonly data: Buffer;
  /** Length of the uuid at the start of `data`. */
  readonly uuidLength: number;
  /** Length of the properties after it; the body is the rest. */
  readonly propertiesLength: number;

  constructor(seq: number, uuid: Uint8Array, properties: Uint8Array, body: Uint8Array, expiresAt: number) {
    this.seq = seq;
    this.expiresAt = expiresAt;
    const data = Buffer.allocUnsafe(uuid.length + properties.length + body.length);
    data.set(uuid, 0);
    data.set(properties, uuid.length);
    data.set(body, uuid.length + properties.length);
    this.data = data;
    this.uuidLength = uuid.length;
    this.propertiesLength = properties.length;
  }

  /**
   * An entry over `data` as it is (uuid, properties and body back to back), without copying:
   * loading a map from disk, where `data` is already this entry's own copy.
   */
  static fromData(seq: number, expiresAt: number, data: Buffer, uuidLength: number, propertiesLength: number): StoredEntry {
    const e = Object.create(StoredEntry.prototype) as { -readonly [K in keyof StoredEntry]: StoredEntry[K] };
    // Assigned in the constructor's order, so both kinds share one object shape.
    e.seq = seq;
    e.expiresAt = expiresAt;
    e.data = data;
    e.uuidLength = uuidLength;
    e.propertiesLength = propertiesLength;
    return e as StoredEntry;
  }

  /** uuid of that update (0 or 16 bytes). */
  get uuid(): Buffer {
    return this.data.subarray(0, this.uuidLength);
  }

  /** Properties as written. */
  get properties(): Buffer {
    return this.data.subarray(this.uuidLength, this.uuidLength + this.propertiesLength);
  }

  /** Body (never empty: an empty body deletes). */
  get body(): Buffer {
    return this.data.subarray(this.uuidLength + this.propertiesLength);
  }
}

/** The sequenced map. */
export class SequencedMap {
  #map = new Map<string, StoredEntry>();
  #seq = 0;
  #expiry = new ExpiryQueue();
  /** Stored keys that have a ttl: the live part of the expiry queue. */
  #withTtl = 0;

  /** The last assigned sequence. */
  get sequence(): number {
    return this.#seq;
  }

  /** Keys held. */
  get size(): number {
    return this.#map.size;
  }

  /** The stored entry of `key`. */
  get(key: string): StoredEntry | undefined {
    return this.#map.get(key);
  }

  /** The key's version: the sequence of its last update, or 0 if absent. */
  version(key: string): number {
    return this.#map.get(key)?.seq ?? 0;
  }

  /**
   * Assigns the next sequence to an update and applies it. An empty body deletes the key.
   *
   * @param ttlMs - time to live in ms (0 = none), counted from `now`
   * @returns the assigned sequence
   */
  apply(key: string, uuid: Buffer, properties: Buffer, body: Buffer, ttlMs: number, now: number): number {
    return this.applyUntil(key, uuid, properties, body, ttlMs > 0 ? now + ttlMs : 0);
  }

  /**
   * As {@link apply}, with the expiry given as an absolute time (ms, Date.now clock; 0 = none):
   * a backup applies its active's updates with the deadline the active set, so a ttl has one
   * meaning on both servers (even one already past: it is then due at once).
   */
  applyUntil(key: string, uuid: Buffer, properties: Buffer, body: Buffer, expiresAt: number): number {
    const seq = ++this.#seq;
    if ((this.#map.get(key)?.expiresAt ?? 0) > 0) this.#withTtl--;
    if (body.length === 0) {
      this.#map.delete(key);
    } else {
      this.#map.set(key, new StoredEntry(seq, uuid, properties, body, expiresAt));
      if (expiresAt > 0) {
        this.#withTtl++;
        this.#expiry.push(expiresAt, key, seq);
        // Stale slots (keys rewritten or deleted since) are dropped once they outnumber the live
        // ones: the queue stays within about twice the keys with a ttl, at O(1) amortized cost.
        if (this.#expiry.size > 2 * this.#withTtl + 1024) this.#expiry.retain((k, s) => this.#map.get(k)?.seq === s);
      }
    }
    return seq;
  }

  /**
   * Puts back an entry as it was (recovery from disk, or undoing an update that did not reach
   * the disk): `entry` (or the key's absence, `undefined`), without taking a sequence.
   */
  restore(key: string, entry: StoredEntry | undefined): void {
    if ((this.#map.get(key)?.expiresAt ?? 0) > 0) this.#withTtl--;
    if (entry === undefined) {
      this.#map.delete(key);
      return;
    }
    this.#map.set(key, entry);
    if (entry.expiresAt > 0) {
      this.#withTtl++;
      this.#expiry.push(entry.expiresAt, key, entry.seq);
    }
  }

  /** Forgets every entry and sets the sequence: a backup about to load its active's full copy. */
  clear(sequence: number): void {
    this.#map = new Map();
    this.#expiry = new ExpiryQueue();
    this.#withTtl = 0;
    this.#seq = sequence;
  }

  /** Sets the last assigned sequence (recovery, or undoing updates that did not reach the disk). */
  resetSequence(seq: number): void {
    this.#seq = seq;
    // Undone updates' sequences are taken again: their expiry slots must not match new ones.
    this.#expiry.retain((k, s) => this.#map.get(k)?.seq === s);
  }

  /** Slots in the expiry queue, stale ones included (bounded by about twice the keys with a ttl). */
  get pendingExpiries(): number {
    return this.#expiry.size;
  }

  /** The earliest pending ttl deadline (ms), or `undefined`. */
  nextExpiry(): number | undefined {
    return this.#expiry.peek();
  }

  /** Keys whose ttl ran out by `now` and that were not rewritten since. The caller deletes them. */
  dueForExpiry(now: number): string[] {
    const out = new Set<string>();
    // A restored entry may have two slots for the same update: the key is due once.
    for (const { key, seq } of this.#expiry.popDue(now)) {
      if (this.#map.get(key)?.seq === seq) out.add(key);
    }
    return [...out];
  }

  /**
   * A point-in-time copy of the entries under `prefix` (references, not bytes: entries are
   * immutable, so later updates do not change the copy).
   */
  snapshot(prefix: string): Array<[string, StoredEntry]> {
    if (prefix.length === 0) return Array.from(this.#map);
    const out: Array<[string, StoredEntry]> = [];
    for (const pair of this.#map) if (pair[0].startsWith(prefix)) out.push(pair);
    return out;
  }

  /** Iterates all entries. */
  entries(): IterableIterator<[string, StoredEntry]> {
    return this.#map.entries();
  }
}
