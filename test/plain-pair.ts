/**
 * A Binary Star pair of plain CHP servers (the Clone pattern's failover arrangement, ZeroMQ
 * guide chapter 5, as /work/shared/protocol.md restates it), written from the protocol
 * description with raw zeromq sockets; nothing from clonekv is used. Tests run clonekv peers
 * against it.
 *
 * ```
 *   primary                                   backup
 *   ROUTER :P   ICANHAZ? → KVSYNC*, KTHXBAI   ROUTER :Q   (ignored while passive)
 *   XPUB   :P+1 KVPUB, HUGZ (while active) ──► SUB (follows the primary's updates)
 *   SUB    :P+2 KVSET from clients            SUB :Q+2 KVSET from clients → pending list
 *   PUB  state ─────────────────────────────► SUB state   (each server's state, every heartbeat)
 *   SUB  state ◄───────────────────────────── PUB state
 * ```
 *
 * Binary Star states: PRIMARY and BACKUP (starting), ACTIVE, PASSIVE. A starting primary
 * becomes ACTIVE when it hears the backup (or, alone, when a client asks once the backup has
 * been silent for `timeout`); a starting backup becomes PASSIVE when it hears an ACTIVE
 * primary. A PASSIVE server becomes ACTIVE only when its partner has been silent for `timeout`
 * AND a client asks (a snapshot request arriving then, which it answers); every other snapshot
 * request it receives is ignored.
 *
 * While passive, the backup follows the primary's publisher (applies its updates, with their
 * sequence numbers) and keeps the KVSETs clients send it in a pending list keyed by uuid
 * (bounded: the oldest goes first), from which each update the primary publishes removes its
 * uuid. On takeover it applies and publishes what is still pending, in the order received,
 * except updates the primary superseded since (the key changed after the update arrived: not
 * replayed as a new value) and values whose ttl ran out. A ttl is kept as an absolute deadline,
 * computed when the update is sequenced (or received, for a pending one); what a server
 * publishes carries the time left, so the deadline means the same on both servers.
 */
import type { TestContext } from 'node:test';
import * as zmq from 'zeromq';
import { bindServerSockets, EMPTY, propMap, received, seqFrame } from './raw-sockets.ts';
import { serialSender, type Item } from './plain-server.ts';

/** Binary Star states. */
export type StarState = 'primary' | 'backup' | 'active' | 'passive';

/** Settings of a pair. */
export interface PairSettings {
  /** State exchange and HUGZ interval, ms. */
  readonly heartbeat: number;
  /** Partner silence after which it is taken as gone, ms (default 4 heartbeats). */
  readonly timeout?: number;
  /** The backup's partner timeout when it differs (a backup slow to take over). */
  readonly backupTimeout?: number;
  /** Most client updates the backup keeps pending (default 1000). */
  readonly maxPending?: number;
}

/** One update a server sequenced, for the tests' counts. */
export interface Sequenced {
  readonly key: string;
  readonly seq: number;
  readonly uuid: string;
  /** `primary`: sequenced by the primary and followed; `client`: a KVSET applied here; `replay`: a pending update applied at takeover; `expiry`. */
  readonly how: 'follow' | 'client' | 'replay' | 'expiry';
}

interface Stored extends Item {
  /** Absolute deadline (ms since 1970) of a ttl value. */
  readonly expiresAt: number | undefined;
}

interface Pending {
  readonly key: string;
  readonly uuid: Buffer;
  readonly props: Buffer;
  readonly body: Buffer;
  /** The server's sequence when it arrived: a key changed after it supersedes it. */
  readonly seqAtReceipt: number;
  readonly expiresAt: number | undefined;
}

/** One server of the pair. */
export class PairServer {
  readonly configured: 'primary' | 'backup';
  state: StarState;
  port = 0;
  seq = 0;
  readonly map = new Map<string, Stored>();
  /** Every update this server applied, in order (followed, client, replayed, expired). */
  readonly log: Sequenced[] = [];
  /** Client updates waiting for the primary's publication (backup while passive), by uuid (latin1). */
  readonly pending = new Map<string, Pending>();
  /** Pending updates dropped because the list was full. */
  pendingDropped = 0;
  /** Pending updates not replayed at takeover: superseded or expired. */
  staleSkipped = 0;
  /** Snapshot requests ignored (passive, or not yet allowed to take over). */
  ignoredRequests = 0;
  /** Snapshot requests answered. */
  snapshots = 0;
  /** Subscriptions seen on the publisher. */
  subscriptions = 0;
  /** Called at takeover, after the pending updates were replayed and before the request that caused it is answered. */
  onTakeover: (() => void) | undefined;
  /** While true, client KVSETs are received and dropped (a server about to die before sequencing them). */
  dropWrites = false;
  /** Client KVSETs received on the collector, by uuid (hex): how many copies. */
  readonly received = new Map<string, number>();
  readonly #s: Required<PairSettings>;
  readonly #timeout: number;
  #router!: zmq.Router;
  #pub!: zmq.XPublisher;
  #collector!: zmq.Subscriber;
  #sendRouter!: (f: Buffer[]) => Promise<void>;
  #sendPub!: (f: Buffer[]) => Promise<void>;
  readonly #statePub = new zmq.Publisher({ linger: 0 });
  readonly #stateSub = new zmq.Subscriber({ linger: 0 });
  #sendState!: (f: Buffer[]) => Promise<void>;
  /** The backup's SUB on the primary's publisher. */
  #follow: zmq.Subscriber | undefined;
  #timer: NodeJS.Timeout | undefined;
  #loops: Array<Promise<void>> = [];
  /** When the partner was last heard (ms), and in what state. */
  #partnerHeard = 0;
  partnerState: StarState | undefined;
  #closed = false;

  private constructor(configured: 'primary' | 'backup', settings: Required<PairSettings>) {
    this.configured = configured;
    this.state = configured;
    this.#s = settings;
    this.#timeout = configured === 'backup' && settings.backupTimeout > 0 ? settings.backupTimeout : settings.timeout;
  }

  /** `tcp://127.0.0.1:P`, what a Peer takes as `server`. */
  get endpoint(): string {
    return `tcp://127.0.0.1:${this.port}`;
  }

  /** Binds the three CHP sockets and the state publisher. */
  static async create(configured: 'primary' | 'backup', settings: Required<PairSettings>): Promise<PairServer> {
    const s = new PairServer(configured, settings);
    const sockets = await bindServerSockets(0);
    sockets.collector.subscribe();
    s.port = sockets.port;
    s.#router = sockets.router;
    s.#pub = sockets.pub;
    s.#collector = sockets.collector;
    s.#sendRouter = serialSender(s.#router);
    s.#sendPub = serialSender(s.#pub);
    await s.#statePub.bind('tcp://127.0.0.1:*');
    s.#sendState = serialSender(s.#statePub);
    return s;
  }

  get stateEndpoint(): string {
    return this.#statePub.lastEndpoint!;
  }

  /** Connects to the partner (its state publisher and, for the backup, its CHP publisher) and starts. */
  start(partner: PairServer): void {
    this.#stateSub.connect(partner.stateEndpoint);
    this.#stateSub.subscribe();
    this.#partnerHeard = Date.now();
    if (this.configured === 'backup') {
      const follow = new zmq.Subscriber({ linger: 0 });
      follow.connect(`tcp://127.0.0.1:${partner.port + 1}`);
      follow.subscribe();
      this.#follow = follow;
      this.#loops.push(this.#followPrimary(follow));
    }
    this.#loops.push(this.#serveRouter(), this.#serveCollector(), this.#watchPartner(), this.#drainXpub());
    this.#timer = setInterval(() => this.#tick(), this.#s.heartbeat);
  }

  #tick(): void {
    void this.#sendState([Buffer.from(this.state)]).catch(() => {});
    if (this.state !== 'active') return;
    void this.#sendPub([Buffer.from('HUGZ'), seqFrame(this.seq), EMPTY, EMPTY, EMPTY]).catch(() => {});
    const now = Date.now();
    for (const [key, e] of this.map) {
      if (e.expiresAt !== undefined && e.expiresAt <= now) this.#apply(key, EMPTY, EMPTY, EMPTY, undefined, 'expiry');
    }
  }

  /** Whether the partner has been silent for the timeout. */
  get partnerSilent(): boolean {
    return Date.now() - this.#partnerHeard >= this.#timeout;
  }

  async #watchPartner(): Promise<void> {
    for await (const [frame] of received(this.#stateSub)) {
      this.#partnerHeard = Date.now();
      const peer = frame?.toString() as StarState | undefined;
      this.partnerState = peer;
      // The Binary Star transitions on the partner's state.
      if (this.state === 'primary' && (peer === 'backup' || peer === 'passive')) this.state = 'active';
      else if (this.state === 'primary' && peer === 'active') this.state = 'passive';
      else if (this.state === 'backup' && peer === 'active') this.state = 'passive';
      else if (this.state === 'passive' && (peer === 'primary' || peer === 'backup')) this.#takeOver();
    }
  }

  /** A client asked: whether this server serves it now (taking over if the rules allow). */
  #clientRequest(): boolean {
    if (this.state === 'active') return true;
    if ((this.state === 'passive' || this.state === 'primary') && this.partnerSilent) {
      this.#takeOver();
      return true;
    }
    return false;
  }

  #takeOver(): void {
    this.state = 'active';
    this.#follow?.close();
    this.#follow = undefined;
    const now = Date.now();
    for (const p of this.pending.values()) {
      const current = this.map.get(p.key);
      const superseded = current !== undefined ? current.seq > p.seqAtReceipt : this.#deletedSince(p.key, p.seqAtReceipt);
      if (superseded || (p.expiresAt !== undefined && p.expiresAt <= now)) {
        this.staleSkipped++;
        continue;
      }
      this.#apply(p.key, p.uuid, p.props, p.body, p.expiresAt, 'replay');
    }
    this.pending.clear();
    this.onTakeover?.();
  }

  /** Whether `key` was deleted after sequence `seq` (a pending write older than the delete is stale). */
  #deletedSince(key: string, seq: number): boolean {
    for (let i = this.log.length - 1; i >= 0 && this.log[i]!.seq > seq; i--) if (this.log[i]!.key === key) return true;
    return false;
  }

  async #serveRouter(): Promise<void> {
    for await (const frames of received(this.#router)) {
      const [id, command, subtree] = frames;
      if (frames.length !== 3 || command?.toString() !== 'ICANHAZ?' || !id || !subtree) continue;
      if (!this.#clientRequest()) {
        this.ignoredRequests++;
        continue;
      }
      this.snapshots++;
      const prefix = subtree.toString('latin1');
      for (const [key, e] of this.map) {
        if (key.startsWith(prefix)) void this.#sendRouter([id, Buffer.from(key, 'latin1'), seqFrame(e.seq), e.uuid, this.#propsNow(e.props, e.expiresAt), e.body]).catch(() => {});
      }
      void this.#sendRouter([id, Buffer.from('KTHXBAI'), seqFrame(this.seq), EMPTY, EMPTY, subtree]).catch(() => {});
    }
  }

  async #serveCollector(): Promise<void> {
    for await (const frames of received(this.#collector)) {
      if (frames.length !== 5) continue;
      const [key, kvsetSeq, uuid, props, body] = frames as [Buffer, Buffer, Buffer, Buffer, Buffer];
      if (kvsetSeq.length !== 8 || this.dropWrites) continue;
      const hex = uuid.toString('hex');
      this.received.set(hex, (this.received.get(hex) ?? 0) + 1);
      const expiresAt = deadline(props);
      if (this.state === 'active') this.#apply(key.toString('latin1'), uuid, props, body, expiresAt, 'client');
      else if (this.state === 'passive' && uuid.length === 16) {
        const id = uuid.toString('latin1');
        if (this.pending.has(id)) continue; // the same update again: one entry per uuid
        if (this.pending.size >= this.#s.maxPending) {
          this.pending.delete(this.pending.keys().next().value!);
          this.pendingDropped++;
        }
        this.pending.set(id, { key: key.toString('latin1'), uuid, props, body, seqAtReceipt: this.seq, expiresAt });
      }
    }
  }

  /** The backup, while passive: applies the primary's updates with their sequence numbers. */
  async #followPrimary(follow: zmq.Subscriber): Promise<void> {
    for await (const frames of received(follow)) {
      if (frames.length !== 5 || this.state === 'active') continue;
      const [key, seqF, uuid, props, body] = frames as [Buffer, Buffer, Buffer, Buffer, Buffer];
      if (key.toString() === 'HUGZ' || seqF.length !== 8) continue;
      const seq = Number(seqF.readBigInt64BE(0));
      if (seq <= this.seq) continue;
      this.seq = seq;
      const k = key.toString('latin1');
      if (body.length === 0) this.map.delete(k);
      else this.map.set(k, { seq, uuid, props, body, expiresAt: deadline(props) });
      this.log.push({ key: k, seq, uuid: uuid.toString('hex'), how: 'follow' });
      if (uuid.length === 16) this.pending.delete(uuid.toString('latin1'));
    }
  }

  /** Counts subscriptions arriving on the XPUB (the test waits for the backup's). */
  async #drainXpub(): Promise<void> {
    for await (const [f] of received(this.#pub)) if (f?.[0] === 1) this.subscriptions++;
  }

  /** An update by some other client, applied here (the server must be active): an empty body deletes. */
  write(key: string, body: Buffer): number {
    if (this.state !== 'active') throw new Error(`${this.configured} is ${this.state}`);
    return this.#apply(key, EMPTY, EMPTY, body, undefined, 'client');
  }

  /** Sequences, stores and publishes one update (an empty body deletes). */
  #apply(key: string, uuid: Buffer, props: Buffer, body: Buffer, expiresAt: number | undefined, how: Sequenced['how']): number {
    const seq = ++this.seq;
    if (body.length === 0) this.map.delete(key);
    else this.map.set(key, { seq, uuid, props, body, expiresAt });
    this.log.push({ key, seq, uuid: uuid.toString('hex'), how });
    void this.#sendPub([Buffer.from(key, 'latin1'), seqFrame(seq), uuid, this.#propsNow(props, expiresAt), body]).catch(() => {});
    return seq;
  }

  /** The properties with `ttl` set to the time left until `expiresAt` (seconds): one absolute meaning. */
  #propsNow(props: Buffer, expiresAt: number | undefined): Buffer {
    if (expiresAt === undefined) return props;
    const m = propMap(props);
    m.set('ttl', String(Math.max(0.001, (expiresAt - Date.now()) / 1000)));
    return Buffer.from([...m].map(([k, v]) => `${k}=${v}\n`).join(''));
  }

  /** Stops every socket and timer (the server dies, as far as its clients and partner can tell). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    this.#router.close();
    this.#pub.close();
    this.#collector.close();
    this.#statePub.close();
    this.#stateSub.close();
    this.#follow?.close();
    await Promise.allSettled(this.#loops);
  }
}

/** The absolute deadline a `ttl` property (seconds, relative) gives, counted from now. */
function deadline(props: Buffer): number | undefined {
  const ttl = Number(propMap(props).get('ttl'));
  return Number.isFinite(ttl) && ttl > 0 ? Date.now() + ttl * 1000 : undefined;
}

/** A started pair, closed after the test. */
export interface PlainPair {
  readonly primary: PairServer;
  readonly backup: PairServer;
  /** `tcp://primary,tcp://backup`: what a peer takes as `server`. */
  readonly servers: string[];
}

/**
 * Starts a primary and a backup and waits until the primary is ACTIVE and the backup PASSIVE
 * (following the primary's publisher).
 */
export async function plainPair(t: TestContext, settings: PairSettings): Promise<PlainPair> {
  const s: Required<PairSettings> = { timeout: settings.heartbeat * 4, backupTimeout: 0, maxPending: 1000, ...settings };
  const primary = await PairServer.create('primary', s);
  t.after(() => primary.close());
  const backup = await PairServer.create('backup', s);
  t.after(() => backup.close());
  primary.start(backup);
  backup.start(primary);
  const deadline = Date.now() + 10_000;
  while (!(primary.state === 'active' && backup.state === 'passive' && primary.subscriptions > 0)) {
    if (Date.now() > deadline) throw new Error(`pair did not settle: primary ${primary.state}, backup ${backup.state}`);
    await new Promise((r) => setTimeout(r, 5));
  }
  return { primary, backup, servers: [primary.endpoint, backup.endpoint] };
}
