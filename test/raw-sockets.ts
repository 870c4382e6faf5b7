/**
 * CHP by hand for tests that play a party with raw zeromq sockets (a plain CHP server or
 * client, a clonekv peer's DEALER): frames, the property format, and socket set-up with
 * teardown registered. Nothing from clonekv's sources is used, so what these tests check is the
 * wire as the protocol describes it (/work/shared/protocol.md).
 */
import { randomBytes } from 'node:crypto';
import type { TestContext } from 'node:test';
import * as zmq from 'zeromq';
import { Inbox } from './helpers.ts';

/** An empty frame (uuid, properties or body). */
export const EMPTY = Buffer.alloc(0);
/** The sequence frame of a KVSET (and of most commands): 0. */
export const ZERO_SEQ = Buffer.alloc(8);

/** A sequence frame: 8 bytes, signed, big-endian. */
export function seqFrame(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigInt64BE(BigInt(n));
  return b;
}

/** The `name=value\n` lines of a properties frame, as a map. */
export function propMap(frame: Buffer): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of frame.toString('utf8').split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) m.set(line.slice(0, eq), line.slice(eq + 1));
  }
  return m;
}

/** Each message of `socket` until it closes (a failed receive ends the loop, as a close does). */
export async function* received(socket: zmq.Readable<Buffer[]>): AsyncGenerator<Buffer[]> {
  for (;;) {
    let frames: Buffer[];
    try {
      frames = await socket.receive();
    } catch {
      return;
    }
    yield frames;
  }
}

/** A raw DEALER on a forwarder's ROUTER, with an {@link Inbox} of what it is sent. */
export interface RawDealer {
  readonly dealer: zmq.Dealer;
  readonly inbox: Inbox;
}

/**
 * Connects a raw DEALER to `endpoint` (a ROUTER), closed after the test. With `clonekv: true`
 * its routing id starts "ckv1", so a forwarder takes it for a clonekv peer (KVSETs answered
 * with KVACK); otherwise zeromq picks the id, as for a plain CHP client.
 */
export function rawDealer(t: TestContext, endpoint: string, options: { clonekv?: boolean; sendHighWaterMark?: number } = {}): RawDealer {
  const { clonekv = false, ...socketOptions } = options;
  const dealer = new zmq.Dealer({ linger: 0, ...socketOptions, ...(clonekv ? { routingId: `ckv1${randomBytes(8).toString('hex')}` } : {}) });
  t.after(() => dealer.close());
  dealer.connect(endpoint);
  return { dealer, inbox: new Inbox(dealer) };
}

/** The three sockets of a CHP server, bound on P, P+1, P+2. */
export interface ServerSockets {
  readonly port: number;
  readonly router: zmq.Router;
  readonly pub: zmq.XPublisher;
  readonly collector: zmq.Subscriber;
}

/**
 * Binds a ROUTER on `port` (0: any free port), an XPUB on port+1 and a SUB on port+2 (not yet
 * subscribed), all on 127.0.0.1. A taken port of the triple (or, on a restart, one not yet
 * released) is tried again, for up to 5 s.
 */
export async function bindServerSockets(port: number, routerOptions: { sendHighWaterMark?: number } = {}): Promise<ServerSockets> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const router = new zmq.Router({ linger: 0, ...routerOptions });
    const pub = new zmq.XPublisher({ linger: 0 });
    const collector = new zmq.Subscriber({ linger: 0 });
    try {
      await router.bind(`tcp://127.0.0.1:${port === 0 ? '*' : port}`);
      const p = Number(/:(\d+)$/.exec(router.lastEndpoint ?? '')?.[1]);
      if (!(p > 0 && p <= 65533)) throw Object.assign(new Error('port too high for a triple'), { code: 'EADDRINUSE' });
      await pub.bind(`tcp://127.0.0.1:${p + 1}`);
      await collector.bind(`tcp://127.0.0.1:${p + 2}`);
      return { port: p, router, pub, collector };
    } catch (err) {
      router.close();
      pub.close();
      collector.close();
      if ((err as { code?: string }).code !== 'EADDRINUSE' || Date.now() > deadline) throw err;
      await new Promise((r) => setImmediate(r));
    }
  }
}
