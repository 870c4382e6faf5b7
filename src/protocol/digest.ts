/**
 * Snapshot digest: an order-independent checksum over (key, sequence) pairs, so a peer can tell
 * a complete snapshot from one that lost or doubled entries, whatever order they came in.
 * Each pair is hashed with FNV-1a (32-bit) and the hashes are summed modulo 2^32.
 *
 * @module
 */

/**
 * FNV-1a over the key bytes, then the sequence's low and high 32 bits. The key is bytes, or a
 * latin1 string of them (the forwarder's form).
 */
function pairHash(key: Uint8Array | string, sequence: number): number {
  let h = 0x811c9dc5;
  if (typeof key === 'string') {
    for (let i = 0; i < key.length; i++) {
      h ^= key.charCodeAt(i);
      h = Math.imul(h, 0x01000193);
    }
  } else {
    for (let i = 0; i < key.length; i++) {
      h ^= key[i]!;
      h = Math.imul(h, 0x01000193);
    }
  }
  return finishPair(h, sequence);
}

/** Mixes the sequence into a key's FNV-1a state. */
function finishPair(keyHash: number, sequence: number): number {
  let h = keyHash;
  h ^= sequence >>> 0;
  h = Math.imul(h, 0x01000193);
  h ^= Math.floor(sequence / 0x1_0000_0000);
  h = Math.imul(h, 0x01000193);
  return h >>> 0;
}

/** Accumulates pair hashes. */
export class SnapshotDigest {
  #sum = 0;
  #count = 0;

  /** Adds one pair whose key is `buf[start, end)`. */
  addRange(buf: Uint8Array, start: number, end: number, sequence: number): void {
    let h = 0x811c9dc5;
    for (let i = start; i < end; i++) {
      h ^= buf[i]!;
      h = Math.imul(h, 0x01000193);
    }
    this.#sum = (this.#sum + finishPair(h, sequence)) >>> 0;
    this.#count++;
  }

  /** Adds one (key, sequence) pair. */
  add(key: Uint8Array | string, sequence: number): void {
    this.#sum = (this.#sum + pairHash(key, sequence)) >>> 0;
    this.#count++;
  }

  /** Entries added. */
  get count(): number {
    return this.#count;
  }

  /** The digest as 8 hex digits. */
  get hex(): string {
    return this.#sum.toString(16).padStart(8, '0');
  }
}
