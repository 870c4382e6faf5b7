/**
 * Socket construction: the only module (with its siblings) that imports `zeromq`. It binds the
 * forwarder's three sockets on consecutive ports, connects a peer's sockets, and runs receive
 * loops that end quietly when their socket closes.
 *
 * @module
 */
import { createServer } from 'node:net';
import * as zmq from 'zeromq';
import { ClonekvError, ErrorCode } from '../errors.ts';

export { zmq };

/** CURVE server settings of the forwarder's sockets (z85 keys). */
export interface ServerCurve {
  readonly publicKey: string;
  readonly secretKey: string;
  /**
   * The zeromq context the sockets are made in: a forwarder with an allow-list has its own, so
   * that the ZAP handler bound in it (see zap.ts) checks this forwarder's clients only.
   */
  readonly context?: zmq.Context;
}

/** CURVE client settings of a peer's sockets (z85 keys). */
export interface ClientCurve {
  readonly serverKey: string;
  readonly publicKey: string;
  readonly secretKey: string;
}

/** A fresh z85 CURVE keypair. */
export function curveKeyPair(): { publicKey: string; secretKey: string } {
  return zmq.curveKeyPair();
}

/** Whether this zeromq build has CURVE. */
export function curveAvailable(): boolean {
  return zmq.capability.curve === true;
}

/** The ZAP domain the forwarder's CURVE sockets announce. */
export const ZAP_DOMAIN = 'clonekv';

/** The ZAP domain of a pair member's state port: only the pair's own key is admitted there. */
export const STATE_ZAP_DOMAIN = 'clonekv-state';

/** Socket options that make a socket a CURVE server (set before it binds). */
function serverCurveOptions(curve: ServerCurve | undefined, zapDomain = ZAP_DOMAIN): Record<string, unknown> {
  return curve === undefined ? {} : { zapDomain, curveServer: true, curvePublicKey: curve.publicKey, curveSecretKey: curve.secretKey };
}

/** Socket options that make a socket a CURVE client of the server with `serverKey` (set before it connects). */
function clientCurveOptions(curve: ClientCurve | undefined): Record<string, unknown> {
  return curve === undefined ? {} : { curveServerKey: curve.serverKey, curvePublicKey: curve.publicKey, curveSecretKey: curve.secretKey };
}

/** High-water marks applied to one socket. */
export interface Hwm {
  send: number;
  receive: number;
}

/** The forwarder's bound sockets. */
export interface ForwarderSockets {
  readonly router: zmq.Router;
  readonly publisher: zmq.XPublisher;
  readonly collector: zmq.Subscriber;
  /** The base port P actually bound. */
  readonly port: number;
}

function isAddressInUse(err: unknown): boolean {
  const code = (err as { code?: string } | undefined)?.code;
  return code === 'EADDRINUSE' || /in use/i.test(String((err as Error | undefined)?.message));
}

/** The message of a zeromq (or any) error, for our own messages. */
function reasonOf(err: unknown): string {
  const e = err as { code?: unknown; message?: unknown } | undefined;
  const message = typeof e?.message === 'string' ? e.message : String(err);
  return typeof e?.code === 'string' && !message.includes(e.code) ? `${message} (${e.code})` : message;
}

/** Anything zeromq hands out that must be closed once we stop owning it. */
interface Closable {
  close(): void;
}

/** Closes sockets we created but will not hand out; a close failure must not hide the first error. */
function closeAll(sockets: ReadonlyArray<Closable | undefined>): void {
  for (const s of sockets) {
    try {
      s?.close();
    } catch {
      // Already closed or never usable: nothing left to release.
    }
  }
}

/** Longest wait for zeromq to report a released listener, ms; past it we return anyway. */
const RELEASE_WAIT_MS = 2000;

/** Closes sockets and resolves once their bound TCP addresses are free again. Never throws. */
async function releaseAll(sockets: ReadonlyArray<zmq.Socket | undefined>): Promise<void> {
  // Closed first, not unbound: zeromq.js unbinds on a worker thread, and a zeromq socket is not
  // thread-safe (the main thread may be reading from it meanwhile).
  const bound = sockets.map((s) => (s && !s.closed ? tcpAddress(s.lastEndpoint) : undefined));
  closeAll(sockets);
  await Promise.all(bound.map((a) => (a === undefined ? undefined : addressFree(a))));
}

function tcpAddress(endpoint: string | null): { host: string; port: number } | undefined {
  const m = /^tcp:\/\/(.+):(\d+)$/.exec(endpoint ?? '');
  return m ? { host: m[1]!.replace(/^\[(.*)\]$/, '$1'), port: Number(m[2]) } : undefined;
}

/**
 * Resolves once `host:port` can be bound again (zeromq's I/O thread closes a listener shortly
 * after its socket is closed), or after {@link RELEASE_WAIT_MS}. It tries by listening there
 * itself; nothing is sent anywhere. Never throws.
 */
async function addressFree({ host, port }: { host: string; port: number }): Promise<void> {
  const deadline = Date.now() + RELEASE_WAIT_MS;
  while (Date.now() < deadline) {
    const free = await new Promise<boolean>((resolve) => {
      const probe = createServer();
      probe.once('error', (err: NodeJS.ErrnoException) => resolve(err.code !== 'EADDRINUSE'));
      probe.listen({ port, host, exclusive: true }, () => probe.close(() => resolve(true)));
    });
    if (free) return;
    await new Promise((r) => setTimeout(r, 5));
  }
}

/**
 * Closes the forwarder's sockets; when it resolves, the three ports can be bound again.
 * Never throws.
 */
export function releaseForwarderSockets(s: ForwarderSockets): Promise<void> {
  return releaseAll([s.router, s.publisher, s.collector]);
}

/**
 * Creates a socket and sets its options one by one. zeromq checks options as they are set
 * (EINVAL for a routing id over 255 bytes or a negative high-water mark), and a socket whose
 * constructor throws on an option is leaked half-built (it even crashes the process at exit):
 * so the socket is made bare, the options are set here, and on a refusal it is closed and the
 * option named. `linger` should come first, so that closing a refused socket never waits.
 */
function createSocket<T extends Closable>(
  kind: string,
  endpoint: string,
  Make: new (options?: { context?: zmq.Context }) => T,
  options: Partial<T> | Record<string, unknown>,
  context?: zmq.Context,
): T {
  let socket: T;
  try {
    socket = context === undefined ? new Make() : new Make({ context });
  } catch (err) {
    throw new ClonekvError(ErrorCode.Transport, `cannot create the ${kind} socket for ${endpoint}: ${reasonOf(err)}`, { cause: err });
  }
  for (const [name, value] of Object.entries(options)) {
    try {
      Reflect.set(socket, name, value);
    } catch (err) {
      closeAll([socket]);
      const shown = /^curve/.test(name) ? 'a key' : typeof value === 'string' && value.length > 40 ? `a ${Buffer.byteLength(value)}-byte string` : JSON.stringify(value);
      throw new ClonekvError(
        ErrorCode.Transport,
        `cannot create the ${kind} socket for ${endpoint}: zeromq refused ${name} = ${shown}: ${reasonOf(err)}; ` +
          'check the options (high-water marks must be 0 or more)',
        { cause: err },
      );
    }
  }
  return socket;
}

/**
 * Why a peer cannot connect to `endpoint`, or undefined if it looks connectable. zeromq itself
 * refuses some bad tcp endpoints (`tcp://*:P`, no port) with a bare EINVAL, and accepts others
 * that can never reach anyone (`tcp://:0` connects to nothing and waits for ever): both are
 * caught here with a reason a user can act on.
 */
function badConnectEndpoint(endpoint: string): string | undefined {
  if (!endpoint.startsWith('tcp://')) return undefined; // ipc://, inproc://: zeromq decides
  const m = /^tcp:\/\/(\[[^\]]*\]|[^:/]*):([^:/]*)$/.exec(endpoint);
  if (!m) return 'expected tcp://HOST:PORT';
  const [, host, port] = m as unknown as [string, string, string];
  if (host === '' || host === '[]') return 'the host is missing';
  if (host === '*') return '"*" means every local address when binding; a connection needs one host';
  if (!/^\d+$/.test(port) || Number(port) < 1 || Number(port) > 65_535) return `the port must be a number from 1 to 65535, got ${JSON.stringify(port)}`;
  return undefined;
}

/**
 * Creates a socket and connects it to `endpoint`. Any failure (a bad endpoint, an unsupported
 * transport, a bad socket option) becomes a {@link ClonekvError} with code `CLONEKV_TRANSPORT`
 * that names the endpoint and keeps zeromq's error as `cause`; the socket is closed first, so a
 * failed connect leaves nothing open.
 */
function connectSocket<T extends Closable & { connect(endpoint: string): void }>(
  kind: string,
  endpoint: string,
  Make: new () => T,
  options: Partial<T> | Record<string, unknown>,
): T {
  const bad = badConnectEndpoint(endpoint);
  if (bad !== undefined) throw connectError(kind, endpoint, bad, undefined);
  const socket = createSocket(kind, endpoint, Make, options);
  try {
    socket.connect(endpoint);
  } catch (err) {
    closeAll([socket]);
    throw connectError(kind, endpoint, reasonOf(err), err);
  }
  return socket;
}

function connectError(kind: string, endpoint: string, reason: string, cause: unknown): ClonekvError {
  return new ClonekvError(
    ErrorCode.Transport,
    `cannot connect the ${kind} socket to ${JSON.stringify(endpoint)}: ${reason}; ` +
      "give the forwarder's address as tcp://HOST:PORT (a host name or IP address, and the port it serves on)",
    cause === undefined ? undefined : { cause },
  );
}

/**
 * Binds ROUTER on P, XPUB on P+1 and SUB on P+2. With `port` 0 a free triple is found: the ROUTER
 * takes an ephemeral port and the two above it are tried, again with a new port if taken.
 *
 * @throws {@link ClonekvError} `CLONEKV_TRANSPORT` naming the ports (and saying when one is in
 *   use) or the bad address, with zeromq's error as `cause`; every socket created is closed first.
 */
export async function bindForwarderSockets(
  address: string,
  port: number,
  hwm: { router: Hwm; publisher: Hwm; collector: Hwm },
  curve?: ServerCurve,
): Promise<ForwarderSockets> {
  const secure = serverCurveOptions(curve);
  const ctx = curve?.context;
  const attempts = port === 0 ? 50 : 1;
  const where = `tcp://${address}:${port === 0 ? '*' : `${port}-${port + 2}`}`;
  let lastErr: unknown;
  for (let i = 0; i < attempts; i++) {
    let router: zmq.Router | undefined;
    let publisher: zmq.XPublisher | undefined;
    let collector: zmq.Subscriber | undefined;
    try {
      router = createSocket('snapshot (ROUTER)', where, zmq.Router, {
        linger: 0,
        mandatory: true,
        sendTimeout: 0,
        sendHighWaterMark: hwm.router.send,
        receiveHighWaterMark: hwm.router.receive,
        ...secure,
      }, ctx);
      publisher = createSocket('publisher (XPUB)', where, zmq.XPublisher, {
        linger: 0,
        sendHighWaterMark: hwm.publisher.send,
        receiveHighWaterMark: hwm.publisher.receive,
        ...secure,
      }, ctx);
      collector = createSocket('collector (SUB)', where, zmq.Subscriber, { linger: 0, receiveHighWaterMark: hwm.collector.receive, ...secure }, ctx);
    } catch (err) {
      closeAll([router, publisher, collector]);
      throw err;
    }
    try {
      await router.bind(`tcp://${address}:${port === 0 ? '*' : port}`);
      const bound = portOf(router.lastEndpoint);
      await publisher.bind(`tcp://${address}:${bound + 1}`);
      await collector.bind(`tcp://${address}:${bound + 2}`);
      collector.subscribe();
      return { router, publisher, collector, port: bound };
    } catch (err) {
      lastErr = err;
      // The ports bound so far are free again when this function returns or retries.
      await releaseAll([router, publisher, collector]);
      if (!isAddressInUse(err) || port !== 0) break;
    }
  }
  const hint = isAddressInUse(lastErr)
    ? `a port is already in use: another process holds one of the three ports${port === 0 ? '' : ` ${port}, ${port + 1}, ${port + 2}`}; stop it or choose another --port`
    : 'check the --bind address (an IP address of this machine, or * for all)';
  throw new ClonekvError(ErrorCode.Transport, `cannot bind ${where}: ${reasonOf(lastErr)}; ${hint}`, {
    cause: lastErr,
  });
}

/** The port of a `tcp://host:port` endpoint. */
function portOf(endpoint: string | null): number {
  const m = /:(\d+)$/.exec(endpoint ?? '');
  if (!m) throw new ClonekvError(ErrorCode.Transport, `not a tcp endpoint: ${String(endpoint)}`);
  return Number(m[1]);
}

/**
/** libzmq's option number for a socket's send high-water mark. */
const ZMQ_SNDHWM = 23;

/**
 * Creates the subscriber (not yet subscribed) and connects it. `onDisconnect` is called each
 * time its connection drops (the server went away or restarted); `onRefused` each time a
 * connection attempt failed and will be retried (nothing listens there: a dead server).
 *
 * Its send side carries only subscriptions and has no high-water mark: libzmq drops what is over
 * a SUB's send mark, and a subscribe dropped while its unsubscribe gets through trips an assertion
 * in the server's XPUB (libzmq issue 2942) — it also capped the subscriptions that reached the
 * forwarder at about 1,000 per connection. What is queued is bounded by the topics subscribed.
 *
 * @throws {@link ClonekvError} `CLONEKV_TRANSPORT` for a bad endpoint or option (nothing left open)
 */
export function connectSubscriber(endpoint: string, hwm: Hwm, onDisconnect?: () => void, curve?: ClientCurve, onRefused?: () => void): zmq.Subscriber {
  const sub = connectSocket('update (SUB)', endpoint, zmq.Subscriber, { linger: 0, receiveHighWaterMark: hwm.receive, ...clientCurveOptions(curve) });
  // zeromq.js exposes no send mark on a SUB (it sends no messages of its own), so the option is
  // set by number: ZMQ_SNDHWM, before any subscription is queued.
  (sub as unknown as { setInt32Option(option: number, value: number): void }).setInt32Option(ZMQ_SNDHWM, 0);
  if (onDisconnect) sub.events.on('disconnect', onDisconnect);
  if (onRefused) sub.events.on('connect:retry', onRefused);
  return sub;
}

/**
 * Creates a DEALER with the given routing id and connects it.
 *
 * @throws {@link ClonekvError} `CLONEKV_TRANSPORT` for a bad endpoint or option (nothing left open)
 */
export function connectDealer(endpoint: string, routingId: string, hwm: Hwm, curve?: ClientCurve): zmq.Dealer {
  return connectSocket('snapshot (DEALER)', endpoint, zmq.Dealer, {
    linger: 0,
    routingId,
    receiveHighWaterMark: hwm.receive,
    sendHighWaterMark: hwm.send,
    ...clientCurveOptions(curve),
  });
}

/**
 * Creates the socket that sends KVSETs to a plain CHP server's collector, and connects it. It
 * is an XPUB (a PUB on the wire) so that it can tell when the collector has subscribed: a PUB
 * drops what it sends before that, so a write sent earlier would be lost. Read it with
 * {@link subscriptionChanges}.
 *
 * @throws {@link ClonekvError} `CLONEKV_TRANSPORT` for a bad endpoint or option (nothing left open)
 */
export function connectCollector(endpoint: string, hwm: Hwm, curve?: ClientCurve): zmq.XPublisher {
  return connectSocket('collector (PUB)', endpoint, zmq.XPublisher, { linger: 0, sendHighWaterMark: hwm.send, ...clientCurveOptions(curve) });
}

/**
 * Tells when what an XPUB sends can reach a subscriber: once a subscription has arrived and
 * while the connection is up. Calls `onChange` when that changes, until the socket closes.
 *
 * A connecting socket keeps its pipe, and the subscriptions recorded for it, across reconnects,
 * so a subscriber that comes back (say, a restarted server) is not announced again: after a
 * disconnect, the next handshake makes the socket usable again.
 */
export async function subscriptionChanges(socket: zmq.XPublisher, onChange: (subscribed: boolean) => void, onError: (err: unknown) => void): Promise<void> {
  let subscriptions = 0;
  let connected = true;
  let usable = false;
  const update = (): void => {
    const now = connected && subscriptions > 0;
    if (now !== usable) {
      usable = now;
      onChange(now);
    }
  };
  socket.events.on('disconnect', () => {
    connected = false;
    update();
  });
  socket.events.on('handshake', () => {
    connected = true;
    update();
  });
  await receiveLoop(
    socket,
    (frames) => {
      const f = frames[0];
      if (!f || f.length === 0 || (f[0] !== 0 && f[0] !== 1)) return;
      subscriptions = Math.max(0, subscriptions + (f[0] === 1 ? 1 : -1));
      update();
    },
    onError,
  );
}

/**
 * Reads every message of `socket` into `onMessage` until the socket closes. Errors other than
 * the close go to `onError`; the loop ends either way.
 */
export async function receiveLoop(
  socket: zmq.Readable<Buffer[]> & { readonly closed: boolean },
  onMessage: (frames: Buffer[]) => void | Promise<void>,
  onError: (err: unknown) => void,
): Promise<void> {
  for (;;) {
    let frames: Buffer[];
    try {
      frames = await socket.receive();
    } catch (err) {
      if (!socket.closed) onError(err);
      return;
    }
    try {
      // A handler that returns a promise holds the next read until it settles (backpressure:
      // messages then wait in ZeroMQ's queue, bounded by its high-water mark).
      const busy = onMessage(frames);
      if (busy !== undefined) await busy;
    } catch (err) {
      // A handler bug must not stop the socket: report it and keep reading.
      onError(err);
    }
  }
}

/** A pair member's state channel: a ROUTER it binds (what its partner sends) and a DEALER to its partner. */
export interface StateSockets {
  /** Bound on the state port: receives the partner's messages (and anything a stranger sends). */
  readonly inbox: zmq.Router;
  /** Connected to the partner's state endpoint. */
  readonly outbox: zmq.Dealer;
  /** The state port actually bound. */
  readonly port: number;
}

/** Most messages queued towards the partner before new ones are dropped (the follower then asks again). */
const STATE_HWM = 100_000;

/**
 * Binds the state ROUTER on `address:port` (0: ephemeral) and connects the DEALER to `partner`.
 * The DEALER is `immediate`: nothing is queued for a partner that is not connected, so a
 * restarted partner never receives what was meant for its previous run; a send that finds no
 * connection fails at once (`sendTimeout` 0) and is dropped. With `curve` (the pair's one
 * server keypair) both are CURVE: the ROUTER as a server in the ZAP domain
 * {@link STATE_ZAP_DOMAIN}, the DEALER as a client showing that same keypair.
 *
 * @throws {@link ClonekvError} `CLONEKV_TRANSPORT` naming the port or endpoint (nothing left open)
 */
export async function bindStateSockets(address: string, port: number, partner: string, curve?: ServerCurve): Promise<StateSockets> {
  const where = `tcp://${address}:${port === 0 ? '*' : port}`;
  const inbox = createSocket('state (ROUTER)', where, zmq.Router, { linger: 0, receiveHighWaterMark: STATE_HWM, ...serverCurveOptions(curve, STATE_ZAP_DOMAIN) }, curve?.context);
  try {
    await inbox.bind(where);
  } catch (err) {
    await releaseAll([inbox]);
    const hint = isAddressInUse(err) ? `the state port ${port} is already in use; choose another --state-port` : 'check the --bind address';
    throw new ClonekvError(ErrorCode.Transport, `cannot bind the state channel on ${where}: ${reasonOf(err)}; ${hint}`, { cause: err });
  }
  let outbox: zmq.Dealer;
  try {
    // With CURVE, both members hold the same server keypair: the partner is the server it
    // connects to, and it shows the same keypair as its own client key.
    const client = curve && { serverKey: curve.publicKey, publicKey: curve.publicKey, secretKey: curve.secretKey };
    outbox = connectSocket('state (DEALER)', partner, zmq.Dealer, { linger: 0, immediate: true, sendTimeout: 0, sendHighWaterMark: STATE_HWM, ...clientCurveOptions(client) });
  } catch (err) {
    await releaseAll([inbox]);
    throw err;
  }
  return { inbox, outbox, port: portOf(inbox.lastEndpoint) };
}

/** Closes the state sockets; when it resolves, the state port can be bound again. Never throws. */
export function releaseStateSockets(s: StateSockets): Promise<void> {
  // The DEALER binds nothing (its last endpoint is the partner's, which stays in use): closed only.
  closeAll([s.outbox]);
  return releaseAll([s.inbox]);
}
