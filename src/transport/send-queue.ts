/**
 * One owner per writable socket: zeromq.js allows a single pending send per socket (a second
 * one throws EBUSY), so every send goes through this queue, which sends in order and keeps the
 * number of waiting messages bounded.
 *
 * @module
 */
import type * as zmq from 'zeromq';

/** What a send queue does with a message it cannot hold. */
export type OverflowHandler = (dropped: number) => void;

/** A bounded FIFO of outgoing messages for one socket. */
export class SendQueue {
  readonly #socket: zmq.Writable<zmq.MessageLike[]> & { readonly closed: boolean };
  readonly #limit: number;
  readonly #onOverflow: OverflowHandler;
  readonly #onError: (err: unknown) => void;
  #queue: Array<Buffer[] | undefined> = [];
  #head = 0;
  #pumping = false;
  #idle: Array<() => void> = [];

  /**
   * @param socket - the socket this queue owns the sending side of
   * @param limit - most messages waiting; past it new messages are dropped and reported
   */
  constructor(
    socket: zmq.Writable<zmq.MessageLike[]> & { readonly closed: boolean },
    limit: number,
    onOverflow: OverflowHandler,
    onError: (err: unknown) => void,
  ) {
    this.#socket = socket;
    this.#limit = limit;
    this.#onOverflow = onOverflow;
    this.#onError = onError;
  }

  /** Messages waiting to be handed to zeromq. */
  get pending(): number {
    return this.#queue.length - this.#head;
  }

  /** Queues a message; returns false if it was dropped because the queue is full. */
  send(frames: Buffer[]): boolean {
    if (this.pending >= this.#limit) {
      this.#onOverflow(1);
      return false;
    }
    this.#queue.push(frames);
    if (!this.#pumping) void this.#pump();
    return true;
  }

  /** Resolves once every queued message has been handed to zeromq. */
  drained(): Promise<void> {
    if (!this.#pumping && this.pending === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  /** Drops everything queued. */
  clear(): void {
    this.#queue = [];
    this.#head = 0;
  }

  async #pump(): Promise<void> {
    this.#pumping = true;
    try {
      while (this.#head < this.#queue.length) {
        if (this.#socket.closed) {
          this.clear();
          break;
        }
        const frames = this.#queue[this.#head]!;
        // Release the slot at once: a sent message must not stay reachable (and be copied by
        // every young-generation GC) until the next compaction.
        this.#queue[this.#head] = undefined;
        this.#head++;
        if (this.#head >= 4096 && this.#head * 2 >= this.#queue.length) {
          this.#queue = this.#queue.slice(this.#head);
          this.#head = 0;
        }
        // Yield to the event loop now and then, so a long burst does not starve the receivers.
        if ((this.#head & 1023) === 0) await new Promise<void>((resolve) => setImmediate(resolve));
        try {
          await this.#socket.send(frames);
        } catch (err) {
          if (this.#socket.closed) {
            this.clear();
            break;
          }
          this.#onError(err);
        }
      }
    } finally {
      this.#pumping = false;
      const idle = this.#idle;
      this.#idle = [];
      for (const resolve of idle) resolve();
    }
  }
}
