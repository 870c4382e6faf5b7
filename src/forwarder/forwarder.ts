/**
 * The forwarder: the one sequencer. It receives writes (KVSET on the collector from plain CHP
 * peers, or on the snapshot ROUTER from clonekv peers, which get an acknowledgement back),
 * stamps each with the next sequence number, republishes it, answers snapshot requests,
 * heartbeats and expires ttl values.
 *
 * Topology (P = base port):
 * ```
 *   peers' DEALER ──► ROUTER :P    ICANHAZ? → KVSYNC or KVBATCH..., KTHXBAI (or a delta); KVSET → KVACK;
 *                                  KVWRITE → KVACKS; KVBEAT → (KVPRESENT); KVBYE; KVSTATS; KVHISTORY
 *   peers' SUB    ◄── XPUB   :P+1  KVPUB, HUGZ (XPUB: subscriptions are seen, for gap detection)
 *   plain PUB     ──► SUB    :P+2  KVSET (plain CHP writers)
 * ```
 *
 * This module only wires the parts together and dispatches by command; each job has its
 * module: {@link Sequencer} (write decisions, de-duplication, acknowledgements),
 * {@link UpdateLog} (sequence, store, publish, heads and heartbeats), {@link SnapshotServer},
 * {@link Presence}, {@link Expiry} and {@link Counters}.
 *
 * @module
 */
import { randomBytes } from 'node:crypto';
import { ClonekvError, ClosedError, ErrorCode } from '../errors.ts';
import { Lifecycle } from '../lifecycle.ts';
import { Command, isReservedKey, JOIN_TOPIC_PREFIX, MAX_KEY_BYTES, MSGPACK_ENCODING, PEER_ID_PREFIX, Prop } from '../protocol/commands.ts';
import { decodeMessage, EMPTY_FRAME, parseResumeRequest, type ChpMessage } from '../protocol/message.ts';
import { encodeProperties } from '../protocol/properties.ts';
import { encodeSequence } from '../protocol/sequence.ts';
import { encodeValue } from '../protocol/values.ts';
import { RouterOutbox } from '../transport/router-outbox.ts';
import { SendQueue } from '../transport/send-queue.ts';
import { bindForwarderSockets, bindStateSockets, receiveLoop, releaseForwarderSockets, releaseStateSockets, type ForwarderSockets, type StateSockets } from '../transport/sockets.ts';
import { DurableStore } from '../store/durable-store.ts';
import type { UpdateRecord } from '../store/update-record.ts';
import type { Durability, Endpoints, ForwarderOptions, ForwarderPeer, ForwarderRecovery, ForwarderStats } from '../types.ts';
import { Counters } from './counters.ts';
import { Expiry } from './expiry.ts';
import { answerHistory } from './history-server.ts';
import { Presence } from './presence.ts';
import { Sequencer } from './sequencer.ts';
import { forwarderSettings, type Settings } from './settings.ts';
import { SnapshotServer } from './snapshot-server.ts';
import { UpdateLog, type StoreFailure } from './update-log.ts';
import { Pair, type PairEvent } from './pair/pair.ts';
import { checkFreshness, checkWrite } from '../security/signature.ts';
import { VerifyAhead, type AddCheck } from '../security/verify-ahead.ts';
import { BatchError, unpackBatch } from '../protocol/batch.ts';
import { PropertiesError, PropertyView } from '../protocol/properties.ts';
import { policyOption, type Policy } from '../security/policy.ts';
import { CurveGuard } from './curve-guard.ts';

const KVSTATS = Buffer.from(Command.Stats);
const KVPASSIVE = Buffer.from(Command.Passive);
const CLONEKV_PEER_ID = Buffer.from(PEER_ID_PREFIX);
const MSGPACK_PROPS = encodeProperties([[Prop.Encoding, MSGPACK_ENCODING]]);
/** Most replies held for one peer on the ROUTER before that peer is given up on. */
const MAX_QUEUED_REPLIES = 100_000;
/** Most messages waiting for the publisher before new ones are dropped (and counted). */
const MAX_QUEUED_PUBLISHED = 1_000_000;
/** Most snapshot requests a passive pair member holds (answered if it takes over); the oldest go first. */
const MAX_HELD_REQUESTS = 1000;
/** Frame 1 of a KVWRITE (a batch of writes whose signatures are checked ahead). */
const WRITE_BATCH = Buffer.from(Command.WriteBatch);
/** ROUTER commands that write (or register a peer): a passive pair member drops them. */
const WRITE_COMMANDS: ReadonlySet<string> = new Set([Command.WriteBatch, Command.PeerBeat, Command.PeerBye]);

/**
 * The epoch of this run. A durable forwarder keeps the last run's, so its peers resume, unless
 * peers may hold updates the disk lacks: an `async` run that did not shut down cleanly (or whose
 * last writes were refused). A `sync` run publishes only what is on disk, so its epoch survives
 * even a crash.
 */
function chooseEpoch(durable: DurableStore | undefined, durability: Durability): string {
  const previous = durable?.previous;
  void durability;
  if (previous === undefined || previous.epoch === '') return randomBytes(8).toString('hex');
  if (previous.durability === 'async' && !previous.clean) return randomBytes(8).toString('hex');
  return previous.epoch;
}

/** A handler of one ROUTER command: the sender's routing id and the frames after it. */
type RouterHandler = (from: Buffer, frames: Buffer[]) => void;

/**
 * A CHP forwarder with clonekv's extensions. Start one with {@link Forwarder.start}.
 *
 * @example
 * ```ts
 * await using fwd = await Forwarder.start({ port: 0 });
 * console.log(fwd.endpoint); // tcp://127.0.0.1:41235
 * ```
 */
export class Forwarder implements AsyncDisposable {
  readonly #settings: Settings;
  readonly #sockets: ForwarderSockets;
  #epoch: string;
  /** The data directory (a durable forwarder), else `undefined`. */
  readonly #durable: DurableStore | undefined;
  #recovery: ForwarderRecovery | undefined;
  readonly #life = new Lifecycle();
  readonly #counters = new Counters();
  readonly #publish: SendQueue;
  readonly #outbox: RouterOutbox;
  readonly #log: UpdateLog;
  readonly #expiry: Expiry;
  readonly #presence: Presence;
  readonly #sequencer: Sequencer;
  readonly #snapshots: SnapshotServer;
  /** ROUTER commands by frame 1; anything else is a KVSET. */
  readonly #commands: ReadonlyMap<string, RouterHandler>;
  readonly #longestCommand: number;
  readonly #heartbeat: NodeJS.Timeout;
  readonly #purgeTimer: NodeJS.Timeout;
  readonly #loops: Promise<void>[];
  /** A member of a primary/backup pair; `undefined` standalone. */
  readonly #pair: Pair | undefined;
  readonly #stateSockets: StateSockets | undefined;
  /** CURVE on the three sockets (and the allow-list's ZAP handler); `undefined` without. */
  readonly #curve: CurveGuard | undefined;
  /** Snapshot requests held while passive: [routing id, frames after it]. */
  #held: Array<[Buffer, Buffer[]]> = [];
  readonly #pairListeners = new Set<(event: PairEvent) => void>();
  /** The write policy in force (`undefined`: every write allowed); replaced whole by a reload. */
  #policy: Policy | undefined;
  /**
   * Writes wait here, in arrival order, while their signatures are checked on the threadpool
   * (with a policy); each is then decided as before (security/verify-ahead.ts).
   */
  readonly #ahead = new VerifyAhead((signer, key) => {
    const writer = this.#policy?.writer(signer);
    return writer !== undefined && writer.mayWrite(key) ? writer.keyObject : undefined;
  }, () => {}); // as the receive loops do: a handler bug must not stop the forwarder

  private constructor(settings: Settings, sockets: ForwarderSockets, durable: DurableStore | undefined, stateSockets: StateSockets | undefined, curve: CurveGuard | undefined) {
    this.#settings = settings;
    this.#curve = curve;
    this.#sockets = sockets;
    this.#durable = durable;
    this.#epoch = chooseEpoch(durable, settings.durability);
    this.#policy = settings.policy;
    const counters = this.#counters;
    const dropped = (n: number): void => void (counters.events.dropped += n);
    this.#publish = new SendQueue(sockets.publisher, MAX_QUEUED_PUBLISHED, dropped, () => dropped(1));
    this.#outbox = new RouterOutbox(sockets.router, MAX_QUEUED_REPLIES, dropped);
    this.#stateSockets = stateSockets;
    this.#expiry = new Expiry(() => this.#log, counters, () => this.#isActive());
    this.#log = new UpdateLog({
      send: (frames) => this.#publish.send(frames),
      onDeadline: (at) => this.#expiry.arm(at),
      onOwner: (key, owner) => this.#presence.written(key, owner),
      ownerOf: (key) => this.#presence.ownerOf(key),
      restoreOwner: (key, owner) => this.#presence.recover(key, owner),
      onUndone: (record) => this.#sequencer.forget(record.uuid),
      onLocal: (timed) => this.#pair?.onLocal(timed),
      onReplicaBroken: () => this.#pair?.onReplicaBroken(),
      beforeCommit: () => this.#pair?.flush(),
      counters,
      history: { maxEntries: settings.historyMax, maxBytes: settings.historyBytes },
      ...(durable ? { journal: durable, durability: settings.durability } : {}),
    });
    // KVPRESENT goes after any snapshot in flight to that peer, never inside it.
    const reply = (to: Buffer, frames: Buffer[]): void => this.#snapshots.sendAfterSnapshot(to, frames);
    this.#presence = new Presence({ log: this.#log, counters, reply, peerTimeout: settings.peerTimeout });
    const self = this;
    this.#sequencer = new Sequencer({
      log: this.#log,
      presence: this.#presence,
      counters,
      settings,
      // A backup adopts its active's epoch: read at each answer.
      get epoch() {
        return self.#epoch;
      },
      onOutcome: (uuid, outcome) => this.#pair?.onOutcome(uuid, outcome),
      authorize: (msg) => this.#authorize(msg),
    });
    const log = this.#log;
    this.#snapshots = new SnapshotServer({
      // What is published, not what waits for the disk (see UpdateLog.snapshot); the key count
      // (which only sizes the choice between a delta and a snapshot) may include what waits.
      store: {
        snapshot: (prefix: string) => log.snapshot(prefix),
        get sequence() {
          return log.publishedSequence;
        },
        entries: () => log.store.entries(),
        get size() {
          return log.store.size;
        },
      },
      history: log.history,
      outbox: this.#outbox,
      counters,
      get epoch() {
        return self.#epoch;
      },
      joinWait: settings.joinWait,
      snapshotBatch: settings.snapshotBatch,
      ...(settings.pair ? { pair: () => (this.#pair ? { term: this.#pair.term, lineage: this.#pair.lineage } : undefined) } : {}),
    });
    this.#commands = new Map<string, RouterHandler>([
      [Command.SnapshotRequest, (from, f) => this.#onSnapshotRequest(from, f)],
      [Command.WriteBatch, (from, f) => this.#decoded(from, f, (m) => this.#sequencer.writeBatch(m.body, (acks) => this.#outbox.send(from, acks)))],
      [Command.PeerBeat, (from, f) => this.#decoded(from, f, (m) => this.#presence.beat(from, m))],
      [Command.PeerBye, (from, f) => this.#decoded(from, f, (m) => this.#presence.bye(m))],
      [Command.Stats, (from, f) => this.#decoded(from, f, (m) => this.#sendStats(from, m.uuid))],
      [Command.History, (from, f) => this.#decoded(from, f, (m) => this.#sendHistory(from, m))],
    ]);
    this.#longestCommand = Math.max(...[...this.#commands.keys()].map((c) => c.length));
    // Recovered before the receive loops start: nothing is served from a half-loaded map.
    if (durable) this.#recover(durable);
    this.#pair =
      settings.pair && stateSockets
        ? new Pair({
            configured: settings.pair.role,
            partner: settings.pair.partner,
            partnerTimeout: settings.pair.partnerTimeout,
            heartbeatInterval: settings.heartbeatInterval,
            dedupTtl: settings.dedupTtl,
            sockets: stateSockets,
            log: this.#log,
            sequencer: this.#sequencer,
            presence: this.#presence,
            durable,
            epoch: { get: () => this.#epoch, set: (epoch) => this.#adoptEpoch(epoch) },
            held: () => this.#held.length,
            onActive: () => this.#onActive(),
            emit: (event) => {
              for (const listener of this.#pairListeners) listener(event);
            },
          })
        : undefined;
    const ignore = (): void => {};
    this.#loops = [
      receiveLoop(sockets.router, (f) => this.#onRouter(f), ignore),
      receiveLoop(sockets.collector, (f) => this.#onCollector(f), ignore),
      receiveLoop(sockets.publisher, (f) => this.#onSubscription(f), ignore),
    ];
    // A passive pair member sends no HUGZ (peers must not take it for a live server) and purges
    // nobody (its active does, and it receives the deletes).
    this.#heartbeat = setInterval(() => {
      if (this.#isActive()) this.#log.heartbeat(this.#epoch, this.#pair?.term);
    }, settings.heartbeatInterval);
    this.#purgeTimer = setInterval(() => {
      if (this.#isActive()) this.#presence.purgeSilent(Date.now());
    }, Math.max(5, Math.floor(settings.peerTimeout / 4)));
  }

  /**
   * Binds the three sockets and starts serving.
   *
   * @throws `CLONEKV_INVALID_OPTION` for a bad option, `CLONEKV_TRANSPORT` if a port is taken
   */
  static async start(options: ForwarderOptions = {}): Promise<Forwarder> {
    const settings = forwarderSettings(options);
    const durable = settings.dataDir === undefined ? undefined : DurableStore.open(settings.dataDir, { ...settings, recentSince: Date.now() - settings.dedupTtl });
    let sockets: ForwarderSockets;
    let curve: CurveGuard | undefined;
    try {
      curve = settings.curve === undefined ? undefined : await CurveGuard.start(settings.curve, settings.curveAllow);
      sockets = await bindForwarderSockets(
        settings.bind,
        settings.port,
        { router: settings.snapshotHwm, publisher: settings.publisherHwm, collector: settings.collectorHwm },
        curve?.server,
      );
    } catch (err) {
      // Not started: the directory is left as the last run left it.
      curve?.close();
      durable?.close(false);
      throw err;
    }
    let stateSockets: StateSockets | undefined;
    if (settings.pair) {
      try {
        stateSockets = await bindStateSockets(settings.bind, settings.pair.statePort, settings.pair.partner, curve?.server);
      } catch (err) {
        await releaseForwarderSockets(sockets);
        curve?.close();
        durable?.close(false);
        throw err;
      }
    }
    let fwd: Forwarder | undefined;
    try {
      fwd = new Forwarder(settings, sockets, durable, stateSockets, curve);
      durable?.begin(fwd.#epoch, settings.durability);
      return fwd;
    } catch (err) {
      if (fwd) await fwd.close();
      else {
        sockets.router.close();
        sockets.publisher.close();
        sockets.collector.close();
        if (stateSockets) void releaseStateSockets(stateSockets);
        curve?.close();
        durable?.close(false);
      }
      throw err;
    }
  }

  /** `tcp://ADDRESS:P`: what peers and `--server` take. */
  get endpoint(): string {
    return `tcp://${this.#settings.bind}:${this.#sockets.port}`;
  }

  /** The three bound endpoints. */
  get endpoints(): Endpoints {
    const base = `tcp://${this.#settings.bind}:`;
    const p = this.#sockets.port;
    return { snapshot: `${base}${p}`, publisher: `${base}${p + 1}`, collector: `${base}${p + 2}` };
  }

  /** The base port P actually bound. */
  get port(): number {
    return this.#sockets.port;
  }

  /** This run's id, announced in HUGZ and KTHXBAI; a peer that sees it change resyncs. */
  get epoch(): string {
    return this.#epoch;
  }

  /**
   * `standalone`, or a pair member's role now: `active` (serves and applies writes) or
   * `passive` (follows its partner; also while still deciding at start).
   */
  get role(): 'standalone' | 'active' | 'passive' {
    return this.#pair === undefined ? 'standalone' : this.#pair.role;
  }

  /** A pair member's term (grows at every takeover); 0 standalone. */
  get term(): number {
    return this.#pair?.term ?? 0;
  }

  /** The state endpoint this pair member bound (`tcp://ADDRESS:PORT`); `undefined` standalone. */
  get stateEndpoint(): string | undefined {
    return this.#stateSockets === undefined ? undefined : `tcp://${this.#settings.bind}:${this.#stateSockets.port}`;
  }

  /**
   * Calls `listener` on each role or replication change of a pair member (`now active`,
   * `now passive`, `backup absent`, `backup connected`); returns a function that stops it.
   */
  onPairEvent(listener: (event: PairEvent) => void): () => void {
    this.#pairListeners.add(listener);
    return () => this.#pairListeners.delete(listener);
  }

  /** The last assigned sequence number. */
  get sequence(): number {
    return this.#log.store.sequence;
  }

  /** Keys held. */
  get size(): number {
    return this.#log.store.size;
  }

  /**
   * What a durable forwarder recovered from its data directory at start (`undefined` in memory):
   * keys, sequence, whether the epoch was kept, and what was dropped to repair damage.
   */
  get recovery(): ForwarderRecovery | undefined {
    return this.#recovery;
  }

  /** The data directory, if durable. */
  get dataDir(): string | undefined {
    return this.#durable?.directory;
  }

  /** Counters (a copy). */
  stats(): ForwarderStats {
    const pair = this.#pair?.stats();
    const stats = this.#counters.stats({
      sequence: this.#log.store.sequence,
      keys: this.#log.store.size,
      peers: this.#presence.size,
      subscriptions: this.#log.heads.size,
      epoch: this.#epoch,
      dedupEvictions: this.#sequencer.dedupEvictions,
      historyOldest: this.#log.history.oldest,
      historySize: this.#log.history.size,
    });
    if (pair !== undefined) stats.pair = pair;
    if (this.#curve !== undefined) stats.curve = this.#curve.stats();
    return stats;
  }

  /** The write policy in force, if any. */
  get policy(): Policy | undefined {
    return this.#policy;
  }

  /**
   * How far a signed write's timestamp may lie from this forwarder's clock: `past` ms before
   * (a replay bound: at most `dedupTtl` minus `future`, so every write accepted is still
   * remembered by uuid when the bound ends) and `future` ms after (clock skew).
   */
  get signatureWindow(): { past: number; future: number } {
    const future = Math.min(Math.floor(this.#settings.dedupTtl / 4), 30_000);
    return { past: this.#settings.dedupTtl - future, future };
  }

  /**
   * Replaces the write policy without a restart: read again from its file (no argument), or
   * from `source` (a file path or a {@link Policy}). All or nothing: a file that cannot be read
   * or is not a valid policy throws `CLONEKV_INVALID_OPTION` naming the file and what is wrong,
   * and the policy in force stays. Writes already decided keep their outcome.
   *
   * @returns the policy now in force
   */
  reloadPolicy(source?: string | Policy): Policy {
    this.#assertOpen();
    const from = source ?? this.#policy?.file;
    if (from === undefined) throw new ClonekvError(ErrorCode.InvalidOption, 'invalid option "policy": this forwarder has no policy file to reload; give one');
    const policy = policyOption(from)!;
    this.#policy = policy;
    return policy;
  }

  /** Live clonekv peers (those whose heartbeats arrive), with the number of keys each owns. */
  peers(): ForwarderPeer[] {
    return this.#presence.list();
  }

  /**
   * Sequences and publishes values in-process, as if written by a peer: for seeding a forwarder
   * from a file or a test. All or nothing: every entry is checked (key, reserved names, value
   * encoding and size) before any is applied. Yields to the event loop between chunks so a
   * large load does not stall serving.
   *
   * @param onProgress - called with the number loaded so far after each chunk
   * @returns the number of entries loaded
   * @throws `CLONEKV_INVALID_KEY` or `CLONEKV_INVALID_VALUE` naming the first bad entry (nothing
   *   is loaded then); `CLONEKV_CLOSED` if the forwarder is closed; `CLONEKV_STORAGE` if a
   *   durable forwarder could not write (chunks already on disk stay loaded)
   */
  async load(entries: Iterable<readonly [string, unknown]>, onProgress?: (loaded: number) => void): Promise<number> {
    this.#assertOpen();
    if (!this.#isActive()) throw new ClonekvError(ErrorCode.Rejected, 'cannot load into a passive pair member: load into the active one');
    const checked: Array<[Buffer, string, Buffer]> = [];
    for (const [key, value] of entries) checked.push(this.#checkLoadEntry(key, value));
    let n = 0;
    for (const [keyBytes, key, body] of checked) {
      this.#log.append(keyBytes, key, EMPTY_FRAME, MSGPACK_PROPS, body, 0, Date.now(), undefined);
      if (++n % 65_536 === 0) {
        onProgress?.(n);
        await new Promise((r) => setImmediate(r));
        this.#assertOpen();
      }
    }
    onProgress?.(n);
    // A durable forwarder: loaded means on disk.
    const failure = await new Promise<StoreFailure | undefined>((resolve) => this.#log.whenPublished(resolve));
    if (failure !== undefined) throw failure.error;
    return n;
  }

  /** Stops serving and closes every socket and timer. Idempotent. */
  close(): Promise<void> {
    return this.#life.close(async () => {
      this.#ahead.close();
      // What is appended goes to disk first (marked clean only if all of it did); writers
      // waiting for it are answered into the outbox, closed just below.
      const flushed = this.#log.flush();
      this.#log.stop();
      clearInterval(this.#heartbeat);
      clearInterval(this.#purgeTimer);
      this.#expiry.stop();
      this.#snapshots.close();
      this.#held = [];
      await this.#pair?.close();
      this.#outbox.close();
      this.#publish.clear();
      // Closed, then waited for until the ports can be bound again (a forwarder started again on
      // the same ports at once must find them free). Not unbound: zeromq.js unbinds on a worker
      // thread while this thread may still be reading the socket, and zeromq sockets are not
      // thread-safe (libzmq asserted in the XPUB's subscription trie and in its pipes).
      await releaseForwarderSockets(this.#sockets);
      this.#curve?.close();
      await Promise.allSettled(this.#loops);
      this.#durable?.close(flushed);
    });
  }

  /** Resolves once the forwarder is closed. Never rejects. */
  closed(): Promise<void> {
    return this.#life.closed();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /**
   * Loads what the data directory holds: the map (and with it the owners of ephemeral keys,
   * each given `peerTimeout` from now to come back), the sequence, the write outcomes still
   * within `dedupTtl` (successes from the log, refusals from their own table), and the history.
   */
  #recover(durable: DurableStore): void {
    const started = Date.now();
    const now = Date.now();
    const presence = this.#presence;
    let owned = 0;
    const keys = this.#log.recover(
      (function* () {
        // Presence keys first come with their owner's registration (name, since).
        const later: Array<[string, string]> = [];
        for (const e of durable.entries()) {
          const [key, entry, owner] = e;
          if (owner !== undefined) {
            const known = Presence.registration(key, owner, entry.body);
            if (known !== undefined) presence.recover(key, owner, now, known);
            else later.push([key, owner]);
            owned++;
          }
          yield e;
        }
        for (const [key, owner] of later) presence.recover(key, owner, now);
      })(),
      durable.sequence,
    );
    const since = now - this.#settings.dedupTtl;
    let outcomes = 0;
    for (const [uuid, seq, at] of durable.recentWrites) {
      this.#sequencer.remember(uuid, { status: 'ok', seq }, now - at);
      outcomes++;
    }
    for (const [uuid, at, outcome] of durable.outcomes(since)) {
      this.#sequencer.remember(uuid, outcome, now - at);
      outcomes++;
    }
    this.#onRecovered(durable.records(durable.firstSequence), durable.firstSequence);
    const previous = durable.previous;
    this.#recovery = {
      keys,
      sequence: durable.sequence,
      epochKept: previous !== undefined && previous.epoch === this.#epoch,
      newDirectory: previous === undefined,
      previousRunClean: previous?.clean ?? true,
      ownedKeys: owned,
      writeOutcomes: outcomes,
      historyFrom: durable.firstSequence,
      repairs: [...durable.repairs],
      durationMs: Date.now() - started,
    };
  }

  /**
   * Hook: the retained history read back from disk at start, oldest first (lazy: nothing is read
   * unless iterated). The retained-history module refills itself here.
   */
  /**
   * Refills the retained history from the log on disk, so a peer that was away across the
   * restart resumes by delta. The history then vouches for every update after the one before the
   * oldest on disk; a gap in what is read (a damaged record dropped) restarts it there.
   */
  #onRecovered(records: Iterable<UpdateRecord>, firstSequence: number): void {
    const history = this.#log.history;
    history.reset(firstSequence - 1);
    for (const record of records) history.append(record);
  }

  /** Standalone, or the active member of a pair: may serve snapshots, apply writes, expire, purge. */
  #isActive(): boolean {
    return this.#pair === undefined || this.#pair.role === 'active';
  }

  /** A pair member took the active role: what is overdue expires now, owners get `peerTimeout` to beat here, held requests are served. */
  #onActive(): void {
    const now = Date.now();
    this.#presence.touchAll(now);
    // Overdue keys go before any request is served: a deadline means the same on both servers.
    this.#expiry.expireNow();
    const held = this.#held;
    this.#held = [];
    for (const [from, frames] of held) this.#onSnapshotRequest(from, frames);
  }

  /** A backup takes its active's epoch (recorded in the data directory when durable). */
  #adoptEpoch(epoch: string): void {
    if (epoch === this.#epoch) return;
    this.#epoch = epoch;
    try {
      this.#durable?.begin(epoch, this.#settings.durability);
    } catch {
      // Left with the old epoch on disk: a restart then takes a new epoch, and peers resync.
    }
  }

  /**
   * The write policy's verdict on a write: signed by an identity allowed that key, validly, and
   * within the replay window (a replay within the window is answered by uuid before this).
   */
  #authorize(msg: ChpMessage): string | undefined {
    const policy = this.#policy;
    if (policy === undefined) return undefined;
    const refusal = checkWrite(policy, msg.key, msg.uuid, msg.body, msg.properties, this.#ahead);
    if (refusal !== undefined) return refusal.message;
    // The uuid is what answers a replay within the window: a signed write without one is refused.
    if (msg.uuid.length !== 16) return `signed write to ${JSON.stringify(msg.key.toString('utf8'))} has no uuid: under a policy every write needs one (replay protection)`;
    const { past, future } = this.signatureWindow;
    return checkFreshness(msg.key, msg.properties, Date.now(), past, future)?.message;
  }

  /** A write (or peer beat) that reached a passive pair member: dropped and counted, never applied. */
  #passiveDrop(): void {
    this.#counters.events.passiveDrops++;
  }

  #assertOpen(): void {
    if (this.#life.closing) throw new ClosedError('forwarder');
  }

  /** One entry of {@link load}, checked as a peer's write would be: [key bytes, latin1 key, body]. */
  #checkLoadEntry(key: unknown, value: unknown): [Buffer, string, Buffer] {
    const name = JSON.stringify(key);
    if (typeof key !== 'string') throw new ClonekvError(ErrorCode.InvalidKey, `cannot load key ${String(name)}: keys are strings`);
    const keyBytes = Buffer.from(key, 'utf8');
    if (keyBytes.length === 0 || keyBytes.length > MAX_KEY_BYTES) {
      throw new ClonekvError(ErrorCode.InvalidKey, `cannot load key ${name}: a key is 1 to ${MAX_KEY_BYTES} bytes, this one is ${keyBytes.length}`);
    }
    const latin1 = keyBytes.toString('latin1');
    if (isReservedKey(latin1)) throw new ClonekvError(ErrorCode.InvalidKey, `cannot load key ${name}: it is reserved (protocol commands and $peers/)`);
    let body: Buffer;
    try {
      body = encodeValue(value);
    } catch (err) {
      throw new ClonekvError(ErrorCode.InvalidValue, `cannot load the value of ${name}: ${(err as Error).message}`, { cause: err });
    }
    if (body.length > this.#settings.maxValueBytes) {
      throw new ClonekvError(ErrorCode.InvalidValue, `cannot load the value of ${name}: ${body.length} bytes is over maxValueBytes (${this.#settings.maxValueBytes})`);
    }
    return [keyBytes, latin1, body];
  }

  // ---- input ------------------------------------------------------------------------------

  /** A plain CHP writer's KVSET, in arrival order after its signature is checked ahead. */
  #onCollector(frames: Buffer[]): Promise<void> | undefined {
    return this.#ahead.schedule(() => this.#collectorWrite(frames), this.#policy === undefined ? undefined : (add) => this.#checkAheadMessage(frames, add));
  }

  /** ROUTER traffic, in arrival order after the signatures of the writes in it are checked ahead. */
  #onRouter(frames: Buffer[]): Promise<void> | undefined {
    return this.#ahead.schedule(() => this.#routerMessage(frames), this.#policy === undefined ? undefined : (add) => {
      const command = frames[1];
      if (frames.length === 6 && command !== undefined && command.equals(WRITE_BATCH)) return this.#checkAheadBatch(frames[5]!, add);
      if (frames.length === 6 && (command === undefined || command.length > this.#longestCommand || !this.#commands.has(command.toString('latin1')))) this.#checkAheadMessage(frames.slice(1), add);
    });
  }

  /** Starts the signature check of one KVSET (unless its uuid already has an outcome: a retry). */
  #checkAheadMessage(frames: Buffer[], add: AddCheck): void {
    const d = decodeMessage(frames, Number.MAX_SAFE_INTEGER);
    if (!d.ok || this.#sequencer.remembers(d.message.uuid)) return;
    add(d.message.key, d.message.uuid, d.message.body, d.message.properties);
  }

  /** Starts the signature checks of the writes in a KVWRITE body (those not already decided). */
  #checkAheadBatch(body: Buffer, add: AddCheck): void {
    try {
      unpackBatch(body, (w) => {
        if (w.key.length === 0 || w.uuid.length !== 16 || this.#sequencer.remembers(w.uuid)) return;
        try {
          add(w.key, w.uuid, w.body, new PropertyView(w.properties));
        } catch (err) {
          if (!(err instanceof PropertiesError)) throw err;
        }
      });
    } catch (err) {
      if (!(err instanceof BatchError)) throw err;
    }
  }

  /** A plain CHP writer's KVSET: decided like any write; a refusal is only counted. */
  #collectorWrite(frames: Buffer[]): void {
    if (!this.#isActive()) return this.#passiveDrop();
    const d = decodeMessage(frames, Number.MAX_SAFE_INTEGER);
    if (!d.ok) return this.#counters.malformed(d.reason);
    this.#sequencer.write(d.message);
  }

  /** ROUTER traffic: a command from the table, or else a KVSET answered with a KVACK. */
  #routerMessage(frames: Buffer[]): void {
    const from = frames[0]!;
    const command = frames[1];
    // Command names are short: only a short frame 1 needs a look-up (and a string).
    const name = command !== undefined && command.length <= this.#longestCommand ? command.toString('latin1') : undefined;
    const handler = name === undefined ? undefined : this.#commands.get(name);
    if (!this.#isActive() && (handler === undefined || WRITE_COMMANDS.has(name!))) return this.#passiveDrop();
    if (handler) return handler(from, frames.slice(1));
    this.#decoded(from, frames.slice(1), (m) => this.#sequencer.writeThen(m, (outcome) => this.#outbox.send(from, this.#sequencer.ack(m.uuid, outcome))));
  }

  /** Decodes a five-frame message for `use`; a malformed one is counted (and refused to a writer). */
  #decoded(from: Buffer, frames: Buffer[], use: (msg: ChpMessage) => void): void {
    const d = decodeMessage(frames, Number.MAX_SAFE_INTEGER);
    if (d.ok) return use(d.message);
    this.#counters.malformed(d.reason);
    // A clonekv writer is told, so it fails fast instead of timing out.
    if (d.reason !== 'frame-count' && frames[2]?.length === 16) {
      this.#outbox.send(from, this.#sequencer.ack(frames[2], { status: 'rejected', detail: d.reason }));
    }
  }

  /**
   * ICANHAZ?: two frames (RFC 12), or three from a clonekv peer that asks to resume (`since`,
   * `epoch`); any other shape, or a third frame that does not read as such, is counted and
   * dropped.
   */
  #onSnapshotRequest(from: Buffer, frames: Buffer[]): void {
    if (this.#pair !== undefined && !this.#pair.requested()) {
      // Passive: held, answered only if this member takes over (bounded: the oldest go first).
      // One per requester: a peer that asks again replaces its earlier request.
      this.#held = this.#held.filter(([id]) => !id.equals(from));
      this.#held.push([from, frames]);
      if (this.#held.length > MAX_HELD_REQUESTS) this.#held.shift();
      // A clonekv peer is told to go to the partner while that one serves: it would otherwise
      // wait for an answer only a takeover brings (after a blip of its own connection, or with
      // this member listed first). A plain client cannot read that: it is only held.
      if (this.#pair.partnerServing() && from.subarray(0, CLONEKV_PEER_ID.length).equals(CLONEKV_PEER_ID)) {
        this.#counters.events.passiveNotices++;
        const props = encodeProperties([[Prop.Role, 'passive'], [Prop.Term, String(this.#pair.term)]]);
        this.#outbox.send(from, [KVPASSIVE, encodeSequence(0), EMPTY_FRAME, props, EMPTY_FRAME]);
      }
      return;
    }
    if (frames.length === 2) return this.#snapshots.request(from, frames[1]!);
    const resume = frames.length === 3 ? parseResumeRequest(frames[2]!) : undefined;
    if (!resume) return this.#counters.malformed('snapshot-request');
    this.#snapshots.request(from, frames[1]!, resume);
  }

  /** KVHISTORY: answered on the ROUTER; a malformed request is counted (`properties`) and dropped. */
  #sendHistory(to: Buffer, m: ChpMessage): void {
    const answer = answerHistory(this.#log.history, this.#log.store, m);
    if (answer) this.#outbox.send(to, answer);
    else this.#counters.malformed('properties');
  }

  /** KVSTATS: answered with the request's uuid, so the peer matches the answer to its request. */
  #sendStats(to: Buffer, uuid: Buffer): void {
    const body = Buffer.from(JSON.stringify({ ...this.stats(), peerList: this.peers() }));
    this.#outbox.send(to, [KVSTATS, encodeSequence(this.#log.publishedSequence), uuid, EMPTY_FRAME, body]);
  }

  /** XPUB subscription messages: a join topic (see {@link SnapshotServer}) or a prefix's head. */
  #onSubscription(frames: Buffer[]): void {
    const f = frames[0];
    if (!f || f.length === 0 || (f[0] !== 0 && f[0] !== 1)) return this.#counters.malformed('subscription');
    const topic = f.subarray(1).toString('latin1');
    const subscribe = f[0] === 1;
    if (topic.startsWith(JOIN_TOPIC_PREFIX)) return this.#snapshots.joined(topic.slice(JOIN_TOPIC_PREFIX.length), subscribe);
    if (subscribe) this.#log.heads.subscribe(topic, this.#log.publishedSequence);
    else this.#log.heads.unsubscribe(topic);
  }
}
