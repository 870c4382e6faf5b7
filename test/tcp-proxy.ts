/**
 * A TCP proxy on loopback that a test can cut and restore, to play a flaky network between a
 * peer and a forwarder without touching either.
 *
 * Topology:
 * ```
 *   client ──► 127.0.0.1:<proxy port> ──► target (e.g. the forwarder's PUB port)
 * ```
 * `cut()` destroys every open connection and refuses new ones (they are accepted and closed at
 * once, as a dropped link looks to ZeroMQ); `restore()` lets connections through again. With
 * `delayMs`, every chunk is held that long in each direction (in order): a slow link. With
 * `tap`, every byte passed in either direction is kept (`tapped()`), to inspect the wire.
 */
import { once } from 'node:events';
import net from 'node:net';
import type { TestContext } from 'node:test';

/** A cuttable TCP forwarder from a loopback port to `target`. */
export class TcpProxy implements AsyncDisposable {
  readonly #server: net.Server;
  readonly #target: { host: string; port: number };
  readonly #sockets = new Set<net.Socket>();
  readonly #delayMs: number;
  readonly #tap: Buffer[] | undefined;
  #open = true;
  /** Connections accepted so far (passed through or refused). */
  accepted = 0;

  private constructor(server: net.Server, target: { host: string; port: number }, delayMs: number, tap: boolean) {
    this.#server = server;
    this.#tap = tap ? [] : undefined;
    this.#target = target;
    this.#delayMs = delayMs;
    server.on('connection', (client) => this.#onConnection(client));
  }

  /** Starts a proxy on `127.0.0.1:*` towards `target` (`tcp://HOST:PORT` or a port number). */
  static async start(target: string | number, options: { delayMs?: number; tap?: boolean } = {}): Promise<TcpProxy> {
    const m = typeof target === 'number' ? undefined : /^tcp:\/\/([^:]+):(\d+)$/.exec(target);
    const dest = typeof target === 'number' ? { host: '127.0.0.1', port: target } : m ? { host: m[1]!, port: Number(m[2]) } : undefined;
    if (!dest) throw new Error(`bad proxy target ${String(target)}`);
    const server = net.createServer();
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    return new TcpProxy(server, dest, options.delayMs ?? 0, options.tap ?? false);
  }

  /** The proxy's own port. */
  get port(): number {
    return (this.#server.address() as net.AddressInfo).port;
  }

  /** `tcp://127.0.0.1:<port>`: what to give the client instead of the target. */
  get endpoint(): string {
    return `tcp://127.0.0.1:${this.port}`;
  }

  /** Every byte passed so far, both directions (empty without `tap`). */
  tapped(): Buffer {
    return Buffer.concat(this.#tap ?? []);
  }

  /** Drops every open connection and refuses new ones until {@link restore}. */
  cut(): void {
    this.#open = false;
    for (const s of this.#sockets) s.destroy();
    this.#sockets.clear();
  }

  /** Lets connections through again (clients reconnect by themselves). */
  restore(): void {
    this.#open = true;
  }

  #onConnection(client: net.Socket): void {
    this.accepted++;
    if (!this.#open) {
      client.destroy();
      return;
    }
    const upstream = net.connect(this.#target.port, this.#target.host);
    this.#sockets.add(client);
    this.#sockets.add(upstream);
    const drop = (): void => {
      client.destroy();
      upstream.destroy();
      this.#sockets.delete(client);
      this.#sockets.delete(upstream);
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    const tap = this.#tap;
    if (tap) {
      client.on('data', (chunk: Buffer) => tap.push(chunk));
      upstream.on('data', (chunk: Buffer) => tap.push(chunk));
    }
    if (this.#delayMs === 0) {
      client.pipe(upstream);
      upstream.pipe(client);
      return;
    }
    // Timers of one duration fire in the order they were set: the byte order is kept.
    const delayed = (from: net.Socket, to: net.Socket): void => {
      from.on('data', (chunk) => setTimeout(() => to.destroyed || to.write(chunk), this.#delayMs));
    };
    delayed(client, upstream);
    delayed(upstream, client);
  }

  /** Closes the proxy and every connection through it. */
  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** Starts a proxy towards `target`, closed after the test. */
export async function tcpProxy(t: TestContext, target: string | number, options: { delayMs?: number; tap?: boolean } = {}): Promise<TcpProxy> {
  const p = await TcpProxy.start(target, options);
  t.after(() => p.close());
  return p;
}
