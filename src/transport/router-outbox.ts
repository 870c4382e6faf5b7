/**
 * Replies on the forwarder's ROUTER socket, one queue per peer. The socket runs with
 * `mandatory` and a zero send timeout, so a reply to a peer whose pipe is full fails at once
 * (EAGAIN) instead of being dropped silently (what truncated the reference implementation's
 * snapshots) or blocking replies to every other peer. A blocked peer's queue waits and is
 * retried with backoff; a peer that disconnected (EHOSTUNREACH) has its queue dropped.
 *
 * Snapshots are streamed from a lazy source, so a slow peer holds a cursor, not a copy of the
 * serialized snapshot.
 *
 * @module
 */
import type * as zmq from 'zeromq';

interface PeerQueue {
  readonly id: Buffer;
  items: Buffer[][];
  sources: Array<{ next: () => Buffer[] | undefined; done: (ok: boolean) => void }>;
  retryDelay: number;
  blockedUntil: number;
}

/** Per-peer reply queues over one ROUTER socket. */
export class RouterOutbox {
  readonly #router: zmq.Router;
  readonly #maxQueued: number;
  readonly #onDropped: (count: number, id: Buffer, why: string) => void;
  #queues = new Map<string, PeerQueue>();
  #pumping = false;
  #timer: NodeJS.Timeout | undefined;

  /**
   * @param router - a ROUTER with `mandatory = true` and `sendTimeout = 0`
   * @param maxQueued - replies held for one peer beyond its pipe before the peer is given up on
   */
  constructor(router: zmq.Router, maxQueued: number, onDropped: (count: number, id: Buffer, why: string) => void) {
    this.#router = router;
    this.#maxQueued = maxQueued;
    this.#onDropped = onDropped;
  }

  /** Queues one reply to peer `id`. */
  send(id: Buffer, frames: Buffer[]): void {
    const q = this.#queue(id);
    if (q.items.length >= this.#maxQueued) {
      this.#drop(q, 'reply queue full');
      return;
    }
    q.items.push(frames);
    this.#kick();
  }

  /**
   * Streams messages pulled from `next` (until it returns undefined) to peer `id`, after any
   * replies already queued. `done(true)` is called once all were handed to zeromq, `done(false)`
   * if the peer went away first.
   */
  stream(id: Buffer, next: () => Buffer[] | undefined, done: (ok: boolean) => void): void {
    this.#queue(id).sources.push({ next, done });
    this.#kick();
  }

  /** Peers with work queued. */
  get peers(): number {
    return this.#queues.size;
  }

  /** Stops retrying and forgets every queue. */
  close(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const q of this.#queues.values()) for (const s of q.sources) s.done(false);
    this.#queues.clear();
  }

  #queue(id: Buffer): PeerQueue {
    const k = id.toString('latin1');
    let q = this.#queues.get(k);
    if (!q) {
      q = { id, items: [], sources: [], retryDelay: 1, blockedUntil: 0 };
      this.#queues.set(k, q);
    }
    return q;
  }

  #drop(q: PeerQueue, why: string): void {
    this.#queues.delete(q.id.toString('latin1'));
    this.#onDropped(q.items.length, q.id, why);
    for (const s of q.sources) s.done(false);
  }

  #kick(): void {
    if (!this.#pumping) void this.#pump();
  }

  #nextFrames(q: PeerQueue): Buffer[] | undefined {
    if (q.items.length > 0) return q.items[0];
    while (q.sources.length > 0) {
      const src = q.sources[0]!;
      const frames = src.next();
      if (frames) {
        q.items.push(frames);
        return frames;
      }
      q.sources.shift();
      src.done(true);
    }
    return undefined;
  }

  async #pump(): Promise<void> {
    this.#pumping = true;
    try {
      for (;;) {
        if (this.#router.closed) return;
        const now = Date.now();
        let sent = 0;
        let earliest = Infinity;
        for (const [k, q] of this.#queues) {
          if (q.blockedUntil > now) {
            earliest = Math.min(earliest, q.blockedUntil);
            continue;
          }
          // Up to a burst per peer per round keeps the others' replies flowing.
          for (let burst = 0; burst < 64; burst++) {
            const frames = this.#nextFrames(q);
            if (!frames) break;
            try {
              await this.#router.send([q.id, ...frames]);
              q.items.shift();
              q.retryDelay = 1;
              sent++;
            } catch (err) {
              if (this.#router.closed) return;
              const code = (err as { code?: string }).code;
              if (code === 'EAGAIN') {
                q.blockedUntil = Date.now() + q.retryDelay;
                q.retryDelay = Math.min(q.retryDelay * 2, 100);
                earliest = Math.min(earliest, q.blockedUntil);
              } else {
                this.#drop(q, code === 'EHOSTUNREACH' ? 'peer disconnected' : String(code ?? err));
              }
              break;
            }
          }
          if (q.items.length === 0 && q.sources.length === 0 && this.#queues.get(k) === q) this.#queues.delete(k);
        }
        if (this.#queues.size === 0) return;
        // Sends that never block would otherwise keep this loop in microtasks for a whole
        // snapshot, starving the receive loops (writes, subscriptions) for its duration.
        if (sent > 0) await new Promise<void>((resolve) => setImmediate(resolve));
        if (sent === 0) {
          if (earliest === Infinity) continue;
          await new Promise<void>((resolve) => {
            this.#timer = setTimeout(resolve, Math.max(1, earliest - Date.now()));
          });
          this.#timer = undefined;
        }
      }
    } finally {
      this.#pumping = false;
    }
  }
}
