/**
 * The queue behind a watch: an async iterator fed by the peer, bounded so that a consumer that
 * stops reading fails loudly (CLONEKV_WATCH_OVERFLOW) instead of growing memory forever, and
 * released on `break`, `return()` or an aborted signal. A replay (the entries existing when the
 * watch starts) is read lazily, as the consumer asks, ahead of the queue: however many entries it
 * has, it takes no room in the bound, which counts only changes waiting behind it.
 *
 * @module
 */
import { ClonekvError, ErrorCode } from '../errors.ts';

/** An async iterator with a push side. */
export class WatchQueue<T> implements AsyncIterableIterator<T> {
  #items: Array<T | undefined> = [];
  #head = 0;
  #waiter: { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void } | undefined;
  #done = false;
  #error: unknown;
  /** Items yielded before anything queued, pulled one at a time. */
  #replay: Iterator<T> | undefined;
  readonly #max: number;
  readonly #onEnd: () => void;

  /**
   * @param max - most items held for the consumer
   * @param onEnd - called once when the iterator ends for any reason (to unregister it)
   */
  constructor(max: number, onEnd: () => void) {
    this.#max = max;
    this.#onEnd = onEnd;
  }

  /** Whether the iterator has ended. */
  get done(): boolean {
    return this.#done;
  }

  /** Items waiting for the consumer. */
  get pending(): number {
    return this.#items.length - this.#head;
  }

  /**
   * Yields `replay`'s items first, each pulled only when the consumer asks for it; pushed items
   * wait behind them (bounded as always). Call before anything is pushed.
   */
  replayFirst(replay: Iterator<T>): void {
    if (this.#done) return;
    this.#replay = replay;
    // A consumer already waiting (the watch started before the peer was ready) gets the first one.
    const w = this.#waiter;
    if (!w) return;
    const r = replay.next();
    if (r.done) {
      this.#replay = undefined;
      return;
    }
    this.#waiter = undefined;
    w.resolve({ value: r.value, done: false });
  }

  /** Adds an item (ignored after the end). Overflow ends the iterator with an error. */
  push(item: T): void {
    if (this.#done) return;
    if (this.#waiter) {
      const w = this.#waiter;
      this.#waiter = undefined;
      w.resolve({ value: item, done: false });
      return;
    }
    if (this.pending >= this.#max) {
      this.fail(
        new ClonekvError(
          ErrorCode.WatchOverflow,
          `watch consumer fell ${this.#max} changes behind; read faster or raise maxPending`,
        ),
      );
      return;
    }
    this.#items.push(item);
  }

  /** Ends the iterator; items already queued are still delivered (the rest of a replay is not). */
  end(): void {
    if (this.#done) return;
    this.#done = true;
    this.#dropReplay();
    this.#onEnd();
    if (this.#waiter && this.pending === 0) {
      const w = this.#waiter;
      this.#waiter = undefined;
      w.resolve({ value: undefined, done: true });
    }
  }

  /** Ends the iterator with an error, dropping what is queued. */
  fail(err: unknown): void {
    if (this.#done) return;
    this.#error = err;
    this.#items = [];
    this.#head = 0;
    this.end();
    if (this.#waiter) {
      const w = this.#waiter;
      this.#waiter = undefined;
      this.#error = undefined;
      w.reject(err);
    }
  }

  next(): Promise<IteratorResult<T>> {
    if (this.#replay) {
      const r = this.#replay.next();
      if (!r.done) return Promise.resolve({ value: r.value, done: false });
      this.#replay = undefined;
    }
    if (this.pending > 0) {
      const value = this.#items[this.#head]!;
      this.#items[this.#head] = undefined;
      this.#head++;
      if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
        this.#items = this.#items.slice(this.#head);
        this.#head = 0;
      }
      return Promise.resolve({ value, done: false });
    }
    if (this.#error !== undefined) {
      const err = this.#error;
      this.#error = undefined;
      return Promise.reject(err);
    }
    if (this.#done) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve, reject };
    });
  }

  return(): Promise<IteratorResult<T>> {
    this.#items = [];
    this.#head = 0;
    this.end();
    return Promise.resolve({ value: undefined, done: true });
  }

  #dropReplay(): void {
    const replay = this.#replay;
    this.#replay = undefined;
    replay?.return?.();
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}
