/**
 * Value codec: clonekv values are msgpackr-encoded and marked with the `enc=msgpack` property;
 * a body without the mark (written by a plain CHP peer) is exposed as its raw bytes.
 *
 * A marked body is checked before it is decoded, because msgpackr's decoder trusts what it is
 * given: it turns the byte `c1` (which msgpack never uses) into a placeholder object, its own
 * extension `d4 00 00` into `undefined`, and recurses once per nesting level (a deep enough
 * body overflows the stack). A body is valid when it is exactly one msgpack value, with no
 * bytes left over, no `c1`, no extension type other than the standard timestamp (decoded as a
 * `Date`; clonekv writes a `Date` that way), and at most {@link MAX_VALUE_DEPTH} levels of
 * nesting. The check walks the bytes once, without recursion and without building anything.
 *
 * @module
 */
import { Packr } from 'msgpackr';
import { ClonekvError, ErrorCode } from '../errors.ts';

// Records (msgpackr's extension for repeated object shapes) are off: every message must be
// decodable on its own, by any msgpack implementation.
const packr = new Packr({ useRecords: false, moreTypes: false, mapsAsObjects: true });

/** Deepest nesting of arrays and maps a value may have (deeper ones are refused). */
export const MAX_VALUE_DEPTH = 512;

/** The msgpack extension type of timestamps (decoded as `Date`). */
const TIMESTAMP_TYPE = 0xff; // -1

/** A body marked `enc=msgpack` that is not one valid value; `message` says why. */
export class ValueDecodeError extends ClonekvError {
  constructor(why: string) {
    super(ErrorCode.Malformed, `value marked enc=msgpack is not valid msgpack: ${why}`);
  }
}

/** Encodes a value. Throws for `undefined` (anywhere in it) and for values msgpackr cannot encode. */
export function encodeValue(value: unknown): Buffer {
  if (value === undefined) throw new TypeError('undefined cannot be stored; use delete()');
  const body = packr.pack(value);
  const problem = valueProblem(body);
  // msgpackr writes undefined (and a function) as its own extension, which no other
  // implementation reads and which decodeBody refuses: refuse to write it in the first place.
  if (problem !== undefined) throw new TypeError(problem === UNDEFINED_PROBLEM ? 'undefined (or a function) inside a value cannot be stored' : problem);
  return body;
}

/**
 * Decodes a body given only whether it is marked msgpack: unmarked bodies are returned as a
 * `Uint8Array` over the same bytes.
 *
 * @throws {@link ValueDecodeError} for a marked body that is not exactly one valid value
 */
export function decodeBody(body: Buffer, msgpack: boolean): unknown {
  if (!msgpack) return new Uint8Array(body.buffer, body.byteOffset, body.length);
  const problem = valueProblem(body);
  if (problem !== undefined) throw new ValueDecodeError(problem);
  try {
    return packr.unpack(body);
  } catch (err) {
    throw new ValueDecodeError((err as Error).message);
  }
}

/** Whether `body` is exactly one valid msgpack value as clonekv accepts it (see the module notes). */
export function isValidValue(body: Buffer): boolean {
  return valueProblem(body) === undefined;
}

const UNDEFINED_PROBLEM = 'extension type 0 (msgpackr\'s undefined)';

/**
 * Walks one msgpack value in `b`; returns why it is not acceptable, or `undefined` if it is.
 * Iterative: `pending` holds, per open array or map, how many items are still to come.
 */
function valueProblem(b: Buffer): string | undefined {
  const n = b.length;
  if (n === 0) return 'empty body';
  const pending: number[] = [];
  let remaining = 1; // items still to read at the current level
  let i = 0;
  for (;;) {
    while (remaining === 0) {
      const up = pending.pop();
      if (up === undefined) return i === n ? undefined : `${n - i} bytes left over after the value`;
      remaining = up;
    }
    if (i >= n) return 'truncated';
    remaining--;
    const t = b[i++]!;
    let skip = 0; // bytes of payload after the header
    let items = -1; // for an array or map: items it holds
    if (t <= 0x7f || t >= 0xe0 || t === 0xc0 || t === 0xc2 || t === 0xc3) {
      // fixint, negative fixint, nil, false, true
    } else if (t <= 0x8f) items = (t & 0x0f) * 2;
    else if (t <= 0x9f) items = t & 0x0f;
    else if (t <= 0xbf) skip = t & 0x1f;
    else if (t === 0xc1) return 'byte c1 (never used by msgpack)';
    else {
      switch (t) {
        case 0xc4: case 0xd9: skip = readLength(b, i, 1); i += 1; break;
        case 0xc5: case 0xda: skip = readLength(b, i, 2); i += 2; break;
        case 0xc6: case 0xdb: skip = readLength(b, i, 4); i += 4; break;
        case 0xca: skip = 4; break;
        case 0xcb: skip = 8; break;
        case 0xcc: case 0xd0: skip = 1; break;
        case 0xcd: case 0xd1: skip = 2; break;
        case 0xce: case 0xd2: skip = 4; break;
        case 0xcf: case 0xd3: skip = 8; break;
        case 0xdc: items = readLength(b, i, 2); i += 2; break;
        case 0xdd: items = readLength(b, i, 4); i += 4; break;
        case 0xde: items = readLength(b, i, 2) * 2; i += 2; break;
        case 0xdf: items = readLength(b, i, 4) * 2; i += 4; break;
        default: {
          // Extensions: fixext 1/2/4/8/16 (d4..d8) and ext 8/16/32 (c7..c9): length, type, data.
          let size: number;
          if (t >= 0xd4 && t <= 0xd8) size = 1 << (t - 0xd4);
          else {
            const w = t === 0xc7 ? 1 : t === 0xc8 ? 2 : 4;
            size = readLength(b, i, w);
            i += w;
          }
          if (size < 0 || i >= n) return 'truncated';
          const type = b[i++]!;
          if (type !== TIMESTAMP_TYPE) return type === 0 ? UNDEFINED_PROBLEM : `extension type ${type > 127 ? type - 256 : type}`;
          if (size !== 4 && size !== 8 && size !== 12) return `timestamp of ${size} bytes`;
          skip = size;
        }
      }
    }
    if (skip < 0 || items < -1 || i > n) return 'truncated';
    if (items >= 0) {
      // Every item takes at least one byte: a count larger than what is left is a lie, and
      // refusing it here keeps a forged count from making this loop long.
      if (items > n - i) return 'truncated';
      if (items > 0) {
        if (pending.length >= MAX_VALUE_DEPTH) return `nested deeper than ${MAX_VALUE_DEPTH} levels`;
        pending.push(remaining);
        remaining = items;
      }
      continue;
    }
    if (skip > n - i) return 'truncated';
    i += skip;
  }
}

/** A big-endian unsigned length of `width` bytes at `i`; -1 if the buffer ends first. */
function readLength(b: Buffer, i: number, width: 1 | 2 | 4): number {
  if (i + width > b.length) return -1;
  return width === 1 ? b[i]! : width === 2 ? b.readUInt16BE(i) : b.readUInt32BE(i);
}
