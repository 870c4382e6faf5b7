/**
 * A plain CHP server (ZeroMQ RFC 12, the Clone pattern's server), written from the protocol
 * description (/work/shared/protocol.md) with raw zeromq sockets; nothing from clonekv is used.
 * Tests run clonekv peers against it.
 *
 * Every message is five frames: key, sequence (8 bytes, signed, big-endian), uuid (0 or 16
 * bytes), properties (`name=value\n` lines), body. The snapshot request is two frames:
 * `ICANHAZ?` and the subtree.
 */
import type { TestContext } from 'node:test';
import type * as zmq from 'zeromq';
import { bindServerSockets, EMPTY, received, seqFrame } from './raw-sockets.ts';

const HUGZ = 'HUGZ';

/** Serializes sends on one socket (zeromq.js allows one pending send per socket). */
export function serialSender(socket: zmq.Writable<Buffer[]>): (frames: Buffer[]) => Promise<void> {
  let chain: Promise<void> = Promise.resolve();
  return (frames) => {
    const p = chain.then(() => socket.send(frames));
    chain = p.catch(() => {});
    return p;
  };
}

/** A stored value with its sequence, uuid and raw properties. */
export interface Item {
  readonly seq: number;
  readonly uuid: Buffer;
  readonly props: Buffer;
  readonly body: Buffer;
}

/**
 * The spec's server: ROUTER on P (ICANHAZ? → KVSYNC per key under the subtree, then KTHXBAI
 * with its current sequence and the subtree as body), PUB on P+1 (KVPUB, HUGZ every 100 ms with
 * its current sequence, no properties), SUB on P+2 (KVSET, sequenced and republished as they
 * come, uuid and properties unchanged). It uses XPUB in place of PUB (allowed: the wire is the
 * same) only so that the test can see when a subscriber has arrived.
 */
export class PlainServer {
  port = 0;
  seq = 0;
  map = new Map<string, Item>();
  /** Every KVSET received on the collector, with the sequence it got. */
  readonly sequenced: Array<{ key: string; seq: number; kvsetSeq: number; uuid: Buffer; props: Buffer; body: Buffer }> = [];
  /** Subscriptions seen on the publisher since the last (re)start. */
  subscriptions: string[] = [];
  snapshots = 0;
  /** While set, each snapshot's KVSYNCs are sent but its KTHXBAI waits for this promise. */
  hold: Promise<void> | undefined;
  /** While true, KVSETs are received and dropped (as by a server that dies before sequencing them). */
  dropWrites = false;
  /** KVSETs received on the collector, dropped ones included. */
  received = 0;
  /** Properties of each KTHXBAI (none, as a plain server; a test may make it look like another). */
  snapshotEndProps: Buffer = EMPTY;
  /** Called right after a KTHXBAI is queued (its KVSYNCs may still be on their way). */
  afterSnapshot: (() => void) | undefined;
  #router!: zmq.Router;
  #pub!: zmq.XPublisher;
  #collector!: zmq.Subscriber;
  #sendRouter!: (f: Buffer[]) => Promise<void>;
  #sendPub!: (f: Buffer[]) => Promise<void>;
  #heartbeat: NodeJS.Timeout | undefined;
  #loops: Promise<void>[] = [];

  static async start(t: TestContext, initial: Record<string, Buffer>): Promise<PlainServer> {
    const s = new PlainServer();
    t.after(() => s.close());
    await s.#bind(0);
    for (const [k, v] of Object.entries(initial)) s.apply(k, EMPTY, v);
    return s;
  }

  /** `tcp://127.0.0.1:P`, what a Peer takes as `server`. */
  get endpoint(): string {
    return `tcp://127.0.0.1:${this.port}`;
  }

  /** Binds ROUTER, XPUB, SUB on P, P+1, P+2; with `port` 0 finds a free triple. */
  async #bind(port: number): Promise<void> {
    const sockets = await bindServerSockets(port);
    sockets.collector.subscribe();
    this.port = sockets.port;
    this.#router = sockets.router;
    this.#pub = sockets.pub;
    this.#collector = sockets.collector;
    this.#sendRouter = serialSender(this.#router);
    this.#sendPub = serialSender(this.#pub);
    this.subscriptions = [];
    this.#loops = [this.#serveRouter(this.#router), this.#serveCollector(this.#collector), this.#watchSubscriptions(this.#pub)];
    this.#heartbeat = setInterval(() => void this.#sendPub([Buffer.from(HUGZ), seqFrame(this.seq), EMPTY, EMPTY, EMPTY]).catch(() => {}), 100);
  }

  async #serveRouter(router: zmq.Router): Promise<void> {
    for await (const frames of received(router)) {
      const [id, command, subtree] = frames;
      if (frames.length !== 3 || command?.toString() !== 'ICANHAZ?' || !id || !subtree) continue;
      this.snapshots++;
      const prefix = subtree.toString('latin1');
      for (const [key, e] of this.map) {
        if (key.startsWith(prefix)) void this.#sendRouter([id, Buffer.from(key, 'latin1'), seqFrame(e.seq), e.uuid, e.props, e.body]).catch(() => {});
      }
      // The snapshot is taken now: KTHXBAI carries this sequence even if it is held.
      const at = this.seq;
      if (this.hold) await this.hold;
      void this.#sendRouter([id, Buffer.from('KTHXBAI'), seqFrame(at), EMPTY, this.snapshotEndProps, subtree]).catch(() => {});
      this.afterSnapshot?.();
    }
  }

  async #serveCollector(collector: zmq.Subscriber): Promise<void> {
    for await (const frames of received(collector)) {
      if (frames.length !== 5) continue;
      this.received++;
      const [key, kvsetSeq, uuid, props, body] = frames as [Buffer, Buffer, Buffer, Buffer, Buffer];
      if (kvsetSeq.length !== 8 || this.dropWrites) continue;
      const seq = this.apply(key.toString('latin1'), props, body, uuid);
      this.sequenced.push({ key: key.toString('latin1'), seq, kvsetSeq: Number(kvsetSeq.readBigInt64BE(0)), uuid, props, body });
    }
  }

  async #watchSubscriptions(pub: zmq.XPublisher): Promise<void> {
    for await (const frames of received(pub)) {
      const f = frames[0];
      if (f && f[0] === 1) this.subscriptions.push(f.subarray(1).toString('latin1'));
    }
  }

  /** Sequences, stores and publishes one update (an empty body deletes). */
  apply(key: string, props: Buffer, body: Buffer, uuid: Buffer = EMPTY): number {
    const seq = ++this.seq;
    if (body.length === 0) this.map.delete(key);
    else this.map.set(key, { seq, uuid, props, body });
    void this.#sendPub([Buffer.from(key, 'latin1'), seqFrame(seq), uuid, props, body]).catch(() => {});
    return seq;
  }

  async #stop(): Promise<void> {
    clearInterval(this.#heartbeat);
    this.#router?.close();
    this.#pub?.close();
    this.#collector?.close();
    await Promise.all(this.#loops);
  }

  /** Stops and starts again on the same ports with a new map and the sequence back at 0. */
  async restart(initial: Record<string, Buffer>): Promise<void> {
    await this.#stop();
    this.seq = 0;
    this.map = new Map();
    await this.#bind(this.port);
    for (const [k, v] of Object.entries(initial)) this.apply(k, EMPTY, v);
  }

  close(): Promise<void> {
    return this.#stop();
  }
}
