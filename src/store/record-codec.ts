/**
 * The on-disk form of an {@link UpdateRecord}: one self-checking binary record, used both for
 * the durable map (key → its last update) and for the log (sequence → update). A CRC-32 over
 * the whole record catches flipped bits and torn values, so a damaged record is never loaded as
 * data. No I/O.
 *
 * Layout (little-endian):
 * ```
 *  0 u8 record format (1)   1 u8 reserved (0)   2 u16 key length    4 f64 seq
 * 12 f64 expiresAt (ms, 0: none)   20 f64 at (ms, when it was sequenced: the de-duplication
 *    window is rebuilt from it)   28 u8 uuid length   29 u8 owner length   30 u32 properties length
 * 34 key, owner (ASCII hex), uuid, properties, body
 * end − 4: u32 CRC-32 of every byte before it
 * ```
 * uuid, properties and body lie back to back, as a {@link StoredEntry} holds them, so a map
 * entry is loaded with one copy. The checksum sits last so that a record checks as a whole: the
 * CRC-32 of data followed by its own CRC is a constant.
 *
 * @module
 */
import { crc32 } from 'node:zlib';
import type { UpdateRecord } from './update-record.ts';

const RECORD_FORMAT = 1;
const HEADER = 34;
const TRAILER = 4;
/** CRC-32 of any data followed by its CRC-32 (little-endian). */
const CRC32_RESIDUE = 0x2144df1c;

/** A record and the time it was written. */
export interface TimedRecord {
  readonly record: UpdateRecord;
  /** When it was sequenced (ms, Date.now clock). */
  readonly at: number;
  /**
   * The record already encoded ({@link encodeRecord} of `record` and `at`), when it was: the
   * bytes a pair member sends its partner are the bytes its disk stores, encoded once
   * ({@link encodedOf}).
   */
  encoded?: Buffer;
}

/** The encoded form of `t`, encoded at most once (kept on `t`). */
export function encodedOf(t: TimedRecord): Buffer {
  return (t.encoded ??= encodeRecord(t.record, t.at));
}

/** Encodes a record with its checksum. */
export function encodeRecord(record: UpdateRecord, at: number): Buffer {
  const owner = record.owner ?? '';
  const keyLength = Buffer.byteLength(record.key, 'latin1');
  const size = HEADER + keyLength + owner.length + record.uuid.length + record.properties.length + record.body.length + TRAILER;
  const b = Buffer.allocUnsafe(size);
  b.writeUInt8(RECORD_FORMAT, 0);
  b.writeUInt8(0, 1);
  b.writeUInt16LE(keyLength, 2);
  b.writeDoubleLE(record.seq, 4);
  b.writeDoubleLE(record.expiresAt, 12);
  b.writeDoubleLE(at, 20);
  b.writeUInt8(record.uuid.length, 28);
  b.writeUInt8(owner.length, 29);
  b.writeUInt32LE(record.properties.length, 30);
  let o = HEADER + b.write(record.key, HEADER, 'latin1');
  o += b.write(owner, o, 'latin1');
  o += record.uuid.copy(b, o);
  o += record.properties.copy(b, o);
  o += record.body.copy(b, o);
  b.writeUInt32LE(crc32(b.subarray(0, o)), o);
  return b;
}

/** Whether `b` is a whole record whose checksum matches. */
export function isSound(b: Buffer): boolean {
  return b.length >= HEADER + TRAILER && crc32(b) === CRC32_RESIDUE;
}

/** Where the parts of a checked record lie in its buffer (no copy). */
export interface RecordLayout {
  readonly seq: number;
  readonly expiresAt: number;
  readonly at: number;
  readonly keyStart: number;
  readonly ownerStart: number;
  readonly uuidStart: number;
  readonly propertiesStart: number;
  readonly bodyStart: number;
  /** Where the body ends (the checksum follows). */
  readonly end: number;
}

/** The layout of record `b`, or `undefined` if it is damaged (checksum, format or lengths). */
export function recordLayout(b: Buffer): RecordLayout | undefined {
  if (!isSound(b) || b[0] !== RECORD_FORMAT) return undefined;
  const keyStart = HEADER;
  const ownerStart = keyStart + b.readUInt16LE(2);
  const uuidStart = ownerStart + b[29]!;
  const uuidLength = b[28]!;
  const propertiesStart = uuidStart + uuidLength;
  const bodyStart = propertiesStart + b.readUInt32LE(30);
  const end = b.length - TRAILER;
  if (bodyStart > end || (uuidLength !== 0 && uuidLength !== 16)) return undefined;
  const seq = b.readDoubleLE(4);
  const expiresAt = b.readDoubleLE(12);
  const at = b.readDoubleLE(20);
  if (!Number.isSafeInteger(seq) || seq < 1 || !Number.isFinite(expiresAt) || !Number.isFinite(at)) return undefined;
  return { seq, expiresAt, at, keyStart, ownerStart, uuidStart, propertiesStart, bodyStart, end };
}

/**
 * Decodes a record, or `undefined` if it is damaged. The buffers of the result are copies: `b`
 * may be memory the store reuses.
 */
export function decodeRecord(b: Buffer): TimedRecord | undefined {
  const l = recordLayout(b);
  if (l === undefined) return undefined;
  // One copy of uuid, properties and body; the fields are views of it.
  const data = Buffer.allocUnsafe(l.end - l.uuidStart);
  b.copy(data, 0, l.uuidStart, l.end);
  const key = b.toString('latin1', l.keyStart, l.ownerStart);
  const propertiesAt = l.propertiesStart - l.uuidStart;
  const bodyAt = l.bodyStart - l.uuidStart;
  const uuid = data.subarray(0, propertiesAt);
  const properties = data.subarray(propertiesAt, bodyAt);
  const body = data.subarray(bodyAt);
  const { seq, expiresAt } = l;
  const record: UpdateRecord =
    l.uuidStart > l.ownerStart
      ? { seq, key, uuid, properties, body, expiresAt, owner: b.toString('latin1', l.ownerStart, l.uuidStart) }
      : { seq, key, uuid, properties, body, expiresAt };
  return { record, at: l.at };
}
