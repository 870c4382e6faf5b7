/**
 * Raw zeromq.js PUB→SUB, the ceiling for clonekv: no server, no sequencing, no state.
 *
 * Topology: one Publisher bound on `tcp://127.0.0.1:*` in the bench process, one Subscriber
 * per watcher connected to it (also in the bench process). High-water marks are 0 (unbounded)
 * on both sides, so nothing is dropped; the bench's lag window (writes ahead of the slowest
 * watcher) is what bounds the queues.
 *
 * `zmq-5f` sends CHP-shaped messages: key, 8-byte sequence, 16-byte uuid, properties, body.
 * `zmq-1f` sends one frame `key\tbody` for reference.
 *
 * @module
 */

import { randomBytes } from 'node:crypto';
import { Publisher, Subscriber } from 'zeromq';
import type { Adapter, AdapterOptions, OnValue, SystemModule, WatchGroup } from './types.ts';

class ZmqAdapter implements Adapter {
  readonly serialWrites = true;
  readonly latestOnly = false;
  readonly #frames: 1 | 5;
  readonly #keys: Buffer[];
  readonly #keyText: string[];
  readonly #uuid = randomBytes(16);
  readonly #props = Buffer.from('');
  #seq = 0n;
  #pub: Publisher | undefined;
  #endpoint = '';

  constructor(
    readonly system: 'zmq-5f' | 'zmq-1f',
    options: AdapterOptions,
  ) {
    this.#frames = system === 'zmq-5f' ? 5 : 1;
    this.#keyText = Array.from({ length: options.keySpace }, (_, i) => `bench/k${i}`);
    this.#keys = this.#keyText.map((k) => Buffer.from(k));
  }

  async open(): Promise<void> {
    const pub = new Publisher({ sendHighWaterMark: 0, linger: 0 });
    this.#pub = pub;
    await pub.bind('tcp://127.0.0.1:*');
    this.#endpoint = pub.lastEndpoint ?? '';
  }

  write(key: number, value: string): Promise<void> {
    const pub = this.#pub;
    if (pub === undefined) throw new Error('zmq: not open');
    if (this.#frames === 1) return pub.send(`${this.#keyText[key] ?? ''}\t${value}`);
    const seq = Buffer.allocUnsafe(8);
    seq.writeBigUInt64BE(++this.#seq);
    return pub.send([this.#keys[key] ?? '', seq, this.#uuid, this.#props, value]);
  }

  async watch(count: number, onValue: OnValue): Promise<WatchGroup> {
    const subs: Subscriber[] = [];
    const loops: Promise<void>[] = [];
    const bodyFrame = this.#frames - 1;
    for (let w = 0; w < count; w++) {
      const sub = new Subscriber({ receiveHighWaterMark: 0, linger: 0 });
      sub.connect(this.#endpoint);
      sub.subscribe();
      subs.push(sub);
      loops.push(
        (async () => {
          try {
            for (;;) {
              const frames = await sub.receive();
              const body = frames[bodyFrame];
              if (body !== undefined) onValue(w, body.toString());
            }
          } catch {
            // the socket was closed: the loop ends
          }
        })(),
      );
    }
    return {
      close: async () => {
        for (const sub of subs) sub.close();
        await Promise.all(loops);
      },
    };
  }

  async close(): Promise<void> {
    this.#pub?.close();
    this.#pub = undefined;
  }
}

/** Raw zeromq, 5 frames per update (CHP-shaped). */
export const zmq5: SystemModule = {
  probe: async () => null,
  create: (options) => new ZmqAdapter('zmq-5f', options),
};

/** Raw zeromq, 1 frame per update. */
export const zmq1: SystemModule = {
  probe: async () => null,
  create: (options) => new ZmqAdapter('zmq-1f', options),
};
