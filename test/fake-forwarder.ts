/**
 * A scripted stand-in for a clonekv forwarder, built from raw zeromq sockets, for tests that must
 * control exactly what a peer receives and when (acknowledgements, KVPRESENT, snapshot timing).
 *
 * Topology:
 * ```
 *   test ROUTER  tcp://127.0.0.1:*  ◄─► peer DEALER   ICANHAZ?, KVWRITE, KVBEAT / KTHXBAI, KVACKS, KVPRESENT
 *   test XPUB    tcp://127.0.0.1:*  ──► peer SUB      HUGZ (and sees the peer's subscriptions)
 * ```
 * Nothing here answers on its own: the test reads what arrived and sends what it wants.
 */
import type { TestContext } from 'node:test';
import * as zmq from 'zeromq';
import type { Endpoints } from '../src/index.ts';
import { Inbox } from './helpers.ts';

/** An 8-byte big-endian sequence frame. */
export function seqFrame(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigInt64BE(BigInt(n));
  return b;
}

/** `name=value\n` lines. */
export function props(pairs: Record<string, string | number>): Buffer {
  return Buffer.from(Object.entries(pairs).map(([k, v]) => `${k}=${v}\n`).join(''));
}

/** A raw ROUTER + XPUB pair that a peer can be pointed at. */
export class FakeForwarder {
  readonly router: zmq.Router;
  readonly xpub: zmq.XPublisher;
  /** Every message received on the ROUTER: frame 0 is the sender's routing id. */
  readonly requests: Inbox;
  /** Every subscription message received on the XPUB. */
  readonly subscriptions: Inbox;
  readonly endpoints: Endpoints;
  readonly epoch = 'e1e1e1e1e1e1e1e1';

  private constructor(router: zmq.Router, xpub: zmq.XPublisher) {
    this.router = router;
    this.xpub = xpub;
    this.requests = new Inbox(router);
    this.subscriptions = new Inbox(xpub);
    // The collector is only used with plain CHP servers: never here.
    this.endpoints = { snapshot: router.lastEndpoint!, publisher: xpub.lastEndpoint!, collector: 'tcp://127.0.0.1:9' };
  }

  static async start(t: TestContext): Promise<FakeForwarder> {
    const router = new zmq.Router({ linger: 0 });
    const xpub = new zmq.XPublisher({ linger: 0 });
    await router.bind('tcp://127.0.0.1:*');
    await xpub.bind('tcp://127.0.0.1:*');
    const f = new FakeForwarder(router, xpub);
    t.after(() => {
      router.close();
      xpub.close();
    });
    return f;
  }

  /** Waits for the next ROUTER message whose command (frame 1) is `command`, skipping others. */
  async next(command: string, ms = 5000): Promise<Buffer[]> {
    const deadline = Date.now() + ms;
    for (;;) {
      const m = await this.requests.next(`a ${command}`, Math.max(1, deadline - Date.now()));
      if (m[1]?.toString('latin1') === command) return m;
    }
  }

  /** Sends a five-frame message to the DEALER `id`. */
  async reply(id: Buffer, command: string, seq: number, properties: Buffer, body: Buffer = Buffer.alloc(0)): Promise<void> {
    await this.router.send([id, Buffer.from(command), seqFrame(seq), Buffer.alloc(0), properties, body]);
  }

  /** Ends a (possibly empty) snapshot as a clonekv forwarder does. */
  async snapshotEnd(id: Buffer, seq: number, extra: Record<string, string | number> = {}): Promise<void> {
    await this.reply(id, 'KTHXBAI', seq, props({ clonekv: 1, epoch: this.epoch, count: 0, joined: 1, ...extra }));
  }

  /** Publishes a clonekv heartbeat. */
  async heartbeat(seq: number, epoch = this.epoch): Promise<void> {
    await this.xpub.send([Buffer.from('HUGZ'), seqFrame(seq), Buffer.alloc(0), props({ clonekv: 1, epoch }), Buffer.alloc(0)]);
  }
}
