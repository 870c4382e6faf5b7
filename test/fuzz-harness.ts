/**
 * Hostile input at volume (issue 10): random and mutated messages sent to every socket of a
 * primary/backup pair with a write policy, and to a verifying peer's subscription, while a
 * legitimate writer keeps writing. Used by test/fuzz.test.ts (the CI form) and
 * bench/fuzz-long.ts (`npm run fuzz -- --messages=N --seed=S`).
 *
 * Topology:
 * ```
 *   raw DEALERs (ids "ckv1…" and zeromq's) ──► primary ROUTER   KVSET, KVWRITE, ICANHAZ?, KVBEAT, KVSTATS, KVHISTORY
 *   raw PUB                                ──► primary SUB      KVSET (plain CHP writes)
 *   raw XSUB                               ──► primary XPUB     subscription messages
 *   raw DEALER                             ──► primary & backup state ports   CKPAIR-* messages
 *   writer Peer (identity in the policy)   ──► primary          cfg/… writes, acknowledged
 *   fake forwarder (ROUTER + XPUB)         ──► victim Peer with the policy: snapshot, HUGZ, garbage KVPUBs
 * ```
 * Every decision comes from one seeded PRNG, so a seed replays the same messages (the timing of
 * the legitimate writer, and so what a replay finds already acknowledged, is not replayed).
 */
import { randomBytes } from 'node:crypto';
import * as zmq from 'zeromq';
import { Forwarder, generateIdentity, Peer, Policy, type Identity } from '../src/index.ts';
import { packBatch, entrySize, type WireEntry } from '../src/protocol/batch.ts';
import { decodeMessage } from '../src/protocol/message.ts';
import { encodeProperties } from '../src/protocol/properties.ts';
import { encodeValue } from '../src/protocol/values.ts';
import { encodeRecord } from '../src/store/record-codec.ts';
import { signWrite } from '../src/security/signature.ts';
import { freePort } from './pair-helpers.ts';
import { waitFor } from './helpers.ts';

/** A small fast PRNG (mulberry32): every choice of a run comes from it. */
export class Rng {
  #s: number;
  constructor(seed: number) {
    this.#s = seed >>> 0;
  }
  next(): number {
    let t = (this.#s = (this.#s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  pick<T>(a: readonly T[]): T {
    return a[this.int(a.length)]!;
  }
  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }
}

export interface FuzzOptions {
  /** Messages in all (split over the sockets as described in {@link FuzzReport}). */
  messages: number;
  seed: number;
  /** Largest "huge" frame, bytes (bounded so a run stays fast). */
  hugeFrameBytes?: number;
  log?: (line: string) => void;
}

/** What was sent where, what the counters said, and how long it took. */
export interface FuzzReport {
  seed: number;
  sent: { router: number; collector: number; subscriptions: number; state: number; peer: number };
  /** Per message kind (before mutation), all sockets together. */
  kinds: Record<string, number>;
  /** Messages that are certainly refused writes (see the README's accounting) per socket. */
  mustRefuse: { router: number; collector: number; state: number };
  /**
   * Counter increases: `writesRefused` = malformed + unauthorized + duplicates + conflicts at the
   * primary (ROUTER and collector together: one set of counters); `subscription` =
   * malformedBy.subscription; `stateRefused` = pair.refused of both members; `peer*` = the
   * victim peer's malformed, unauthorized, and updates + duplicates (replays it applied or skipped).
   */
  counted: { writesRefused: number; subscription: number; stateRefused: number; peerMalformed: number; peerUnauthorized: number; peerUpdates: number };
  peerExpected: { malformed: number; decodable: number };
  legitimateWrites: number;
  seconds: number;
  messagesPerSecond: number;
  problems: string[];
}

const HUGZ = 'HUGZ';
const COMMANDS = new Set(['ICANHAZ?', 'KTHXBAI', 'HUGZ', 'KVBATCH', 'KVACK', 'KVWRITE', 'KVACKS', 'KVBEAT', 'KVBYE', 'KVSTATS', 'KVPRESENT', 'KVHISTORY', 'KVPASSIVE']);
const seqFrame = (n: number | bigint): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigInt64BE(BigInt(n));
  return b;
};
const EMPTY = Buffer.alloc(0);

/** A signed write's frames (key, seq 0, uuid, properties, body), as a peer with `identity` sends it. */
function signed(identity: Identity, key: string, value: unknown, uuid: Buffer, ts = Date.now(), extra: Array<[string, string]> = []): Buffer[] {
  const k = Buffer.from(key);
  const body = encodeValue(value);
  const props: Array<[string, string]> = [['enc', 'msgpack'], ...extra];
  signWrite(identity, k, uuid, body, props, ts);
  return [k, seqFrame(0), uuid, encodeProperties(props), body];
}

/** Mutations of a valid message: what a hostile or broken sender does to frames. */
function mutate(rng: Rng, frames: Buffer[], huge: number): Buffer[] {
  const f: Buffer[] = frames.map((b): Buffer => Buffer.from(b));
  switch (rng.int(10)) {
    case 0:
    case 1:
    case 2: {
      // Bits flipped in one frame (1 to 4 of them).
      const i = rng.int(f.length);
      if (f[i]!.length === 0) f[i] = rng.bytes(1 + rng.int(4));
      for (let n = 1 + rng.int(4); n > 0; n--) {
        const at = rng.int(f[i]!.length);
        f[i]![at]! ^= 1 << rng.int(8);
      }
      return f;
    }
    case 3: // a frame dropped
      f.splice(rng.int(f.length), 1);
      return f.length ? f : [EMPTY];
    case 4: // frames added
      for (let n = 1 + rng.int(3); n > 0; n--) f.splice(rng.int(f.length + 1), 0, rng.bytes(rng.int(40)));
      return f;
    case 5: {
      // A huge frame (bounded), rarely.
      const i = rng.int(f.length);
      f[i] = rng.int(8) === 0 ? Buffer.alloc(huge, rng.int(256)) : rng.bytes(256 + rng.int(4096));
      return f;
    }
    case 6: {
      // Bad properties: garbage lines, no '=', a NUL, an overlong line, repeated names.
      const bad = [
        'novalue\n',
        '=x\n',
        'enc=msgpack\nenc=raw\n',
        'ttl=-5\n',
        'ttl=1e400\n',
        'sig=' + 'A'.repeat(rng.int(200)) + '\n',
        'signer=ed25519:' + rng.bytes(32).toString('base64url') + '\n',
        'ts=99999999999999999999\n',
        'owner=\u0000\u0001\n',
        'x'.repeat(70 * 1024),
        'since=-1\nepoch=zz\nterm=abc\n',
        '\u00ff\u00fe=\n',
      ];
      const i = f.length > 3 ? 3 : f.length - 1;
      f[i] = Buffer.concat([rng.int(2) ? f[i]! : EMPTY, Buffer.from(rng.pick(bad), 'latin1')]);
      return f;
    }
    case 7: // a frame truncated
    {
      const i = rng.int(f.length);
      f[i] = f[i]!.subarray(0, rng.int(f[i]!.length + 1));
      return f;
    }
    case 8: // a frame replaced by random bytes
      f[rng.int(f.length)] = rng.bytes(rng.int(64));
      return f;
    default: // sent as it is (a replay, an unsigned or badly signed write)
      return f;
  }
}

/** Sends on `socket` without a round trip per message: awaits only when zeromq pushes back. */
async function send(socket: zmq.Writable, frames: Buffer[]): Promise<void> {
  await socket.send(frames);
}

/** Reads and drops everything a socket is sent, until it closes. */
function drain(socket: zmq.Readable): Promise<void> {
  return (async () => {
    for (;;) {
      try {
        await socket.receive();
      } catch {
        return;
      }
    }
  })();
}


/** Contents of a peer under `prefix` as sorted JSON (the digest compared with the model). */
function digest(entries: Iterable<{ key: string; value: unknown }>, prefix: string): string {
  return JSON.stringify([...entries].filter((e) => e.key.startsWith(prefix)).map((e) => [e.key, e.value]).sort((a, b) => (String(a[0]) < String(b[0]) ? -1 : 1)));
}

/**
 * Runs one fuzz session and returns its report; `problems` lists every broken promise (empty:
 * all held). Everything it starts is closed before it returns.
 */
export async function runFuzz(o: FuzzOptions): Promise<FuzzReport> {
  const rng = new Rng(o.seed);
  const huge = o.hugeFrameBytes ?? 1 << 20;
  const log = o.log ?? (() => {});
  const problems: string[] = [];
  const writer = generateIdentity();
  const mallory = generateIdentity(); // named in no policy
  const policy = Policy.parse(JSON.stringify({ writers: [{ name: 'writer', key: writer.id, prefixes: ['cfg/'] }] }), 'fuzz policy');
  const closers: Array<() => unknown> = [];
  const started = Date.now();
  const kinds: Record<string, number> = {};
  const count = (k: string): void => void (kinds[k] = (kinds[k] ?? 0) + 1);
  try {
    // ---- the pair, with the policy ---------------------------------------------------------
    const ports = { primary: await freePort(), backup: await freePort(), primaryState: await freePort(), backupState: await freePort() };
    const hwm = { collectorHwm: { receive: 0 } };
    const primary = await Forwarder.start({ port: 0, role: 'primary', statePort: ports.primaryState, partner: `tcp://127.0.0.1:${ports.backupState}`, policy, ...hwm });
    closers.push(() => primary.close());
    const backup = await Forwarder.start({ port: 0, role: 'backup', statePort: ports.backupState, partner: `tcp://127.0.0.1:${ports.primaryState}`, policy, ...hwm });
    closers.push(() => backup.close());
    await waitFor('the pair replicating', () => primary.role === 'active' && primary.stats().pair?.replication.state === 'replicating', 15_000);
    const ep = primary.endpoints;

    // ---- legitimate writes: captured ones first (replay material), then a writer peer -------
    const model = new Map<string, unknown>();
    const captured: Buffer[][] = [];
    {
      const d = new zmq.Dealer({ linger: 0, routingId: `ckv1${randomBytes(8).toString('hex')}` });
      closers.push(() => d.close());
      d.connect(ep.snapshot);
      for (let i = 0; i < 20; i++) {
        const frames = signed(writer, `cfg/captured${i}`, { i, v: 'captured' }, randomBytes(16));
        await d.send(frames);
        const ack = await d.receive();
        if (!ack[3]!.toString().includes('status=ok')) throw new Error(`a legitimate captured write was not acknowledged: ${ack[3]!.toString()}`);
        captured.push(frames);
        model.set(`cfg/captured${i}`, { i, v: 'captured' });
      }
      d.close();
    }
    const writerPeer = new Peer({ server: [ep, backup.endpoints], identity: writer, writeTimeout: 15_000 });
    closers.push(() => writerPeer.close());
    await writerPeer.ready();
    let writing = true;
    let legitimate = 0;
    const writerDone = (async () => {
      const inFlight = new Set<Promise<void>>();
      for (let i = 0; writing; i++) {
        const key = `cfg/w${i % 500}`;
        const value = { i, at: 'writer' };
        const p = writerPeer.set(key, value).then(
          () => {
            // Acknowledged: the latest acknowledged value of a key is the one that must remain
            // (writes to one key are sent in order and sequenced in order).
            const prev = model.get(key) as { i: number } | undefined;
            if (!prev || prev.i < i) model.set(key, value);
            legitimate++;
          },
          (err: Error) => void problems.push(`a legitimate write of ${key} failed: ${err.message}`),
        );
        inFlight.add(p);
        void p.finally(() => inFlight.delete(p));
        if (inFlight.size >= 4) await Promise.race(inFlight);
      }
      await Promise.all(inFlight);
    })();

    // ---- the victim peer, fed by a fake forwarder ------------------------------------------
    const fakeRouter = new zmq.Router({ linger: 0 });
    const fakePub = new zmq.XPublisher({ linger: 0, sendHighWaterMark: 0 });
    closers.push(() => fakeRouter.close(), () => fakePub.close());
    await fakeRouter.bind('tcp://127.0.0.1:*');
    await fakePub.bind('tcp://127.0.0.1:*');
    const fakeEpoch = 'f00df00df00df00d';
    let fakeSeq = 0;
    const victimModel = new Map<string, unknown>();
    const snapshotEntries: Buffer[][] = [];
    for (let i = 0; i < 10; i++) {
      const f = signed(writer, `cfg/v${i}`, { v: i }, randomBytes(16));
      f[1] = seqFrame(++fakeSeq);
      snapshotEntries.push(f);
      victimModel.set(`cfg/v${i}`, { v: i });
    }
    const fakeServing = (async () => {
      for (;;) {
        let m: Buffer[];
        try {
          m = await fakeRouter.receive();
        } catch {
          return;
        }
        if (m[1]?.toString('latin1') !== 'ICANHAZ?') continue;
        const id = m[0]!;
        for (const e of snapshotEntries) await fakeRouter.send([id, ...e]);
        await fakeRouter.send([id, Buffer.from('KTHXBAI'), seqFrame(fakeSeq), EMPTY, encodeProperties([['clonekv', '1'], ['epoch', fakeEpoch], ['count', String(snapshotEntries.length)], ['joined', '1']]), m[2] ?? EMPTY]);
      }
    })();
    const hugz = (): Promise<void> => send(fakePub, [Buffer.from(HUGZ), seqFrame(fakeSeq), EMPTY, encodeProperties([['clonekv', '1'], ['epoch', fakeEpoch]]), EMPTY]);
    const victim = new Peer({ server: { snapshot: fakeRouter.lastEndpoint!, publisher: fakePub.lastEndpoint!, collector: 'tcp://127.0.0.1:9' }, policy, silenceTimeout: 30_000 });
    closers.push(() => victim.close());
    const victimResyncs: string[] = [];
    victim.on('resync', (e: { reason: string }) => victimResyncs.push(e.reason));
    victim.on('error', () => {}); // refused updates are reported as errors: counted below
    const heartbeat = setInterval(() => void hugz().catch(() => {}), 200);
    closers.push(() => clearInterval(heartbeat));
    await victim.ready();

    // ---- the hostile senders ---------------------------------------------------------------
    const dealers = [true, false, true, false].map((clonekv) => {
      const d = new zmq.Dealer({ linger: 0, ...(clonekv ? { routingId: `ckv1${randomBytes(8).toString('hex')}` } : {}) });
      closers.push(() => d.close());
      d.connect(ep.snapshot);
      void drain(d);
      return d;
    });
    const pub = new zmq.Publisher({ linger: 0, sendHighWaterMark: 0 });
    closers.push(() => pub.close());
    pub.connect(ep.collector);
    const xsub = new zmq.XSubscriber({ linger: 0 });
    closers.push(() => xsub.close());
    xsub.connect(ep.publisher);
    void drain(xsub);
    const stateDealers = [primary.stateEndpoint!, backup.stateEndpoint!].map((e) => {
      const d = new zmq.Dealer({ linger: 0 });
      closers.push(() => d.close());
      d.connect(e);
      void drain(d);
      return d;
    });
    // The PUB's subscription from the forwarder's SUB must be there before sending, or zeromq drops.
    {
      const probe = signed(mallory, 'cfg/probe', 1, randomBytes(16));
      const before = primary.stats().unauthorized;
      await waitFor('the collector to hear the PUB', () => {
        void pub.send(probe);
        return primary.stats().unauthorized > before;
      }, 10_000);
    }

    const before = primary.stats();
    const backupBefore = backup.stats();
    const victimBefore = victim.stats();
    const epoch = primary.epoch;
    const sent = { router: 0, collector: 0, subscriptions: 0, state: 0, peer: 0 };
    const mustRefuse = { router: 0, collector: 0, state: 0 };
    const peerExpected = { malformed: 0, decodable: 0 };

    // Base messages, valid before mutation.
    const uuid = (): Buffer => rng.bytes(16);
    const anyKey = (): string => rng.pick(['cfg/', 'cfg/w', 'other/', '$peers/', 'HUGZ', 'KVBEAT', '']) + rng.int(600);
    const writeBase = (): [string, Buffer[]] => {
      switch (rng.int(6)) {
        case 0:
          return ['kvset-unsigned', [Buffer.from(anyKey()), seqFrame(0), uuid(), encodeProperties([['enc', 'msgpack']]), encodeValue(rng.int(1000))]];
        case 1:
          return ['kvset-bad-signer', signed(mallory, anyKey() || 'cfg/x', { evil: rng.int(1000) }, uuid())];
        case 2:
          return ['kvset-replayed', captured[rng.int(captured.length)]!];
        case 3: {
          // A good signature over another value.
          const f = signed(writer, 'cfg/forged', 1, uuid());
          return ['kvset-forged', [f[0]!, f[1]!, f[2]!, f[3]!, encodeValue({ evil: rng.int(1000) })]];
        }
        case 4: {
          // A captured write signed long ago (outside the timestamp bound) under a fresh uuid: forged, stale.
          const f = captured[rng.int(captured.length)]!;
          return ['kvset-stale-or-forged', [f[0]!, f[1]!, uuid(), f[3]!, f[4]!]];
        }
        default:
          return ['kvset-ttl-owner', [Buffer.from(anyKey() || 'k'), seqFrame(0), uuid(), encodeProperties([['ttl', String(rng.int(100))], ['owner', rng.bytes(8).toString('hex')]]), encodeValue('x')]];
      }
    };
    const kvwrite = (): Buffer[] => {
      const entries: WireEntry[] = [];
      for (let n = 1 + rng.int(6); n > 0; n--) {
        const [, f] = writeBase();
        entries.push({ key: f[0]!, sequence: 0, uuid: f[2]!.length === 16 ? f[2]! : uuid(), properties: f[3]!, body: f[4]! });
      }
      return [Buffer.from('KVWRITE'), seqFrame(0), uuid(), EMPTY, packBatch(entries, entries.reduce((s, e) => s + entrySize(e), 0))];
    };
    const routerBase = (): [string, Buffer[]] => {
      const r = rng.int(100);
      if (r < 45) return writeBase();
      if (r < 60) return ['kvwrite', kvwrite()];
      if (r < 66) {
        const resume = rng.int(2) ? encodeProperties([['since', String(rng.int(100))], ['epoch', rng.int(2) ? epoch : 'ab'], ['term', String(rng.int(3))]]) : undefined;
        return ['icanhaz', ([Buffer.from('ICANHAZ?'), Buffer.from(rng.pick(['cfg/', 'cfg/w1', 'zzz/', '']))] as Buffer[]).concat(resume ? [resume] : [])];
      }
      if (r < 78) return ['kvbeat', [Buffer.from('KVBEAT'), seqFrame(rng.int(10)), EMPTY, encodeProperties([['owner', rng.bytes(8).toString('hex')], ['name', 'n' + rng.int(9)], ['subtree', ''], ['applied', String(rng.int(100))]]), EMPTY]];
      if (r < 80) return ['kvbye', [Buffer.from('KVBYE'), seqFrame(0), EMPTY, encodeProperties([['owner', rng.bytes(8).toString('hex')]]), EMPTY]];
      if (r < 83) return ['kvstats', [Buffer.from('KVSTATS'), seqFrame(0), uuid(), EMPTY, EMPTY]];
      if (r < 90) return ['kvhistory', [Buffer.from('KVHISTORY'), seqFrame(0), uuid(), encodeProperties([['since', String(rng.int(50))], ['limit', String(rng.int(20))]]), Buffer.from(rng.pick(['cfg/', 'cfg/w1', '']))]];
      if (r < 95) return ['receipt-like', [Buffer.from(rng.pick(['KVRECEIPT', 'cfg/$receipts/x', 'KVACK'])), seqFrame(0), uuid(), encodeProperties([['for', rng.bytes(16).toString('hex')], ['signer', mallory.id]]), rng.bytes(64)]];
      return ['sealed-like', [Buffer.from('cfg/sealed/' + rng.int(9)), seqFrame(0), uuid(), encodeProperties([['enc', 'sealed']]), rng.bytes(24 + rng.int(100))]];
    };
    const stateBase = (): [string, Buffer[]] => {
      const session = rng.bytes(8).toString('hex');
      const json = (v: unknown): Buffer => Buffer.from(JSON.stringify(v));
      const rec = encodeRecord({ seq: 1 + rng.int(5), key: 'cfg/evil', uuid: EMPTY, properties: EMPTY, body: Buffer.from('x'), expiresAt: 0 }, Date.now());
      switch (rng.int(5)) {
        case 0:
          return ['pair-beat', [Buffer.from('CKPAIR-BEAT'), json({ session, to: '', configured: rng.pick(['primary', 'backup']), role: rng.pick(['active', 'passive']), term: 1 + rng.int(1000), epoch, sequence: rng.int(1e9), applied: rng.int(10) })]];
        case 1:
          return ['pair-sync', [Buffer.from('CKPAIR-SYNC'), json({ session, to: '', since: rng.int(10), epoch, lineage: [], full: rng.int(2) === 0 })]];
        case 2:
          return ['pair-ack', [Buffer.from('CKPAIR-ACK'), json({ session, to: rng.bytes(8).toString('hex'), applied: rng.int(1e9) })]];
        case 3:
          return ['pair-repl', [Buffer.from('CKPAIR-REPL'), json({ session, to: '', start: true, epoch, term: 99, lineage: [], first: 1, outcomes: [] }), rec]];
        default:
          return ['pair-copy', [Buffer.from('CKPAIR-COPY'), json({ session, to: '', copy: 'x', part: 0, done: true, epoch, term: 99, lineage: [], sequence: 5, outcomes: [] }), rec]];
      }
    };
    const peerBase = (): [string, Buffer[]] => {
      switch (rng.int(5)) {
        case 0:
          return ['kvpub-unsigned', [Buffer.from('cfg/v' + rng.int(20)), EMPTY, uuid(), encodeProperties([['enc', 'msgpack']]), encodeValue({ evil: 1 })]];
        case 1:
          return ['kvpub-bad-signer', signed(mallory, 'cfg/v' + rng.int(20), { evil: 2 }, uuid())];
        case 2: {
          const f = signed(writer, 'cfg/v1', { v: 1 }, uuid());
          return ['kvpub-forged', [f[0]!, f[1]!, f[2]!, f[3]!, encodeValue({ evil: 3 })]];
        }
        case 3:
          // A legitimate update published again (its value is the current one: see the README on replays to a peer).
          return ['kvpub-replayed', snapshotEntries[rng.int(snapshotEntries.length)]!];
        default:
          return ['kvpub-sealed-like', [Buffer.from('cfg/v' + rng.int(20)), EMPTY, uuid(), encodeProperties([['enc', 'sealed']]), rng.bytes(40)]];
      }
    };

    // ---- the fuzzing ------------------------------------------------------------------------
    // Shares: ROUTER 45 %, collector 20 %, subscriptions 10 %, state ports 10 %, peer 15 %.
    const sends: Array<Promise<void>> = [];
    const loopSeconds: Record<string, number> = {};
    const fuzzStarted = Date.now();
    const routerLoop = async (n: number): Promise<void> => {
      for (let i = 0; i < n; i++) {
        const [kind, base] = routerBase();
        count(kind);
        const m = rng.int(5) === 0 ? base : mutate(rng, base, huge);
        const first = m[0]!.toString('latin1');
        // Certainly taken for a write (a KVSET, or a KVWRITE batch: at least one decision each).
        if (first === 'KVWRITE' || !COMMANDS.has(first)) mustRefuse.router++;
        sent.router++;
        await send(dealers[i % dealers.length]!, m);
      }
    };
    const collectorLoop = async (n: number): Promise<void> => {
      for (let i = 0; i < n; i++) {
        const [kind, base] = writeBase();
        count(kind);
        const m = rng.int(5) === 0 ? base : mutate(rng, base, huge);
        sent.collector++;
        mustRefuse.collector++;
        await send(pub, m);
      }
    };
    const subscriptionLoop = async (n: number): Promise<void> => {
      for (let i = 0; i < n; i++) {
        count('subscription');
        const topic = rng.pick(['cfg/', 'cfg/w' + rng.int(50), '\u0000clonekv-join\u0000' + rng.bytes(4).toString('hex'), rng.bytes(rng.int(30)).toString('latin1'), '']);
        const base = [Buffer.concat([Buffer.from([rng.int(3) === 0 ? 0 : 1]), Buffer.from(topic, 'latin1')])];
        const m = rng.int(3) === 0 ? base : mutate(rng, base, 4096);
        sent.subscriptions++;
        await send(xsub, m);
      }
    };
    const stateLoop = async (n: number): Promise<void> => {
      for (let i = 0; i < n; i++) {
        const [kind, base] = rng.int(10) === 0 ? ['state-random', [rng.bytes(1 + rng.int(20)), rng.bytes(rng.int(100))]] as [string, Buffer[]] : stateBase();
        count(kind);
        const m = rng.int(4) === 0 ? base : mutate(rng, base, huge);
        sent.state++;
        mustRefuse.state++;
        await send(stateDealers[i % 2]!, m);
      }
    };
    const peerLoop = async (n: number): Promise<void> => {
      for (let i = 0; i < n; i++) {
        const [kind, base] = peerBase();
        count(kind);
        let m = rng.int(4) === 0 ? base.map((b) => Buffer.from(b)) : mutate(rng, base, huge);
        // The sequence frame is the server's to give: a decodable update gets the next one, so
        // each is decided on its own (a wrong sequence is a resync, tested elsewhere).
        const probe = m.length === 5 ? [m[0]!, seqFrame(fakeSeq + 1), m[2]!, m[3]!, m[4]!] : m;
        const d = decodeMessage(probe, Number.MAX_SAFE_INTEGER);
        if (d.ok && (m[0]!.toString('latin1') === HUGZ || !m[0]!.toString('latin1').startsWith('cfg/') || d.message.properties.get('prev') !== undefined)) {
          m = [Buffer.from('cfg/x'), EMPTY]; // not a KVPUB for the subtree's bookkeeping: make it malformed
        }
        const dd = decodeMessage(m.length === 5 ? [m[0]!, seqFrame(fakeSeq + 1), m[2]!, m[3]!, m[4]!] : m, Number.MAX_SAFE_INTEGER);
        if (dd.ok) {
          m[1] = seqFrame(++fakeSeq);
          peerExpected.decodable++;
        } else peerExpected.malformed++;
        sent.peer++;
        await send(fakePub, m);
        if (i % 256 === 255) await hugz();
      }
    };
    const n = o.messages;
    const share = (p: number): number => Math.round(n * p);
    clearInterval(heartbeat); // from here the peer loop sends the heartbeats, in line with its sequences
    const timed = (name: string, p: Promise<void>): Promise<void> => p.then(() => void (loopSeconds[name] = (Date.now() - fuzzStarted) / 1000));
    sends.push(
      timed('router', routerLoop(share(0.45))),
      timed('collector', collectorLoop(share(0.2))),
      timed('subscriptions', subscriptionLoop(share(0.1))),
      timed('state', stateLoop(share(0.1))),
      timed('peer', peerLoop(n - share(0.45) - share(0.2) - share(0.1) - share(0.1))),
    );
    await Promise.all(sends);
    const sendSeconds = (Date.now() - fuzzStarted) / 1000;
    log(`fuzz: seed ${o.seed}: ${n} messages sent in ${sendSeconds.toFixed(2)} s (${Math.round(n / sendSeconds)}/s); each socket done after (s): ${JSON.stringify(loopSeconds)}`);
    const settleStarted = Date.now();
    await hugz();

    // ---- settle: every message decided --------------------------------------------------------
    const routerCounted = (): number => {
      const s = primary.stats();
      // Malformed subscriptions and snapshot requests are not writes: left out.
      const notWrites = s.malformedBy.subscription - before.malformedBy.subscription + (s.malformedBy['snapshot-request'] - before.malformedBy['snapshot-request']);
      return s.malformed - before.malformed - notWrites + (s.unauthorized - before.unauthorized) + (s.duplicates - before.duplicates) + (s.conflicts - before.conflicts);
    };
    const stateRefused = (): number => primary.stats().pair!.refused - before.pair!.refused + (backup.stats().pair!.refused - backupBefore.pair!.refused);
    const victimCounted = (): { malformed: number; unauthorized: number; updates: number } => {
      const s = victim.stats();
      return { malformed: s.malformed - victimBefore.malformed, unauthorized: s.unauthorized - victimBefore.unauthorized, updates: s.updates - victimBefore.updates + (s.duplicates - victimBefore.duplicates) };
    };
    const settled = (): boolean => {
      const v = victimCounted();
      return routerCounted() >= mustRefuse.router + mustRefuse.collector && stateRefused() >= mustRefuse.state && v.malformed + v.unauthorized + v.updates >= sent.peer;
    };
    try {
      await waitFor('every hostile message counted', settled, 15_000);
    } catch (err) {
      problems.push((err as Error).message);
    }
    log(`fuzz: every message counted ${((Date.now() - settleStarted) / 1000).toFixed(2)} s after the last was sent`);
    writing = false;
    await writerDone;
    const after = primary.stats();
    const v = victimCounted();
    const counted = {
      writesRefused: routerCounted(),
      subscription: after.malformedBy.subscription - before.malformedBy.subscription,
      stateRefused: stateRefused(),
      peerMalformed: v.malformed,
      peerUnauthorized: v.unauthorized,
      peerUpdates: v.updates,
    };
    if (counted.writesRefused < mustRefuse.router + mustRefuse.collector) problems.push(`the ROUTER and collector counted ${counted.writesRefused} refusals for ${mustRefuse.router + mustRefuse.collector} refused writes`);
    if (counted.stateRefused < mustRefuse.state) problems.push(`the state ports counted ${counted.stateRefused} refusals for ${mustRefuse.state} messages`);
    if (v.malformed !== peerExpected.malformed) problems.push(`the victim peer counted ${v.malformed} malformed, expected ${peerExpected.malformed}`);
    if (v.unauthorized + v.updates !== peerExpected.decodable) problems.push(`the victim peer decided ${v.unauthorized + v.updates} updates (${v.unauthorized} refused), expected ${peerExpected.decodable}`);

    // ---- afterwards: alive, answering, and exactly the legitimate state ------------------------
    if (primary.role !== 'active' || backup.role !== 'passive') problems.push(`roles changed: primary ${primary.role}, backup ${backup.role}`);
    if (primary.term !== 1 || backup.term !== 1) problems.push(`terms changed: ${primary.term}, ${backup.term}`);
    const fresh = new Peer({ server: ep, policy, subtree: 'cfg/' });
    closers.push(() => fresh.close());
    await fresh.ready();
    const stats = await fresh.serverStats(10_000); // the primary answers
    if (stats.pair?.role !== 'active') problems.push('the primary does not answer KVSTATS as active');
    const want = digest([...model].map(([key, value]) => ({ key, value })), 'cfg/');
    if (digest(fresh.entries(), 'cfg/') !== want) problems.push(`the forwarder's cfg/ subtree differs from what the legitimate writers wrote (${[...fresh.entries()].length} keys, model ${model.size})`);
    if (digest(writerPeer.entries(), 'cfg/') !== want) problems.push("the writer peer's cfg/ subtree differs from what it wrote");
    if (fresh.stats().unauthorized !== 0) problems.push(`a fresh verifying peer refused ${fresh.stats().unauthorized} entries the forwarder served`);
    const nonCfg = primary.size - [...fresh.entries()].length;
    const presence = primary.stats().peers;
    if (nonCfg > presence + 10) problems.push(`the forwarder holds ${nonCfg} keys outside cfg/, for ${presence} live peers`);
    try {
      await waitFor('the backup caught up', () => backup.sequence === primary.sequence && backup.size === primary.size, 10_000);
    } catch (err) {
      problems.push(`${(err as Error).message}: primary ${primary.sequence}, backup ${backup.sequence}`);
    }
    try {
      await waitFor('the backup to know the same peers', () => backup.stats().peers === primary.stats().peers, 10_000);
    } catch {
      problems.push(`the backup knows ${backup.stats().peers} peers, the primary ${primary.stats().peers}`);
    }
    if (victimResyncs.length > 0) problems.push(`the victim peer resynced (${victimResyncs.join(', ')}): a hostile update must be refused on its own`);
    if (backup.size !== primary.size) problems.push(`the backup holds ${backup.size} keys, the primary ${primary.size}; peers ${primary.stats().peers}/${backup.stats().peers}`);
    if (process.env.FUZZ_DEBUG) log(JSON.stringify({ victimResyncs, victim: victim.stats(), primary: primary.stats(), backup: backup.stats() }));
    const victimWant = digest([...victimModel].map(([key, value]) => ({ key, value })), '');
    if (digest(victim.entries(), '') !== victimWant) problems.push(`the victim peer's map differs from the fake forwarder's legitimate snapshot: ${JSON.stringify([...victim.entries()].map((e) => [e.key, e.value]))}`);
    if (victim.status !== 'live') problems.push(`the victim peer is ${victim.status}`);
    const seconds = (Date.now() - started) / 1000;
    return { seed: o.seed, sent, kinds, mustRefuse, counted, peerExpected, legitimateWrites: legitimate, seconds, messagesPerSecond: Math.round(n / sendSeconds), problems };
  } finally {
    for (const c of closers.reverse()) {
      try {
        await c();
      } catch {
        // closing what already closed
      }
    }
  }
}
