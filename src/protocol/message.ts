/**
 * The five-frame CHP message and its validation. Nothing here touches a socket: a decoder
 * takes the frames a socket produced and returns a message or the reason it is malformed.
 *
 * @module
 */
import { MAX_KEY_BYTES } from './commands.ts';
import { PropertiesError, PropertyView, type PropertyReader } from './properties.ts';
import { readSequence } from './sequence.ts';
import type { MalformedReason } from '../types.ts';

/** An empty frame (uuid of a command, properties or body left empty); never written to. */
export const EMPTY_FRAME: Buffer = Buffer.alloc(0);

/** A decoded CHP message. Byte frames are kept as received (no copies). */
export interface ChpMessage {
  /** Frame 0: the key, or a command such as `HUGZ`. */
  readonly key: Buffer;
  /** Frame 1: the sequence number (0 in KVSET). */
  readonly sequence: number;
  /** Frame 2: 0 or 16 bytes. */
  readonly uuid: Buffer;
  /** Frame 3, raw, as received (republished unchanged). */
  readonly rawProperties: Buffer;
  /** Frame 3, validated, read in place. */
  readonly properties: PropertyReader;
  /** Frame 4: the body; empty means delete. */
  readonly body: Buffer;
}

/** Result of {@link decodeMessage}: a message, or why it was refused. */
export type Decoded = { ok: true; message: ChpMessage } | { ok: false; reason: MalformedReason };

/**
 * Validates and decodes five frames.
 *
 * @param frames - the frames as received (without any routing id)
 * @param maxBodyBytes - largest body accepted; larger is `value-too-large`
 */
export function decodeMessage(frames: readonly Buffer[], maxBodyBytes: number): Decoded {
  if (frames.length !== 5) return { ok: false, reason: 'frame-count' };
  const [key, seq, uuid, props, body] = frames as [Buffer, Buffer, Buffer, Buffer, Buffer];
  if (key.length === 0) return { ok: false, reason: 'empty-key' };
  if (key.length > MAX_KEY_BYTES) return { ok: false, reason: 'key-too-long' };
  if (seq.length !== 8) return { ok: false, reason: 'sequence-size' };
  const sequence = readSequence(seq);
  if (sequence < 0) return { ok: false, reason: 'sequence-range' };
  if (uuid.length !== 0 && uuid.length !== 16) return { ok: false, reason: 'uuid-size' };
  if (body.length > maxBodyBytes) return { ok: false, reason: 'value-too-large' };
  let properties: PropertyReader;
  try {
    properties = new PropertyView(props);
  } catch (err) {
    if (err instanceof PropertiesError) return { ok: false, reason: 'properties' };
    throw err;
  }
  return { ok: true, message: { key, sequence, uuid, rawProperties: props, properties, body } };
}

/** Frames of a snapshot request for `subtree` (RFC 12: two frames). */
export function snapshotRequestFrames(subtree: Buffer): Buffer[] {
  return [Buffer.from('ICANHAZ?'), subtree];
}
