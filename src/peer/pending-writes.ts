/**
 * A peer's writes waiting for the forwarder: each has a uuid, a deadline and a retry schedule;
 * writes made in one turn of the event loop go out in one KVWRITE message; an acknowledged write
 * under the peer's subtree resolves only once the local map has reached its sequence
 * (read-your-writes).
 *
 * @module
 */
import { randomBytes } from 'node:crypto';
import { ClonekvError, ConflictError, ErrorCode, TimeoutError } from '../errors.ts';
import { DeadlineTimer } from '../deadline-timer.ts';
import { BatchError, entrySize, packBatch, unpackBatch, type WireEntry } from '../protocol/batch.ts';
import { Command, Prop } from '../protocol/commands.ts';
import { EMPTY_FRAME } from '../protocol/message.ts';
import { encodeProperties, PropertiesError, PropertyView, type PropertyReader } from '../protocol/properties.ts';
import { readSequence, ZERO_SEQUENCE } from '../protocol/sequence.ts';
import type { PeerStats } from '../types.ts';

/** What the peer knows of the server: a clonekv forwarder, a plain CHP server, or not yet. */
export type ServerKind = 'unknown' | 'clonekv' | 'plain';

/** A write waiting for the forwarder. */
export interface PendingWrite {
  readonly key: string;
  readonly keyBytes: Buffer;
  /** The uuid as a map key. */
  readonly uuidKey: string;
  readonly frames: Buffer[];
  /** The expected version of a conditional write. */
  readonly ifVersion: number | undefined;
  /** Whether the write is owned by this peer (ephemeral). */
  readonly ephemeral: boolean;
  readonly inSubtree: boolean;
  readonly resolve: (seq: number) => void;
  readonly reject: (err: Error) => void;
  /** When it times out (Date.now clock), and the timeout it was given (ms). */
  readonly deadline: number;
  readonly timeout: number;
  sent: boolean;
  /** When it was last handed to a socket (ms). */
  sentAt: number;
  /** The sequence the forwarder assigned (once acknowledged). */
  seq: number;
}

/** What pending writes need from the rest of the peer. */
export interface WriteRoute {
  /** What the server is; writes wait while it is `unknown`. */
  readonly kind: ServerKind;
  /** Whether a DEALER is open (writes to a clonekv forwarder wait for one). */
  readonly hasDealer: boolean;
  /** Sends one message on the DEALER. */
  request(frames: Buffer[]): void;
  /** Publishes a KVSET to a plain server's collector. */
  publish(frames: Buffer[]): void;
  /** The last sequence applied locally. */
  readonly applied: number;
  /** Whether a snapshot is loading (the map may be about to be replaced). */
  readonly syncing: boolean;
  /** Whether the peer is closing. */
  readonly closing: boolean;
}

/** Settings of {@link PendingWrites}. */
export interface PendingWritesSettings {
  /** The forwarder's snapshot endpoint, named in errors. */
  readonly endpoint: string;
  /** Interval between retries of a pending write, ms. */
  readonly retryInterval: number;
}

const ACK_OK = encodeProperties([[Prop.Status, 'ok']]);
const ACK_OK_PROPS: Map<string, string> = new Map([[Prop.Status, 'ok']]);
const WRITE_BATCH = Buffer.from(Command.WriteBatch);
/** Most writes packed in one KVWRITE message, and most bytes. */
const WRITE_BATCH_MAX = 512;
const WRITE_BATCH_BYTES = 256 * 1024;

/** The writes of one peer that the forwarder has not settled yet. */
export class PendingWrites {
  readonly #s: PendingWritesSettings;
  readonly #route: WriteRoute;
  readonly #stats: PeerStats;
  readonly #pending = new Map<string, PendingWrite>();
  /**
   * Acknowledged writes under the subtree, waiting for the local map to reach them, in sequence
   * order (acknowledgements mostly arrive in order, so insertion is almost always an append).
   */
  #awaitingApply: PendingWrite[] = [];
  #awaitingHead = 0;
  #outgoing: PendingWrite[] = [];
  readonly #uuidPrefix = randomBytes(8);
  #uuidCounter = 0;
  readonly #retryTimer: NodeJS.Timeout;
  /**
   * One timer for every pending write's deadline (not one per write: at tens of thousands of
   * writes a second, per-write timers were a large share of the garbage), armed for the earliest.
   */
  readonly #writeTimer = new DeadlineTimer(() => this.#expire());

  constructor(settings: PendingWritesSettings, route: WriteRoute, stats: PeerStats) {
    this.#s = settings;
    this.#route = route;
    this.#stats = stats;
    this.#retryTimer = setInterval(() => this.#retry(), settings.retryInterval);
  }

  /** Writes not settled yet. */
  get size(): number {
    return this.#pending.size;
  }

  /**
   * Queues a write and sends it when it can. Resolves with its sequence, or rejects.
   *
   * @param props - the write's properties (encoding, owner, ttl, ifVersion)
   */
  add(key: string, keyBytes: Buffer, inSubtree: boolean, props: Array<[string, string]>, body: Buffer, ifVersion: number | undefined, timeout: number): Promise<number> {
    const uuid = this.#nextUuid();
    const uuidKey = uuid.toString('latin1');
    return new Promise<number>((resolve, reject) => {
      const pw: PendingWrite = {
        key,
        uuidKey,
        keyBytes,
        frames: [keyBytes, ZERO_SEQUENCE, uuid, encodeProperties(props), body],
        ifVersion,
        ephemeral: props.some(([name]) => name === Prop.Owner),
        inSubtree,
        resolve: (seq) => {
          this.#pending.delete(uuidKey);
          resolve(seq);
        },
        reject: (err) => {
          this.#pending.delete(uuidKey);
          reject(err);
        },
        deadline: Date.now() + timeout,
        timeout,
        sent: false,
        sentAt: 0,
        seq: 0,
      };
      this.#pending.set(uuidKey, pw);
      this.#stats.writes++;
      this.#writeTimer.arm(pw.deadline);
      this.#send(pw);
    });
  }

  /** (Re)sends every write not yet acknowledged: a new DEALER, or the server kind just learnt. */
  resendAll(): void {
    for (const pw of this.#pending.values()) this.#send(pw);
  }

  /**
   * An update carrying `uuid` was applied at `seq`: if it is one of ours, that is its
   * acknowledgement (the only one a plain CHP server gives).
   */
  onEcho(uuid: Buffer, seq: number): void {
    if (uuid.length !== 16 || this.#pending.size === 0) return;
    const pw = this.#pending.get(uuid.toString('latin1'));
    if (pw && pw.seq === 0) {
      pw.seq = seq;
      this.#awaitApply(pw);
    }
  }

  /** A KVACK message (5 frames); a malformed one is counted and dropped. */
  onAck(frames: Buffer[]): void {
    if (frames.length !== 5 || frames[2]!.length !== 16 || frames[1]!.length !== 8) {
      this.#stats.malformed++;
      return;
    }
    this.#settleAck(frames[2]!, readSequence(frames[1]!), frames[3]!);
  }

  /** A KVACKS message: many acknowledgements packed in one body. */
  onAckBatch(frames: Buffer[]): void {
    try {
      unpackBatch(frames[4] ?? EMPTY_FRAME, (a) => this.#settleAck(a.uuid, a.sequence, a.properties));
    } catch (err) {
      if (!(err instanceof BatchError)) throw err;
      this.#stats.malformed++;
    }
  }

  /** Resolves writes whose sequence the local map has reached. */
  settle(): void {
    const a = this.#awaitingApply;
    if (this.#awaitingHead === a.length || this.#route.syncing) return;
    const last = this.#route.applied;
    while (this.#awaitingHead < a.length && a[this.#awaitingHead]!.seq <= last) {
      const pw = a[this.#awaitingHead++]!;
      if (this.#pending.has(pw.uuidKey)) pw.resolve(pw.seq);
    }
    if (this.#awaitingHead === a.length) {
      this.#awaitingApply = [];
      this.#awaitingHead = 0;
    } else if (this.#awaitingHead > 1024) {
      this.#awaitingApply = a.slice(this.#awaitingHead);
      this.#awaitingHead = 0;
    }
  }

  /**
   * The forwarder restarted (new epoch): writes the previous run sequenced but this peer had not
   * applied yet can never be applied now (that run's map is gone). They were sequenced, so they
   * resolve.
   */
  resolveAwaiting(): void {
    for (const pw of this.#awaitingApply.slice(this.#awaitingHead)) if (this.#pending.has(pw.uuidKey)) pw.resolve(pw.seq);
    this.#awaitingApply = [];
    this.#awaitingHead = 0;
  }

  /** Stops the timers and rejects every pending write with `err` (the peer closes). */
  close(err: Error): void {
    clearInterval(this.#retryTimer);
    this.#writeTimer.stop();
    for (const pw of [...this.#pending.values()]) pw.reject(err);
  }

  /** Applies one acknowledgement: resolves (once applied locally) or rejects the pending write. */
  #settleAck(uuid: Buffer, seq: number, rawProps: Buffer): void {
    const pw = uuid.length === 16 ? this.#pending.get(uuid.toString('latin1')) : undefined;
    if (!pw) return; // a duplicate ack for a write already settled
    let props: PropertyReader;
    try {
      props = rawProps.equals(ACK_OK) ? ACK_OK_PROPS : new PropertyView(rawProps);
    } catch (err) {
      if (!(err instanceof PropertiesError)) throw err;
      this.#stats.malformed++;
      return;
    }
    const status = props.get(Prop.Status);
    if (status === 'ok') {
      if (seq <= 0) return;
      // Read-your-writes: resolve only once the local map has caught up with the write.
      if (!pw.inSubtree || (this.#route.applied >= seq && !this.#route.syncing)) pw.resolve(seq);
      else if (pw.seq === 0) {
        pw.seq = seq;
        this.#awaitApply(pw);
      }
    } else if (status === 'conflict') {
      pw.reject(new ConflictError(pw.key, pw.ifVersion ?? 0, Number(props.get(Prop.Current) ?? 0)));
    } else {
      pw.reject(new ClonekvError(ErrorCode.Rejected, `forwarder at ${this.#s.endpoint} refused the write to "${pw.key}": ${props.get(Prop.Detail) ?? 'no reason given'}`));
    }
  }

  /**
   * A write's uuid: this peer's random 64-bit prefix and a counter. Unique across peers (random
   * prefix) and within one (counter), at a fraction of the cost of 16 fresh random bytes.
   */
  #nextUuid(): Buffer {
    const uuid = Buffer.allocUnsafe(16);
    this.#uuidPrefix.copy(uuid, 0);
    const n = ++this.#uuidCounter;
    uuid.writeUInt32BE(Math.floor(n / 0x1_0000_0000), 8);
    uuid.writeUInt32BE(n >>> 0, 12);
    return uuid;
  }

  #awaitApply(pw: PendingWrite): void {
    const a = this.#awaitingApply;
    let i = a.length;
    while (i > this.#awaitingHead && a[i - 1]!.seq > pw.seq) i--;
    if (i === a.length) a.push(pw);
    else a.splice(i, 0, pw);
  }

  #expire(): void {
    const now = Date.now();
    let next = Infinity;
    for (const pw of [...this.#pending.values()]) {
      if (pw.deadline <= now) pw.reject(new TimeoutError(pw.key, pw.timeout, this.#s.endpoint));
      else next = Math.min(next, pw.deadline);
    }
    if (next < Infinity) this.#writeTimer.arm(next);
  }

  #retry(): void {
    const due = Date.now() - this.#s.retryInterval;
    for (const pw of this.#pending.values()) if (pw.sentAt <= due) this.#send(pw);
  }

  #send(pw: PendingWrite): void {
    if (pw.seq > 0) return; // acknowledged, waiting to be applied locally
    const route = this.#route;
    if (route.kind === 'unknown') return; // sent once the forwarder has told what it is
    if (route.kind === 'clonekv') {
      if (!route.hasDealer) return;
      // Writes issued in the same turn of the event loop go out together in one KVWRITE
      // message (setImmediate rather than a microtask: a burst of incoming messages handled in
      // one turn, each releasing a write, then still makes one message).
      this.#outgoing.push(pw);
      if (this.#outgoing.length === 1) setImmediate(() => this.#flush());
    } else {
      if (pw.ifVersion !== undefined || pw.ephemeral || !pw.inSubtree) {
        pw.reject(
          new ClonekvError(
            ErrorCode.Unsupported,
            `cannot confirm the write to "${pw.key}": the server at ${this.#s.endpoint} is a plain CHP server, ` +
              (pw.ifVersion !== undefined
                ? 'which cannot check ifVersion'
                : pw.ephemeral
                  ? 'which has no ephemeral (owned) values'
                  : "and the key is outside this peer's subtree"),
          ),
        );
        return;
      }
      route.publish(pw.frames);
    }
    if (pw.sent) this.#stats.writeRetries++;
    pw.sent = true;
    pw.sentAt = Date.now();
  }

  #flush(): void {
    const writes = this.#outgoing;
    this.#outgoing = [];
    const route = this.#route;
    if (!route.hasDealer || route.closing) return;
    let batch: WireEntry[] = [];
    let bytes = 0;
    const flush = (): void => {
      route.request([WRITE_BATCH, ZERO_SEQUENCE, EMPTY_FRAME, EMPTY_FRAME, packBatch(batch, bytes)]);
      batch = [];
      bytes = 0;
    };
    for (const pw of writes) {
      if (pw.seq > 0 || !this.#pending.has(pw.uuidKey)) continue; // settled meanwhile
      const [key, , uuid, properties, body] = pw.frames as [Buffer, Buffer, Buffer, Buffer, Buffer];
      const e: WireEntry = { key, sequence: 0, uuid, properties, body };
      const size = entrySize(e);
      if (batch.length > 0 && (batch.length >= WRITE_BATCH_MAX || bytes + size > WRITE_BATCH_BYTES)) flush();
      batch.push(e);
      bytes += size;
    }
    if (batch.length > 0) flush();
  }
}
