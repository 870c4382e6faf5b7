/**
 * One timer for many deadlines: armed for the earliest one asked for, re-armed only when an
 * earlier deadline comes along. The forwarder uses it for ttl expiry and the peer for write
 * timeouts; the callback finds what is due and asks again for the next deadline.
 *
 * Node's `setTimeout` takes at most 2^31 − 1 ms; a longer delay fires after 1 ms instead. A
 * far deadline is therefore waited for in steps of at most that long: the timer wakes early,
 * sees the deadline is still ahead, and sleeps again, without calling back.
 *
 * @module
 */
import { MAX_DURATION_MS } from './options.ts';

/** Longest delay `setTimeout` honours, in ms (2^31 − 1). */
const MAX_TIMER_DELAY = MAX_DURATION_MS;

/** A single re-armable timer for the earliest of many deadlines (Date.now clock, ms). */
export class DeadlineTimer {
  readonly #onDue: () => void;
  readonly #maxDelay: number;
  #timer: NodeJS.Timeout | undefined;
  #at = Infinity;
  #stopped = false;
  #wakeups = 0;

  /**
   * @param onDue - called when the earliest deadline passes; it re-arms for the next one
   * @param maxDelay - longest single wait in ms (default and upper bound 2^31 − 1); a smaller
   *   one only makes tests of far deadlines quick
   */
  constructor(onDue: () => void, maxDelay = MAX_TIMER_DELAY) {
    this.#onDue = onDue;
    this.#maxDelay = Math.max(1, Math.min(maxDelay, MAX_TIMER_DELAY));
  }

  /** Times the underlying timer has fired (early wakes included): a spinning timer shows here. */
  get wakeups(): number {
    return this.#wakeups;
  }

  /** Makes sure the timer fires by `at`. A non-finite or NaN `at` is ignored. */
  arm(at: number): void {
    if (!(at < this.#at) || this.#stopped) return; // also refuses NaN
    this.#at = at;
    this.#schedule();
  }

  /** Cancels the timer for good. */
  stop(): void {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #schedule(): void {
    if (this.#timer) clearTimeout(this.#timer);
    const delay = Math.min(Math.max(0, this.#at - Date.now()), this.#maxDelay);
    this.#timer = setTimeout(() => this.#fire(), delay);
  }

  #fire(): void {
    this.#timer = undefined;
    this.#wakeups++;
    if (this.#stopped) return;
    if (Date.now() < this.#at) {
      // Woken early because the deadline was beyond the longest single wait: sleep again.
      this.#schedule();
      return;
    }
    this.#at = Infinity;
    this.#onDue();
  }
}
