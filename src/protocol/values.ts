/**
 * Value codec: clonekv values are msgpackr-encoded and marked with the `enc=msgpack` property;
 * a body without the mark (written by a plain CHP peer) is exposed as its raw bytes.
 *
 * @module
 */
import { Packr } from 'msgpackr';

// Records (msgpackr's extension for repeated object shapes) are off: every message must be
// decodable on its own, by any msgpack implementation.
const packr = new Packr({ useRecords: false, moreTypes: false, mapsAsObjects: true });

/** Encodes a value. Throws for `undefined` and for values msgpackr cannot encode. */
export function encodeValue(value: unknown): Buffer {
  if (value === undefined) throw new TypeError('undefined cannot be stored; use delete()');
  return packr.pack(value);
}

/** Decodes a body given only whether it is marked msgpack. */
export function decodeBody(body: Buffer, msgpack: boolean): unknown {
  return msgpack ? packr.unpack(body) : new Uint8Array(body.buffer, body.byteOffset, body.length);
}
