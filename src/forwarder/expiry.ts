/**
 * Expiry of ttl values: only the forwarder expires keys. One timer waits for the earliest
 * deadline; when it fires, every key due is deleted through the update log (reason `expired`)
 * and the timer is armed for the next deadline.
 *
 * @module
 */
import { DeadlineTimer } from '../deadline-timer.ts';
import { Prop } from '../protocol/commands.ts';
import { EMPTY_FRAME } from '../protocol/message.ts';
import { encodeProperties } from '../protocol/properties.ts';
import type { Counters } from './counters.ts';
import type { UpdateLog } from './update-log.ts';

const EXPIRED_PROPS = encodeProperties([[Prop.Reason, 'expired']]);

/** Deletes ttl values when they run out. */
export class Expiry {
  readonly #timer = new DeadlineTimer(() => this.#expire());
  readonly #log: () => UpdateLog;
  readonly #counters: Counters;
  readonly #allowed: () => boolean;

  /**
   * @param log - the update log (a getter: the log and the expiry refer to each other)
   * @param allowed - whether this forwarder may expire keys now (a pair's passive may not: it
   *   receives its active's expiry deletes; it expires what is due when it takes over)
   */
  constructor(log: () => UpdateLog, counters: Counters, allowed: () => boolean = () => true) {
    this.#log = log;
    this.#counters = counters;
    this.#allowed = allowed;
  }

  /** Makes sure an expiry pass runs by `at` (ms, Date.now clock). */
  arm(at: number): void {
    this.#timer.arm(at);
  }

  /** Expires at once every key that is due (a pair member that just took the active role). */
  expireNow(): void {
    this.#expire();
  }

  /** Stops for good. */
  stop(): void {
    this.#timer.stop();
  }

  #expire(): void {
    if (!this.#allowed()) return;
    const log = this.#log();
    const now = Date.now();
    for (const key of log.store.dueForExpiry(now)) {
      this.#counters.events.expired++;
      log.append(Buffer.from(key, 'latin1'), key, EMPTY_FRAME, EXPIRED_PROPS, EMPTY_FRAME, 0, now, undefined);
    }
    const next = log.store.nextExpiry();
    if (next !== undefined) this.#timer.arm(next);
  }
}
