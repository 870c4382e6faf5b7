/**
 * A peer's sockets and nothing else: the SUB that carries updates and heartbeats, one DEALER per
 * sync attempt (snapshot, writes and acknowledgements to a clonekv forwarder), the PUBs used only
 * with plain CHP servers (XPUBs, to know when each server has subscribed), their receive
 * loops, and this peer's beats. It makes no sync decision: it hands every message to its
 * handlers.
 *
 * With several servers, the SUB and the DEALER are connected to the server in use only;
 * {@link Link.switchTo} closes them and opens them on another server. A plain server's
 * collector PUB is opened to every server at once (a plain backup keeps the writes it receives
 * while passive, and applies them if it takes over), and stays open across switches.
 *
 * ```
 *   SUB    ◄── forwarder XPUB :P+1   subtree + HUGZ + join topic
 *   DEALER ◄─► forwarder ROUTER :P   ICANHAZ? / snapshot; KVSET → KVACK (clonekv forwarder)
 *   PUB    ──► forwarder SUB :P+2    KVSET (plain CHP server only)
 * ```
 *
 * @module
 */
import { randomBytes } from 'node:crypto';
import { Command, JOIN_TOPIC_PREFIX, PEER_ID_PREFIX, Prop } from '../protocol/commands.ts';
import { EMPTY_FRAME } from '../protocol/message.ts';
import { encodeProperties } from '../protocol/properties.ts';
import { ZERO_SEQUENCE } from '../protocol/sequence.ts';
import { SendQueue } from '../transport/send-queue.ts';
import { connectCollector, connectDealer, connectSubscriber, receiveLoop, subscriptionChanges, type ClientCurve, type Hwm, type zmq } from '../transport/sockets.ts';
import type { Endpoints } from '../types.ts';

/** Settings of a {@link Link}. */
export interface LinkSettings {
  /** Every server the peer may use; the SUB and DEALER connect to one at a time. */
  readonly servers: readonly Endpoints[];
  /** The index in `servers` of the server used first. */
  readonly server: number;
  readonly subtree: Buffer;
  /** This peer's id (owner of its ephemeral keys) and name, sent in its beats. */
  readonly id: string;
  readonly name: string;
  readonly subscriberHwm: Hwm;
  readonly requestHwm: Hwm;
  readonly publisherHwm: Hwm;
  /** CURVE on every socket; `undefined`: none. */
  readonly curve: ClientCurve | undefined;
}

/** Where a {@link Link} delivers what it receives. */
export interface LinkHandlers {
  /** A message from the SUB (an update or a heartbeat). */
  onPublished(frames: Buffer[]): void | Promise<void>;
  /** The subscriber's connection dropped (the server went away or restarted). */
  onSubscriberDown(): void;
  /** A connection attempt of the subscriber failed (nothing listens at the server's address). */
  onSubscriberRefused(): void;
  /** A message from the DEALER opened with `tag` (see {@link Link.openDealer}). */
  onReply(tag: number, frames: Buffer[]): void | Promise<void>;
  /**
   * The collector of plain server `server` (index in the settings' servers) subscribed to
   * (`true`) or left (`false`) our collector socket for it.
   */
  onCollector(server: number, subscribed: boolean): void;
  /** A transport error on socket `what`; the peer reports it and goes on. */
  onError(what: string, err: unknown): void;
}

/** The sockets of one peer. */
export class Link {
  readonly #s: LinkSettings;
  readonly #h: LinkHandlers;
  #sub: zmq.Subscriber;
  /** The server the SUB and DEALER are connected to (index in the settings' servers). */
  #server: number;
  #dealer: { socket: zmq.Dealer; sends: SendQueue; id: string } | undefined;
  /** One collector PUB per server, once a plain server was met (see {@link openCollectors}). */
  #pubs: Array<{ socket: zmq.XPublisher; sends: SendQueue }> | undefined;
  /** Receive loops still running (a loop removes itself when its socket closes). */
  readonly #loops = new Set<Promise<void>>();
  #closed = false;

  /**
   * Connects the SUB and subscribes to the subtree and the heartbeats.
   *
   * @throws `CLONEKV_TRANSPORT` if zeromq refuses the endpoint (nothing is left open)
   */
  constructor(settings: LinkSettings, handlers: LinkHandlers) {
    this.#s = settings;
    this.#h = handlers;
    this.#server = settings.server;
    this.#sub = this.#openSubscriber();
  }

  /** The server in use (index in the settings' servers). */
  get server(): number {
    return this.#server;
  }

  /**
   * Leaves the server in use for server `server`: closes the DEALER and the SUB and opens a SUB
   * on the new server (the DEALER opens with the next {@link openDealer}). What the old sockets
   * still deliver is dropped: it belongs to a stream the peer has left.
   *
   * @throws `CLONEKV_TRANSPORT` if zeromq refuses the endpoint
   */
  switchTo(server: number): void {
    if (this.#closed) return;
    this.closeDealer(false);
    this.#sub.close();
    this.#server = server;
    this.#sub = this.#openSubscriber();
  }

  /** Connects a SUB to the server in use, subscribed to the subtree and the heartbeats. */
  #openSubscriber(): zmq.Subscriber {
    const s = this.#s;
    const h = this.#h;
    const endpoints = s.servers[this.#server]!;
    // Events of a SUB the peer has switched away from are not this stream's: dropped.
    const current = (): boolean => this.#sub === sub;
    const sub: zmq.Subscriber = connectSubscriber(
      endpoints.publisher,
      s.subscriberHwm,
      () => {
        if (current()) h.onSubscriberDown();
      },
      s.curve,
      () => {
        if (current()) h.onSubscriberRefused();
      },
    );
    // Order matters: the join topic (subscribed in openDealer) goes last, so once the forwarder
    // sees it, these are live too.
    sub.subscribe(s.subtree);
    if (!Command.Heartbeat.startsWith(s.subtree.toString('utf8'))) sub.subscribe(Command.Heartbeat);
    this.#track(
      receiveLoop(
        sub,
        (f) => {
          return current() ? h.onPublished(f) : undefined;
        },
        (e) => h.onError('subscriber', e),
      ),
    );
    return sub;
  }

  /** Whether a DEALER is open. */
  get hasDealer(): boolean {
    return this.#dealer !== undefined;
  }

  /**
   * Closes the current DEALER and opens a fresh one with a fresh routing id (so a late answer to
   * an abandoned request can never mix in), subscribed to its join topic. Its replies are
   * handed over with `tag`.
   *
   * @throws `CLONEKV_TRANSPORT` if zeromq refuses the endpoint
   */
  openDealer(tag: number): void {
    if (this.#closed) return;
    this.closeDealer();
    const id = PEER_ID_PREFIX + randomBytes(12).toString('hex');
    const socket = connectDealer(this.#s.servers[this.#server]!.snapshot, id, this.#s.requestHwm, this.#s.curve);
    const sends = new SendQueue(socket, 100_000, () => {}, (e) => this.#h.onError('snapshot socket', e));
    this.#sub.subscribe(JOIN_TOPIC_PREFIX + id);
    this.#dealer = { socket, sends, id };
    this.#track(receiveLoop(socket, (f) => this.#h.onReply(tag, f), (e) => this.#h.onError('snapshot socket', e)));
  }

  /**
   * Closes the current DEALER, if any, and (unless the SUB is about to close too) drops its join
   * subscription.
   */
  closeDealer(unsubscribe = true): void {
    if (this.#dealer) {
      if (unsubscribe) this.#sub.unsubscribe(JOIN_TOPIC_PREFIX + this.#dealer.id);
      this.#dealer.socket.close();
      this.#dealer = undefined;
    }
  }

  /** Sends a message on the current DEALER (dropped if there is none). */
  request(frames: Buffer[]): void {
    this.#dealer?.sends.send(frames);
  }

  /**
   * Connects one collector socket per server (once; plain servers' writes go there).
   * `onCollector` says when each server has subscribed to its socket: only then is a write sent
   * to it, since one sent before is dropped.
   */
  openCollectors(): void {
    if (this.#pubs || this.#closed) return;
    this.#pubs = this.#s.servers.map((endpoints, i) => {
      const socket = connectCollector(endpoints.collector, this.#s.publisherHwm, this.#s.curve);
      this.#track(subscriptionChanges(socket, (up) => this.#h.onCollector(i, up), (e) => this.#h.onError('publisher', e)));
      return { socket, sends: new SendQueue(socket, 10_000, () => {}, (e) => this.#h.onError('publisher', e)) };
    });
  }

  /** Sends a KVSET to the collector of server `server` (dropped if {@link openCollectors} was not called). */
  publish(server: number, frames: Buffer[]): void {
    this.#pubs?.[server]?.sends.send(frames);
  }

  /** Sends this peer's beat (`command` is a beat or a goodbye) on the DEALER, with its last applied sequence. */
  beat(command: string, applied: number): void {
    this.request(this.#beatFrames(command, applied));
  }

  /** Sends a goodbye and waits briefly (at most 100 ms) for it to go out. Best effort. */
  async bye(applied: number): Promise<void> {
    const dealer = this.#dealer;
    if (!dealer) return;
    dealer.sends.send(this.#beatFrames(Command.PeerBye, applied));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([dealer.sends.drained(), new Promise((r) => (timer = setTimeout(r, 100)))]);
    clearTimeout(timer);
  }

  /** Closes every socket and waits for the receive loops to end. */
  async close(): Promise<void> {
    // Nothing opens after this (a failover decided while closing would leak sockets that keep
    // the process alive).
    this.#closed = true;
    // No unsubscribe on the way out: closing the SUB removes its subscriptions at the forwarder.
    // An unsubscribe sent just before the close made libzmq's XPUB (4.3.5) assert in its
    // subscription trie now and then (generic_mtrie_impl.hpp), taking the forwarder down.
    this.closeDealer(false);
    this.#sub.close();
    for (const pub of this.#pubs ?? []) pub.socket.close();
    await Promise.allSettled([...this.#loops]);
  }

  #beatFrames(command: string, applied: number): Buffer[] {
    const props = encodeProperties([
      [Prop.Owner, this.#s.id],
      [Prop.Name, this.#s.name.replace(/[=\n]/g, '_')],
      [Prop.Subtree, this.#s.subtree.toString('base64url')],
      [Prop.Applied, String(applied)],
    ]);
    return [Buffer.from(command), ZERO_SEQUENCE, EMPTY_FRAME, props, EMPTY_FRAME];
  }

  #track(loop: Promise<void>): void {
    this.#loops.add(loop);
    void loop.finally(() => this.#loops.delete(loop));
  }
}
