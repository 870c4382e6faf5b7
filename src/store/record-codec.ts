/**
 * The on-disk form of an {@link UpdateRecord}: one self-checking binary record, used both for
 * the durable map (key → its last update) and for the log (sequence → update). A CRC-32 over
 * every other byte catches flipped bits and torn values, so a damaged record is never loaded as
 * data. No I/O.
 *
 * Layout (little-endian):
 * ```
 *  0 u32 crc32 of bytes 4..end      4 u8 record format (1)      5 u8 reserved (0)
 *  6 u16 key length                 8 f64 seq                  16 f64 expiresAt (ms, 0: none)
 * 24 f64 at (ms, when it was written: the de-duplication window is rebuilt from it)
 * 32 u8 uuid length                33 u8 owner length          34 u32 properties length
 * 38 key, uuid, owner (ASCII hex), properties, body (the rest)
 * ```
 *
 * @module
 */
import { crc32 } from 'node:zlib';
import type { UpdateRecord } from './update-record.ts';

const RECORD_FORMAT = 1;
const HEADER = 38;

/** A record and the time it was written. */
export interface TimedRecord {
  readonly record: UpdateRecord;
  /** When it was sequenced (ms, Date.now clock). */
  readonly at: number;
}

/** Encodes a record with its checksum. */
export function encodeRecord(record: UpdateRecord, at: number): Buffer {
  const owner = record.owner ?? '';
  const keyLength = Buffer.byteLength(record.key, 'latin1');
  const size = HEADER + keyLength + record.uuid.length + owner.length + record.properties.length + record.body.length;
  const b = Buffer.allocUnsafe(size);
  b.writeUInt8(RECORD_FORMAT, 4);
  b.writeUInt8(0, 5);
  b.writeUInt16LE(keyLength, 6);
  b.writeDoubleLE(record.seq, 8);
  b.writeDoubleLE(record.expiresAt, 16);
  b.writeDoubleLE(at, 24);
  b.writeUInt8(record.uuid.length, 32);
  b.writeUInt8(owner.length, 33);
  b.writeUInt32LE(record.properties.length, 34);
  let o = HEADER + b.write(record.key, HEADER, 'latin1');
  o += record.uuid.copy(b, o);
  o += b.write(owner, o, 'latin1');
  o += record.properties.copy(b, o);
  record.body.copy(b, o);
  b.writeUInt32LE(crc32(b.subarray(4)), 0);
  return b;
}

/** Whether `b` is a whole record whose checksum matches. */
export function isSound(b: Buffer): boolean {
  return b.length >= HEADER && b.readUInt32LE(0) === crc32(b.subarray(4));
}

/** Where the parts of a checked record lie in its buffer (no copy). */
export interface RecordLayout {
  readonly seq: number;
  readonly expiresAt: number;
  readonly at: number;
  readonly keyStart: number;
  readonly uuidStart: number;
  readonly ownerStart: number;
  readonly propertiesStart: number;
  readonly bodyStart: number;
}

/** The layout of record `b`, or `undefined` if it is damaged (checksum, format or lengths). */
export function recordLayout(b: Buffer): RecordLayout | undefined {
  if (!isSound(b) || b[4] !== RECORD_FORMAT) return undefined;
  const keyStart = HEADER;
  const uuidStart = keyStart + b.readUInt16LE(6);
  const uuidLength = b[32]!;
  const ownerStart = uuidStart + uuidLength;
  const propertiesStart = ownerStart + b[33]!;
  const bodyStart = propertiesStart + b.readUInt32LE(34);
  if (bodyStart > b.length || (uuidLength !== 0 && uuidLength !== 16)) return undefined;
  const seq = b.readDoubleLE(8);
  const expiresAt = b.readDoubleLE(16);
  const at = b.readDoubleLE(24);
  if (!Number.isSafeInteger(seq) || seq < 1 || !Number.isFinite(expiresAt) || !Number.isFinite(at)) return undefined;
  return { seq, expiresAt, at, keyStart, uuidStart, ownerStart, propertiesStart, bodyStart };
}

/**
 * Decodes a record, or `undefined` if it is damaged (checksum, format or lengths). The buffers
 * of the result are copies: `b` may be memory the store reuses.
 */
export function decodeRecord(b: Buffer): TimedRecord | undefined {
  const l = recordLayout(b);
  if (l === undefined) return undefined;
  // One copy of the variable part; the fields are views of it.
  const rest = Buffer.from(b.subarray(HEADER));
  const at = (offset: number): number => offset - HEADER;
  const key = rest.toString('latin1', 0, at(l.uuidStart));
  const uuid = rest.subarray(at(l.uuidStart), at(l.ownerStart));
  const properties = rest.subarray(at(l.propertiesStart), at(l.bodyStart));
  const body = rest.subarray(at(l.bodyStart));
  const { seq, expiresAt } = l;
  const record: UpdateRecord =
    l.propertiesStart > l.ownerStart
      ? { seq, key, uuid, properties, body, expiresAt, owner: rest.toString('latin1', at(l.ownerStart), at(l.propertiesStart)) }
      : { seq, key, uuid, properties, body, expiresAt };
  return { record, at: l.at };
}
