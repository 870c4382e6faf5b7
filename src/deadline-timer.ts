/**
 * One timer for many deadlines: armed for the earliest one asked for, re-armed only when an
 * earlier deadline comes along. The forwarder uses it for ttl expiry and the peer for write
 * timeouts; the callback finds what is due and asks again for the next deadline.
 *
 * @module
 */

/** A single re-armable timer for the earliest of many deadlines (Date.now clock, ms). */
export class DeadlineTimer {
  readonly #onDue: () => void;
  #timer: NodeJS.Timeout | undefined;
  #at = Infinity;
  #stopped = false;

  /** @param onDue - called when the earliest deadline passes; it re-arms for the next one */
  constructor(onDue: () => void) {
    this.#onDue = onDue;
  }

  /** Makes sure the timer fires by `at`. */
  arm(at: number): void {
    if (at >= this.#at || this.#stopped) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#at = at;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#at = Infinity;
      this.#onDue();
    }, Math.max(0, at - Date.now()));
  }

  /** Cancels the timer for good. */
  stop(): void {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}
