/**
 * A ZAP handler (ZeroMQ RFC 27): libzmq asks it, over `inproc://zeromq.zap.01` in the socket's
 * context, whether a client that completed the CURVE handshake may use the connection. A
 * refused client gets no connection: it can neither read nor write.
 *
 * The handler is bound in a zeromq context of its own (one per forwarder with an allow-list),
 * so two forwarders in one process never answer for each other.
 *
 * Request frames (after the ROUTER's routing id and the empty delimiter): version "1.0",
 * request id, domain, address, identity, mechanism, then the credentials (for CURVE: the
 * client's 32-byte public key). Reply: version, the same request id, status code ("200" to
 * allow, "400" to refuse, "500" for a request we cannot read), status text, user id, metadata.
 *
 * @module
 */
import * as zmq from 'zeromq';
import { receiveLoop } from './sockets.ts';

/** The endpoint libzmq sends ZAP requests to. */
const ZAP_ENDPOINT = 'inproc://zeromq.zap.01';

/**
 * Decides on one client: the ZAP domain of the socket it connects to, its mechanism (`CURVE`)
 * and, for CURVE, its 32-byte public key.
 */
export type ZapDecide = (domain: string, mechanism: string, publicKey: Buffer | undefined, address: string) => boolean;

/** A running ZAP handler. */
export interface ZapHandler {
  /** The context whose CURVE server sockets this handler checks: make them in it. */
  readonly context: zmq.Context;
  /** Stops answering (closes the handler socket). */
  close(): void;
}

/** Starts a ZAP handler in a fresh context; `decide` answers each request. */
export async function startZapHandler(decide: ZapDecide, onError: (err: unknown) => void): Promise<ZapHandler> {
  const context = new zmq.Context({ blocky: false });
  const router = new zmq.Router({ context, linger: 0 });
  await router.bind(ZAP_ENDPOINT);
  void receiveLoop(
    router,
    (frames) => {
      const reply = answer(frames, decide);
      if (reply !== undefined) router.send(reply).catch(onError);
    },
    onError,
  );
  return {
    context,
    close: () => {
      if (!router.closed) router.close();
    },
  };
}

/** The reply to one request (routing id first), or `undefined` if it cannot even be answered. */
function answer(frames: Buffer[], decide: ZapDecide): Buffer[] | undefined {
  // [routing id, empty, version, request id, domain, address, identity, mechanism, credentials…]
  if (frames.length < 4 || frames[1]!.length !== 0) return undefined;
  const [routingId, empty, version, requestId] = frames as [Buffer, Buffer, Buffer, Buffer];
  const reply = (code: string, text: string): Buffer[] => [routingId, empty, Buffer.from('1.0'), requestId, Buffer.from(code), Buffer.from(text), Buffer.alloc(0), Buffer.alloc(0)];
  if (version.toString() !== '1.0' || frames.length < 8) return reply('500', 'malformed ZAP request');
  const domain = frames[4]!.toString();
  const address = frames[5]!.toString();
  const mechanism = frames[7]!.toString();
  const key = mechanism === 'CURVE' && frames[8]?.length === 32 ? frames[8] : undefined;
  let allowed = false;
  try {
    allowed = decide(domain, mechanism, key, address);
  } catch {
    allowed = false;
  }
  return allowed ? reply('200', 'OK') : reply('400', 'client key not allowed');
}
