/**
 * Gap-detection properties. The sequence is global, so a subtree peer sees holes that are
 * other subtrees' updates. The forwarder therefore tells each subscribed prefix what the
 * previous update under it was:
 *
 * - on every KVPUB, `prev=L:S,...`: for each subscribed prefix of the key, its length L in bytes
 *   (the length identifies it, since all of them are prefixes of the same key) and the sequence
 *   S of the previous update under that prefix (when a prefix is first subscribed with no
 *   record of it, the global sequence of that moment: never lower than the true one);
 * - in HUGZ, `heads=ID:S,...`: for each subscribed prefix, an id of the prefix and the sequence
 *   of the last update under it, so a lost update is noticed within one heartbeat even when
 *   nothing follows it. The id is base64url(P) for a prefix of up to {@link SHORT_PREFIX_BYTES}
 *   bytes, and `~` followed by base64url of the first 12 bytes of SHA-256(P) for a longer one
 *   (`~` is not a base64url character, so the two never meet): 10,000 prefixes of 255 bytes
 *   would otherwise need 3.4 MB per heartbeat. The list is split over as many HUGZ as needed to
 *   keep each under {@link HEADS_BUDGET} bytes, well inside the peers' 64 KiB properties limit;
 *   each prefix is listed once per heartbeat, in one of them.
 *
 * Plain CHP peers ignore both.
 *
 * @module
 */
import { createHash } from 'node:crypto';

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

/** Longest prefix, in bytes, whose `heads` id is the prefix itself (base64url). */
export const SHORT_PREFIX_BYTES = 24;

/** Most bytes of `heads` list in one HUGZ (the peers refuse properties over 64 KiB). */
export const HEADS_BUDGET = 60_000;

/** The id of a prefix (its bytes, as a latin1 string or a buffer) in a `heads` list. */
export function headId(prefix: string | Buffer): string {
  const bytes = typeof prefix === 'string' ? Buffer.from(prefix, 'latin1') : prefix;
  if (bytes.length <= SHORT_PREFIX_BYTES) return bytes.toString('base64url');
  return '~' + createHash('sha256').update(bytes).digest().subarray(0, 12).toString('base64url');
}

/**
 * Encodes `heads` (id of a prefix → last sequence) as lists of at most `budget` bytes each, one
 * per HUGZ; at least one list (empty when nothing is subscribed).
 */
export function encodeHeads(heads: Iterable<readonly [string, number]>, budget = HEADS_BUDGET): string[] {
  const lists: string[] = [];
  let s = '';
  for (const [id, seq] of heads) {
    const item = id + ':' + seq;
    if (s.length > 0 && s.length + 1 + item.length > budget) {
      lists.push(s);
      s = '';
    }
    s += (s.length === 0 ? '' : ',') + item;
  }
  lists.push(s);
  return lists;
}

/** Finds the head for `prefix` (bytes) in one HUGZ's `heads` property; `undefined` if not listed there. */
export function headFor(prop: string, prefix: Buffer): number | undefined {
  return listedSequence(prop, headId(prefix) + ':');
}
