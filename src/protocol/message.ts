/**
 * The five-frame CHP message and its validation. Nothing here touches a socket: a decoder
 * takes the frames a socket produced and returns a message or the reason it is malformed.
 *
 * @module
 */
import { MAX_KEY_BYTES, Prop } from './commands.ts';
import { encodeProperties, PropertiesError, PropertyView, type PropertyReader } from './properties.ts';
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

/**
 * What a clonekv peer that already holds a map asks for in its snapshot request: only the
 * updates after `since`, if the forwarder is still in `epoch` and holds them.
 */
export interface ResumeRequest {
  readonly since: number;
  readonly epoch: string;
  /** The term of a pair's active the peer last knew (`term=`), if it gave one. */
  readonly term?: number;
}

/**
 * Frames of a snapshot request for `subtree`: RFC 12's two frames, or, with `resume` (sent only
 * to a server known to be a clonekv forwarder), a third frame of properties `since=S\nepoch=E\n` (and `term=T\n` when the peer knows a term).
 */
export function snapshotRequestFrames(subtree: Buffer, resume?: ResumeRequest): Buffer[] {
  const frames = [Buffer.from('ICANHAZ?'), subtree];
  if (resume) {
    const props: Array<[string, string]> = [[Prop.Since, String(resume.since)], [Prop.Epoch, resume.epoch]];
    if (resume.term !== undefined) props.push([Prop.Term, String(resume.term)]);
    frames.push(encodeProperties(props));
  }
  return frames;
}

const DECIMAL = /^(0|[1-9][0-9]{0,15})$/;
const EPOCH = /^[0-9a-f]{1,64}$/;

/**
 * Reads the properties frame of a three-frame `ICANHAZ?`: `since` (a decimal sequence) and
 * `epoch` (hex) must both be there and valid; `term` (decimal) is optional, and must be valid when
 * there; other names are ignored (room to grow). Returns `undefined` for anything else (the
 * request is then malformed).
 */
export function parseResumeRequest(frame: Buffer): ResumeRequest | undefined {
  let props: PropertyView;
  try {
    props = new PropertyView(frame);
  } catch (err) {
    if (err instanceof PropertiesError) return undefined;
    throw err;
  }
  const since = props.get(Prop.Since);
  const epoch = props.get(Prop.Epoch);
  if (since === undefined || epoch === undefined || !DECIMAL.test(since) || !EPOCH.test(epoch)) return undefined;
  const n = Number(since);
  if (!Number.isSafeInteger(n)) return undefined;
  const term = props.get(Prop.Term);
  if (term === undefined) return { since: n, epoch };
  const t = Number(term);
  return DECIMAL.test(term) && Number.isSafeInteger(t) ? { since: n, epoch, term: t } : undefined;
}
