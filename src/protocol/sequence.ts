/**
 * The 8-byte sequence frame: signed 64-bit big-endian. clonekv keeps sequences as JavaScript
 * numbers, so values above 2^53 - 1 (never reached in practice: 285 years at a million writes
 * per second) and negative values are refused as malformed.
 *
 * @module
 */

const TWO_32 = 0x1_0000_0000;

/** Encodes a non-negative safe integer as 8 bytes, big-endian. */
export function encodeSequence(seq: number): Buffer {
  const buf = Buffer.allocUnsafe(8);
  writeSequence(buf, 0, seq);
  return buf;
}

/** Writes a sequence at `offset` of `buf`. */
export function writeSequence(buf: Buffer, offset: number, seq: number): void {
  buf.writeUInt32BE(Math.floor(seq / TWO_32), offset);
  buf.writeUInt32BE(seq >>> 0, offset + 4);
}

/** Reads a sequence at `offset`; returns -1 when it is negative or beyond 2^53 - 1. */
export function readSequence(buf: Uint8Array, offset = 0): number {
  const b = buf as Buffer;
  const hi = b.readUInt32BE(offset);
  if (hi > 0x1f_ffff) return -1; // negative (sign bit) or above Number.MAX_SAFE_INTEGER
  return hi * TWO_32 + b.readUInt32BE(offset + 4);
}

/** The all-zero sequence frame used by KVSET and by snapshot requests. */
export const ZERO_SEQUENCE: Buffer = Buffer.alloc(8);
