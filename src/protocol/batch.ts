/**
 * KVBATCH body: many snapshot entries in one frame, sent only to clonekv peers (one zeromq
 * message per key costs ~4x more on a large join). Layout of each entry, big-endian:
 * `u8 keyLength, key, u64 sequence, u8 uuidLength, uuid, u16 propertiesLength, properties,
 * u32 bodyLength, body`.
 *
 * @module
 */
import { readSequence, writeSequence } from './sequence.ts';

/** One snapshot entry as carried on the wire. */
export interface WireEntry {
  /** The key: bytes, or a latin1 string holding them (one character per byte, no copy needed). */
  readonly key: Buffer | string;
  readonly sequence: number;
  readonly uuid: Buffer;
  readonly properties: Buffer;
  readonly body: Buffer;
}

/** Size of an entry in a batch. */
export function entrySize(e: WireEntry): number {
  return 1 + e.key.length + 8 + 1 + e.uuid.length + 2 + e.properties.length + 4 + e.body.length;
}

/** Packs entries into one buffer of exactly `size` bytes (the sum of {@link entrySize}). */
export function packBatch(entries: readonly WireEntry[], size: number): Buffer {
  const out = Buffer.allocUnsafe(size);
  let o = 0;
  for (const e of entries) {
    o = writeEntry(out, o, e.key, e.sequence, e.uuid, 0, e.uuid.length, e.properties, 0, e.properties.length, e.body, 0, e.body.length);
  }
  return out;
}

/**
 * An entry whose uuid, properties and body lie back to back in one buffer (the forwarder's
 * stored form), packed without a view per field.
 */
export interface ContiguousEntry {
  readonly seq: number;
  readonly data: Buffer;
  readonly uuidLength: number;
  readonly propertiesLength: number;
}

/** Size in a batch of `key` (latin1 string of bytes) with a {@link ContiguousEntry}. */
export function contiguousEntrySize(key: string, e: ContiguousEntry): number {
  return 16 + key.length + e.data.length;
}

/** Packs `[key, entry]` pairs `from` to `to` (exclusive) into one buffer of exactly `size` bytes. */
export function packContiguous(pairs: ReadonlyArray<readonly [string, ContiguousEntry]>, from: number, to: number, size: number): Buffer {
  const out = Buffer.allocUnsafe(size);
  let o = 0;
  for (let i = from; i < to; i++) {
    const [key, e] = pairs[i]!;
    const ul = e.uuidLength;
    const pl = e.propertiesLength;
    o = writeEntry(out, o, key, e.seq, e.data, 0, ul, e.data, ul, pl, e.data, ul + pl, e.data.length - ul - pl);
  }
  return out;
}

/** Writes one entry at `o` (fields given as source ranges); returns the offset after it. */
function writeEntry(
  out: Buffer,
  o: number,
  key: Buffer | string,
  sequence: number,
  uuid: Buffer,
  us: number,
  ul: number,
  props: Buffer,
  ps: number,
  pl: number,
  body: Buffer,
  bs: number,
  bl: number,
): number {
  out[o++] = key.length;
  if (typeof key === 'string') out.write(key, o, 'latin1');
  else key.copy(out, o);
  o += key.length;
  writeSequence(out, o, sequence);
  o += 8;
  out[o++] = ul;
  uuid.copy(out, o, us, us + ul);
  o += ul;
  out.writeUInt16BE(pl, o);
  o += 2;
  props.copy(out, o, ps, ps + pl);
  o += pl;
  out.writeUInt32BE(bl, o);
  o += 4;
  body.copy(out, o, bs, bs + bl);
  return o + bl;
}

/** One unpacked entry: every field a view into the batch buffer. */
export interface UnpackedEntry extends WireEntry {
  readonly key: Buffer;
}

/** Thrown for a batch that does not parse. */
export class BatchError extends Error {}

/** Where one entry lies in a batch buffer: offsets and lengths, no views. */
export interface EntrySpan {
  keyStart: number;
  keyLength: number;
  sequence: number;
  uuidStart: number;
  uuidLength: number;
  propertiesStart: number;
  propertiesLength: number;
  bodyStart: number;
  bodyLength: number;
}

/**
 * Walks a batch, calling `visit` with the span of each entry. The span object is reused from one
 * entry to the next (a 1,000,000-key snapshot would otherwise allocate a million of them): read
 * it inside `visit`, do not keep it. Throws {@link BatchError} on a truncated or inconsistent
 * buffer.
 */
export function scanBatch(buf: Buffer, visit: (buf: Buffer, span: Readonly<EntrySpan>) => void): number {
  const span: EntrySpan = { keyStart: 0, keyLength: 0, sequence: 0, uuidStart: 0, uuidLength: 0, propertiesStart: 0, propertiesLength: 0, bodyStart: 0, bodyLength: 0 };
  let o = 0;
  let n = 0;
  const need = (k: number): void => {
    if (o + k > buf.length) throw new BatchError('truncated snapshot batch');
  };
  while (o < buf.length) {
    need(1);
    span.keyLength = buf[o++]!;
    need(span.keyLength + 9);
    span.keyStart = o;
    o += span.keyLength;
    span.sequence = readSequence(buf, o);
    if (span.sequence < 0) throw new BatchError('sequence out of range in snapshot batch');
    o += 8;
    span.uuidLength = buf[o++]!;
    need(span.uuidLength + 2);
    span.uuidStart = o;
    o += span.uuidLength;
    span.propertiesLength = buf.readUInt16BE(o);
    o += 2;
    need(span.propertiesLength + 4);
    span.propertiesStart = o;
    o += span.propertiesLength;
    span.bodyLength = buf.readUInt32BE(o);
    o += 4;
    need(span.bodyLength);
    span.bodyStart = o;
    o += span.bodyLength;
    visit(buf, span);
    n++;
  }
  return n;
}

/**
 * Unpacks a batch, calling `onEntry` for each entry. Frames given to `onEntry` are views into
 * `buf` (no copies). Throws {@link BatchError} on a truncated or inconsistent buffer.
 */
export function unpackBatch(buf: Buffer, onEntry: (e: UnpackedEntry) => void): number {
  return scanBatch(buf, (b, s) =>
    onEntry({
      key: b.subarray(s.keyStart, s.keyStart + s.keyLength),
      sequence: s.sequence,
      uuid: b.subarray(s.uuidStart, s.uuidStart + s.uuidLength),
      properties: b.subarray(s.propertiesStart, s.propertiesStart + s.propertiesLength),
      body: b.subarray(s.bodyStart, s.bodyStart + s.bodyLength),
    }),
  );
}
