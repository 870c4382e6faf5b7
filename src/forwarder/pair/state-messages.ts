/**
 * The messages two members of a primary/backup pair exchange on their state channel, and their
 * checking: anything that does not read exactly as one of them is refused (`undefined`), never
 * thrown, so bytes from a stranger on the state port can neither crash nor corrupt a member.
 *
 * Every message: frame 0 is its kind, frame 1 a small JSON header, and (COPY and REPL) frame 2
 * holding every update of the message back to back, each a u32 (little-endian) length and an
 * encoded {@link UpdateRecord} with its own CRC-32 (store/record-codec.ts): the very bytes the
 * sender's disk stores (encoded once for both), and the bytes the receiver's disk stores in
 * turn. One frame, not one per update: a ZeroMQ frame costs far more than a few bytes.
 * Every header names the sender's session (a random id per run) and the receiver's session as
 * the sender knows it (`to`, empty until known), so a message meant for an earlier run of the
 * partner is never taken for one meant for this run.
 *
 * @module
 */
import { decodeRecord, encodedOf, type TimedRecord } from '../../store/record-codec.ts';
import type { WriteOutcome } from '../dedup.ts';
import type { Lineage } from './lineage.ts';

/** The kinds of state messages (frame 0). */
export const StateKind = {
  /** Each member's state, every heartbeat; a follower's also acknowledges what it applied. */
  Beat: 'CKPAIR-BEAT',
  /** A follower asks to catch up after `since` (or for a full copy). */
  Sync: 'CKPAIR-SYNC',
  /** One part of a full copy (entries and write outcomes); the last has `done`. */
  Copy: 'CKPAIR-COPY',
  /** Updates in order from `first` (`start`: the first message of a stream, after a SYNC). */
  Repl: 'CKPAIR-REPL',
  /** A follower acknowledges every update up to `applied`. */
  Ack: 'CKPAIR-ACK',
  /** The active undid updates it had sent (its disk refused them): the follower starts over. */
  Reset: 'CKPAIR-RESET',
} as const;

/** A member's runtime role as announced: `starting` until it has decided. */
export type AnnouncedRole = 'starting' | 'active' | 'passive';

/** A remembered write outcome as carried: [uuid (hex), outcome, ms left of its de-duplication time]. */
export type CarriedOutcome = readonly [uuid: string, outcome: WriteOutcome, leftMs: number];

interface Header {
  readonly session: string;
  readonly to: string;
}

export interface Beat extends Header {
  readonly kind: 'beat';
  readonly configured: 'primary' | 'backup';
  readonly role: AnnouncedRole;
  readonly term: number;
  readonly epoch: string;
  /** The last published sequence. */
  readonly sequence: number;
  /** A follower: the last update applied from the receiver's stream (0 otherwise). */
  readonly applied: number;
}

export interface SyncRequest extends Header {
  readonly kind: 'sync';
  readonly since: number;
  readonly epoch: string;
  readonly lineage: Lineage;
  /** A full copy is wanted whatever the logs say (the follower's disk holds updates it undid). */
  readonly full: boolean;
}

export interface CopyPart extends Header {
  readonly kind: 'copy';
  /** Which copy (one per SYNC answered), and which part of it (from 0). */
  readonly copy: string;
  readonly part: number;
  readonly done: boolean;
  readonly epoch: string;
  readonly term: number;
  readonly lineage: Lineage;
  readonly sequence: number;
  readonly outcomes: CarriedOutcome[];
  readonly records: TimedRecord[];
}

export interface Replication extends Header {
  readonly kind: 'repl';
  readonly start: boolean;
  readonly epoch: string;
  readonly term: number;
  readonly lineage: Lineage;
  /** The sequence of the first record (records follow one by one). */
  readonly first: number;
  readonly outcomes: CarriedOutcome[];
  readonly records: TimedRecord[];
}

export interface Ack extends Header {
  readonly kind: 'ack';
  readonly applied: number;
}

export interface Reset extends Header {
  readonly kind: 'reset';
}

export type StateMessage = Beat | SyncRequest | CopyPart | Replication | Ack | Reset;

const SESSION = /^[0-9a-f]{16}$/;
const EPOCH = /^[0-9a-f]{1,64}$/;
/** Most bytes of a header (a copy part's outcomes are bounded by the sender). */
const MAX_HEADER = 4 * 1024 * 1024;

/** Encodes a message (records are encoded with their time). */
export function encodeState(m: StateMessage): Buffer[] {
  const { kind, records, ...rest } = m as StateMessage & { records?: TimedRecord[] };
  const frames: Buffer[] = [Buffer.from(KIND_OF[kind]), Buffer.from(JSON.stringify(rest))];
  if (records) frames.push(packRecords(records));
  return frames;
}

/** The records back to back, each after its u32 length. */
function packRecords(records: readonly TimedRecord[]): Buffer {
  let size = 0;
  const encoded: Buffer[] = new Array(records.length);
  for (let i = 0; i < records.length; i++) size += 4 + (encoded[i] = encodedOf(records[i]!)).length;
  const b = Buffer.allocUnsafe(size);
  let o = 0;
  for (const e of encoded) {
    b.writeUInt32LE(e.length, o);
    o += 4 + e.copy(b, o + 4);
  }
  return b;
}

/** The records of a packed frame (each keeps its checked bytes), or `undefined` if any is damaged. */
function unpackRecords(b: Buffer): TimedRecord[] | undefined {
  const records: TimedRecord[] = [];
  let o = 0;
  while (o < b.length) {
    if (o + 4 > b.length) return undefined;
    const end = o + 4 + b.readUInt32LE(o);
    if (end > b.length) return undefined;
    const bytes = b.subarray(o + 4, end);
    const t = decodeRecord(bytes);
    if (t === undefined) return undefined;
    // Checked: the receiver's disk stores these bytes as they are (a view, let go once stored).
    t.encoded = bytes;
    records.push(t);
    o = end;
  }
  return records;
}

const KIND_OF = { beat: StateKind.Beat, sync: StateKind.Sync, copy: StateKind.Copy, repl: StateKind.Repl, ack: StateKind.Ack, reset: StateKind.Reset } as const;

/** Decodes a message as received, or `undefined` if it is not exactly one. */
export function decodeState(frames: Buffer[]): StateMessage | undefined {
  const kindFrame = frames[0];
  const headerFrame = frames[1];
  if (kindFrame === undefined || headerFrame === undefined || headerFrame.length > MAX_HEADER) return undefined;
  let h: Record<string, unknown>;
  try {
    const v: unknown = JSON.parse(headerFrame.toString('utf8'));
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined;
    h = v as Record<string, unknown>;
  } catch {
    return undefined;
  }
  if (!isSession(h.session) || !(h.to === '' || isSession(h.to))) return undefined;
  const base = { session: h.session, to: h.to };
  const kind = kindFrame.toString('latin1');
  const bare = frames.length === 2;
  switch (kind) {
    case StateKind.Beat: {
      if (!bare || (h.configured !== 'primary' && h.configured !== 'backup')) return undefined;
      if (h.role !== 'starting' && h.role !== 'active' && h.role !== 'passive') return undefined;
      if (!isCount(h.term) || !isEpoch(h.epoch) || !isCount(h.sequence) || !isCount(h.applied)) return undefined;
      return { kind: 'beat', ...base, configured: h.configured, role: h.role, term: h.term, epoch: h.epoch, sequence: h.sequence, applied: h.applied };
    }
    case StateKind.Sync: {
      const lineage = readLineage(h.lineage);
      if (!bare || !isCount(h.since) || !isEpoch(h.epoch) || lineage === undefined || typeof h.full !== 'boolean') return undefined;
      return { kind: 'sync', ...base, since: h.since, epoch: h.epoch, lineage, full: h.full };
    }
    case StateKind.Reset:
      return bare ? { kind: 'reset', ...base } : undefined;
    case StateKind.Ack: {
      if (!bare || !isCount(h.applied)) return undefined;
      return { kind: 'ack', ...base, applied: h.applied };
    }
    case StateKind.Copy:
    case StateKind.Repl: {
      const lineage = readLineage(h.lineage);
      const outcomes = readOutcomes(h.outcomes);
      if (lineage === undefined || outcomes === undefined || !isEpoch(h.epoch) || !isCount(h.term)) return undefined;
      if (frames.length !== 3) return undefined;
      const records = unpackRecords(frames[2]!);
      if (records === undefined) return undefined;
      if (kind === StateKind.Repl) {
        if (typeof h.start !== 'boolean' || !isCount(h.first)) return undefined;
        // The records must follow one another from `first`.
        for (let i = 0; i < records.length; i++) if (records[i]!.record.seq !== h.first + i) return undefined;
        return { kind: 'repl', ...base, start: h.start, epoch: h.epoch, term: h.term, lineage, first: h.first, outcomes, records };
      }
      if (typeof h.copy !== 'string' || h.copy.length > 64 || !isCount(h.part) || typeof h.done !== 'boolean' || !isCount(h.sequence)) return undefined;
      for (const r of records) if (r.record.seq > h.sequence || r.record.body.length === 0) return undefined;
      return { kind: 'copy', ...base, copy: h.copy, part: h.part, done: h.done, epoch: h.epoch, term: h.term, lineage, sequence: h.sequence, outcomes, records };
    }
    default:
      return undefined;
  }
}

function isSession(v: unknown): v is string {
  return typeof v === 'string' && SESSION.test(v);
}

function isEpoch(v: unknown): v is string {
  return typeof v === 'string' && EPOCH.test(v);
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function readLineage(v: unknown): Lineage | undefined {
  if (!Array.isArray(v) || v.length > 10_000) return undefined;
  const out: Array<readonly [number, number]> = [];
  let lastTerm = 0;
  let lastFirst = 0;
  for (const e of v as unknown[]) {
    if (!Array.isArray(e) || e.length !== 2 || !isCount(e[0]) || !isCount(e[1])) return undefined;
    // Terms grow, and so do their first sequences.
    if (e[0] <= lastTerm || e[1] < lastFirst) return undefined;
    lastTerm = e[0];
    lastFirst = e[1];
    out.push([e[0], e[1]]);
  }
  return out;
}

function readOutcomes(v: unknown): CarriedOutcome[] | undefined {
  if (!Array.isArray(v)) return undefined;
  const out: CarriedOutcome[] = [];
  for (const e of v as unknown[]) {
    if (!Array.isArray(e) || e.length !== 3 || typeof e[0] !== 'string' || !/^[0-9a-f]{32}$/.test(e[0]) || !isCount(e[2])) return undefined;
    const o = e[1] as { status?: unknown; seq?: unknown; current?: unknown; detail?: unknown } | null;
    if (typeof o !== 'object' || o === null) return undefined;
    let outcome: WriteOutcome;
    if (o.status === 'ok' && isCount(o.seq)) outcome = { status: 'ok', seq: o.seq };
    else if (o.status === 'conflict' && isCount(o.current)) outcome = { status: 'conflict', current: o.current };
    else if (o.status === 'rejected' && typeof o.detail === 'string' && o.detail.length <= 1000) outcome = { status: 'rejected', detail: o.detail };
    else return undefined;
    out.push([e[0], outcome, e[2]]);
  }
  return out;
}
