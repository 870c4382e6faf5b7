/**
 * A peer's writes waiting for the forwarder: each has a uuid, a deadline and a retry schedule;
 * writes made in one turn of the event loop go out in one KVWRITE message (each write at most
 * once); an acknowledged write under the peer's subtree resolves only once the local map has
 * reached its sequence in the forwarder run that sequenced it (read-your-writes, also across a
 * forwarder restart). Once acknowledged, a write has no deadline any more; a write that times out
 * says whether it may have been applied (`maybeApplied`).
 *
 * With several plain CHP servers (a Binary Star pair), a write is published to the collector of
 * every server, each once (a passive backup keeps what it receives and applies it if it takes
 * over): a second copy to the same server would be sequenced twice. A copy is sent again to a
 * server only when that server's collector dropped and the next snapshot from it shows the write
 * was not applied. With clonekv forwarders, a write goes to the server in use only, and is sent
 * again with the same uuid (the forwarder, or the pair, de-duplicates it).
 *
 * @module
 */
import { randomBytes } from 'node:crypto';
import { ClonekvError, ConflictError, ErrorCode, InvalidOptionError, TimeoutError } from '../errors.ts';
import { DeadlineTimer } from '../deadline-timer.ts';
import { BatchError, entrySize, packBatch, unpackBatch, type WireEntry } from '../protocol/batch.ts';
import { durationOption, MAX_TTL_SECONDS } from '../options.ts';
import { Command, isReservedKey, MAX_KEY_BYTES, Prop } from '../protocol/commands.ts';
import { EMPTY_FRAME } from '../protocol/message.ts';
import { encodeProperties, PropertiesError, PropertyView, type PropertyReader } from '../protocol/properties.ts';
import { readSequence, ZERO_SEQUENCE } from '../protocol/sequence.ts';
import type { PeerStats } from '../types.ts';
import type { ServerKind } from './sync-machine.ts';
import type { MAX_SERVERS } from './servers.ts';

/**
 * Checks a key given to `set` or `delete` (anything may come from JavaScript callers): returns
 * its UTF-8 bytes, or the error to reject with (`CLONEKV_INVALID_KEY`), never a raw TypeError.
 */
export function checkKey(key: unknown): Buffer | ClonekvError {
  if (typeof key !== 'string') {
    return new ClonekvError(ErrorCode.InvalidKey, `invalid key: expected a string of 1 to 255 bytes of UTF-8, got ${key === null ? 'null' : typeof key}`);
  }
  const keyBytes = Buffer.from(key, 'utf8');
  if (keyBytes.length === 0 || keyBytes.length > MAX_KEY_BYTES) {
    return new ClonekvError(ErrorCode.InvalidKey, `invalid key ${JSON.stringify(key)}: keys are 1 to 255 bytes of UTF-8`);
  }
  if (isReservedKey(key)) return new ClonekvError(ErrorCode.InvalidKey, `key "${key}" is reserved by the protocol (commands and $peers/)`);
  return keyBytes;
}

/**
 * Checks the options of one write: an object whose `timeout` is a whole number of ms from 1 to
 * the longest timer wait (default `fallback`) and whose `ttl`, if any, is a positive number of
 * seconds up to {@link MAX_TTL_SECONDS}. Returns the timeout; throws `CLONEKV_INVALID_OPTION`
 * naming the option.
 */
export function checkWriteOptions(options: unknown, fallback: number): number {
  if (typeof options !== 'object' || options === null) {
    throw new InvalidOptionError('options', `expected an object, got ${options === null ? 'null' : typeof options}`);
  }
  const { timeout, ttl } = options as { timeout?: unknown; ttl?: unknown };
  if (ttl !== undefined) {
    if (typeof ttl !== 'number' || !Number.isFinite(ttl) || ttl <= 0 || ttl > MAX_TTL_SECONDS) {
      throw new InvalidOptionError('ttl', `expected a positive number of seconds up to ${MAX_TTL_SECONDS} (a year), got ${String(ttl)}`);
    }
  }
  return durationOption('timeout', timeout, fallback, 1);
}

/** A write waiting for the forwarder. */
interface PendingWrite {
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
  /** When it times out (Date.now clock; moved once after a pause), and the timeout it was given (ms). */
  deadline: number;
  readonly timeout: number;
  /** Whether its deadline was already moved once because the process had been paused. */
  graced: boolean;
  /** Whether it is in the KVWRITE being gathered for this turn (so it is not added twice). */
  queued: boolean;
  /** Whether it was handed to a socket at least once (a timeout then says "maybe applied"). */
  sent: boolean;
  /**
   * Bit i: sent to plain server i's collector and not known lost: over PUB a second copy is a
   * duplicate that a plain server would sequence again, so it is not re-sent there.
   */
  published: number;
  /**
   * Bit i: published to server i on a connection that has since dropped, with no echo yet: maybe
   * lost. Only a snapshot from server i settles it (see {@link PendingWrites.afterSnapshot}).
   */
  inDoubt: number;
  /** When it was last handed to a socket (ms). */
  sentAt: number;
  /** The sequence the forwarder assigned (once acknowledged). */
  seq: number;
  /**
   * The epoch of the forwarder run that assigned `seq`, when known: the sequence means something
   * only in that run's map.
   */
  epoch: string | undefined;
}

/** What pending writes need from the rest of the peer. */
export interface WriteRoute {
  /** What the server is; writes wait while it is `unknown`. */
  readonly kind: ServerKind;
  /** Whether a DEALER is open (writes to a clonekv forwarder wait for one). */
  readonly hasDealer: boolean;
  /** Sends one message on the DEALER. */
  request(frames: Buffer[]): void;
  /** How many servers the peer may use (at most {@link MAX_SERVERS}). */
  readonly servers: number;
  /** The server in use (index). */
  readonly server: number;
  /** Publishes a KVSET to plain server `server`'s collector. */
  publish(server: number, frames: Buffer[]): void;
  /** Whether plain server `server`'s collector has subscribed (what is published before is lost). */
  collectorReady(server: number): boolean;
  /** The last sequence applied locally. */
  readonly applied: number;
  /** The epoch of the forwarder run the local map comes from (`undefined`: not known, or a plain server). */
  readonly epoch: string | undefined;
  /** Whether a snapshot is loading (the map may be about to be replaced). */
  readonly syncing: boolean;
  /** Whether the peer is closing. */
  readonly closing: boolean;
}

/** Settings of {@link PendingWrites}. */
export interface PendingWritesSettings {
  /** The snapshot endpoint of the server in use, named in errors (may be a getter). */
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

/**
 * A deadline timer that fires this much later than the deadline it was armed for (ms) means the
 * process was paused (SIGSTOP, a long GC, a suspended VM): the answers may be on the wire or
 * unread, so the writes get one more turn instead of a timeout.
 */
const PAUSE_LATENESS = 200;

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
  /**
   * Acknowledged writes whose sequence the local map has reached, but in another forwarder run
   * than the one that sequenced them: the next snapshot settles them.
   */
  #otherRun: PendingWrite[] = [];
  /** The last KVACKS header read, and the epoch it names (acknowledgements repeat the same header). */
  #ackHeader: { raw: Buffer; epoch: string | undefined } = { raw: EMPTY_FRAME, epoch: undefined };
  #closed = false;
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

  /** Whether some write was published to a plain server and not echoed yet (a snapshot may hold it). */
  get unechoed(): boolean {
    return this.#pending.size > 0 && this.#route.kind === 'plain';
  }

  /**
   * Plain server `server`'s collector went away (it stopped or restarted): what was published
   * to it and not echoed may be lost there. Such a write is not sent to that server again until
   * a snapshot from it shows it was not applied (see {@link seenInSnapshot},
   * {@link afterSnapshot}).
   */
  collectorLost(server: number): void {
    const bit = 1 << server;
    for (const pw of this.#pending.values()) {
      if (pw.published & bit && pw.seq === 0) {
        pw.published &= ~bit;
        pw.inDoubt |= bit;
      }
    }
  }

  /**
   * A snapshot entry carried `uuid` at `seq`: a write of ours that went to a plain server's
   * collector (this one's, or another's that this one took over from) was applied.
   */
  seenInSnapshot(uuid: Buffer, seq: number): void {
    const pw = uuid.length === 16 ? this.#pending.get(uuid.toString('latin1')) : undefined;
    if (pw && (pw.published | pw.inDoubt) !== 0 && pw.seq === 0) {
      pw.seq = seq;
      this.#awaitApply(pw);
    }
  }

  /**
   * A snapshot from the server in use was applied: writes still in doubt there were lost with
   * its previous run and go to it again.
   */
  afterSnapshot(): void {
    const bit = 1 << this.#route.server;
    let again = false;
    for (const pw of this.#pending.values()) {
      if (!(pw.inDoubt & bit)) continue;
      pw.inDoubt &= ~bit;
      again = true;
    }
    if (again) this.resendAll();
  }

  /**
   * Queues a write and sends it when it can. Resolves with its sequence, or rejects.
   *
   * @param props - the write's properties (encoding, owner, ttl, ifVersion)
   * @param sign - adds a signature to `props` for this uuid (a peer given an identity)
   * @param uuid - the write's uuid, when it was taken earlier ({@link newUuid}: signed already)
   */
  add(key: string, keyBytes: Buffer, inSubtree: boolean, props: Array<[string, string]>, body: Buffer, ifVersion: number | undefined, timeout: number, sign?: (uuid: Buffer) => void, uuid = this.#nextUuid()): Promise<number> {
    sign?.(uuid);
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
        graced: false,
        queued: false,
        sent: false,
        published: 0,
        inDoubt: 0,
        sentAt: 0,
        seq: 0,
        epoch: undefined,
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
      pw.epoch = this.#route.epoch; // it came back in the stream the local map follows
      this.#awaitApply(pw);
    }
  }

  /** A KVACK message (5 frames); a malformed one is counted and dropped. */
  onAck(frames: Buffer[]): void {
    if (frames.length !== 5 || frames[2]!.length !== 16 || frames[1]!.length !== 8) {
      this.#stats.malformed++;
      return;
    }
    this.#settleAck(frames[2]!, readSequence(frames[1]!), frames[3]!, undefined);
  }

  /**
   * A KVACKS message: many acknowledgements packed in one body. Its header (frame 3) names the
   * epoch of the forwarder run that sequenced them (absent from older forwarders).
   */
  onAckBatch(frames: Buffer[]): void {
    const epoch = this.#epochOf(frames[3] ?? EMPTY_FRAME);
    try {
      unpackBatch(frames[4] ?? EMPTY_FRAME, (a) => this.#settleAck(a.uuid, a.sequence, a.properties, epoch));
    } catch (err) {
      if (!(err instanceof BatchError)) throw err;
      this.#stats.malformed++;
    }
  }

  /** Resolves writes whose sequence the local map has reached, in the run that sequenced them. */
  settle(): void {
    const a = this.#awaitingApply;
    if (this.#awaitingHead === a.length || this.#route.syncing) return;
    const last = this.#route.applied;
    const epoch = this.#route.epoch;
    while (this.#awaitingHead < a.length && a[this.#awaitingHead]!.seq <= last) {
      const pw = a[this.#awaitingHead++]!;
      if (!this.#pending.has(pw.uuidKey)) continue;
      if (pw.epoch === undefined || pw.epoch === epoch) pw.resolve(pw.seq);
      else this.#otherRun.push(pw); // a sequence of another run: this map has not reached it
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
   * A snapshot from the run `epoch` replaced the local map (call before {@link settle}). An
   * acknowledged write of that run keeps waiting until the map reaches its sequence; one that
   * another run sequenced (the forwarder restarted: `epochChanged`, or its acknowledgement named
   * another epoch) can never be applied now, as that run's map is gone: it was sequenced, so it
   * resolves.
   */
  snapshotApplied(epoch: string | undefined, epochChanged: boolean): void {
    const waiting = [...this.#awaitingApply.slice(this.#awaitingHead), ...this.#otherRun];
    this.#awaitingApply = [];
    this.#awaitingHead = 0;
    this.#otherRun = [];
    for (const pw of waiting) {
      if (!this.#pending.has(pw.uuidKey)) continue;
      const sameRun = pw.epoch !== undefined ? pw.epoch === epoch : !epochChanged;
      if (sameRun) this.#awaitApply(pw);
      else pw.resolve(pw.seq);
    }
  }

  /**
   * Stops the timers and settles every pending write (the peer closes): a write the forwarder
   * already sequenced resolves with its sequence (a retry would apply it twice); the others
   * reject with `err`.
   */
  close(err: Error): void {
    this.#closed = true;
    clearInterval(this.#retryTimer);
    this.#writeTimer.stop();
    for (const pw of [...this.#pending.values()]) {
      if (pw.seq > 0) pw.resolve(pw.seq);
      else pw.reject(err);
    }
  }

  /** The epoch named in a KVACKS header, if any; a malformed header is counted and names none. */
  #epochOf(header: Buffer): string | undefined {
    if (header.length === 0) return undefined;
    const last = this.#ackHeader;
    if (header.equals(last.raw)) return last.epoch;
    let epoch: string | undefined;
    try {
      epoch = new PropertyView(header).get(Prop.Epoch);
    } catch (err) {
      if (!(err instanceof PropertiesError)) throw err;
      this.#stats.malformed++;
    }
    this.#ackHeader = { raw: Buffer.from(header), epoch };
    return epoch;
  }

  /**
   * Applies one acknowledgement: resolves (once applied locally) or rejects the pending write.
   * `epoch`: the forwarder run that sent it, when the acknowledgement says.
   */
  #settleAck(uuid: Buffer, seq: number, rawProps: Buffer, epoch: string | undefined): void {
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
      if (!pw.inSubtree) return pw.resolve(seq);
      if (pw.seq > 0) return; // acknowledged before (the answer to a retry)
      pw.seq = seq;
      pw.epoch = epoch;
      // Read-your-writes: resolve only once the local map has caught up with the write, in the
      // forwarder run that sequenced it (a restarted forwarder counts from 0 again: its sequence
      // says nothing about a map from the previous run).
      const route = this.#route;
      if (!route.syncing && route.applied >= seq && (epoch === undefined || epoch === route.epoch)) pw.resolve(seq);
      else this.#awaitApply(pw);
    } else if (status === 'conflict') {
      pw.reject(new ConflictError(pw.key, pw.ifVersion ?? 0, Number(props.get(Prop.Current) ?? 0)));
    } else if (status === 'unauthorized') {
      pw.reject(new ClonekvError(ErrorCode.Unauthorized, `forwarder at ${this.#s.endpoint} refused the write to "${pw.key}" (not authorized): ${props.get(Prop.Detail) ?? 'no reason given'}`));
    } else {
      pw.reject(new ClonekvError(ErrorCode.Rejected, `forwarder at ${this.#s.endpoint} refused the write to "${pw.key}": ${props.get(Prop.Detail) ?? 'no reason given'}`));
    }
  }

  /**
   * A write's uuid: this peer's random 64-bit prefix and a counter. Unique across peers (random
   * prefix) and within one (counter), at a fraction of the cost of 16 fresh random bytes.
   */
  /** A new uuid for a write (given to {@link add} later, once the write is signed). */
  newUuid(): Buffer {
    return this.#nextUuid();
  }

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

  /**
   * The deadline timer fired. Timers run before the poll phase of the same turn of the event
   * loop, so answers that already arrived may be unread: expire only after one round of I/O.
   */
  #expire(): void {
    const firedAt = Date.now();
    setImmediate(() => this.#expireDue(firedAt));
  }

  #expireDue(firedAt: number): void {
    if (this.#closed) return;
    const now = Date.now();
    let next = Infinity;
    for (const pw of [...this.#pending.values()]) {
      if (pw.seq > 0) continue; // sequenced: its deadline no longer applies, the map will reach it
      if (pw.deadline > now) {
        next = Math.min(next, pw.deadline);
        continue;
      }
      if (!pw.graced && firedAt - pw.deadline > PAUSE_LATENESS) {
        // Far past its deadline: this process was paused, so its answer may be on the way or
        // still unread (our sockets' I/O stopped too). The pause does not count: send it again
        // (the forwarder answers a duplicate from its de-duplication) and give it its timeout
        // once more.
        pw.graced = true;
        pw.deadline = now + pw.timeout;
        this.#send(pw);
        next = Math.min(next, pw.deadline);
        continue;
      }
      pw.reject(new TimeoutError(pw.key, pw.timeout, this.#s.endpoint, pw.sent));
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
      // Released twice in one turn (a retry and a resync, a heartbeat and a snapshot end): it
      // goes out once.
      if (pw.queued) return;
      // Writes issued in the same turn of the event loop go out together in one KVWRITE
      // message (setImmediate rather than a microtask: a burst of incoming messages handled in
      // one turn, each releasing a write, then still makes one message).
      pw.queued = true;
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
      // Each server gets one copy; only a snapshot that proved it lost there sends it again. A
      // PUB drops what it sends before the server subscribed: held until then.
      let published = false;
      for (let i = 0; i < route.servers; i++) {
        const bit = 1 << i;
        if ((pw.published | pw.inDoubt) & bit || !route.collectorReady(i)) continue;
        route.publish(i, pw.frames);
        pw.published |= bit;
        published = true;
      }
      if (!published) return;
    }
    if (pw.sent) this.#stats.writeRetries++;
    pw.sent = true;
    pw.sentAt = Date.now();
  }

  #flush(): void {
    const writes = this.#outgoing;
    this.#outgoing = [];
    for (const pw of writes) pw.queued = false;
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
