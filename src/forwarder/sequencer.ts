/**
 * The sequencer's decisions on writes: whether a KVSET is applied (size, reserved keys, value
 * encoding, owner, ttl, condition), once per uuid however often it is retried, and what the
 * writer is told (KVACK for one write on the ROUTER, KVACKS for a KVWRITE batch). Plain CHP
 * writes (on the collector) go through the same decisions; nobody is told, a refusal is only
 * counted. No sockets.
 *
 * @module
 */
import { MAX_TTL_SECONDS } from '../options.ts';
import { BatchError, entrySize, packBatch, unpackBatch, type WireEntry } from '../protocol/batch.ts';
import { Command, isReservedKey, MSGPACK_ENCODING, Prop } from '../protocol/commands.ts';
import { EMPTY_FRAME, type ChpMessage } from '../protocol/message.ts';
import { encodeProperties, PropertiesError, PropertyView, type PropertyReader } from '../protocol/properties.ts';
import { encodeSequence, ZERO_SEQUENCE } from '../protocol/sequence.ts';
import { isValidValue } from '../protocol/values.ts';
import type { Counters } from './counters.ts';
import { WriteDedup, type WriteOutcome } from './dedup.ts';
import { isPeerId, type Presence } from './presence.ts';
import type { Settings } from './settings.ts';
import type { StoreFailure, UpdateLog } from './update-log.ts';

const KVACK = Buffer.from(Command.WriteAck);
const KVACKS = Buffer.from(Command.AckBatch);
const ACK_OK = encodeProperties([[Prop.Status, 'ok']]);
const NEWLINE = Buffer.from('\n');
/**
 * A policy refusal is kept as a `rejected` outcome whose detail starts with this (so the stored
 * and replicated outcome formats are unchanged); its KVACK says `status=unauthorized`.
 */
export const UNAUTHORIZED_MARK = 'unauthorized: ';

/** What the sequencer needs from the rest of the forwarder. */
export interface SequencerHooks {
  readonly log: UpdateLog;
  readonly presence: Presence;
  readonly counters: Counters;
  readonly settings: Pick<Settings, 'maxValueBytes' | 'checkValues' | 'dedupTtl' | 'dedupMax'>;
  /**
   * This forwarder's epoch: named in every KVACKS, so a peer never takes a sequence of this run
   * for one of another (read at each answer: a backup adopts its active's).
   */
  readonly epoch: string;
  /**
   * The write policy's verdict on a write (security/policy.ts): `undefined` to allow it, else
   * the refusal's text (naming the key and the identity). Absent: every write allowed.
   */
  readonly authorize?: (msg: ChpMessage) => string | undefined;
  /** A refused or conflicting outcome was remembered (a pair's active sends it to the backup). */
  readonly onOutcome?: (uuid: string, outcome: WriteOutcome) => void;
}

/** Decides on writes, once per uuid, and words the acknowledgements. */
export class Sequencer {
  readonly #hooks: SequencerHooks;
  #dedup: WriteDedup;
  /** Frame 3 of every KVACKS: `epoch=<this run>` (read-your-writes across a restart). */
  #ackHeader: Buffer = EMPTY_FRAME;
  #ackEpoch = '';

  constructor(hooks: SequencerHooks) {
    this.#hooks = hooks;
    this.#dedup = new WriteDedup({ ttl: hooks.settings.dedupTtl, max: hooks.settings.dedupMax });
  }

  /** Outcomes forced out of the de-duplication memory before their time (see {@link WriteDedup}). */
  get dedupEvictions(): number {
    return this.#dedup.evictions;
  }

  /** Whether a write with this uuid already has an outcome (a retry is answered from it). */
  remembers(uuid: Buffer): boolean {
    return uuid.length === 16 && this.#dedup.get(uuid.toString('latin1')) !== undefined;
  }

  /** Applies a write once per uuid: a retry gets the outcome of the first attempt. */
  write(msg: ChpMessage): WriteOutcome {
    const uuidKey = msg.uuid.length === 16 ? msg.uuid.toString('latin1') : undefined;
    if (uuidKey !== undefined) {
      const earlier = this.#dedup.get(uuidKey);
      if (earlier !== undefined) {
        this.#hooks.counters.events.duplicates++;
        return earlier;
      }
    }
    const { log } = this.#hooks;
    // A durable forwarder whose disk refuses writes (async mode, retrying): refused, and not
    // remembered, so the same write succeeds once there is room.
    if (log.failure !== undefined) return { status: 'rejected', detail: `${JSON.stringify(msg.key.toString('latin1'))} not stored: ${log.failure.message}` };
    const outcome = this.#decide(msg);
    if (uuidKey !== undefined) {
      this.#dedup.set(uuidKey, outcome);
      if (outcome.status !== 'ok') {
        log.rememberOutcome(uuidKey, outcome, Date.now());
        this.#hooks.onOutcome?.(uuidKey, outcome);
      }
    }
    return outcome;
  }

  /**
   * Applies a write and calls `done` with its final outcome once it is published: with a
   * durable forwarder, once on disk; a write the disk refused is then `rejected`.
   */
  writeThen(msg: ChpMessage, done: (outcome: WriteOutcome) => void): void {
    const outcome = this.write(msg);
    this.#hooks.log.whenPublished((failure) => {
      // Fenced (this server lost the active role): no answer; the writer retries at the new active.
      if (failure?.fenced) return;
      done(settledOutcome(outcome, failure, msg.key));
    });
  }

  /** Every write outcome still remembered, with the ms left of its time (a backup's full copy). */
  outcomes(): Generator<[string, WriteOutcome, number]> {
    return this.#dedup.entries();
  }

  /** Forgets every write outcome (a backup about to load its active's). */
  clearOutcomes(): void {
    this.#dedup = new WriteDedup({ ttl: this.#hooks.settings.dedupTtl, max: this.#hooks.settings.dedupMax });
  }

  /** Recovers a write outcome remembered on disk, for the rest of its time (`ageMs` old). */
  remember(uuid: string, outcome: WriteOutcome, ageMs: number): void {
    this.#dedup.set(uuid, outcome, this.#hooks.settings.dedupTtl - ageMs);
  }

  /** Forgets the outcome of a write that was undone (it never reached the disk): a retry applies it. */
  forget(uuid: Buffer): void {
    if (uuid.length === 16) this.#dedup.delete(uuid.toString('latin1'));
  }

  /** The KVACK frames for one write. */
  ack(uuid: Buffer, outcome: WriteOutcome): Buffer[] {
    return [KVACK, outcome.status === 'ok' ? encodeSequence(outcome.seq) : ZERO_SEQUENCE, uuid, ackProperties(outcome), EMPTY_FRAME];
  }

  /**
   * A KVWRITE body: every write in it, answered with one KVACKS (nothing if it held none) once
   * they are published (on disk, for a durable forwarder), whose properties name this run's epoch.
   */
  writeBatch(body: Buffer, reply: (frames: Buffer[]) => void): void {
    const { counters } = this.#hooks;
    const acks: WireEntry[] = [];
    const outcomes: Array<[key: Buffer, outcome: WriteOutcome]> = [];
    try {
      unpackBatch(body, (w) => {
        let outcome: WriteOutcome;
        let properties: PropertyReader | undefined;
        try {
          properties = new PropertyView(w.properties);
        } catch (err) {
          if (!(err instanceof PropertiesError)) throw err;
        }
        if (w.key.length === 0 || properties === undefined || (w.uuid.length !== 0 && w.uuid.length !== 16)) {
          counters.malformed(w.key.length === 0 ? 'empty-key' : properties === undefined ? 'properties' : 'uuid-size');
          outcome = { status: 'rejected', detail: 'malformed write' };
        } else {
          outcome = this.write({ key: w.key, sequence: 0, uuid: w.uuid, rawProperties: w.properties, properties, body: w.body });
        }
        outcomes.push([w.key, outcome]);
        acks.push({ key: w.key.length > 0 ? w.key : KVACK, sequence: 0, uuid: w.uuid, properties: EMPTY_FRAME, body: EMPTY_FRAME });
      });
    } catch (err) {
      if (!(err instanceof BatchError)) throw err;
      counters.malformed('batch');
    }
    if (acks.length === 0) return;
    this.#hooks.log.whenPublished((failure) => {
      if (failure?.fenced) return;
      let bytes = 0;
      for (let i = 0; i < acks.length; i++) {
        const [key, first] = outcomes[i]!;
        const outcome = settledOutcome(first, failure, key);
        const ack = acks[i]!;
        acks[i] = { ...ack, sequence: outcome.status === 'ok' ? outcome.seq : 0, properties: ackProperties(outcome) };
        bytes += entrySize(acks[i]!);
      }
      reply([KVACKS, ZERO_SEQUENCE, EMPTY_FRAME, this.#header(), packBatch(acks, bytes)]);
    });
  }

  /** Frame 3 of every KVACKS: `epoch=<epoch>`, built again when the epoch changes. */
  #header(): Buffer {
    const epoch = this.#hooks.epoch;
    if (epoch !== this.#ackEpoch) {
      this.#ackEpoch = epoch;
      this.#ackHeader = encodeProperties([[Prop.Epoch, epoch]]);
    }
    return this.#ackHeader;
  }

  #decide(msg: ChpMessage): WriteOutcome {
    const { counters, settings, log, presence } = this.#hooks;
    const key = msg.key.toString('latin1');
    const name = JSON.stringify(key);
    if (msg.body.length > settings.maxValueBytes) {
      counters.refused('value-too-large');
      return { status: 'rejected', detail: `value of ${msg.body.length} bytes for ${name} is over the limit of ${settings.maxValueBytes}` };
    }
    if (isReservedKey(key)) {
      // Stored, a key such as KTHXBAI would end a plain client's snapshot early; $peers/ is the
      // forwarder's own.
      counters.refused('reserved-key');
      return { status: 'rejected', detail: `key ${name} is reserved (protocol commands and $peers/)` };
    }
    const refusal = this.#hooks.authorize?.(msg);
    if (refusal !== undefined) {
      // Remembered by uuid like any refusal (and on disk, when durable): a replay gets it again.
      counters.events.unauthorized++;
      counters.events.rejected++;
      return { status: 'rejected', detail: UNAUTHORIZED_MARK + refusal };
    }
    if (settings.checkValues && msg.body.length > 0 && msg.properties.get(Prop.Encoding) === MSGPACK_ENCODING && !isValidValue(msg.body)) {
      // Stored, such a value would be given as raw bytes by every peer; refused at the door,
      // the writer hears of it (a clonekv writer) or it is dropped and counted (a plain one).
      counters.refused('value-encoding');
      return { status: 'rejected', detail: `value of ${name} is marked enc=msgpack but is not one valid msgpack value` };
    }
    const ownerProp = msg.properties.get(Prop.Owner);
    if (ownerProp !== undefined && !isPeerId(ownerProp)) {
      // The same rule as for beats: the owner names a presence key, `$peers/<owner>`, which
      // must stay a valid key (at most 255 bytes) or every snapshot would carry a bad one.
      counters.refused('owner');
      return { status: 'rejected', detail: `owner of ${name} is not a peer id (1 to 64 lowercase hex digits)` };
    }
    let ttlMs = 0;
    const ttl = msg.properties.get(Prop.Ttl);
    if (ttl !== undefined && msg.body.length > 0) {
      const seconds = Number(ttl);
      if (!Number.isFinite(seconds) || seconds < 0 || ttl.trim() === '' || seconds > MAX_TTL_SECONDS) {
        counters.refused('properties');
        return { status: 'rejected', detail: `ttl ${ttl} of ${name} is not a number of seconds from 0 to ${MAX_TTL_SECONDS}` };
      }
      ttlMs = Math.ceil(seconds * 1000);
    }
    const ifVersion = msg.properties.get(Prop.IfVersion);
    if (ifVersion !== undefined) {
      const expected = Number(ifVersion);
      if (!Number.isSafeInteger(expected) || expected < 0) {
        counters.refused('properties');
        return { status: 'rejected', detail: `if-version ${ifVersion} of ${name} is not a version number` };
      }
      const current = log.store.version(key);
      if (current !== expected) {
        counters.events.conflicts++;
        return { status: 'conflict', current };
      }
    }
    const owner = msg.body.length > 0 ? ownerProp : undefined;
    // An owner the forwarder has not heard from: present from now on, purged if it never beats.
    if (owner !== undefined) presence.registerOwner(owner);
    // Every property line must end in a newline (RFC 12); a writer that left the last one bare is
    // fixed here, once, so snapshots and live updates carry the same well-formed frame.
    const props = msg.rawProperties.length > 0 && msg.rawProperties[msg.rawProperties.length - 1] !== 0x0a
      ? Buffer.concat([msg.rawProperties, NEWLINE])
      : msg.rawProperties;
    return { status: 'ok', seq: log.append(msg.key, key, msg.uuid, props, msg.body, ttlMs, Date.now(), owner) };
  }
}

/** A write's outcome once settled: one the disk refused (undone from `fromSeq` on) is rejected. */
function settledOutcome(outcome: WriteOutcome, failure: StoreFailure | undefined, key: Buffer): WriteOutcome {
  if (failure === undefined || outcome.status !== 'ok' || outcome.seq < failure.fromSeq) return outcome;
  return { status: 'rejected', detail: `${JSON.stringify(key.toString('latin1'))} not stored: ${failure.error.message}` };
}

/** The properties of an acknowledgement: `status`, and `current` or `detail`. */
function ackProperties(outcome: WriteOutcome): Buffer {
  if (outcome.status === 'ok') return ACK_OK;
  if (outcome.status === 'conflict') {
    return encodeProperties([
      [Prop.Status, 'conflict'],
      [Prop.Current, String(outcome.current)],
    ]);
  }
  const unauthorized = outcome.detail.startsWith(UNAUTHORIZED_MARK);
  return encodeProperties([
    [Prop.Status, unauthorized ? 'unauthorized' : 'rejected'],
    [Prop.Detail, (unauthorized ? outcome.detail.slice(UNAUTHORIZED_MARK.length) : outcome.detail).replace(/[=\n]/g, ' ')],
  ]);
}
