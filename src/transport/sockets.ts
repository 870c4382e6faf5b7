/**
 * Socket construction: the only module (with its siblings) that imports `zeromq`. It binds the
 * forwarder's three sockets on consecutive ports, connects a peer's sockets, and runs receive
 * loops that end quietly when their socket closes.
 *
 * @module
 */
import * as zmq from 'zeromq';
import { ClonekvError, ErrorCode } from '../errors.ts';

export { zmq };

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
  const code = (err as { code?: string }).code;
  return code === 'EADDRINUSE' || /in use/i.test(String((err as Error).message));
}

/**
 * Binds ROUTER on P, XPUB on P+1 and SUB on P+2. With `port` 0 a free triple is found: the ROUTER
 * takes an ephemeral port and the two above it are tried, again with a new port if taken.
 */
export async function bindForwarderSockets(
  address: string,
  port: number,
  hwm: { router: Hwm; publisher: Hwm; collector: Hwm },
): Promise<ForwarderSockets> {
  const attempts = port === 0 ? 50 : 1;
  let lastErr: unknown;
  for (let i = 0; i < attempts; i++) {
    const router = new zmq.Router({
      mandatory: true,
      sendTimeout: 0,
      linger: 0,
      sendHighWaterMark: hwm.router.send,
      receiveHighWaterMark: hwm.router.receive,
    });
    const publisher = new zmq.XPublisher({
      linger: 0,
      sendHighWaterMark: hwm.publisher.send,
      receiveHighWaterMark: hwm.publisher.receive,
    });
    const collector = new zmq.Subscriber({ linger: 0, receiveHighWaterMark: hwm.collector.receive });
    try {
      await router.bind(`tcp://${address}:${port === 0 ? '*' : port}`);
      const bound = portOf(router.lastEndpoint);
      await publisher.bind(`tcp://${address}:${bound + 1}`);
      await collector.bind(`tcp://${address}:${bound + 2}`);
      collector.subscribe();
      return { router, publisher, collector, port: bound };
    } catch (err) {
      lastErr = err;
      router.close();
      publisher.close();
      collector.close();
      if (!isAddressInUse(err) || port !== 0) break;
    }
  }
  const where = `tcp://${address}:${port === 0 ? '*' : `${port}-${port + 2}`}`;
  const hint = isAddressInUse(lastErr)
    ? 'another process holds one of the three ports; stop it or choose another --port'
    : 'check the --bind address';
  throw new ClonekvError(ErrorCode.Transport, `cannot bind ${where}: ${(lastErr as Error)?.message}; ${hint}`, {
    cause: lastErr,
  });
}

/** The port of a `tcp://host:port` endpoint. */
export function portOf(endpoint: string | null): number {
  const m = /:(\d+)$/.exec(endpoint ?? '');
  if (!m) throw new ClonekvError(ErrorCode.Transport, `not a tcp endpoint: ${String(endpoint)}`);
  return Number(m[1]);
}

/**
 * Connects `socket` to `endpoint`; if zeromq refuses the endpoint, closes the socket and throws
 * a `CLONEKV_TRANSPORT` error naming it (a half-made socket would keep the process alive).
 */
function connectOrClose<S extends zmq.Socket>(socket: S, endpoint: string, what: string): S {
  try {
    socket.connect(endpoint);
  } catch (err) {
    socket.close();
    throw new ClonekvError(ErrorCode.Transport, `cannot connect the ${what} to ${JSON.stringify(endpoint)}: ${(err as Error).message}`, { cause: err });
  }
  return socket;
}

/**
 * Creates the subscriber (not yet subscribed) and connects it. `onDisconnect` is called each
 * time its connection drops (the server went away or restarted).
 */
export function connectSubscriber(endpoint: string, hwm: Hwm, onDisconnect?: () => void): zmq.Subscriber {
  const sub = connectOrClose(new zmq.Subscriber({ linger: 0, receiveHighWaterMark: hwm.receive }), endpoint, 'subscriber');
  if (onDisconnect) sub.events.on('disconnect', onDisconnect);
  return sub;
}

/** Creates a DEALER with the given routing id and connects it. */
export function connectDealer(endpoint: string, routingId: string, hwm: Hwm): zmq.Dealer {
  const dealer = new zmq.Dealer({
    linger: 0,
    routingId,
    receiveHighWaterMark: hwm.receive,
    sendHighWaterMark: hwm.send,
  });
  return connectOrClose(dealer, endpoint, 'request socket');
}

/**
 * Creates the socket that sends KVSETs to a plain CHP server's collector, and connects it. It
 * is an XPUB (a PUB on the wire) so that it can tell when the collector has subscribed: a PUB
 * drops what it sends before that, so a write sent earlier would be lost. Read it with
 * {@link subscriptionChanges}.
 */
export function connectCollector(endpoint: string, hwm: Hwm): zmq.XPublisher {
  return connectOrClose(new zmq.XPublisher({ linger: 0, sendHighWaterMark: hwm.send }), endpoint, 'collector socket');
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
  onMessage: (frames: Buffer[]) => void,
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
      onMessage(frames);
    } catch (err) {
      // A handler bug must not stop the socket: report it and keep reading.
      onError(err);
    }
  }
}
