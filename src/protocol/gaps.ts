/**
 * Gap-detection properties. The sequence is global, so a subtree peer sees holes that are
 * other subtrees' updates. The forwarder therefore tells each subscribed prefix what the
 * previous update under it was:
 *
 * - on every KVPUB, `prev=L:S,...`: for each subscribed prefix of the key, its length L in bytes
 *   (the length identifies it, since all of them are prefixes of the same key) and the sequence
 *   S of the previous update under that prefix (0 if none since the subscription appeared);
 * - in every HUGZ, `heads=P:S,...`: for each subscribed prefix, base64url(P) and the sequence of
 *   the last update under it, so a lost update is noticed within one heartbeat even when
 *   nothing follows it.
 *
 * Plain CHP peers ignore both.
 *
 * @module
 */

/** Adds one (prefix length, previous sequence) pair to a `prev` list (`''` when empty). */
export function addPrevious(list: string, length: number, previous: number): string {
  return (list.length === 0 ? '' : list + ',') + length + ':' + previous;
}

/** Finds the previous sequence for a prefix of `length` bytes; `undefined` if not listed or malformed. */
export function previousFor(prop: string, length: number): number | undefined {
  return listedSequence(prop, `${length}:`);
}

/** In a `name:sequence,…` list, the sequence after `want` (which ends in `:`). */
function listedSequence(prop: string, want: string): number | undefined {
  let i = 0;
  while (i < prop.length) {
    let end = prop.indexOf(',', i);
    if (end < 0) end = prop.length;
    if (prop.startsWith(want, i)) {
      const n = Number(prop.slice(i + want.length, end));
      return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
    }
    i = end + 1;
  }
  return undefined;
}

/** Encodes `heads`: prefix bytes (as a latin1 string) → last sequence. */
export function encodeHeads(heads: Iterable<readonly [string, number]>): string {
  let s = '';
  for (const [prefix, seq] of heads) {
    s += (s.length === 0 ? '' : ',') + Buffer.from(prefix, 'latin1').toString('base64url') + ':' + seq;
  }
  return s;
}

/** Finds the head for `prefix` (bytes) in a `heads` property; `undefined` if not listed. */
export function headFor(prop: string, prefix: Buffer): number | undefined {
  return listedSequence(prop, prefix.toString('base64url') + ':');
}
