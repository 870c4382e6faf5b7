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

/** A peer's connected sockets. */
export interface PeerSockets {
  readonly subscriber: zmq.Subscriber;
  readonly dealer: zmq.Dealer;
}

/** Creates the subscriber (not yet subscribed) and connects it. */
export function connectSubscriber(endpoint: string, hwm: Hwm): zmq.Subscriber {
  const sub = new zmq.Subscriber({ linger: 0, receiveHighWaterMark: hwm.receive });
  sub.connect(endpoint);
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
  dealer.connect(endpoint);
  return dealer;
}

/** Creates a PUB to send KVSETs to a plain CHP server's collector. */
export function connectPublisher(endpoint: string, hwm: Hwm): zmq.Publisher {
  const pub = new zmq.Publisher({ linger: 0, sendHighWaterMark: hwm.send });
  pub.connect(endpoint);
  return pub;
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
