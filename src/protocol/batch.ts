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
    out[o++] = e.key.length;
    if (typeof e.key === 'string') out.write(e.key, o, 'latin1');
    else e.key.copy(out, o);
    o += e.key.length;
    writeSequence(out, o, e.sequence);
    o += 8;
    out[o++] = e.uuid.length;
    e.uuid.copy(out, o);
    o += e.uuid.length;
    out.writeUInt16BE(e.properties.length, o);
    o += 2;
    e.properties.copy(out, o);
    o += e.properties.length;
    out.writeUInt32BE(e.body.length, o);
    o += 4;
    e.body.copy(out, o);
    o += e.body.length;
  }
  return out;
}

/** One unpacked entry: every field a view into the batch buffer. */
export interface UnpackedEntry extends WireEntry {
  readonly key: Buffer;
}

/** Thrown for a batch that does not parse. */
export class BatchError extends Error {}

/**
 * Unpacks a batch, calling `onEntry` for each entry. Frames given to `onEntry` are views into
 * `buf` (no copies). Throws {@link BatchError} on a truncated or inconsistent buffer.
 */
export function unpackBatch(buf: Buffer, onEntry: (e: UnpackedEntry) => void): number {
  let o = 0;
  let n = 0;
  const need = (k: number): void => {
    if (o + k > buf.length) throw new BatchError('truncated snapshot batch');
  };
  while (o < buf.length) {
    need(1);
    const kl = buf[o++]!;
    need(kl + 9);
    const key = buf.subarray(o, o + kl);
    o += kl;
    const sequence = readSequence(buf, o);
    if (sequence < 0) throw new BatchError('sequence out of range in snapshot batch');
    o += 8;
    const ul = buf[o++]!;
    need(ul + 2);
    const uuid = buf.subarray(o, o + ul);
    o += ul;
    const pl = buf.readUInt16BE(o);
    o += 2;
    need(pl + 4);
    const properties = buf.subarray(o, o + pl);
    o += pl;
    const bl = buf.readUInt32BE(o);
    o += 4;
    need(bl);
    const body = buf.subarray(o, o + bl);
    o += bl;
    onEntry({ key, sequence, uuid, properties, body });
    n++;
  }
  return n;
}
